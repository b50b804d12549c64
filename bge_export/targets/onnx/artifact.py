"""The manifest entry of one ONNX file the onnx target wrote (what describe_graph reads, its sha256 and size,
external data included, the options it was made with and the tool versions), and the folder's last steps."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from bge_export.files import file_sha256
from bge_export.folder.graph_info import describe_graph
from bge_export.folder.manifest import ArtifactEntry, Manifest, hash_files, tool_versions
from bge_export.folder.recommend import recommend
from bge_export.folder.result import TargetResult
from bge_export.progress import Progress


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


def apply_search_verdict(entry: ArtifactEntry) -> None:
    """An INT8 search that found no configuration meeting its bound kept the closest trial: that is a fail,
    whatever the verdict texts say (the file stays in the folder, for inspection)."""
    if entry.options.meets_bound is False:
        entry.set_status("fail", entry.options.reason or "the INT8 search missed its bound")


def seal_folder(manifest: Manifest, stage: Path) -> None:
    """The staged folder's recommendation, every file's sha256 and the manifest, written last."""
    manifest.recommended = recommend(manifest)
    manifest.files = hash_files(stage)
    manifest.write(stage)


def finished(output: Path, manifest: Manifest, started: float, progress: Progress) -> TargetResult:
    """The export's result, once the staged folder is in place."""
    seconds = time.perf_counter() - started
    progress.step(f"wrote {output} in {seconds:.1f}s")
    return TargetResult(output, manifest, list(manifest.artifacts), seconds)
