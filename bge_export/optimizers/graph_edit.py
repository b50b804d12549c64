"""Small, exact rewrites of ONNX graphs used before INT8 quantization, and the activation statistics they need.

All rewrites keep the function the graph computes (up to float rounding); they only move work between the INT8
and the float paths:
- `merge_shared_input_matmuls`: Q, K and V read one tensor; one MatMul [H, 3H] + Split quantizes it once.
- `split_outlier_channels`: a few hidden channels carry activations 10-50x larger than the rest (at delimiter
  tokens, in BERT-family models). One per-tensor INT8 scale per MatMul input makes those channels set the step
  for all, which is what ruins INT8 fidelity. X @ W = (X * keep) @ W' + X[..., O] @ W[O, :] sends the outlier
  channels O through a tiny float MatMul and the rest through INT8 (the LLM.int8() decomposition, per graph).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np


def initializers(model: "object") -> dict[str, "object"]:
    return {init.name: init for init in model.graph.initializer}


def consumers(model: "object") -> dict[str, list["object"]]:
    found: dict[str, list[object]] = {}
    for node in model.graph.node:
        for name in node.input:
            found.setdefault(name, []).append(node)
    return found


def weight_matmuls(model: "object") -> list["object"]:
    """MatMul nodes whose weight is a 2-D float initializer (the quantizable ones)."""
    import onnx

    inits = initializers(model)
    return [
        n for n in model.graph.node
        if n.op_type == "MatMul" and n.input[1] in inits and len(inits[n.input[1]].dims) == 2
        and inits[n.input[1]].data_type == onnx.TensorProto.FLOAT
    ]


def bias_add(node: "object", users: dict[str, list["object"]], inits: dict[str, "object"]) -> "object | None":
    """The lone Add with a 1-D initializer that consumes `node`'s output (the layer's bias), if any."""
    following = users.get(node.output[0], [])
    if len(following) == 1 and following[0].op_type == "Add":
        if any(name in inits and len(inits[name].dims) == 1 for name in following[0].input):
            return following[0]
    return None


def capture(model: "object", tensors: Sequence[str], batches: Sequence[dict[str, np.ndarray]],
            visit: Callable[[str, np.ndarray, dict[str, np.ndarray]], None], threads: int | None = None) -> None:
    """Run the graph on `batches` and hand each named intermediate tensor to `visit(name, value, batch)`."""
    import onnx
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    existing = {o.name for o in probe.graph.output}
    for name in tensors:
        if name not in existing:
            probe.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep the tensors we read
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    graph_inputs = [i.name for i in session.get_inputs()]
    for batch in batches:
        for name, value in zip(tensors, session.run(list(tensors), {k: batch[k] for k in graph_inputs})):
            visit(name, value, batch)


def channel_abs_max(model: "object", batches: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Per-channel max |x| of every weight MatMul input, padding rows included (the run-time quantizer sees them)."""
    tensors = sorted({n.input[0] for n in weight_matmuls(model)})
    result: dict[str, np.ndarray] = {}

    def visit(name: str, value: np.ndarray, _batch: dict[str, np.ndarray]) -> None:
        peak = np.abs(value.reshape(-1, value.shape[-1])).max(axis=0)
        result[name] = np.maximum(result[name], peak) if name in result else peak

    capture(model, tensors, batches, visit)
    return result


def merge_shared_input_matmuls(model: "object") -> int:
    """MatMuls (+ bias Adds) reading one tensor become one MatMul + Add + Split. Returns how many groups merged."""
    from onnx import helper, numpy_helper

    inits, users = initializers(model), consumers(model)
    groups: dict[str, list[object]] = {}
    for node in weight_matmuls(model):
        groups.setdefault(node.input[0], []).append(node)
    replaced: set[str] = set()
    insert_before: dict[str, list[object]] = {}
    merged = 0
    for source, nodes in groups.items():
        if len(nodes) < 2:
            continue
        adds = [bias_add(n, users, inits) for n in nodes]
        weights = [numpy_helper.to_array(inits[n.input[1]]) for n in nodes]
        stem = nodes[0].name + "_merged"
        model.graph.initializer.append(numpy_helper.from_array(np.concatenate(weights, axis=1), stem + "_W"))
        new_nodes = [helper.make_node("MatMul", [source, stem + "_W"], [stem + "_mm"], name=stem)]
        result, outputs = stem + "_mm", [n.output[0] for n in nodes]
        if all(a is not None for a in adds):
            biases = [numpy_helper.to_array(inits[next(i for i in a.input if i in inits)]) for a in adds]
            model.graph.initializer.append(numpy_helper.from_array(np.concatenate(biases), stem + "_B"))
            new_nodes.append(helper.make_node("Add", [result, stem + "_B"], [stem + "_biased"], name=stem + "_bias"))
            result, outputs = stem + "_biased", [a.output[0] for a in adds]
            replaced |= {a.name for a in adds}
        sizes = numpy_helper.from_array(np.array([w.shape[1] for w in weights], dtype=np.int64), stem + "_sizes")
        model.graph.initializer.append(sizes)
        new_nodes.append(helper.make_node("Split", [result, sizes.name], outputs, name=stem + "_split", axis=-1))
        replaced |= {n.name for n in nodes}
        insert_before[nodes[0].name] = new_nodes
        merged += 1
    _rebuild(model, lambda node: insert_before.get(node.name, []) + ([] if node.name in replaced else [node]))
    prune_initializers(model)
    return merged


@dataclass(frozen=True)
class OutlierSplit:
    tensor: str
    channels: list[int]
    float_matmuls: list[str]


def split_outlier_channels(model: "object", channel_max: dict[str, np.ndarray], ratio: float = 4.0,
                           max_channels: int = 16) -> list[OutlierSplit]:
    """Route channels whose max |x| exceeds `ratio` x the median channel's through a float side path."""
    from onnx import helper, numpy_helper

    inits, users = initializers(model), consumers(model)
    producers = {out: node for node in model.graph.node for out in node.output}
    groups: dict[str, list[object]] = {}
    for node in weight_matmuls(model):
        groups.setdefault(node.input[0], []).append(node)
    after: dict[str, list[object]] = {}
    splits: list[OutlierSplit] = []
    for source, nodes in groups.items():
        peaks = channel_max.get(source)
        if peaks is None:
            continue
        threshold = ratio * float(np.median(peaks))
        channels = sorted(int(c) for c in np.argsort(-peaks)[:max_channels] if peaks[c] > threshold)
        if not channels:
            continue
        keep = np.ones(peaks.shape[0], dtype=np.float32)
        keep[channels] = 0.0
        model.graph.initializer.extend([numpy_helper.from_array(keep, source + "_inlier_mask"),
                                        numpy_helper.from_array(np.array(channels, dtype=np.int64), source + "_outlier_idx")])
        side = [helper.make_node("Mul", [source, source + "_inlier_mask"], [source + "_inliers"], name=source + "_inliers"),
                helper.make_node("Gather", [source, source + "_outlier_idx"], [source + "_outliers"],
                                 name=source + "_outliers", axis=-1)]
        float_names = []
        for node in nodes:
            weight = numpy_helper.to_array(inits[node.input[1]]).copy()
            model.graph.initializer.append(numpy_helper.from_array(weight[channels, :].copy(), node.input[1] + "_outlier_rows"))
            weight[channels, :] = 0.0
            inits[node.input[1]].CopyFrom(numpy_helper.from_array(weight, node.input[1]))
            anchor = bias_add(node, users, inits) or node
            final = anchor.output[0]
            anchor.output[0] = final + "_inlier_part"
            float_name = node.name + "_outlier_matmul"
            after.setdefault(anchor.name, []).extend([
                helper.make_node("MatMul", [source + "_outliers", node.input[1] + "_outlier_rows"],
                                 [final + "_outlier_part"], name=float_name),
                helper.make_node("Add", [final + "_inlier_part", final + "_outlier_part"], [final],
                                 name=node.name + "_outlier_add"),
            ])
            node.input[0] = source + "_inliers"
            float_names.append(float_name)
        producer = producers.get(source)
        after.setdefault(producer.name if producer is not None else "", [])[:0] = side
        splits.append(OutlierSplit(source, channels, float_names))
    head = after.get("", [])
    _rebuild(model, lambda node: [node] + after.get(node.name, []), head)
    return splits


def store_large_tables_as_fp16(model: "object", min_elements: int = 1 << 20) -> int:
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
    for node in reversed(casts):
        model.graph.node.insert(0, node)
    return len(casts)


def prune_initializers(model: "object") -> None:
    used = {name for node in model.graph.node for name in node.input}
    kept = [init for init in model.graph.initializer if init.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)


def _rebuild(model: "object", expand: Callable[["object"], list["object"]], head: Sequence["object"] = ()) -> None:
    """Replace the node list, keeping topological order (new nodes go where `expand` puts them)."""
    nodes = list(head)
    for node in list(model.graph.node):
        nodes.extend(expand(node))
    del model.graph.node[:]
    model.graph.node.extend(nodes)
