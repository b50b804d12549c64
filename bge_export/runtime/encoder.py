"""The one Encoder interface every backend implements: texts in, embeddings out."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Sequence

import numpy as np

from bge_export.errors import InputError
from bge_export.model.spec import EmbeddingSpec
from bge_export.model.tokenization import TextTokenizer


class Encoder(ABC):
    """Tokenizes, batches by length and runs a backend; `run` is the only part a backend writes."""

    backend: str = "abstract"
    # set by bge_export.load_encoder: the artifact it picked (path in the folder) and why, in one line
    artifact: str | None = None
    selection: str | None = None

    def __init__(self, spec: EmbeddingSpec, tokenizer: TextTokenizer) -> None:
        self.spec = spec
        self.tokenizer = tokenizer

    @property
    def input_names(self) -> tuple[str, ...]:
        return self.spec.input_names

    @abstractmethod
    def run(self, features: dict[str, np.ndarray]) -> np.ndarray:
        """One padded batch (int64 arrays named as the graph inputs) -> float32 [batch, embedding_dim]."""

    def resolve_prompt(self, prompt: str | None = None, prompt_name: str | None = None) -> str:
        """sentence-transformers' rule: an explicit prompt wins, then prompt_name, then the default prompt."""
        if prompt is not None and not isinstance(prompt, str):
            raise InputError(f"prompt must be a string (the text put before each input), got {type(prompt).__name__}")
        if prompt_name is not None and not isinstance(prompt_name, str):
            raise InputError(f"prompt_name must be the name of one of the model's prompts, got {type(prompt_name).__name__}")
        if prompt is not None:
            _check_text(prompt, "prompt")
            return prompt
        name = prompt_name or self.spec.default_prompt_name
        if name is None:
            return ""
        if name not in self.spec.prompts:
            known = ", ".join(sorted(self.spec.prompts)) or "none"
            raise InputError(f"prompt name '{name}' is not defined by this model (defined: {known})")
        return self.spec.prompts[name]

    def encode(
        self,
        texts: str | Sequence[str],
        batch_size: int = 32,
        prompt: str | None = None,
        prompt_name: str | None = None,
        progress: bool = False,
        *,
        show_progress_bar: bool | None = None,
        convert_to_numpy: bool = True,
        convert_to_tensor: bool = False,
        normalize_embeddings: bool = False,
        precision: str = "float32",
        **unsupported: object,
    ) -> Any:
        """Embeddings with `SentenceTransformer.encode`'s shapes and `convert_to_*` conventions.

        A str gives one vector (dim,), any iterable of str a matrix (n, dim), float32 numpy by default;
        `convert_to_tensor=True` a torch tensor of the same shape, `convert_to_numpy=False` (without it) a list of
        1-D tensors, as sentence-transformers does. `show_progress_bar` is sentence-transformers' name for
        `progress`. `normalize_embeddings=True` L2-normalizes the result; `False` adds no normalization, and, as
        in sentence-transformers, cannot undo the model's own: a model whose files end in a Normalize module
        (bge, MiniLM, mpnet) has it inside the graph, so its vectors are unit length either way.
        `precision` is "float32" only: quantized embeddings need calibration ranges, which is
        `sentence_transformers.quantization.quantize_embeddings`' job. One difference, deliberately: no texts
        give shape (0, dim), not sentence-transformers' (0,), so stacking and `.shape[1]` keep working.
        """
        if self.spec.is_reranker:
            raise InputError("this artifact is a cross-encoder (a reranker): it scores pairs, it embeds no text; use "
                             "bge_export.load_reranker(folder).predict(pairs)")
        single = isinstance(texts, str)
        texts = checked_texts(texts)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InputError(f"batch_size must be a whole number of at least 1, got {batch_size!r}")
        _check_encode_options(unsupported, show_progress_bar, convert_to_numpy, convert_to_tensor,
                              normalize_embeddings, precision)
        prefix = self.resolve_prompt(prompt, prompt_name)
        if prefix:
            texts = [prefix + text for text in texts]
        output = np.zeros((len(texts), self.spec.embedding_dim), dtype=np.float32)
        batches = self.tokenizer.batches(texts, batch_size) if texts else []
        if texts and (progress or show_progress_bar):
            from tqdm.auto import tqdm

            total = (len(texts) + batch_size - 1) // batch_size
            batches = tqdm(batches, total=total, desc=f"encode ({self.backend})", unit="batch", leave=False)
        for batch in batches:
            output[batch.indices] = self.run(batch.features)
        if normalize_embeddings and len(output):
            output /= np.maximum(np.linalg.norm(output, axis=1, keepdims=True), 1e-12)  # torch's F.normalize eps
        return _converted(output[0] if single else output, convert_to_numpy, convert_to_tensor)


_ENCODE_FLAGS = ("show_progress_bar", "convert_to_numpy", "convert_to_tensor", "normalize_embeddings")


def _check_encode_options(unsupported: dict[str, object], show_progress_bar: object, *flags: object) -> None:
    """sentence-transformers' keywords this encoder takes, checked; the ones it does not take named in one line."""
    if unsupported:
        names = ", ".join(sorted(unsupported))
        raise InputError(f"encode() does not take {names}; it takes batch_size, prompt, prompt_name, progress "
                         f"(or show_progress_bar), convert_to_numpy, convert_to_tensor, normalize_embeddings, precision")
    *booleans, precision = flags
    for name, value in zip(_ENCODE_FLAGS, (show_progress_bar, *booleans)):
        if not isinstance(value, bool) and not (value is None and name == "show_progress_bar"):
            raise InputError(f"{name} must be True or False, got {value!r}")
    if precision != "float32":
        raise InputError(f"precision={precision!r}: encode returns float32 only; quantize the embeddings with "
                         "sentence_transformers.quantization.quantize_embeddings and calibration embeddings")


def _converted(embeddings: np.ndarray, convert_to_numpy: bool, convert_to_tensor: bool) -> Any:
    """numpy (the default), one torch tensor, or (convert_to_numpy=False) a list of 1-D tensors, as ST returns."""
    if not convert_to_tensor and convert_to_numpy:
        return embeddings
    try:
        import torch  # lazily: a deployment box may run onnxruntime without PyTorch
    except ImportError:
        raise InputError("convert_to_tensor / convert_to_numpy=False return torch tensors, and PyTorch is not "
                         "installed; pip install torch, or keep the default numpy output") from None
    tensor = torch.from_numpy(embeddings)
    return tensor if convert_to_tensor or tensor.ndim == 1 else list(tensor)


def checked_texts(texts: object) -> list[str]:
    """A str, or any iterable of str (list, tuple, generator, numpy array of str), as a list; else InputError."""
    if isinstance(texts, str):
        return [_check_text(texts, "texts")]
    if texts is None or isinstance(texts, (bytes, bytearray)) or not hasattr(texts, "__iter__"):
        hint = "; decode it first, e.g. data.decode('utf-8')" if isinstance(texts, (bytes, bytearray)) else ""
        raise InputError(f"texts must be a string or a list of strings, got {type(texts).__name__}{hint}")
    items = list(texts)
    for index, item in enumerate(items):
        if isinstance(item, str):
            _check_text(item, f"texts[{index}]")
            continue
        hint = "; decode it first, e.g. item.decode('utf-8')" if isinstance(item, (bytes, bytearray)) else ""
        raise InputError(f"texts[{index}] must be a string, got {type(item).__name__}{hint}")
    return items


def _check_text(text: str, name: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InputError(f"{name} is not valid Unicode (a lone surrogate at character {exc.start}); "
                         "decode the source with errors='replace' or fix its encoding") from None
    return text
