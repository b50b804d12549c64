"""`bge-export triton FOLDER --output REPO`: the click command derived from TritonOptions (one flag per field)."""

from __future__ import annotations

from typing import Any

import click

from bge_export.deploy.triton import TritonOptions, make_triton_repository
from bge_export.options import click_options


@click.command("triton")
@click_options(TritonOptions)
def triton_command(**values: Any) -> None:
    """Write a Triton Inference Server model repository for the export in FOLDER.

    \b
    NAME                  ensemble: text (TYPE_STRING, dims [1]) -> sentence_embedding
    NAME_tokenizer        Python backend: the folder's tokenizer.json, truncated and
                          padded exactly as bge-export does -> input_ids, attention_mask
                          [, token_type_ids]
    NAME_onnx             onnxruntime backend: the ONNX artifact, dynamic batching
    NAME_tensorrt_<p>     (--instance-kind gpu) an ensemble over each built TensorRT plan
    """
    result = make_triton_repository(TritonOptions(**values))
    click.echo(f"WROTE      {result.path}  ({result.artifact}: {result.selection})")
    for model in result.models:
        click.echo(f"  {model.kind:9s} {model.name}  (max_batch_size {model.max_batch_size})")
    for note in result.notes:
        click.echo(f"note: {note}")
    click.echo(f"serve:     tritonserver --model-repository {result.path}   "
               f"(clients call: {', '.join(result.ensembles)})")
