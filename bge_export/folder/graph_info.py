"""What an ONNX file declares (opset, inputs, outputs, external data), as the manifest records it.

Every target that writes or builds from an ONNX graph records these fields (the ONNX export, TensorRT's entries
name the graph they were built from), so the reader lives here in the shared folder layer, not in a target.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bge_export.folder.records import TensorInfo


@dataclass(frozen=True)
class OnnxGraphInfo:
    path: Path
    opset: int
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    external_data: bool


def describe_graph(path: str | Path, external: bool | None = None) -> OnnxGraphInfo:
    """The graph's declarations, read without loading its weights."""
    import onnx  # loaded only when a graph is read: `import bge_export` stays light

    path = Path(path)
    model = onnx.load(str(path), load_external_data=False)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if external is None:
        external = any(init.data_location == onnx.TensorProto.EXTERNAL for init in model.graph.initializer)
    initializers = {init.name for init in model.graph.initializer}
    inputs = [tensor_info(v) for v in model.graph.input if v.name not in initializers]
    outputs = [tensor_info(v) for v in model.graph.output]
    return OnnxGraphInfo(path, opset, inputs, outputs, external)


def tensor_info(value: Any) -> TensorInfo:
    """One graph input or output (an onnx.ValueInfoProto) as the manifest records it."""
    import onnx

    tensor_type = value.type.tensor_type
    dims: list[str | int] = [d.dim_param if d.dim_param else int(d.dim_value) for d in tensor_type.shape.dim]
    return TensorInfo(value.name, onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type).name, dims)
