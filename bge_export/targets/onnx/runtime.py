"""The ONNX target's entry point for onnxruntime (the registry's "onnxruntime" row): one manifest entry opened as
an Encoder. The Encoder itself (bge_export.runtime.onnxruntime_encoder) is shared: optimizers and other targets'
checks run graphs with it too."""

from __future__ import annotations

from pathlib import Path

from bge_export.errors import InputError
from bge_export.folder.manifest import ArtifactEntry
from bge_export.model.spec import EmbeddingSpec
from bge_export.model.tokenization import TextTokenizer
from bge_export.runtime.encoder import Encoder
from bge_export.runtime.onnxruntime_encoder import OnnxEncoder


def open_entry(folder: Path, entry: ArtifactEntry, spec: EmbeddingSpec, tokenizer: TextTokenizer,
               threads: int | None = None, providers: list[str] | None = None, **runtime_options: object) -> Encoder:
    """An onnxruntime Encoder for one ONNX artifact of the folder (bge_export/registry.py, RUNTIMES)."""
    if runtime_options:
        raise InputError(f"onnxruntime takes no options {sorted(runtime_options)}; use threads and providers")
    return OnnxEncoder(Path(folder) / entry.path, spec, tokenizer, threads=threads, providers=providers)
