"""INT8 quantization: dynamic (QOperator, for onnxruntime on CPU) and static QDQ (portable: TensorRT & co).

Only MatMuls with a constant weight are quantized (MatMulConstBOnly): the attention products multiply two
activations, and quantizing them per tensor costs far more fidelity than it buys speed. Which weight MatMuls
stay in float is decided by the accuracy-aware search (accuracy_aware.py), not here.
"""

from __future__ import annotations

import platform
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from bge_export.errors import InputError
from bge_export.graph.nodes import (
    MICROSOFT_DOMAIN,
    add_initializer,
    bias_add,
    consumers,
    ensure_opset,
    initializers,
    producers,
    prune_dead_nodes,
    prune_initializers,
    quantize_weight,
    replace_nodes,
)

CALIBRATION_METHODS = ("minmax", "percentile", "entropy")


@dataclass(frozen=True)
class Int8Preset:
    name: str
    weight_type: str  # onnxruntime QuantType name
    per_channel: bool
    reduce_range: bool
    why: str

    @property
    def signed_weights(self) -> bool:
        """Symmetric s8 weights (QInt8); otherwise asymmetric u8 with zero points."""
        return self.weight_type == "QInt8"


PRESETS: dict[str, Int8Preset] = {
    p.name: p
    for p in (
        Int8Preset("avx512_vnni", "QInt8", True, False, "u8 activations x s8 weights on VNNI/AMX cores"),
        Int8Preset("avx2", "QUInt8", True, False, "u8 x u8: no 16-bit saturation in vpmaddubsw on non-VNNI cores"),
        Int8Preset("arm64", "QInt8", True, False, "u8 x s8 via the dot-product instructions of ARMv8.2+"),
    )
}


def default_preset() -> str:
    """The preset that suits this CPU: arm64 on ARM, avx512_vnni where VNNI exists, else avx2."""
    if platform.machine().lower() in ("arm64", "aarch64"):
        return "arm64"
    try:
        flags = Path("/proc/cpuinfo").read_text(errors="ignore")
    except OSError:
        flags = ""
    return "avx512_vnni" if ("avx512_vnni" in flags or "amx_int8" in flags) else "avx2"


def preset_for(name: str | None) -> Int8Preset:
    chosen = name or default_preset()
    if chosen not in PRESETS:
        raise InputError(f"unknown INT8 preset '{chosen}'; choose one of: {', '.join(PRESETS)}")
    return PRESETS[chosen]


def quantize_matmuls_dynamic(model: Any, node_names: Iterable[str], preset: Int8Preset) -> int:
    """Replace MatMul (+ its bias Add) with com.microsoft DynamicQuantizeMatMul, in place; returns the count.

    Weights are quantized once here, per output column (symmetric s8, or asymmetric u8 for the avx2 preset);
    activations are quantized per tensor at run time (u8). Emitting the fused op directly, rather than the
    DynamicQuantizeLinear/MatMulInteger chain that onnxruntime would fuse anyway, keeps the file readable.
    """
    from onnx import helper, numpy_helper

    inits, users = initializers(model), consumers(model)
    wanted = set(node_names)
    absorbed: set[str] = set()
    count = 0
    for node in list(model.graph.node):
        if node.op_type != "MatMul" or node.name not in wanted:
            continue
        weight = quantize_weight(numpy_helper.to_array(inits[node.input[1]]), preset.signed_weights, preset.per_channel)
        stem = node.input[1] + ("_s8" if preset.signed_weights else "_u8")
        inputs = [node.input[0], add_initializer(model, stem, weight.values),
                  add_initializer(model, stem + "_scale", weight.scale), ""]
        if weight.zero_point is not None:
            inputs[3] = add_initializer(model, stem + "_zero_point", weight.zero_point)
        output = node.output[0]
        bias = bias_add(node, users, inits)
        if bias is not None:
            inputs.append(next(name for name in bias.input if name in inits))
            output = bias.output[0]
            absorbed.add(bias.name)
        node.CopyFrom(helper.make_node("DynamicQuantizeMatMul", inputs, [output], name=node.name + "_int8",
                                       domain=MICROSOFT_DOMAIN))
        count += 1
    replace_nodes(model, [n for n in model.graph.node if n.name not in absorbed])
    ensure_opset(model, MICROSOFT_DOMAIN)
    prune_initializers(model)
    return count


class _TokenizedReader:
    """onnxruntime CalibrationDataReader over our own tokenized batches (nothing fetched from a hub)."""

    def __init__(self, batches: Sequence[dict[str, np.ndarray]], input_names: Sequence[str]) -> None:
        self._batches = [{k: b[k] for k in input_names} for b in batches]
        self._position = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._position >= len(self._batches):
            return None
        self._position += 1
        return self._batches[self._position - 1]

    def rewind(self) -> None:
        self._position = 0


def quantize_static_qdq(
    model: Any,
    target: str | Path,
    calibration_batches: Sequence[dict[str, np.ndarray]],
    input_names: Sequence[str],
    nodes_to_quantize: Sequence[str],
    method: str = "percentile",
) -> None:
    """Symmetric s8 activations and per-channel s8 weights in QDQ form, the layout TensorRT consumes."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if method not in CALIBRATION_METHODS:
        raise InputError(f"unknown calibration method '{method}'; choose one of: {', '.join(CALIBRATION_METHODS)}")
    import onnx

    untouched = onnx.ModelProto()
    untouched.CopyFrom(model)  # onnxruntime moves the weights of the proto it gets into a temporary file
    with _entropy_histogram_bins():
        quantize_static(
            untouched, str(target),
            calibration_data_reader=_TokenizedReader(calibration_batches, input_names),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=["MatMul"],
            per_channel=True,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            nodes_to_quantize=list(nodes_to_quantize),
            calibrate_method={"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
                              "entropy": CalibrationMethod.Entropy}[method],
            extra_options={"MatMulConstBOnly": True, "ActivationSymmetric": True, "WeightSymmetric": True,
                           "CalibPercentile": 99.999, "OpTypesToExcludeOutputQuantization": ["MatMul"]},
        )
    quantized = onnx.load(str(target))
    keep_float_outside(quantized, set(nodes_to_quantize))
    onnx.save(quantized, str(target))


ENTROPY_BINS, ENTROPY_QUANTIZED_BINS = 2048, 128  # TensorRT's entropy calibrator uses the same histogram


@contextmanager
def _entropy_histogram_bins() -> Iterator[None]:
    """onnxruntime's entropy calibrator defaults to 128 bins for 128 quantized bins, which leaves one candidate
    threshold (the full range: entropy == minmax, measured), and quantize_static forwards no option for it. For the
    duration of one call, its calibrator factory gets TensorRT's 2048 bins."""
    import importlib

    ort_quantize: Any = importlib.import_module("onnxruntime.quantization.quantize")  # the module, not the function
    original = getattr(ort_quantize, "create_calibrator", None)
    if original is None:  # a future onnxruntime: nothing to adjust, and nothing we would silently get wrong
        yield
        return

    def with_bins(*args: Any, **kwargs: Any) -> Any:
        extra = dict(kwargs.get("extra_options") or {})
        extra.setdefault("num_bins", ENTROPY_BINS)
        extra.setdefault("num_quantized_bins", ENTROPY_QUANTIZED_BINS)
        kwargs["extra_options"] = extra
        return original(*args, **kwargs)

    ort_quantize.create_calibrator = with_bins
    try:
        yield
    finally:
        ort_quantize.create_calibrator = original


def keep_float_outside(model: Any, quantized_matmuls: set[str]) -> int:
    """Give every reader of a fake-quantized activation other than the quantized MatMuls the float tensor back.

    onnxruntime's QDQ quantizer rounds a tensor for all its readers once one of them is quantized: the residual
    Adds then carry the per-tensor INT8 copy of the hidden state from layer to layer (which alone cost MiniLM
    0.1 of minimum cosine), and MatMuls meant to stay float (kept by the search, or the outlier side paths)
    read a rounded input. Only the inputs of the quantized MatMuls are INT8 (the placement TensorRT expects).
    """
    writers, inits = producers(model), initializers(model)
    rewired = 0
    for node in model.graph.node:
        if node.op_type == "MatMul" and node.name in quantized_matmuls:
            continue
        for index, name in enumerate(node.input):
            dequantize = writers.get(name)
            if dequantize is None or dequantize.op_type != "DequantizeLinear":
                continue
            quantize = writers.get(dequantize.input[0])
            if quantize is None or quantize.op_type != "QuantizeLinear" or quantize.input[0] in inits:
                continue
            node.input[index] = quantize.input[0]
            rewired += 1
    prune_dead_nodes(model)
    return rewired
