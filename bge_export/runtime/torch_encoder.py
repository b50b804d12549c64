"""PyTorch backend: the EmbeddingModule in eager mode; in fp32 it is the validation baseline."""

from __future__ import annotations

import numpy as np

from bge_export.model.modeling import EmbeddingModule
from bge_export.model.tokenization import TextTokenizer
from bge_export.runtime.encoder import Encoder


class TorchEncoder(Encoder):
    backend = "torch"

    def __init__(self, module: EmbeddingModule, tokenizer: TextTokenizer, threads: int | None = None) -> None:
        super().__init__(module.spec, tokenizer)
        import torch

        if threads:
            torch.set_num_threads(threads)
        self.module = module.eval()
        self._device = next(module.parameters()).device

    def run(self, features: dict[str, np.ndarray]) -> np.ndarray:
        import torch

        with torch.inference_mode():
            inputs = {name: torch.from_numpy(features[name]).to(self._device) for name in self.input_names}
            embedding = self.module(**inputs)
        return embedding.float().cpu().numpy()
