"""The manifest entry of one ONNX file the onnx target wrote: what describe_graph reads, its sha256 and size
(external data included), the options it was made with and the tool versions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bge_export.files import file_sha256
from bge_export.folder.graph_info import describe_graph
from bge_export.folder.manifest import ArtifactEntry, tool_versions


def artifact_entry(stage: Path, relative: str, precision: str, options: dict[str, Any]) -> ArtifactEntry:
    path = stage / relative
    graph = describe_graph(path)
    files = [path] + ([path.with_name(path.name + ".data")] if graph.external_data else [])
    return ArtifactEntry(
        path=relative,
        format="onnx",
        precision=precision,
        sha256=file_sha256(path),
        size_bytes=sum(f.stat().st_size for f in files if f.exists()),
        opset=graph.opset,
        inputs=graph.inputs,
        outputs=graph.outputs,
        options=options,
        versions=tool_versions("torch", "transformers", "onnx", "onnxruntime"),
    )
