"""INT8 quantization: dynamic (QOperator, for onnxruntime on CPU) and static QDQ (portable: TensorRT & co).

Only MatMuls with a constant weight are quantized (MatMulConstBOnly): the attention products multiply two
activations, and quantizing them per tensor costs far more fidelity than it buys speed. Which weight MatMuls
stay in float is decided by the accuracy-aware search (accuracy_aware.py), not here.
"""

from __future__ import annotations

import logging
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from bge_export.errors import InputError

CALIBRATION_METHODS = ("minmax", "percentile", "entropy")


@dataclass(frozen=True)
class Int8Preset:
    name: str
    weight_type: str  # onnxruntime QuantType name
    per_channel: bool
    reduce_range: bool
    why: str


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


def weight_matmul_nodes(path: str | Path) -> list[str]:
    """Names of the MatMul nodes whose second input is a 2-D float initializer: the quantizable ones."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    initializers = {init.name: init for init in model.graph.initializer}
    return [
        node.name for node in model.graph.node
        if node.op_type == "MatMul" and node.input[1] in initializers and len(initializers[node.input[1]].dims) == 2
    ]


def quantize_dynamic_int8(source: str | Path, target: str | Path, preset: Int8Preset, exclude: Iterable[str] = ()) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.getLogger("onnxruntime").setLevel(logging.ERROR)
    quantize_dynamic(
        str(source), str(target),
        op_types_to_quantize=["MatMul"],
        per_channel=preset.per_channel,
        reduce_range=preset.reduce_range,
        weight_type=getattr(QuantType, preset.weight_type),
        nodes_to_exclude=list(exclude),
        extra_options={"MatMulConstBOnly": True, "DefaultTensorType": onnx.TensorProto.FLOAT},
    )


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
    source: str | Path,
    target: str | Path,
    calibration_batches: Sequence[dict[str, np.ndarray]],
    input_names: Sequence[str],
    method: str = "percentile",
    exclude: Iterable[str] = (),
    extra_options: dict | None = None,
) -> None:
    """Symmetric s8 activations and per-channel s8 weights in QDQ form, the layout TensorRT consumes."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if method not in CALIBRATION_METHODS:
        raise InputError(f"unknown calibration method '{method}'; choose one of: {', '.join(CALIBRATION_METHODS)}")
    logging.getLogger("onnxruntime").setLevel(logging.ERROR)
    options = {
        "MatMulConstBOnly": True,
        "ActivationSymmetric": True,
        "WeightSymmetric": True,
        "CalibPercentile": 99.999,
        "CalibMaxIntermediateOutputs": 4,
        **(extra_options or {}),
    }
    quantize_static(
        str(source), str(target),
        calibration_data_reader=_TokenizedReader(calibration_batches, input_names),
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=["MatMul"],
        per_channel=True,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
        nodes_to_exclude=list(exclude),
        calibrate_method={"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
                          "entropy": CalibrationMethod.Entropy}[method],
        extra_options=options,
    )
