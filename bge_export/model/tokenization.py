"""Tokenization with the model's own fast tokenizer (tokenizer.json), the way sentence-transformers does it:
truncate at the model's max_seq_length, pad each batch to its longest text, on the tokenizer's padding side.

Only the `tokenizers` package is needed at run time, so an ONNX deployment does not pull in transformers.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence, Union

import numpy as np

from bge_export.errors import InputError
from bge_export.model.spec import EmbeddingSpec

if TYPE_CHECKING:
    from tokenizers import Tokenizer


@dataclass(frozen=True)
class TokenizedBatch:
    indices: np.ndarray  # positions of these texts in the caller's list
    features: dict[str, np.ndarray]  # int64 arrays [batch, seq], named as the graph's inputs

_VOCAB_FILES = ("vocab.txt", "merges.txt", "vocab.json", "sentencepiece.bpe.model", "spiece.model", "special_tokens_map.json")


class TextTokenizer:
    def __init__(self, backend: "Tokenizer", spec: EmbeddingSpec) -> None:
        self.spec = spec
        self._backend = backend
        backend.no_padding()
        backend.enable_truncation(max_length=spec.max_seq_length, strategy="longest_first")
        pad_token = spec.pad_token or "[PAD]"
        pad_id = backend.token_to_id(pad_token)
        if pad_id is None:
            raise InputError(f"the tokenizer has no pad token '{pad_token}'; the tokenizer files are inconsistent")
        self.pad_id = int(pad_id)

    @classmethod
    def from_model(cls, folder: str | Path, spec: EmbeddingSpec) -> "TextTokenizer":
        """The source model's tokenizer exactly as transformers (and so sentence-transformers) loads it."""
        return cls(_backend_via_transformers(Path(folder)), spec)

    @classmethod
    def from_artifact_folder(cls, folder: str | Path, spec: EmbeddingSpec) -> "TextTokenizer":
        """The tokenizer.json an export wrote; needs only the `tokenizers` package."""
        from tokenizers import Tokenizer

        path = Path(folder) / "tokenizer.json"
        if not path.is_file():
            raise InputError(f"'{folder}' has no tokenizer.json; re-run the export that made this folder")
        try:
            backend = Tokenizer.from_file(str(path))
        except Exception as exc:  # tokenizers raises a bare Exception for unreadable files
            raise InputError(f"{path} cannot be read ({str(exc).splitlines()[0][:120]}); re-run the export") from None
        return cls(backend, spec)

    @property
    def vocab_size(self) -> int:
        return int(self._backend.get_vocab_size(with_added_tokens=True))

    def save(self, folder: str | Path) -> None:
        self._backend.save(str(Path(folder) / "tokenizer.json"))

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        if self.spec.do_lower_case:
            texts = [text.lower() for text in texts]
        return [encoding.ids for encoding in self._backend.encode_batch(list(texts))]

    def tokenize_pairs(self, pairs: Sequence[tuple[str, str]]) -> tuple[list[list[int]], list[list[int]]]:
        """Query-document pairs as a cross-encoder reads them: one sequence each (truncated longest first, as
        CrossEncoder does), and its token types (0 for the query's tokens, 1 for the document's, where used)."""
        if self.spec.do_lower_case:
            pairs = [(query.lower(), document.lower()) for query, document in pairs]
        encodings = self._backend.encode_batch([(query, document) for query, document in pairs])
        return [e.ids for e in encodings], [e.type_ids for e in encodings]

    def pad(self, sequences: Sequence[Sequence[int]], width: int | None = None,
            type_ids: Sequence[Sequence[int]] | None = None) -> dict[str, np.ndarray]:
        """Pad to the longest sequence (or to `width`, for tools that need one fixed shape) on the model's side;
        `type_ids` are the pairs' token types (zeros otherwise)."""
        width = width or max(len(ids) for ids in sequences)
        input_ids = np.full((len(sequences), width), self.pad_id, dtype=np.int64)
        attention_mask = np.zeros((len(sequences), width), dtype=np.int64)
        token_types = np.zeros_like(input_ids)
        left = self.spec.padding_side == "left"
        for row, ids in enumerate(sequences):
            columns = slice(width - len(ids), width) if left else slice(0, len(ids))
            input_ids[row, columns] = ids
            attention_mask[row, columns] = 1
            if type_ids is not None:
                token_types[row, columns] = type_ids[row]
        features = {"input_ids": input_ids, "attention_mask": attention_mask}
        if "token_type_ids" in self.spec.input_names:
            features["token_type_ids"] = token_types
        return features

    def fixed_width_batches(self, texts: Sequence[Text], batch_size: int, width: int) -> list[dict[str, np.ndarray]]:
        """Batches all of one shape [batch_size, width] (truncating), for onnxruntime's histogram calibrators."""
        ids, types = self._sequences(texts)
        usable = len(ids) - len(ids) % batch_size
        return [self.pad([row[:width] for row in ids[i:i + batch_size]], width,
                         [row[:width] for row in types[i:i + batch_size]] if types else None)
                for i in range(0, usable, batch_size)]

    def batches(self, texts: Sequence[Text], batch_size: int) -> Iterator[TokenizedBatch]:
        """Batches of similar length (less padding), in descending length; indices restore the order. Items may
        be texts or a cross-encoder's (query, document) pairs (calibration and search text for a reranker)."""
        if batch_size < 1:
            raise InputError(f"batch size must be at least 1, got {batch_size}")
        sequences, types = self._sequences(texts)
        order = np.argsort([-len(ids) for ids in sequences], kind="stable")
        for start in range(0, len(order), batch_size):
            chosen = order[start : start + batch_size]
            yield TokenizedBatch(chosen, self.pad([sequences[i] for i in chosen],
                                                  type_ids=[types[i] for i in chosen] if types else None))

    def _sequences(self, items: Sequence[Text]) -> tuple[list[list[int]], list[list[int]] | None]:
        """Token ids of texts, or of pairs with their token types."""
        if items and not isinstance(items[0], str):
            return self.tokenize_pairs([(str(pair[0]), str(pair[1])) for pair in items])
        return self.tokenize([str(text) for text in items]), None


Text = Union[str, tuple[str, str]]  # a text, or a cross-encoder's (query, document) pair


# A folder needs one of these for transformers to load the model's real vocabulary; without them it builds a
# near-empty tokenizer from config.json alone, and every text becomes [CLS] [UNK]... [SEP].
_TOKENIZER_SOURCES = ("tokenizer.json", "vocab.txt", "vocab.json", "sentencepiece.bpe.model", "spiece.model",
                      "tokenizer.model")
# Embedding tables are often padded past the vocabulary (to a multiple of 8 or 64); a tokenizer covering less
# than this share of the table belongs to another model, or lost its files.
_MIN_VOCAB_COVERAGE = 0.9


def _load_transformers_tokenizer(folder: Path) -> Any:  # a transformers PreTrainedTokenizerFast
    from transformers import AutoTokenizer

    if not any((folder / name).is_file() for name in _TOKENIZER_SOURCES):
        raise InputError(
            f"'{folder}' has no tokenizer files (none of {', '.join(_TOKENIZER_SOURCES)}); copy the model's own "
            "tokenizer files into the folder"
        )
    try:
        return AutoTokenizer.from_pretrained(str(folder), use_fast=True)
    except Exception as exc:  # transformers raises OSError, ValueError, KeyError, TypeError... for broken files
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise InputError(f"cannot load the tokenizer in '{folder}': {first}; the tokenizer files are damaged") from None


def check_tokenizer_matches_model(tokenizer: "TextTokenizer", module: "object", reference: str) -> None:
    """Refuse a tokenizer whose ids do not index the model's embedding table as the model was trained to."""
    embeddings = module.encoder.get_input_embeddings()  # type: ignore[attr-defined]
    rows = int(embeddings.weight.shape[0])
    size = int(tokenizer.vocab_size)
    if size > rows:
        raise InputError(
            f"the tokenizer of '{reference}' has {size} tokens but the model's embedding table only {rows} rows: "
            "the tokenizer belongs to another model; use the model's own tokenizer files"
        )
    if size < _MIN_VOCAB_COVERAGE * rows:
        raise InputError(
            f"the tokenizer of '{reference}' has {size} tokens but the model's embedding table {rows} rows: "
            "its tokenizer files are missing or belong to another model; use the model's own tokenizer files"
        )


def _backend_via_transformers(folder: Path) -> "Tokenizer":
    tokenizer = _load_transformers_tokenizer(folder)
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise InputError(f"the tokenizer in '{folder}' has no fast (tokenizers) version; bge-export needs one")
    return backend


def save_tokenizer_files(model_folder: str | Path, output: str | Path) -> None:
    """Write the model's tokenizer (tokenizer.json and its configs) so the output folder is self-contained."""
    tokenizer = _load_transformers_tokenizer(Path(model_folder))
    tokenizer.save_pretrained(str(output))
    # Vocabulary files too, for tools that rebuild a slow tokenizer from them.
    for name in _VOCAB_FILES:
        source_file, target = Path(model_folder) / name, Path(output) / name
        if source_file.is_file() and not target.exists():
            shutil.copyfile(source_file, target)
