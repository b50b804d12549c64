"""FP16 conversion: fp16 weights and activations, with attention cores and the fragile reductions kept in fp32.

Inputs stay int64 and the output fp32 (keep_io_types). The graph itself says which precision every op runs in;
`Fp16Report.to_dict()` (the manifest entry's options) lists what stayed fp32 and why, counted from the written
graph. FP16: every weight MatMul (the Q/K/V projections included), the bias and residual Adds, GELU
(BiasGelu/Gelu/FastGelu) and the data movement between them. FP32, with Casts around:

- Attention cores, softmax(Q·Kᵀ·scale + mask/bias)·V: `MultiHeadAttention`; onnxruntime's fused `Attention`
  carries the Q/K/V projection inside, so it is split here into MatMul + Add + Split (fp16) and a
  MultiHeadAttention core (fp32) with the same mask input, num_heads, scale and mask_filter_value (identical in
  fp32, tested); unfused graphs keep Softmax with its score MatMul, scale, mask Add and P·V MatMul. Why: the
  exported padding mask is finfo(float32).min = -3.4e38, which fp16 cannot hold (the converter clamps it to
  -65504, a cast gives -inf); a fused op's graph type says nothing about how a kernel computes softmax inside, so
  an fp16 core is whatever each execution provider makes of it; and it is cheap: the core is 4·S·d of the
  24·d² + 4·S·d multiply-adds per token and layer (about 10% at S=256, d=384). onnxruntime's CPU provider has no
  fp16 Attention/MultiHeadAttention kernel at all (contrib_ops/cpu registers them for float only).
- Everything that only feeds an attention core's mask or bias (MPNet's relative position buckets come from
  Log/Div then a floor to integers; in fp16 the bucket boundaries move), found by walking up from the core.
- LayerNorm statistics (LayerNormalization, Skip/Embed/Simplified LayerNormalization).
- The pooling + L2 normalization tail (sums over up to 512 tokens and a norm) and other reductions.

Measured with the numpy fp16 reference evaluation (`bge_export.quality.fp16_reference`: every fp16 tensor
rounded, GEMMs accumulate in fp32 like cuBLAS) on all-MiniLM-L6-v2, the 96 built-in check texts (5-256 tokens)
against PyTorch fp32: cosine min 0.9999990, mean 0.9999995 (onnxruntime CPU on the same file, which computes in
fp32: 0.9999996 / 0.9999998). The attention core itself is not what limits fp16 here: the same evaluation with
the core's scores, exp, sum and P·V in fp16 arithmetic also gave min 0.999999 (0.9999993 to the fp32-core run).
So the fp32 core is a portability choice (what the graph promises every execution provider), not a measured
accuracy need on MiniLM. The mask/bias chain is a measured one: on a tiny random MPNet (onnxruntime CPU, ten
varied texts) min cosine was 0.99996 with it in fp16 and is 0.9999997 with it in fp32.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

import numpy as np

if TYPE_CHECKING:
    from onnx import ModelProto

from bge_export.graph.edit import consumers, store_large_tables_as_fp16
from bge_export.graph.storage import fits_inline, weightless

# Op types that always stay fp32, and why (this table goes into the manifest entry).
FP32_OP_REASONS: dict[str, str] = {
    "MultiHeadAttention": "attention core: softmax and its -3.4e38 mask in fp32",
    "Attention": "attention core (only when it cannot be split off its Q/K/V projection)",
    "Softmax": "attention core (unfused graphs)",
    "LayerNormalization": "mean/variance over the hidden size",
    "SkipLayerNormalization": "mean/variance over the hidden size",
    "EmbedLayerNormalization": "mean/variance over the hidden size",
    "SimplifiedLayerNormalization": "mean/variance over the hidden size",
    "ReduceSum": "pooling sums over up to 512 tokens",
    "ReduceMean": "pooling / statistics",
    "ReduceMax": "max pooling tail",
    "ReduceL2": "L2 normalization",
    "Div": "pooling mean and normalization",
    "Sqrt": "normalization", "Pow": "normalization", "Clip": "norm floor (1e-12 underflows fp16)",
    "Where": "masks built from finfo(float32).min",
    "Range": "index arithmetic", "ArgMax": "index arithmetic", "CumSum": "position ids",
    "Expand": "mask broadcasting", "Cast": "type changes", "GatherElements": "index arithmetic",
}
FP32_OPS = tuple(FP32_OP_REASONS)
CORE_REASON = ("attention cores (softmax(QK^T*scale + mask)V) and everything feeding only their mask/bias stay fp32: "
               "the -3.4e38 mask constant does not fit fp16, and an fp32 core makes every execution provider "
               "compute softmax in fp32; onnxruntime's fused Attention is split into an fp16 Q/K/V projection "
               "(MatMul + Add + Split) and an fp32 MultiHeadAttention core")
_ELEMENTWISE = {"Add", "Sub", "Mul", "Div", "Where"}
_DATA_MOVEMENT = {"Cast", "Gather", "Reshape", "Flatten", "Unsqueeze", "Squeeze", "Transpose", "Split", "Concat",
                  "Shape", "Expand", "Constant", "Identity", "Slice", "NonZero", "GatherND", "ScatterND"}
_MS = "com.microsoft"


@dataclass
class Fp16Report:
    kept_fp32_ops: dict[str, int]  # compute op type -> nodes that run on fp32 data in the written graph
    fp16_ops: dict[str, int]  # compute op type -> nodes that run on fp16 data
    attention: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return {
            "kept_fp32_op_types": {op: FP32_OP_REASONS[op] for op in FP32_OPS if op != "Cast"},
            "kept_fp32_ops": self.kept_fp32_ops,
            "fp16_ops": self.fp16_ops,
            "attention_cores": {"precision": "fp32", "why": CORE_REASON, **self.attention},
        }


def convert_fp16(source: str | Path, target: str | Path, *, fp32_ops: Sequence[str] = FP32_OPS,
                 attention_matmuls_fp32: bool = True,
                 fp32_nodes: Callable[[Any], Iterable[str]] | None = None) -> Fp16Report:
    """`fp32_ops`, `attention_matmuls_fp32` and `fp32_nodes` (names picked from the loaded graph) let a target
    choose what stays fp32; the defaults are the onnxruntime artifact's choice (tensorrt_ready.py picks its own).
    With attention_matmuls_fp32=False, the Q·Kᵀ and P·V MatMuls run fp16 and only the scale, mask Add and
    Softmax between them stay fp32."""
    import onnx
    from onnxruntime.transformers.onnx_model import OnnxModel

    logging.getLogger("onnxruntime.transformers").setLevel(logging.ERROR)
    graph_model = onnx.load(str(source))
    _name_all_nodes(graph_model)
    split = split_fused_attention(graph_model)
    cores = attention_core_nodes(graph_model)
    feeding = mask_and_bias_nodes(graph_model, cores)  # found with the MatMuls still counted as core
    if not attention_matmuls_fp32:
        matmuls = {n.name for n in graph_model.graph.node if n.op_type == "MatMul"}
        cores -= matmuls
    extra = set(fp32_nodes(graph_model)) if fp32_nodes is not None else set()
    model = OnnxModel(graph_model)
    _to_float16(model, keep_io_types=True, op_block_list=list(fp32_ops), node_block_list=sorted(cores | feeding | extra))
    store_large_tables_as_fp16(model.model)
    model.save_model_to_file(str(target), use_external_data_format=not fits_inline(model.model))  # .data past 2 GB
    fp16, fp32 = compute_precisions(model.model)
    attention = {"split_from_attention": split, "core_nodes": len(cores), "mask_and_bias_nodes": len(feeding)}
    return Fp16Report(kept_fp32_ops=dict(fp32), fp16_ops=dict(fp16), attention=attention)


def _to_float16(model: Any, **options: Any) -> None:
    """onnxruntime's `OnnxModel.convert_float_to_float16`. Its symbolic shape inference copies the whole graph,
    weights included, several times (past 14 GB on a 2.3 GB bge-m3-sized graph), so past protobuf's 2 GB the same
    steps run with the types inferred on a weightless copy."""
    if fits_inline(model.model):
        model.convert_float_to_float16(**options)
        return
    from onnx import TensorProto
    from onnxruntime.transformers.float16 import convert_float_to_float16
    from onnxruntime.transformers.shape_infer_helper import SymbolicShapeInferenceHelper

    light = weightless(model.model)
    typed = SymbolicShapeInferenceHelper(light).infer_shapes(light, auto_merge=True, guess_output_rank=False)
    known = {value.name for value in model.model.graph.value_info}
    for value in typed.graph.value_info:  # element types only, as onnxruntime merges them
        if value.name and value.name not in known and value.type.tensor_type.elem_type != TensorProto.UNDEFINED:
            added = model.model.graph.value_info.add()
            added.CopyFrom(value)
            added.type.tensor_type.ClearField("shape")
    model.initialize(convert_float_to_float16(model.model, disable_shape_infer=True, **options))
    model.disable_shape_inference()  # remove_useless_cast_nodes reads those types instead (after initialize)
    model.remove_cascaded_cast_nodes()
    model.remove_useless_cast_nodes()


def split_fused_attention(model: "ModelProto") -> int:
    """com.microsoft Attention -> MatMul + Add + Split (the projection) + MultiHeadAttention (the core).

    Only the form our fusion writes is split (input, weight, bias, optional mask; no past, no attention_bias, no
    unidirectional, equal Q/K/V sizes); any other Attention is left whole (and kept fp32 by FP32_OPS).
    """
    from onnx import helper, numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    nodes, count = [], 0
    for node in model.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        extra = [name for name in node.input[4:] if name]
        sizes = attrs.get("qkv_hidden_sizes")
        if (node.op_type != "Attention" or node.domain != _MS or extra or node.input[1] not in inits
                or attrs.get("unidirectional", 0) or attrs.get("do_rotary", 0)
                or (sizes is not None and len(set(sizes)) != 1) or set(attrs) - {"num_heads", "scale",
                                                                                 "mask_filter_value",
                                                                                 "qkv_hidden_sizes"}):
            nodes.append(node)
            continue
        width = int(inits[node.input[1]].dims[1]) // 3
        stem = node.name + "_split"
        projected = stem + "/qkv"
        nodes.append(helper.make_node("MatMul", [node.input[0], node.input[1]], [projected], name=stem + "/MatMul"))
        if len(node.input) > 2 and node.input[2]:
            nodes.append(helper.make_node("Add", [projected, node.input[2]], [stem + "/qkv_bias"],
                                          name=stem + "/Add"))
            projected = stem + "/qkv_bias"
        model.graph.initializer.append(numpy_helper.from_array(np.array([width] * 3, np.int64), stem + "/sizes"))
        q, k, v = stem + "/q", stem + "/k", stem + "/v"
        nodes.append(helper.make_node("Split", [projected, stem + "/sizes"], [q, k, v], name=stem + "/Split",
                                      axis=-1))
        mask = node.input[3] if len(node.input) > 3 else ""
        core_inputs = [q, k, v, "", mask] if mask else [q, k, v]
        kept = {name: attrs[name] for name in ("num_heads", "scale", "mask_filter_value") if name in attrs}
        nodes.append(helper.make_node("MultiHeadAttention", core_inputs, list(node.output), name=node.name + "_core",
                                      domain=_MS, **kept))
        count += 1
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return count


def attention_core_nodes(model: "ModelProto") -> set[str]:
    """Names of the nodes computing softmax(Q·Kᵀ·scale + mask)·V: fused cores, or Softmax and its neighbours."""
    producers = {out: node for node in model.graph.node for out in node.output}
    users = consumers(model)
    constants = {i.name for i in model.graph.initializer}
    cores = {n.name for n in model.graph.node if n.domain == _MS and n.op_type in ("Attention", "MultiHeadAttention")}
    for softmax in (n for n in model.graph.node if n.op_type == "Softmax"):
        cores.add(softmax.name)
        pending = [(softmax.input[0], 0)]
        while pending:  # up: scale, mask Add, ... to the Q·Kᵀ MatMul
            tensor, depth = pending.pop()
            node = producers.get(tensor)
            if node is None or depth > 6:
                continue
            if node.op_type == "MatMul" and not any(i in constants for i in node.input):
                cores.add(node.name)
            elif node.op_type in _ELEMENTWISE and node.op_type != "Where":
                cores.add(node.name)
                pending.extend((i, depth + 1) for i in node.input if i)
        following = list(users.get(softmax.output[0], []))
        while following:  # down: the P·V MatMul (past a Cast or Dropout)
            node = following.pop()
            if node.op_type == "MatMul":
                cores.add(node.name)
            elif node.op_type in ("Cast", "Dropout", "Identity"):
                following.extend(users.get(node.output[0], []))
    return cores


def mask_and_bias_nodes(model: "ModelProto", cores: set[str]) -> set[str]:
    """Nodes all of whose outputs end only in attention cores' mask/bias inputs (or in other such nodes)."""
    producers = {out: node for node in model.graph.node for out in node.output}
    users = consumers(model)
    outputs = {o.name for o in model.graph.output}
    by_name = {n.name: n for n in model.graph.node}
    side: list[str] = []
    for name in cores:
        node = by_name[name]
        if node.domain == _MS:  # Attention/MHA: key_padding_mask / mask_index, attention_bias
            masks = (3, 5) if node.op_type == "Attention" else (4, 5)
            side.extend(node.input[i] for i in masks if i < len(node.input) and node.input[i])
        elif node.op_type in _ELEMENTWISE:
            side.extend(i for i in node.input if i and (i not in producers or producers[i].name not in cores))
    candidates: set[str] = set()
    pending = list(side)
    while pending:
        node = producers.get(pending.pop())
        if node is None or node.name in candidates or node.name in cores:
            continue
        candidates.add(node.name)
        pending.extend(i for i in node.input if i)
    changed = True
    while changed:  # the largest set closed under "every reader is a core or in the set"
        changed = False
        for name in list(candidates):
            node = by_name[name]
            readers = [u.name for out in node.output for u in users.get(out, [])]
            if any(out in outputs for out in node.output) or any(r not in cores and r not in candidates
                                                                  for r in readers):
                candidates.discard(name)
                changed = True
    return candidates


def compute_precisions(model: "ModelProto") -> tuple[Counter[str], Counter[str]]:
    """(fp16, fp32) counts of compute nodes by op type, from the float type of each node's inputs."""
    import onnx

    floats = {onnx.TensorProto.FLOAT: "fp32", onnx.TensorProto.FLOAT16: "fp16"}
    dtype = {i.name: i.data_type for i in model.graph.initializer}
    for value in list(model.graph.input) + list(model.graph.value_info) + list(model.graph.output):
        dtype.setdefault(value.name, value.type.tensor_type.elem_type)
    fp16: Counter[str] = Counter()
    fp32: Counter[str] = Counter()
    for node in model.graph.node:
        known = [dtype[i] for i in node.input if i and dtype.get(i) in floats]
        attrs = {a.name: a for a in node.attribute}
        if node.op_type == "Cast":
            out_type = attrs["to"].i
        elif node.op_type == "Constant" and "value" in attrs:
            out_type = attrs["value"].t.data_type
        else:
            out_type = known[-1] if known else None
        for out in node.output:
            if out_type is not None and out not in dtype:
                dtype[out] = out_type
        if known and node.op_type not in _DATA_MOVEMENT:
            (fp16 if onnx.TensorProto.FLOAT16 in known else fp32)[node.op_type] += 1
    return fp16, fp32


def _name_all_nodes(model: "ModelProto") -> None:
    """node_block_list works by node name: give nameless nodes unique ones."""
    taken = {n.name for n in model.graph.node if n.name}
    for index, node in enumerate(model.graph.node):
        if not node.name:
            name = f"{node.op_type}_fp16_{index}"
            while name in taken:
                name += "_"
            node.name = name
            taken.add(name)
