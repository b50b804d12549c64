"""The registry's opener for artifacts run by OpenVINO (the encoder itself is a shared runtime: runtime/openvino_encoder.py,
which the INT8 search also judges `int8-openvino` trials with)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bge_export.errors import InputError
from bge_export.folder.manifest import ArtifactEntry
from bge_export.model.spec import EmbeddingSpec
from bge_export.model.tokenization import TextTokenizer
from bge_export.runtime.encoder import Encoder
from bge_export.runtime.openvino_encoder import OpenVINOEncoder


def open_entry(folder: Path, entry: ArtifactEntry, spec: EmbeddingSpec, tokenizer: TextTokenizer,
               threads: int | None = None, providers: list[str] | None = None, **runtime_options: Any) -> Encoder:
    """The registry's opener for ONNX files and OpenVINO IR on OpenVINO (bge_export/registry.py): precision="f32" or
    "bf16" (default f32, never OpenVINO's own default), performance_hint="LATENCY" or "THROUGHPUT"."""
    if providers is not None:
        raise InputError("providers choose onnxruntime execution providers; OpenVINO runs on its own CPU plugin: "
                         "drop providers")
    unknown = sorted(set(runtime_options) - {"precision", "performance_hint"})
    if unknown:
        raise InputError(f"OpenVINO takes no option {', '.join(unknown)} (it takes precision and performance_hint)")
    return OpenVINOEncoder(Path(folder) / entry.path, spec, tokenizer, threads=threads,
                           precision=runtime_options.get("precision") or "f32",
                           performance_hint=runtime_options.get("performance_hint") or "LATENCY")
