"""Reference computations for tests: sentence-transformers itself, and our exported artifact."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np


def st_encode(folder: Path, texts: Sequence[str], **kwargs) -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(folder), device="cpu")
    return model.encode(list(texts), batch_size=kwargs.pop("batch_size", 16), convert_to_numpy=True, **kwargs)


def row_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def export_folder(model: Path, output: Path, **options) -> Path:
    from bge_export.targets.onnx.export import ExportOptions, export

    result = export(ExportOptions(model=str(model), output=str(output), quiet=True, **options))
    assert result.ok, [a.status_reason for a in result.manifest.artifacts]
    return output
