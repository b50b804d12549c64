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
from bge_export.graph.nodes import initializers, quantize_weight

MAX_ROWS_PER_NODE = 4096


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
) -> list[NodeSensitivity]:
    """Sensitivities of `nodes` (MatMul names in `model`, a ModelProto), most harmful first.

    Dynamic quantization scales activations per run (per batch); static fixes one symmetric scale from all
    calibration text, which punishes wide-ranged inputs far more: `static` simulates that instead.
    """
    from onnx import numpy_helper

    inits = initializers(model)
    by_name = {node.name: node for node in model.graph.node}
    wanted = [by_name[name] for name in nodes]
    per_batch_cap = max(64, MAX_ROWS_PER_NODE // max(len(batches), 1))
    rng = np.random.default_rng(0)
    captured: dict[str, list[np.ndarray]] = {}

    def visit(name: str, value: np.ndarray, batch: dict[str, np.ndarray]) -> None:
        rows = value.reshape(-1, value.shape[-1])
        mask = batch["attention_mask"].reshape(-1).astype(bool)
        real = rows[mask] if rows.shape[0] == mask.shape[0] else rows
        if real.shape[0] > per_batch_cap:
            real = real[rng.choice(real.shape[0], per_batch_cap, replace=False)]
        # row 0 carries the whole tensor's range: the run-time quantizer sees padding rows too
        captured.setdefault(name, []).append(np.concatenate([_range_row(rows), real]))

    capture(model, sorted({node.input[0] for node in wanted}), batches, visit)
    ranked = []
    for node in wanted:
        activations = captured[node.input[0]]
        weight = numpy_helper.to_array(inits[node.input[1]]).astype(np.float32)
        ranked.append(NodeSensitivity(
            node=node.name,
            relative_error=_simulated_error(activations, weight, preset, static),
            activation_range=float(max(np.abs(a).max() for a in activations)),
        ))
    return sorted(ranked, key=lambda s: -s.relative_error)


def _range_row(rows: np.ndarray) -> np.ndarray:
    """A marker row carrying the full tensor's min and max, so simulated scales match the real ones."""
    marker = np.zeros((1, rows.shape[1]), dtype=np.float32)
    marker[0, 0], marker[0, -1] = rows.min(), rows.max()
    return marker


def _simulated_error(activations: list[np.ndarray], weight: np.ndarray, preset: Int8Preset, static: bool) -> float:
    dequantized_weight = quantize_weight(weight, preset.signed_weights, preset.per_channel).dequantize()
    error = reference = 0.0
    static_scale = max(float(np.abs(a).max()) for a in activations) / 127.0
    for batch in activations:
        x = batch[1:]
        if static:  # one symmetric s8 scale for every input, fixed at calibration
            x_q = np.clip(np.round(x / static_scale), -127, 127) * static_scale
        else:  # u8 asymmetric, range of this run's whole tensor (DynamicQuantizeLinear)
            lo, hi = min(0.0, float(batch.min())), max(0.0, float(batch.max()))
            scale = max(hi - lo, 1e-12) / 255.0
            zero_point = np.round(-lo / scale)
            x_q = (np.clip(np.round(x / scale) + zero_point, 0, 255) - zero_point) * scale
        exact = x @ weight
        error += float(np.square(x_q @ dequantized_weight - exact).sum())
        reference += float(np.square(exact).sum())
    return (error / max(reference, 1e-30)) ** 0.5
