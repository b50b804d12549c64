"""The static check that TensorRT's ONNX parser can take a graph: ops, dtypes, constant inputs, Q/DQ, dynamic axes.

Why static: the graphs are prepared on CPU hosts (CI) that have no TensorRT; this check says before the GPU host
builds whether the parser will accept the graph, and it is recorded in the manifest entry.

The table is written from onnx-tensorrt's published operator list (`docs/operators.md`), op names and the
"Supported Types" column only:
- 10.x: the TensorRT 10.15 GA table ("TensorRT 10.15 supports operators in the inclusive range of opset 9 to
  opset 24"; 10.15 GA released 2026-02-02 per docs/Changelog.md), narrowed to what already held in 10.1 GA (tag
  release/10.1-GA, commit 96e781103cfc4adf4a6bb557e94bac8e693f6f4c, "opset 9 to opset 20") where the older
  table was stricter, so that a pass holds for every 10.x release from 10.1 on.
- 11.x: no 11.x operators.md was available to write from; the 11.x table is the 10.15 one plus what the
  TensorRT 11.0 release notes (NVIDIA/TensorRT v11.0, "Parsers") add: the Swish operator; 11.5 raises the
  opset range to 25. Nothing our graphs use was removed from the parser in 11.x (the 11.x removals are builder
  flags and calibrators, not ONNX operators).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from bge_export.graph.storage import infer_shapes

TABLE_SOURCES = {
    "10.x": "onnx/onnx-tensorrt docs/operators.md, TensorRT 10.15 GA table, narrowed to the 10.1 GA table "
            "(tag release/10.1-GA, commit 96e781103cfc4adf4a6bb557e94bac8e693f6f4c) where that one was stricter",
    "11.x": "the 10.15 table plus the TensorRT 11.0 release notes' parser additions (Swish); opsets up to 25 "
            "from 11.5 (no 11.x operators.md was available)",
}
OPSET_RANGE = {"10.x": (9, 20), "11.x": (9, 24)}  # 10.1 GA: 9-20 (10.15: 9-24); 11.0-11.4: 9-24 (11.5: 25)
MAJORS = tuple(OPSET_RANGE)

_F = "FP32 FP16 BF16"
_N = _F + " INT32 INT64"
_A = _N + " BOOL"
# Supported Types -> operators (10.15 table). Types name the tensors an op computes on (for Q: its float input).
_BY_TYPES = {
    _F: "Acos Acosh Asin Asinh Atan Atanh AveragePool BatchNormalization Ceil Celu Clip Conv ConvTranspose Cos "
        "Cosh CumSum Dropout Einsum Elu Erf Exp Floor Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool "
        "GroupNormalization GRU HardSigmoid HardSwish Hardmax ImageScaler InstanceNormalization IsInf "
        "LayerNormalization LeakyRelu Log LogSoftmax LRN LSTM LpNormalization LpPool MatMul MaxPool "
        "MeanVarianceNormalization PRelu ParametricSoftplus QuantizeLinear RandomNormal RandomNormalLike "
        "RandomUniform RandomUniformLike Reciprocal Resize RMSNormalization RNN RotaryEmbedding Round ScaledTanh "
        "Scan Selu Sigmoid Sin Sinh Softmax Softplus Softsign Sqrt Tan Tanh ThresholdedRelu Upsample",
    "FP32 FP16": "BlackmanWindow DeformConv GridSample HammingWindow HannWindow Mish NonMaxSuppression NonZero "
                 "RoiAlign",
    "FP32": "STFT",
    _N: "Abs Add ArgMax ArgMin DepthToSpace Div Equal Greater GreaterOrEqual IsNaN Less LessOrEqual Max Min Mod Mul "
        "Neg Pad Pow Range ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd "
        "ReduceSum ReduceSumSquare Relu Scatter ScatterElements ScatterND Shrink Sign SpaceToDepth Sub Sum TopK",
    _A: "Concat Expand EyeLike Flatten Gather GatherElements GatherND Identity If Loop OneHot Reshape "
        "ReverseSequence Shape Size Slice Split Squeeze Tile Transpose Trilu Unsqueeze Where",
    _N + " UINT8 BOOL": "Cast CastLike",
    _F + " FP8 FP4 INT4 INT32 INT64 BOOL": "Constant ConstantOfShape",
    _F + " FP8 INT32 INT64": "Mean",
    _F + " INT8 INT32 INT64": "Gelu",
    _F + " INT8 FP8": "Attention",
    _F + " INT32": "TensorScatter",
    "INT8 FP8 FP4 INT4": "DequantizeLinear",
    "BOOL": "And Not Or Xor",
}
SUPPORTED: dict[str, frozenset[str]] = {op: frozenset(types.split()) for types, ops in _BY_TYPES.items()
                                        for op in ops.split()}
# Where the 10.1 GA table was stricter (or lacked the op): what every 10.x from 10.1 on accepts.
_OLDER_10 = {
    "Pow": _F, "Constant": _N + " BOOL", "ConstantOfShape": _N + " BOOL", "DequantizeLinear": "INT8 FP8 INT4",
    "Attention": "", "RMSNormalization": "", "RotaryEmbedding": "", "TensorScatter": "", "BlackmanWindow": "",
    "HammingWindow": "", "HannWindow": "", "STFT": "",
}
ADDED_IN_11 = {"Swish": frozenset(_F.split())}
UNSUPPORTED = frozenset(
    "AffineGrid Bernoulli BitShift BitwiseAnd BitwiseNot BitwiseOr BitwiseXor Col2Im CenterCropPad Compress "
    "ConcatFromSequence ConvInteger DFT Det DynamicQuantizeLinear ImageDecoder MatMulInteger MaxRoiPool MaxUnpool "
    "MelWeightMatrix Multinomial NegativeLogLikelihoodLoss Optional OptionalGetElement OptionalHasElement "
    "QLinearConv QLinearMatMul RegexFullMatch SequenceAt SequenceConstruct SequenceEmpty SequenceErase "
    "SequenceInsert SequenceLength SequenceMap SoftmaxCrossEntropyLoss SplitToSequence StringConcat "
    "StringNormalizer StringSplit TfIdfVectorizer Unique".split())
_REDUCES = ("ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum "
            "ReduceSumSquare").split()
# Inputs the table requires to be build-time constants (initializers, Constant nodes): op -> input indices.
CONSTANT_INPUTS: dict[str, tuple[int, ...]] = {
    **{op: (1,) for op in _REDUCES}, "Squeeze": (1,), "Unsqueeze": (1,), "CumSum": (1,), "Dropout": (2,),
    "OneHot": (1,), "TopK": (1,), "Slice": (3,),  # Slice: 10.1 GA wanted `axes` as an initializer
}
DYNAMIC_AXES = ("batch", "sequence")
_DTYPES = {1: "FP32", 10: "FP16", 16: "BF16", 6: "INT32", 7: "INT64", 3: "INT8", 2: "UINT8", 9: "BOOL",
           11: "DOUBLE", 22: "INT4", 17: "FP8", 23: "FP4"}


def supported_types(op: str, major: str) -> frozenset[str] | None:
    """The tensor types TensorRT `major` ("10.x"/"11.x") parses `op` with; None when it cannot parse it."""
    if op in UNSUPPORTED:
        return None
    if major == "11.x" and op in ADDED_IN_11:
        return ADDED_IN_11[op]
    types = SUPPORTED.get(op)
    if types is not None and major == "10.x" and op in _OLDER_10:
        types = frozenset(_OLDER_10[op].split()) or None
    return types


@dataclass
class OpsCheck:
    """What the check found; `to_dict()` goes into the manifest entry's options["ops_check"]."""

    tensorrt: list[str]
    passed: bool
    problems: list[str]
    op_counts: dict[str, int]
    opset: int
    dynamic_axes: dict[str, list[str | int]]
    qdq: dict[str, Any] = field(default_factory=dict)
    table: dict[str, str] = field(default_factory=lambda: dict(TABLE_SOURCES))

    @property
    def reason(self) -> str:
        majors = "/".join(self.tensorrt)
        if self.passed:
            return (f"every op of the graph ({sum(self.op_counts.values())} nodes, {len(self.op_counts)} op types) "
                    f"is one TensorRT {majors}'s ONNX parser supports with these types; no custom-domain op; "
                    f"dynamic axes only {' and '.join(DYNAMIC_AXES)}")
        more = f" (and {len(self.problems) - 3} more)" if len(self.problems) > 3 else ""
        return f"TensorRT {majors}'s ONNX parser would reject the graph: {'; '.join(self.problems[:3])}{more}"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "reason": self.reason}


def check_graph(model: Any, majors: Sequence[str] = MAJORS) -> OpsCheck:
    """Check an ONNX graph (ModelProto or path) against the parser tables of `majors`."""
    import onnx

    if isinstance(model, (str, Path)):
        model = onnx.load(str(model))
    try:
        inferred = infer_shapes(model)  # any size: the fp32 graph of a bge-m3-sized model is over 2 GB
    except Exception:  # e.g. contrib ops without their domain imported: the op check below names them
        inferred = model
    dtypes = {init.name: init.data_type for init in inferred.graph.initializer}
    for value in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        dtypes.setdefault(value.name, value.type.tensor_type.elem_type)
    constants = _constant_tensors(model)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    problems: list[str] = []
    for major in majors:
        low, high = OPSET_RANGE[major]
        if not low <= opset <= high:
            problems.append(f"opset {opset} is outside TensorRT {major}'s {low}-{high}")
    counts: dict[str, int] = {}
    for node in model.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
        problems.extend(_node_problems(node, dtypes, constants, majors))
    axes = _dynamic_axes(model)
    for name, dims in axes.items():
        odd = [d for d in dims if isinstance(d, str) and d not in DYNAMIC_AXES]
        if odd:
            problems.append(f"'{name}' has dynamic axes {odd}; only {' and '.join(DYNAMIC_AXES)} may vary")
    qdq = qdq_placement(model)
    problems.extend(qdq.pop("problems"))
    unique = list(dict.fromkeys(problems))
    return OpsCheck(list(majors), not unique, unique, dict(sorted(counts.items())), opset, axes,
                    qdq if qdq["quantize_nodes"] else {})


def _node_problems(node: Any, dtypes: dict[str, int], constants: set[str], majors: Sequence[str]) -> list[str]:
    where = f"{node.op_type} '{node.name}'"
    if node.domain not in ("", "ai.onnx"):
        return [f"custom-domain op {node.domain}:{node.op_type} ('{node.name}'): not an ONNX operator, "
                "TensorRT's parser has no importer for it (build from onnx/model.onnx, not the fused graph)"]
    found = []
    for major in majors:
        types = supported_types(node.op_type, major)
        if types is None:
            found.append(f"{node.op_type} is not supported by TensorRT {major}'s ONNX parser ('{node.name}')")
            continue
        for tensor in _typed_tensors(node):
            dtype = _DTYPES.get(dtypes.get(tensor, 0))
            if dtype is not None and dtype not in types:
                found.append(f"{where}: TensorRT {major} parses {node.op_type} on {', '.join(sorted(types))}, "
                             f"not {dtype}")
    for index in CONSTANT_INPUTS.get(node.op_type, ()):
        if index < len(node.input) and node.input[index] and node.input[index] not in constants:
            found.append(f"{where}: input {index} must be a build-time constant for TensorRT")
    if node.op_type == "LayerNormalization" and any(node.output[1:]):
        found.append(f"{where}: TensorRT supports only the first output (Y)")
    return found


def _typed_tensors(node: Any) -> list[str]:
    """The tensors whose type the table's column speaks of: the data input (both ends of a Cast)."""
    if node.op_type in ("Constant", "ConstantOfShape"):
        return list(node.output[:1])
    if node.op_type in ("Cast", "CastLike"):
        return [node.input[0], node.output[0]]
    if node.op_type == "Where":
        return [node.input[1]]
    return [node.input[0]] if node.input and node.input[0] else []


def _constant_tensors(model: Any) -> set[str]:
    """Initializers, Constant outputs, and what Identity/Cast/Reshape of constants compute (TensorRT folds them)."""
    found = {init.name for init in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" or (node.op_type in ("Identity", "Cast", "Reshape", "Unsqueeze", "Squeeze")
                                          and all(i in found for i in node.input if i)):
            found.update(node.output)
    return found


def _dynamic_axes(model: Any) -> dict[str, list[str | int]]:
    dims: dict[str, list[str | int]] = {}
    for value in [*model.graph.input, *model.graph.output]:
        shape = value.type.tensor_type.shape.dim
        dims[value.name] = [d.dim_param or (d.dim_value if d.HasField("dim_value") else "?") for d in shape]
    return dims


def qdq_placement(model: Any) -> dict[str, Any]:
    """TensorRT's explicit-quantization rules, checked: Q only into DQ, zero points 0, activation DQ only into
    weighted MatMuls (where TensorRT fuses Q/DQ into an INT8 GEMM), weights per output channel (axis 1 of [K, N]).
    """
    from onnx import numpy_helper

    inits = {init.name: init for init in model.graph.initializer}
    users: dict[str, list[Any]] = {}
    for node in model.graph.node:
        for name in node.input:
            users.setdefault(name, []).append(node)
    problems: list[str] = []
    quantize = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    dequantize = [n for n in model.graph.node if n.op_type == "DequantizeLinear"]
    per_channel = per_tensor_weights = activations = 0
    for node in quantize + dequantize:
        if len(node.input) > 2 and node.input[2] in inits and numpy_helper.to_array(inits[node.input[2]]).any():
            problems.append(f"{node.op_type} '{node.name}': zero point must be 0 for TensorRT")
    for node in quantize:
        if any(u.op_type != "DequantizeLinear" for u in users.get(node.output[0], [])):
            problems.append(f"QuantizeLinear '{node.name}' feeds something other than a DequantizeLinear")
    for node in dequantize:
        readers = users.get(node.output[0], [])
        if node.input[0] in inits:  # a weight
            scale = numpy_helper.to_array(inits[node.input[1]]) if node.input[1] in inits else None
            axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
            dims = list(inits[node.input[0]].dims)
            if scale is not None and scale.size > 1:
                per_channel += 1
                if len(dims) != 2 or axis not in (1, -1) or scale.size != dims[1]:
                    problems.append(f"weight DequantizeLinear '{node.name}': scales not on the output-channel axis")
            else:
                per_tensor_weights += 1
        else:
            activations += 1
            if node.input[1] in inits and numpy_helper.to_array(inits[node.input[1]]).size != 1:
                problems.append(f"activation DequantizeLinear '{node.name}': TensorRT wants a per-tensor scale")
        if any(r.op_type not in ("MatMul", "Gemm") for r in readers):
            odd = sorted({r.op_type for r in readers} - {"MatMul", "Gemm"})
            problems.append(f"DequantizeLinear '{node.name}' feeds {odd}: TensorRT fuses Q/DQ only into the "
                            "weighted MatMul here")
    return {"quantize_nodes": len(quantize), "dequantize_nodes": len(dequantize),
            "weights_per_channel": per_channel, "weights_per_tensor": per_tensor_weights,
            "activation_dequantize": activations, "problems": problems}
