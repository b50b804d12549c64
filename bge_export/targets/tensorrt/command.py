"""`bge-export tensorrt FOLDER`: the click command derived from TensorRTOptions (one flag per field)."""

from __future__ import annotations

from typing import Any

import click

from bge_export.options import click_options, report_result
from bge_export.targets.tensorrt.options import TensorRTOptions


@click.command("tensorrt")
@click_options(TensorRTOptions)
def tensorrt_command(**values: Any) -> None:
    """Build TensorRT engines for the export in FOLDER (made by 'bge-export onnx').

    \b
    Writes tensorrt/model_<precision>.onnx (the TensorRT-ready graph, from
    onnx/model.onnx), tensorrt/model_<precision>.plan (the engine, for this GPU
    and TensorRT version) and tensorrt/build.sh, and records each in
    manifest.json. Without TensorRT and an NVIDIA GPU it stops (exit 2) unless
    --prepare-only, which checks the graphs here (parser op table, onnxruntime
    numerics) and leaves the build to a GPU host.
    """
    from bge_export.targets.tensorrt.export import build_tensorrt  # heavy: the build imports onnx/onnxruntime/tensorrt

    report_result(build_tensorrt(TensorRTOptions(**values)))
