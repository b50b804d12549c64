"""`bge-export onnx`: the click command derived from ExportOptions (one flag per field)."""

from __future__ import annotations

from typing import Any

import click

from bge_export.options import click_options, report_result
from bge_export.targets.onnx.options import ExportOptions


@click.command("onnx")
@click_options(ExportOptions)
def onnx_command(**values: Any) -> None:
    """Export MODEL to one ONNX graph: encoder + pooling + L2 normalize.

    \b
    Inputs:  input_ids, attention_mask [, token_type_ids]   int64 [batch, sequence], right-padded
    Output:  sentence_embedding                             float32 [batch, dim]
    Writes onnx/model.onnx, the tokenizer, the model's sentence-transformers
    files and manifest.json into the output folder; with --optimize, --fp16
    and --quantize also model_optimized.onnx, model_fp16.onnx and
    model_qint8_<preset>.onnx / model_qint8_static.onnx /
    model_qint8_openvino.onnx. Opset 14-20 (--opset, default 17). Every
    artifact is checked against the PyTorch fp32 baseline and recorded in the
    manifest.
    """
    from bge_export.targets.onnx.export import export  # heavy: the build imports torch/onnx/onnxruntime

    report_result(export(ExportOptions(**values)))
