"""How much each weight MatMul suffers from INT8, measured on calibration text without rebuilding the graph.

One pass of the fp32 graph records every quantizable MatMul's input activations; for each node we then
simulate the quantizer's arithmetic in numpy (activations u8 per tensor as DynamicQuantizeLinear does at run
time, weights per channel as the preset does) and take the relative error of its output. Nodes fed by outlier
activations (the FFN output projection after GELU, in BERT-family models) rank first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from bge_export.graph.edit import capture
from bge_export.graph.int8 import Int8Preset
from bge_export.graph.nodes import QuantizedWeight, initializers, quantize_weight

MAX_ROWS_PER_NODE = 2048  # sampled tokens per MatMul; 4096 ranked the top 5 of all-mpnet-base-v2 the same at twice the cost


@dataclass(frozen=True)
class NodeSensitivity:
    node: str
    relative_error: float  # ||Q(X)Q(W) - XW|| / ||XW|| on calibration tokens
    activation_range: float  # max |x| over the node's input, the usual culprit


def rank_nodes(
    model: Any,
    nodes: Sequence[str],
    batches: Sequence[dict[str, np.ndarray]],
    preset: Int8Preset,
    static: bool = False,
    static_peaks: dict[str, float] | None = None,
) -> list[NodeSensitivity]:
    """Sensitivities of `nodes` (MatMul names in `model`, a ModelProto), most harmful first.

    Dynamic quantization scales activations per run (per batch); static fixes one symmetric scale from all
    calibration text, which punishes wide-ranged inputs far more: `static` simulates that instead (its scale is
    the calibration text's max |x|: `static_peaks` when the calibration already measured them on these batches,
    else a first pass).

    Streams: each batch's activations are sampled and folded into per-node error sums as they come, so memory
    holds one batch and the INT8 weights, not every node's activations (7.1 GB peak on all-mpnet-base-v2 before).
    """
    from onnx import numpy_helper

    inits = initializers(model)
    by_name = {node.name: node for node in model.graph.node}
    wanted = [by_name[name] for name in nodes]
    inputs = sorted({node.input[0] for node in wanted})
    readers: dict[str, list[Any]] = {}
    for node in wanted:
        readers.setdefault(node.input[0], []).append(node)
    static_scale: dict[str, float] = {}
    if static:  # one symmetric s8 scale per input, fixed by the whole calibration text
        peaks: dict[str, float] = dict(static_peaks or {})

        def peak(name: str, value: np.ndarray, _batch: dict[str, np.ndarray]) -> None:
            peaks[name] = max(peaks.get(name, 0.0), float(np.abs(value).max()))

        if not all(name in peaks for name in inputs):
            capture(model, inputs, batches, peak)
        static_scale = {name: value / 127.0 for name, value in peaks.items()}
    per_batch_cap = max(64, MAX_ROWS_PER_NODE // max(len(batches), 1))
    rng = np.random.default_rng(0)
    int8_weights: dict[str, QuantizedWeight] = {}  # a quarter of the fp32 weights' memory
    error = {node.name: 0.0 for node in wanted}
    reference = dict(error)
    activation_range = dict(error)

    def visit(name: str, value: np.ndarray, batch: dict[str, np.ndarray]) -> None:
        rows = value.reshape(-1, value.shape[-1])
        mask = batch["attention_mask"].reshape(-1).astype(bool)
        real = rows[mask] if rows.shape[0] == mask.shape[0] else rows
        if real.shape[0] > per_batch_cap:
            real = real[rng.choice(real.shape[0], per_batch_cap, replace=False)]
        real = real.astype(np.float32)
        if static:
            scale = static_scale[name]
            x_q = np.clip(np.round(real / scale), -127, 127) * scale
        else:  # u8 asymmetric over this run's whole tensor, padding rows included (DynamicQuantizeLinear)
            lo, hi = min(0.0, float(rows.min())), max(0.0, float(rows.max()))
            scale = max(hi - lo, 1e-12) / 255.0
            zero_point = np.round(-lo / scale)
            x_q = (np.clip(np.round(real / scale) + zero_point, 0, 255) - zero_point) * scale
        widest = float(np.abs(rows).max())
        for node in readers[name]:
            weight = numpy_helper.to_array(inits[node.input[1]]).astype(np.float32)
            if node.name not in int8_weights:
                int8_weights[node.name] = quantize_weight(weight, preset.signed_weights, preset.per_channel)
            exact = real @ weight
            error[node.name] += float(np.square(_int8_product(x_q, int8_weights[node.name]) - exact).sum())
            reference[node.name] += float(np.square(exact).sum())
            activation_range[node.name] = max(activation_range[node.name], widest)

    capture(model, inputs, batches, visit)
    ranked = [NodeSensitivity(node=node.name,
                              relative_error=(error[node.name] / max(reference[node.name], 1e-30)) ** 0.5,
                              activation_range=activation_range[node.name]) for node in wanted]
    return sorted(ranked, key=lambda s: -s.relative_error)


def _int8_product(x: np.ndarray, weight: QuantizedWeight) -> np.ndarray:
    """x @ dequantized weight, with the (zero-point shifted) integer matrix scaled after the product."""
    values = weight.values.astype(np.float32)
    if weight.zero_point is not None:
        values -= weight.zero_point.astype(np.float32)
    return (x @ values) * weight.scale
