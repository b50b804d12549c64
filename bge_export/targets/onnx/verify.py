"""`bge-export verify` for ONNX artifacts: onnx.checker accepts the graph and onnxruntime runs it once.

Bytes (the graph's and its external data's sha256) are the folder layer's check; this one reads contents.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from bge_export.folder.manifest import ArtifactEntry, Manifest
from bge_export.folder.verify_graphs import check_onnx_graph

if TYPE_CHECKING:
    from bge_export.folder.verify import VerifyResult


def verify_artifact(folder: Path, manifest: Manifest, entry: ArtifactEntry, result: "VerifyResult") -> None:
    if (folder / entry.path).is_file():  # a missing file is the folder layer's problem, named there once
        check_onnx_graph(folder, manifest, entry.path, result)
