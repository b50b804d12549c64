"""INT8 quantization: dynamic (QOperator, for onnxruntime on CPU) and static QDQ (portable: TensorRT & co).

Only MatMuls with a constant weight are quantized (MatMulConstBOnly): the attention products multiply two
activations, and quantizing them per tensor costs far more fidelity than it buys speed. Which weight MatMuls
stay in float is decided by the accuracy-aware search (accuracy_aware.py), not here.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from bge_export.errors import InputError
from bge_export.graph.calibration import Calibration
from bge_export.graph.nodes import (
    MICROSOFT_DOMAIN,
    add_initializer,
    bias_add,
    consumers,
    ensure_opset,
    initializers,
    prune_initializers,
    quantize_weight,
    replace_nodes,
)


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


def quantize_matmuls_dynamic(model: Any, node_names: Iterable[str], preset: Int8Preset,
                             weights: dict[str, Any] | None = None, per_token: Iterable[str] = ()) -> int:
    """Replace MatMul (+ its bias Add) with com.microsoft DynamicQuantizeMatMul, in place; returns the count.

    Weights are quantized once here, per output column (symmetric s8, or asymmetric u8 for the avx2 preset);
    activations are quantized per tensor at run time (u8). Emitting the fused op directly, rather than the
    DynamicQuantizeLinear/MatMulInteger chain that onnxruntime would fuse anyway, keeps the file readable.
    `weights`: fp32 weights left out of `model` (nodes.copy_without), looked up there.

    `per_token`: MatMuls whose activations get one scale per token instead of one per batch (see
    _scaled_per_token): a few tokens with huge activations (separators, the first token) no longer coarsen
    every other token's rounding. all-mpnet-base-v2, every MatMul INT8 with outliers tamed, top-10 among 2,000
    WordNet example sentences: per batch 0.64 untamed; per token 0.951 tamed; ~1.4x the per-batch time.
    """
    from onnx import helper, numpy_helper

    inits, users = initializers(model), consumers(model)
    fp32 = {**(weights or {}), **inits}  # the weights to quantize may live in the model they were copied from
    wanted, token_scaled = set(node_names), set(per_token)
    absorbed: set[str] = set()  # the bias Adds taken into a product
    scaled: dict[str, tuple[str, str]] = {}  # activation -> (its rows scaled to max |x| = 1, the rows' scales)
    nodes: list[Any] = []
    count = 0
    for node in list(model.graph.node):
        if node.op_type != "MatMul" or node.name not in wanted:
            nodes.append(node)
            continue
        weight = quantize_weight(numpy_helper.to_array(fp32[node.input[1]]), preset.signed_weights, preset.per_channel)
        stem = node.input[1] + ("_s8" if preset.signed_weights else "_u8")
        inputs = [node.input[0], add_initializer(model, stem, weight.values),
                  add_initializer(model, stem + "_scale", weight.scale), ""]
        if weight.zero_point is not None:
            inputs[3] = add_initializer(model, stem + "_zero_point", weight.zero_point)
        output = node.output[0]
        bias = bias_add(node, users, inits)
        bias_name = next(name for name in bias.input if name in inits) if bias is not None else None
        if bias is not None:
            output = bias.output[0]
            absorbed.add(bias.name)
        if node.name in token_scaled:
            if node.input[0] not in scaled:
                scaled[node.input[0]] = _scaled_per_token(model, node.input[0], nodes)
            inputs[0], row_scale = scaled[node.input[0]]
            product = node.name + "_per_token"
            nodes.append(helper.make_node("DynamicQuantizeMatMul", inputs, [product], name=node.name + "_int8",
                                          domain=MICROSOFT_DOMAIN))
            rescaled = output if bias_name is None else product + "_rescaled"
            nodes.append(helper.make_node("Mul", [product, row_scale], [rescaled], name=node.name + "_rescale"))
            if bias_name is not None:
                nodes.append(helper.make_node("Add", [rescaled, bias_name], [output], name=node.name + "_rescaled_bias"))
        else:
            if bias_name is not None:
                inputs.append(bias_name)
            nodes.append(helper.make_node("DynamicQuantizeMatMul", inputs, [output], name=node.name + "_int8",
                                          domain=MICROSOFT_DOMAIN))
        count += 1
    replace_nodes(model, [n for n in nodes if n.name not in absorbed])
    ensure_opset(model, MICROSOFT_DOMAIN)
    prune_initializers(model)
    return count


def _scaled_per_token(model: Any, activation: str, nodes: list[Any]) -> tuple[str, str]:
    """Append the nodes that scale each row (token) of `activation` to max |x| = 1; returns (scaled, scales).

    DynamicQuantizeMatMul's one per-batch range then fits every token alike, and the product is multiplied back
    by the row's scale: per-token quantization from standard ops, which onnxruntime's CPU kernels lack."""
    from onnx import helper

    stem = activation + "_token"
    tiny = "per_token_min_scale"  # an all-zero row keeps scale 1e-12 rather than dividing by zero
    if not any(initializer.name == tiny for initializer in model.graph.initializer):
        add_initializer(model, tiny, np.array(1e-12, dtype=np.float32))
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 17)
    if opset >= 18:  # ReduceMax takes its axes as an input from opset 18 on (--opset 14-20)
        axes = "per_token_last_axis"
        if not any(initializer.name == axes for initializer in model.graph.initializer):
            add_initializer(model, axes, np.array([-1], dtype=np.int64))
        peak = helper.make_node("ReduceMax", [stem + "_abs", axes], [stem + "_peak"], name=stem + "_peak", keepdims=1)
    else:
        peak = helper.make_node("ReduceMax", [stem + "_abs"], [stem + "_peak"], name=stem + "_peak", axes=[-1],
                                keepdims=1)
    nodes += [helper.make_node("Abs", [activation], [stem + "_abs"], name=stem + "_abs"), peak,
              helper.make_node("Max", [stem + "_peak", tiny], [stem + "_scale"], name=stem + "_scale"),
              helper.make_node("Div", [activation, stem + "_scale"], [stem + "_scaled"], name=stem + "_scaled")]
    return stem + "_scaled", stem + "_scale"


def quantize_static_qdq(model: Any, nodes_to_quantize: Iterable[str], calibration: Calibration,
                        weights: dict[str, Any] | None = None) -> int:
    """In place: each named MatMul reads its input through QuantizeLinear/DequantizeLinear (symmetric s8, one
    calibrated scale per tensor, zero point 0) and its weight as per-column symmetric s8 behind a
    DequantizeLinear (axis 1): the layout TensorRT's explicit quantization consumes. Returns the count.

    Only the quantized MatMuls read the rounded tensor; every other reader (residual Adds, MatMuls kept in float,
    the outlier side paths) keeps the float one: onnxruntime's quantizer rounded a tensor for all its readers,
    which alone cost MiniLM 0.1 of minimum cosine when the residual Adds carried the INT8 copy.
    """
    from onnx import helper, numpy_helper

    inits, wanted = initializers(model), set(nodes_to_quantize)
    fp32 = {**(weights or {}), **inits}  # `weights`: those left out of `model` (nodes.copy_without)
    rounded: dict[str, str] = {}  # tensor -> its fake-quantized copy (one pair per tensor, shared by its readers)
    nodes: list[Any] = []
    count = 0
    for node in model.graph.node:
        if node.op_type == "MatMul" and node.name in wanted and node.input[1] in fp32:
            activation, weight_name = node.input[0], node.input[1]
            if activation not in rounded:
                scale = add_initializer(model, activation + "_scale",
                                        np.array(calibration.scale(activation), dtype=np.float32))
                zero = add_initializer(model, activation + "_zero_point", np.array(0, dtype=np.int8))
                nodes.append(helper.make_node("QuantizeLinear", [activation, scale, zero], [activation + "_q"],
                                              name=activation + "_QuantizeLinear"))
                nodes.append(helper.make_node("DequantizeLinear", [activation + "_q", scale, zero],
                                              [activation + "_dq"], name=activation + "_DequantizeLinear"))
                rounded[activation] = activation + "_dq"
            weight = quantize_weight(numpy_helper.to_array(fp32[weight_name]), signed=True, per_channel=True)
            stem = f"{node.name}_weight"
            inputs = [add_initializer(model, stem + "_s8", weight.values),
                      add_initializer(model, stem + "_scale", weight.scale),
                      add_initializer(model, stem + "_zero_point", np.zeros(weight.scale.shape, dtype=np.int8))]
            nodes.append(helper.make_node("DequantizeLinear", inputs, [stem + "_dq"], name=stem + "_DequantizeLinear",
                                          axis=1))
            node.input[0], node.input[1] = rounded[activation], stem + "_dq"
            count += 1
        nodes.append(node)
    replace_nodes(model, nodes)
    prune_initializers(model)
    return count
