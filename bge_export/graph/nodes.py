"""The small graph utilities every optimizer shares (in the spirit of Polygraphy's): one way to look a tensor up,
to edit the node list, to add an opset or an initializer, and to quantize a weight matrix.

Each rewrite in this package reads the graph through these, so a fix to, say, how constants are recognised
reaches every pass at once instead of one copy of three.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import numpy as np

MICROSOFT_DOMAIN = "com.microsoft"


def initializers(model: Any) -> dict[str, Any]:
    """Initializer TensorProtos by name (edit them in place with `overwrite_initializer`)."""
    return {init.name: init for init in model.graph.initializer}


def add_initializer(model: Any, name: str, array: np.ndarray) -> str:
    """Append `array` as an initializer called `name`; returns the name, for use as a node input."""
    from onnx import numpy_helper

    model.graph.initializer.append(numpy_helper.from_array(np.asarray(array), name))
    return name


def overwrite_initializer(initializer: Any, array: np.ndarray) -> None:
    """Replace an initializer's value in place, keeping its name (every reader sees the new value)."""
    from onnx import numpy_helper

    initializer.CopyFrom(numpy_helper.from_array(np.asarray(array), initializer.name))


def producers(model: Any) -> dict[str, Any]:
    """The node writing each tensor."""
    return {out: node for node in model.graph.node for out in node.output}


def consumers(model: Any) -> dict[str, list[Any]]:
    """The nodes reading each tensor, in graph order."""
    found: dict[str, list[Any]] = {}
    for node in model.graph.node:
        for name in node.input:
            found.setdefault(name, []).append(node)
    return found


@dataclass(frozen=True)
class Constant:
    """A tensor known before the graph runs: an initializer, a Constant node's output, or an Identity of either."""

    shape: tuple[int, ...]
    tensor: Any  # the TensorProto holding it

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def array(self) -> np.ndarray:
        """Decoded on demand: decoding every weight matrix up front costs seconds on a base-size model."""
        from onnx import numpy_helper

        return numpy_helper.to_array(self.tensor)


def constants(model: Any) -> dict[str, Constant]:
    """Every constant tensor of the graph by name (the exporter shares equal weights through Identity nodes)."""
    from onnx import helper, numpy_helper

    found = {init.name: Constant(tuple(init.dims), init) for init in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Identity" and node.input[0] in found:
            found[node.output[0]] = found[node.input[0]]
        elif node.op_type == "Constant" and node.attribute:
            attribute = node.attribute[0]
            if attribute.name == "value":
                found[node.output[0]] = Constant(tuple(attribute.t.dims), attribute.t)
            elif attribute.name in ("value_float", "value_int", "value_floats", "value_ints"):
                value = np.asarray(helper.get_attribute_value(attribute),
                                   dtype=np.float32 if "float" in attribute.name else np.int64)
                found[node.output[0]] = Constant(value.shape, numpy_helper.from_array(value, node.output[0]))
    return found


@dataclass(frozen=True)
class GraphIndex:
    """The lookup tables of one state of a graph; build a new one after the node list changes."""

    initializers: dict[str, Any]
    producers: dict[str, Any]
    consumers: dict[str, list[Any]]
    constants: dict[str, Constant]

    @classmethod
    def of(cls, model: Any) -> "GraphIndex":
        return cls(initializers(model), producers(model), consumers(model), constants(model))


def weight_matmuls(model: Any) -> list[Any]:
    """MatMul nodes whose weight is a 2-D float initializer (the quantizable ones)."""
    import onnx

    inits = initializers(model)
    return [
        n for n in model.graph.node
        if n.op_type == "MatMul" and n.input[1] in inits and len(inits[n.input[1]].dims) == 2
        and inits[n.input[1]].data_type == onnx.TensorProto.FLOAT
    ]


def weight_matmuls_by_input(model: Any) -> dict[str, list[Any]]:
    """The quantizable MatMuls grouped by the activation they read (Q, K and V share one), in graph order."""
    groups: dict[str, list[Any]] = {}
    for node in weight_matmuls(model):
        groups.setdefault(node.input[0], []).append(node)
    return groups


def bias_add(node: Any, users: dict[str, list[Any]], inits: dict[str, Any]) -> Any | None:
    """The lone Add with a 1-D initializer that consumes `node`'s output (the layer's bias), if any."""
    following = users.get(node.output[0], [])
    if len(following) == 1 and following[0].op_type == "Add":
        if any(name in inits and len(inits[name].dims) == 1 for name in following[0].input):
            return following[0]
    return None


def replace_nodes(model: Any, nodes: Iterable[Any]) -> None:
    """Make `nodes` (in topological order) the graph's node list."""
    kept = list(nodes)  # may be a view of the list being replaced
    del model.graph.node[:]
    model.graph.node.extend(kept)


def expand_nodes(model: Any, expand: Callable[[Any], Sequence[Any]], head: Sequence[Any] = ()) -> None:
    """Rebuild the node list: `head`, then `expand(node)` in place of each node (itself, others, or nothing)."""
    nodes = list(head)
    for node in list(model.graph.node):
        nodes.extend(expand(node))
    replace_nodes(model, nodes)


def ensure_opset(model: Any, domain: str, version: int = 1) -> None:
    """Declare `domain` (e.g. com.microsoft for onnxruntime's contrib ops) unless the model already does."""
    from onnx import helper

    if not any(o.domain == domain for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(domain, version))


def prune_initializers(model: Any) -> None:
    """Drop initializers no node reads, in place.

    Only the unused ones are deleted: clearing the field and extending it with the kept ones would copy every
    weight once (protobuf copies a message into a repeated field), and each graph pass of an INT8 trial prunes:
    all-mpnet-base-v2's int8-openvino build peaked 1.8 GB above the graph it started from."""
    used = {name for node in model.graph.node for name in node.input}
    unused = [index for index, init in enumerate(model.graph.initializer) if init.name not in used]
    for index in reversed(unused):
        del model.graph.initializer[index]


def prune_dead_nodes(model: Any) -> None:
    """Drop nodes whose outputs nothing reads (left behind by rewrites), then unused initializers."""
    outputs = {o.name for o in model.graph.output}
    nodes = list(model.graph.node)
    while True:
        used = {name for node in nodes for name in node.input} | outputs
        kept = [node for node in nodes if any(out in used for out in node.output)]
        if len(kept) == len(nodes):
            break
        nodes = kept
    replace_nodes(model, nodes)
    prune_initializers(model)


def store_large_tables_as_fp16(model: Any, min_elements: int = 1 << 20) -> int:
    """Store big fp32 initializers still left (embedding tables) in fp16 behind a Cast; returns how many.

    onnxruntime folds Cast(initializer) once at session start, so the file shrinks and the run time does not
    change; the tables feed LayerNorm-ed embeddings, where fp16 storage rounding (2^-11) is far below INT8 noise.
    """
    import onnx
    from onnx import numpy_helper

    casts = []
    for index, init in enumerate(model.graph.initializer):
        elements = int(np.prod(init.dims)) if init.dims else 1
        if init.data_type != onnx.TensorProto.FLOAT or elements < min_elements:
            continue
        half = numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16), init.name + "_fp16")
        casts.append(onnx.helper.make_node("Cast", [half.name], [init.name], to=onnx.TensorProto.FLOAT,
                                           name=init.name + "_to_fp32"))
        model.graph.initializer[index].CopyFrom(half)
    if casts:
        replace_nodes(model, casts + list(model.graph.node))
    return len(casts)


@dataclass(frozen=True)
class QuantizedWeight:
    """A weight matrix in INT8, one scale (and, unsigned, one zero point) per output column or per tensor."""

    values: np.ndarray  # int8 (symmetric) or uint8 (asymmetric)
    scale: np.ndarray  # float32
    zero_point: np.ndarray | None  # uint8, only for unsigned weights

    def dequantize(self) -> np.ndarray:
        """What the INT8 kernel effectively multiplies by (for simulating its error)."""
        values = self.values.astype(np.float32)
        if self.zero_point is not None:
            values = values - self.zero_point.astype(np.float32)
        return values * self.scale


def quantize_weight(weight: np.ndarray, signed: bool, per_channel: bool) -> QuantizedWeight:
    """Symmetric s8 (`signed`) or asymmetric u8 weights, per output column when `per_channel`.

    The one implementation of the arithmetic: the DynamicQuantizeMatMul weights (int8.py) and the error
    simulation that ranks the MatMuls (sensitivity.py) must agree to the last rounding.
    """
    weight = weight.astype(np.float32)
    if signed:
        peak = np.abs(weight).max(axis=0) if per_channel else np.abs(weight).max(keepdims=True)
        scale = np.maximum(peak / 127.0, 1e-12).astype(np.float32)
        return QuantizedWeight(np.clip(np.round(weight / scale), -127, 127).astype(np.int8), scale, None)
    low = np.minimum(weight.min(axis=0) if per_channel else weight.min(keepdims=True), 0.0)
    high = np.maximum(weight.max(axis=0) if per_channel else weight.max(keepdims=True), 0.0)
    scale = np.maximum((high - low) / 255.0, 1e-12).astype(np.float32)
    zero_point = np.clip(np.round(-low / scale), 0, 255).astype(np.uint8)
    quantized = np.clip(np.round(weight / scale) + zero_point, 0, 255).astype(np.uint8)
    return QuantizedWeight(quantized, scale, zero_point)
