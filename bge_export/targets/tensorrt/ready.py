"""TensorRT-ready graphs: what the GPU host's builder gets, made here from the PLAIN export (onnx/model.onnx).

Never from onnx/model_optimized.onnx: its com.microsoft ops (Attention, SkipLayerNormalization, ...) are not ONNX,
and TensorRT's parser rejects them (tensorrt_ops.py says so by name). Every graph gets two exact rewrites first:
- Integer CumSum (MPNet/RoBERTa position ids from the padding mask) runs on floats between two Casts: the
  parser's table lists CumSum for FP32/FP16/BF16 only. Counts up to 512 are exact in fp32.
- The attention scale (Q·Kᵀ * 1/sqrt(d), or / sqrt(d)) moves into the Q projection's weight and bias: TensorRT's
  fused attention wants Q (or K) scaled before the first batched MatMul, "for numeric stability and
  performance" (TensorRT guide, Fused Attention), and fp16 scores then stay in range.

FP16 (one graph for TensorRT 10.x and 11.x: 11.x builds strongly typed networks, where the graph's types are the
precisions; 10.x builds the same graph strongly typed too, which is what the engine helper does): every MatMul in
fp16, the attention products Q·Kᵀ and P·V included; fp32 for the mask Add and Softmax between them, the
LayerNorm statistics, the pooling + L2-normalize tail, and the mask/position-bias chains (their -3.4e38 mask
constant does not fit fp16; MPNet's position buckets move in fp16). Why the attention MatMuls go fp16 here, unlike
onnx/model_fp16.onnx (graph/fp16.py keeps whole cores fp32 for onnxruntime's sake): TensorRT computes them on
Tensor Cores with fp32 accumulation and fuses BMM + softmax + BMM into one attention kernel only when the
products are fp16/bf16; an fp32 core would forbid that fusion and cost ~10% of the layer's multiply-adds at full
fp32 rate. The fp32 part is what the numerics need: scores are accumulated in fp32 by the GEMM, the scaled scores
then are exponentiated and summed in fp32; the fp16 numpy reference (validate/fp16_reference.py, every fp16
tensor rounded) measures the result (graph_numerics in the manifest entry).

INT8 (explicit quantization only: TensorRT 11 has no implicit INT8 or calibrators): the static QDQ path and its
accuracy-aware search (accuracy_aware.quantize_static_accuracy_aware), which already emits what TensorRT's Q/DQ
rules ask for: Q/DQ only on the two inputs of weighted MatMuls (int8.quantize_static_qdq; every other reader
keeps the float tensor), weights symmetric INT8 per output channel (DequantizeLinear axis 1 of [K, N]),
activations symmetric INT8 per tensor, zero points 0, no Q/DQ on the attention products (two activations, no
weight: TensorRT would need the softmax output quantized, which costs fidelity) nor on outputs. MatMuls the
search keeps in float, SmoothQuant's Mul and the FFN-out outlier side paths are plain ONNX. The float parts stay
fp32 in the graph: on 10.x the engine helper may add the FP16 builder flag (weakly typed), on 11.x they run fp32.

int32 token inputs (`int32_inputs`): graph inputs typed int32 with one Cast to int64 after each, so the rest of the
graph is untouched and TensorRT folds the Casts; Triton, TensorRT bindings and Core ML all prefer int32.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from bge_export.graph.accuracy_aware import quantize_static_accuracy_aware
from bge_export.graph.fp16 import convert_fp16
from bge_export.graph.nodes import GraphIndex, consumers, overwrite_initializer, prune_dead_nodes
from bge_export.graph.storage import infer_shapes, save_graph

PRECISIONS = ("fp32", "fp16", "int8")
FOLDER = "tensorrt"
TRT_FP32_OPS: dict[str, str] = {
    "LayerNormalization": "mean/variance over the hidden size",
    "Softmax": "attention probabilities: exp and sum in fp32 (the scores come from an fp32-accumulating GEMM)",
    "ReduceSum": "pooling sums over up to 512 tokens", "ReduceMean": "pooling", "ReduceMax": "max pooling",
    "ReduceL2": "L2 normalization", "Where": "masks built from finfo(float32).min", "Range": "index arithmetic",
    "CumSum": "position ids", "Expand": "mask broadcasting", "Cast": "type changes",
    "ArgMax": "index arithmetic", "GatherElements": "index arithmetic",
}
ATTENTION_WHY = ("Q·Kᵀ and P·V MatMuls fp16 (Tensor Cores, fp32 accumulation; TensorRT fuses BMM-softmax-BMM "
                 "only on fp16/bf16 products); the mask Add and Softmax between them fp32; the attention scale "
                 "folded into the Q projection")
TAIL_WHY = "pooling and L2 normalization: every node after the first pooling reduction"
_POOLING_REDUCES = ("ReduceSum", "ReduceMean", "ReduceMax", "ReduceL2")


def graph_path(precision: str) -> str:
    """Where a precision's TensorRT-ready graph lives in the output folder."""
    return f"{FOLDER}/model_{precision}.onnx"


@dataclass
class Int8Search:
    """What the INT8 accuracy-aware search needs: calibration text (pairs, for a cross-encoder), and what it judges
    trials on (graph/judge.py `search_inputs`: held-apart text with its fp32 embeddings, or a reranker's judge)."""

    spec: Any
    tokenizer: Any
    calibration_texts: Sequence[Any]
    judged_on: dict[str, Any]
    min_cosine: float | None = None
    method: str = "percentile"


@dataclass
class ReadyGraph:
    """How one TensorRT-ready graph was made; `to_dict()` goes into the manifest entry's options["graph_build"]."""

    precision: str
    rewrites: dict[str, int]
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"from": "onnx/model.onnx", "precision": self.precision, "rewrites": self.rewrites, **self.details}


def prepare_graph(plain: Path, target: Path, precision: str, int32_inputs: bool = False,
                  int8: Int8Search | None = None, progress: Any = None,
                  embedding_dim: int | None = None) -> ReadyGraph:
    """Plain fp32 export -> the TensorRT-ready graph of `precision` at `target`.

    `embedding_dim` fixes the output's second axis where the export left it symbolic (CLS pooling exports
    write e.g. 'Divsentence_embedding_dim_1'): only batch and sequence may vary in a TensorRT-ready graph."""
    import onnx

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    model = onnx.load(str(plain))
    rewrites = make_tensorrt_friendly(model)
    if embedding_dim is not None:
        rewrites["output_dims_fixed"] = fix_output_dims(model, embedding_dim)
    target.parent.mkdir(parents=True, exist_ok=True)
    details: dict[str, Any] = {}
    if precision == "int8" and int8 is None:
        raise ValueError("an INT8 graph needs the calibration and selection texts (int8=Int8Search(...))")
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".trt-") as scratch:
        staged = target if precision == "fp32" else Path(scratch) / "friendly.onnx"
        save_graph(model, staged)  # external data (staged.data) past 2 GB
        del model  # the converters below load their own copy
        if precision == "fp16":
            details = _fp16(staged, target)
        elif precision == "int8":
            details = _int8(staged, target, int8, progress)
    if int32_inputs:
        model = onnx.load(str(target))
        rewrites["int32_inputs"] = use_int32_inputs(model)
        save_graph(model, target)
    return ReadyGraph(precision, rewrites, details)


def make_tensorrt_friendly(model: Any) -> dict[str, int]:
    """The exact rewrites every TensorRT-ready graph gets (see the module docstring)."""
    return {"float_cumsum": float_cumsum(model), "attention_scale_folded": fold_attention_scale(model)}


def fix_output_dims(model: Any, embedding_dim: int) -> int:
    """Every graph output [batch, <anything>] -> [batch, embedding_dim]; returns how many dims changed."""
    changed = 0
    for output in model.graph.output:
        dims = output.type.tensor_type.shape.dim
        if len(dims) == 2 and (dims[1].dim_param or dims[1].dim_value != embedding_dim):
            dims[1].Clear()
            dims[1].dim_value = embedding_dim
            changed += 1
        if dims and dims[0].dim_param != "batch":
            dims[0].Clear()
            dims[0].dim_param = "batch"
            changed += 1
    return changed


def float_cumsum(model: Any) -> int:
    """CumSum on an integer tensor -> Cast to float, CumSum, Cast back (exact below 2^24)."""
    import onnx
    from onnx import helper

    inferred = infer_shapes(model)  # any size: a bge-m3-sized graph is over protobuf's 2 GB
    dtypes = {v.name: v.type.tensor_type.elem_type for v in [*inferred.graph.value_info, *inferred.graph.input]}
    floats = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16)
    nodes, count = [], 0
    for node in model.graph.node:
        dtype = dtypes.get(node.input[0]) if node.op_type == "CumSum" else None
        if not dtype or dtype in floats:
            nodes.append(node)
            continue
        stem = (node.name or node.output[0]) + "_float"
        nodes.append(helper.make_node("Cast", [node.input[0]], [stem + "/in"], name=stem + "/Cast_in",
                                      to=onnx.TensorProto.FLOAT))
        summed = helper.make_node("CumSum", [stem + "/in", node.input[1]], [stem + "/sum"], name=stem + "/CumSum")
        summed.attribute.extend(node.attribute)
        nodes.append(summed)
        nodes.append(helper.make_node("Cast", [stem + "/sum"], list(node.output), name=stem + "/Cast_out", to=dtype))
        count += 1
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return count


def fold_attention_scale(model: Any) -> int:
    """Q·Kᵀ then * s (or / c) -> (Q scaled by s)·Kᵀ, s folded into the Q projection's weight and bias.

    Only when the whole path is MatMul(x, W) -> Add(b) -> Reshape/Transpose -> Q·Kᵀ, each tensor read once and
    W, b read by nothing else; any other form is left as it is (the graph stays correct, only unfused)."""
    from onnx import numpy_helper

    graph = GraphIndex.of(model)
    users, writers, inits = graph.consumers, graph.producers, graph.initializers
    removed: set[str] = set()
    renamed: dict[str, str] = {}
    for scale_node in model.graph.node:
        if scale_node.op_type not in ("Mul", "Div") or len(scale_node.input) != 2:
            continue
        product = writers.get(scale_node.input[0])
        constant = graph.constants.get(scale_node.input[1])
        if product is None or product.op_type != "MatMul" or constant is None or constant.size != 1:
            continue
        if any(name in graph.constants for name in product.input) or len(users.get(product.output[0], [])) != 1:
            continue
        value = float(constant.array().reshape(()))
        if value == 0.0:
            continue
        scale = value if scale_node.op_type == "Mul" else 1.0 / value
        projection = _query_projection(product.input[0], writers, users, inits)
        if projection is None:
            continue
        for name in projection:
            array = numpy_helper.to_array(inits[name])
            overwrite_initializer(inits[name], (array * np.float32(scale)).astype(array.dtype))
        removed.add(scale_node.name)
        renamed[scale_node.output[0]] = product.output[0]
    if not removed:
        return 0
    kept = [n for n in model.graph.node if n.name not in removed]
    for node in kept:
        for index, name in enumerate(node.input):
            if name in renamed:
                node.input[index] = renamed[name]
    for output in model.graph.output:
        if output.name in renamed:  # never the case for our graphs; keep the name if it were
            raise ValueError("an attention scale output is a graph output")
    del model.graph.node[:]
    model.graph.node.extend(kept)
    prune_dead_nodes(model)  # the scale constants nothing reads now
    return len(removed)


def _query_projection(tensor: str, writers: dict[str, Any], users: dict[str, list[Any]],
                      inits: dict[str, Any]) -> tuple[str, str] | None:
    """(weight, bias) initializer names of the MatMul + Add that compute `tensor` through Reshape/Transpose."""
    node = writers.get(tensor)
    while node is not None and node.op_type in ("Reshape", "Transpose"):
        if len(users.get(node.output[0], [])) != 1:
            return None
        node = writers.get(node.input[0])
    if node is None or node.op_type != "Add" or len(users.get(node.output[0], [])) != 1:
        return None
    bias = next((i for i in node.input if i in inits and len(inits[i].dims) == 1), None)
    other = next((i for i in node.input if i != bias), None)
    matmul = writers.get(other) if other else None
    if bias is None or matmul is None or matmul.op_type != "MatMul" or matmul.input[1] not in inits:
        return None
    if len(users.get(matmul.output[0], [])) != 1:
        return None
    weight = matmul.input[1]
    if len(users.get(weight, [])) != 1 or len(users.get(bias, [])) != 1:
        return None
    return weight, bias


def use_int32_inputs(model: Any) -> int:
    """int64 graph inputs -> int32 inputs, each followed by a Cast to int64 that the rest of the graph reads."""
    import onnx
    from onnx import helper

    casts = []
    for value in model.graph.input:
        if value.type.tensor_type.elem_type != onnx.TensorProto.INT64:
            continue
        wide = value.name + "_int64"
        for node in model.graph.node:
            for index, name in enumerate(node.input):
                if name == value.name:
                    node.input[index] = wide
        casts.append(helper.make_node("Cast", [value.name], [wide], name=value.name + "/to_int64",
                                      to=onnx.TensorProto.INT64))
        value.type.tensor_type.elem_type = onnx.TensorProto.INT32
    nodes = casts + list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return len(casts)


def _fp16(source: Path, target: Path) -> dict[str, Any]:
    report = convert_fp16(source, target, fp32_ops=tuple(TRT_FP32_OPS), attention_matmuls_fp32=False,
                          fp32_nodes=pooling_tail)
    _keep_io_shapes(source, target)
    return {"kept_fp32_ops": report.kept_fp32_ops, "fp16_ops": report.fp16_ops,
            "kept_fp32_op_types": TRT_FP32_OPS, "kept_fp32_nodes": {"pooling tail": TAIL_WHY,
                                                                    "mask and position-bias chains": "fp16 "
                                                                    "cannot hold the -3.4e38 mask"},
            "attention": {"why": ATTENTION_WHY, **report.attention}}


def _keep_io_shapes(source: Path, target: Path) -> None:
    """The converter's shape inference may rename fixed output dims (e.g. the embedding size) to symbols: give
    the graph's inputs and outputs back the exported shapes (same names, same element types)."""
    import onnx

    before = onnx.load(str(source), load_external_data=False)
    shapes = {v.name: v.type.tensor_type.shape for v in [*before.graph.input, *before.graph.output]}
    model = onnx.load(str(target))
    for value in [*model.graph.input, *model.graph.output]:
        if value.name in shapes:
            value.type.tensor_type.shape.CopyFrom(shapes[value.name])
    save_graph(model, target)


def pooling_tail(model: Any) -> set[str]:
    """Names of the pooling reductions and every node downstream of them (pooling + normalize)."""
    users = consumers(model)
    pending = [n for n in model.graph.node if n.op_type in _POOLING_REDUCES]
    tail: set[str] = set()
    while pending:
        node = pending.pop()
        if node.name in tail:
            continue
        tail.add(node.name)
        pending.extend(u for out in node.output for u in users.get(out, []))
    return tail


def _int8(source: Path, target: Path, search: Int8Search, progress: Any) -> dict[str, Any]:
    plan = quantize_static_accuracy_aware(
        source, target, search.spec, search.tokenizer, search.calibration_texts, method=search.method,
        min_cosine=search.min_cosine, progress=progress, **search.judged_on,
    )
    return {"int8_search": plan.to_dict()}

