"""How a graph is written and inspected at any size: inline below protobuf's 2 GB, external data above.

protobuf cannot serialize a message of 2 GB or more, so `onnx.save` (without external data),
`ModelProto.SerializeToString()`, `onnx.checker.check_model(proto)`, `onnx.shape_inference.infer_shapes(proto)`
and `InferenceSession(proto bytes)` all fail on a bge-m3-sized graph (568M parameters, 2.3 GB fp32). Every
writer saves through `save_graph`: past the limit the weights go to one file beside the graph, `<name>.data`
(the name the output folder's integrity rules, `verify`, `triton` and the model card count with the graph).
Scratch graphs that onnxruntime only runs (calibration, NNCF) go through `save_with_mapped_weights`, which writes
one tensor at a time and leaves the proto in memory as it was.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

PROTOBUF_LIMIT = 2**31 - 1  # bytes: the largest message protobuf serializes
EXTERNAL_THRESHOLD = 1024  # bytes: tensors from this size on go to the .data file (small constants stay inline)


def external_data_path(path: str | Path) -> Path:
    """Where a graph's external data lives: `model.onnx` -> `model.onnx.data`, beside it."""
    path = Path(path)
    return path.with_name(path.name + ".data")


def fits_inline(model: Any) -> bool:
    """Whether the whole graph, weights included, serializes as one protobuf message."""
    try:
        return model.ByteSize() <= PROTOBUF_LIMIT
    except Exception:  # some protobuf builds refuse even to size a message over 2 GB
        return False


def save_graph(model: Any, path: str | Path, external: bool | None = None) -> bool:
    """Write `model` to `path`, its weights in `path.data` when it does not fit inline (or `external` says so);
    returns whether external data was written. A stale `.data` beside `path` is removed first (onnx appends).

    `model` must hold its weights (`onnx.load` loads them); written externally, onnx moves them out of `model`
    into the file, so reload it from `path` to use it again."""
    import onnx

    if any(init.data_location == onnx.TensorProto.EXTERNAL for init in model.graph.initializer):
        raise ValueError("save_graph needs the weights in memory: load the graph with its external data")
    path = Path(path)
    if external is None:
        external = not fits_inline(model)
    data = external_data_path(path)
    data.unlink(missing_ok=True)
    if external:
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=data.name, size_threshold=EXTERNAL_THRESHOLD)
    else:
        onnx.save_model(model, str(path))
    return external


def infer_shapes(model: Any) -> Any:
    """onnx shape inference on a graph of any size: run on `weightless(model)`, so nothing over 2 GB is
    serialized."""
    import onnx

    return onnx.shape_inference.infer_shapes(weightless(model))


def weightless(model: Any) -> Any:
    """A copy of `model` without its large initializers' data: each becomes a graph input of the same name, type
    and shape, which is all type and shape inference read (onnx's, and onnxruntime's symbolic one, which would
    compute on any initializer's values); small initializers, shape constants among them, are kept whole."""
    from onnx import helper

    light = graph_shell(model)
    graph = model.graph
    for init in graph.initializer:
        if init.ByteSize() < EXTERNAL_THRESHOLD:
            light.graph.initializer.append(init)
        else:
            light.graph.input.append(helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)))
    return light


def graph_shell(model: Any) -> Any:
    """A new ModelProto with `model`'s graph, opsets and metadata but no initializers (they are added by the
    caller, one by one: a protobuf message frees nothing before it is itself freed, so copying a model and then
    dropping its big tensors still holds them)."""
    import onnx

    light = onnx.ModelProto()
    for name in ("ir_version", "producer_name", "producer_version", "domain", "model_version", "doc_string"):
        setattr(light, name, getattr(model, name))
    light.opset_import.extend(model.opset_import)
    light.metadata_props.extend(model.metadata_props)
    light.functions.extend(model.functions)
    source, graph = model.graph, light.graph
    graph.name = source.name
    for name in ("node", "input", "output", "value_info", "sparse_initializer"):
        getattr(graph, name).extend(getattr(source, name))
    return light


def copy_without(model: Any, initializer_names: set[str]) -> Any:
    """A copy of `model` leaving out the named initializers (the weights a quantizer is about to replace)."""
    light = graph_shell(model)
    light.graph.initializer.extend(t for t in model.graph.initializer if t.name not in initializer_names)
    return light


WEIGHT_ALIGNMENT = 4096  # page-aligned offsets: onnxruntime maps such weights instead of reading them


def save_with_mapped_weights(model: Any, path: str | Path) -> None:
    """The graph to `path`, every initializer of 1 KiB or more to `path.name + ".data"`, one tensor at a time.

    onnx.save(save_as_external_data=True) empties the proto it is given (so it would need a copy of the model)
    and serializes the whole graph first; this writes a light graph with external references instead, so
    memory holds one tensor's bytes beyond the model, and onnxruntime (by path) maps the weights rather than
    reading them into its own buffers."""
    import onnx
    from onnx import TensorProto

    path = Path(path)
    light = graph_shell(model)
    source, graph = model.graph, light.graph
    data_name, offset = external_data_path(path).name, 0
    with open(path.parent / data_name, "wb") as data:
        for tensor in source.initializer:
            if tensor.data_location == TensorProto.EXTERNAL or not tensor.HasField("raw_data") \
                    or len(raw := tensor.raw_data) < EXTERNAL_THRESHOLD:
                graph.initializer.append(tensor)
                continue
            padding = -offset % WEIGHT_ALIGNMENT
            data.write(b"\0" * padding)
            offset += padding
            data.write(raw)
            stub = graph.initializer.add()
            stub.name, stub.data_type, stub.data_location = tensor.name, tensor.data_type, TensorProto.EXTERNAL
            stub.dims.extend(tensor.dims)
            for key, value in (("location", data_name), ("offset", str(offset)), ("length", str(len(raw)))):
                entry = stub.external_data.add()
                entry.key, entry.value = key, value
            offset += len(raw)
    onnx.save(light, str(path))
