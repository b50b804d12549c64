"""`bge-export openvino FOLDER`: the click command derived from OpenVINOOptions (one flag per field)."""

from __future__ import annotations

from typing import Any

import click

from bge_export.options import click_options, report_result
from bge_export.targets.openvino.options import OpenVINOOptions


@click.command("openvino")
@click_options(OpenVINOOptions)
def openvino_command(**values: Any) -> None:
    """Add OpenVINO IR to the export in FOLDER (made by 'bge-export onnx').

    \b
    Converts onnx/model.onnx (and the int8-openvino graph) with OpenVINO's own
    converter into openvino/*.xml + .bin (sentence-transformers' file names),
    checks each with OpenVINO (f32 precision hint) against the PyTorch fp32
    baseline, and records them in manifest.json. Exit 1 when one misses its
    floors, 2 on bad input.
    """
    from bge_export.targets.openvino.export import build_openvino  # heavy: the build imports openvino/nncf

    report_result(build_openvino(OpenVINOOptions(**values)), sizes=True)
