"""`bge-export verify` for TensorRT entries: the TensorRT-ready graph beside each plan loads and runs on
onnxruntime, and a built plan deserializes where TensorRT runs (else it is said not checked here).

Bytes (the plan's and the graph's sha256) are the folder layer's check; this one reads contents.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from bge_export.folder.manifest import ArtifactEntry, Manifest
from bge_export.folder.verify_graphs import check_onnx_graph, first_line
from bge_export.targets.tensorrt.runtime import tensorrt_unavailable

if TYPE_CHECKING:
    from bge_export.folder.verify import VerifyResult


def verify_artifact(folder: Path, manifest: Manifest, entry: ArtifactEntry, result: "VerifyResult") -> None:
    graph = entry.options.graph or ""
    if graph and (folder / graph).is_file():
        check_onnx_graph(folder, manifest, graph, result)
    if entry.sha256 and (folder / entry.path).is_file():
        _check_plan(folder, entry, result)


def _check_plan(folder: Path, entry: ArtifactEntry, result: "VerifyResult") -> None:
    why = tensorrt_unavailable()
    if why is not None:
        result.not_checked.append(f"{entry.path} engine not deserialized: {why}")
        return
    import tensorrt as trt

    try:
        runtime = trt.Runtime(trt.Logger(trt.Logger.ERROR))
        engine = runtime.deserialize_cuda_engine((folder / entry.path).read_bytes())
    except Exception as exc:  # TensorRT raises RuntimeError/TypeError for plans of other versions
        engine, error = None, first_line(exc)
    else:
        error = "TensorRT returned no engine"
    if engine is None:
        result.problems.append(f"{entry.path}: TensorRT {trt.__version__} cannot deserialize it ({error}); build it "
                               "again on this host with tensorrt/build.sh or bge-export tensorrt")
        return
    result.graphs_loaded += 1
    result.checked.append(f"{entry.path}: TensorRT {trt.__version__} deserializes it")
