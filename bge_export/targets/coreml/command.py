"""`bge-export coreml`: the click command derived from CoreMLOptions (one flag per field)."""

from __future__ import annotations

from typing import Any

import click

from bge_export.options import click_options, report_result
from bge_export.targets.coreml.options import CoreMLOptions


@click.command("coreml")
@click_options(CoreMLOptions)
def coreml_command(**values: Any) -> None:
    """Convert MODEL to Core ML ML Program packages for iOS and macOS.

    \b
    Inputs:  input_ids, attention_mask [, token_type_ids]   int32 [1, sequence], right-padded
    Output:  sentence_embedding                             float32 [1, dim]
             (a cross-encoder: scores, float32 [1] or [1, labels])
    Writes coreml/model_<precision>.mlpackage and, per --compress method,
    coreml/model_<precision>_<method>.mlpackage, beside the tokenizer, into the
    model's output folder (one manifest with the ONNX artifacts when the folder
    holds them). Each package's MIL program is computed in numpy against the
    PyTorch fp32 baseline; off macOS packages stay 'unverified' with those
    numbers (Core ML runs only on macOS), on macOS Core ML itself decides.
    """
    from bge_export.targets.coreml.export import export_coreml  # heavy: the build imports torch/coremltools

    report_result(export_coreml(CoreMLOptions(**values)), sizes=True)
