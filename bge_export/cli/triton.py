"""`bge-export triton FOLDER --output REPO`: a thin click layer over deploy.triton (one flag, one option)."""

from __future__ import annotations

import click


@click.command("triton")
@click.argument("folder", type=click.Path())
@click.option("--output", "-o", type=click.Path(), required=True,
              help="The Triton model repository to create (written whole, then renamed into place).")
@click.option("--artifact", default=None, metavar="PATH",
              help="The ONNX file to serve, relative to FOLDER (e.g. onnx/model_fp16.onnx).  "
                   "[default: the folder's recommendation for --instance-kind]")
@click.option("--instance-kind", type=click.Choice(["cpu", "gpu"]), default="cpu", show_default=True,
              help="Where the onnxruntime model runs (KIND_CPU / KIND_GPU); gpu also adds every built TensorRT plan.")
@click.option("--max-batch-size", type=int, default=32, show_default=True,
              help="max_batch_size of every model (dynamic batching up to it; a plan's is capped at its profiles).")
@click.option("--name", default=None,
              help="Name of the ensemble clients call; the other models get it as prefix.  [default: FOLDER's name]")
@click.option("--force", is_flag=True, help="Replace a repository that 'bge-export triton' wrote earlier.")
def triton_command(folder: str, output: str, artifact: str | None, instance_kind: str, max_batch_size: int,
                   name: str | None, force: bool) -> None:
    """Write a Triton Inference Server model repository for the export in FOLDER.

    \b
    NAME                  ensemble: text (TYPE_STRING, dims [1]) -> sentence_embedding
    NAME_tokenizer        Python backend: the folder's tokenizer.json, truncated and
                          padded exactly as bge-export does -> input_ids, attention_mask
                          [, token_type_ids]
    NAME_onnx             onnxruntime backend: the ONNX artifact, dynamic batching
    NAME_tensorrt_<p>     (--instance-kind gpu) an ensemble over each built TensorRT plan
    """
    from bge_export.deploy.triton import TritonOptions, make_triton_repository

    result = make_triton_repository(TritonOptions(
        folder=folder, output=output, artifact=artifact, instance_kind=instance_kind,
        max_batch_size=max_batch_size, name=name, force=force,
    ))
    click.echo(f"WROTE      {result.path}  ({result.artifact}: {result.selection[:160]})")
    for model in result.models:
        click.echo(f"  {model.kind:9s} {model.name}  (max_batch_size {model.max_batch_size})")
    for note in result.notes:
        click.echo(f"note: {note}")
    click.echo(f"serve:     tritonserver --model-repository {result.path}   "
               f"(clients call: {', '.join(result.ensembles)})")
