"""The one Encoder interface every backend implements: texts in, embeddings out."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Sequence

import numpy as np

from bge_export.errors import InputError
from bge_export.spec import EmbeddingSpec
from bge_export.tokenization import TextTokenizer


class Encoder(ABC):
    """Tokenizes, batches by length and runs a backend; `run` is the only part a backend writes."""

    backend: str = "abstract"

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
        if prompt is not None:
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
        texts: Sequence[str],
        batch_size: int = 32,
        prompt: str | None = None,
        prompt_name: str | None = None,
        progress: bool = False,
    ) -> np.ndarray:
        if isinstance(texts, str):
            texts = [texts]
        prefix = self.resolve_prompt(prompt, prompt_name)
        if prefix:
            texts = [prefix + text for text in texts]
        output = np.zeros((len(texts), self.spec.embedding_dim), dtype=np.float32)
        if not len(texts):
            return output
        batches = self.tokenizer.batches(texts, batch_size)
        if progress:
            from tqdm.auto import tqdm

            total = (len(texts) + batch_size - 1) // batch_size
            batches = tqdm(batches, total=total, desc=f"encode ({self.backend})", unit="batch", leave=False)
        for batch in batches:
            output[batch.indices] = self.run(batch.features)
        return output
