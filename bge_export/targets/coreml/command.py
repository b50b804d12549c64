"""`bge-export coreml`: a thin click layer over api_coreml.export_coreml (one flag, one option)."""

from __future__ import annotations

import click

from bge_export.errors import CheckFailedError


def parse_prompts(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict[str, str] | None:
    from bge_export.cli import parse_prompts as parse

    return parse(ctx, param, values)


def _seq_lens(ctx: click.Context, param: click.Parameter, value: str | None) -> list[int] | None:
    if value is None:
        return None
    try:
        return [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise click.BadParameter(f"'{value}' is not a comma-separated list of whole numbers, e.g. 64,128,256,512") from None


def _seq_range(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    low, sep, high = value.partition(":")
    try:
        if not sep:
            raise ValueError
        return int(low), int(high)
    except ValueError:
        raise click.BadParameter(f"'{value}' is not LOW:HIGH, e.g. 1:512") from None


@click.command("coreml")
@click.option("--model", "-m", default="BAAI/bge-base-en-v1.5", show_default=True,
              help="Hub id or local folder of a sentence-transformers (or plain transformers) model.")
@click.option("--output", "-o", type=click.Path(), default=None,
              help="Output folder; an export of the same model there gets coreml/ added.  [default: artifacts/<model name>]")
@click.option("--revision", default=None, help="Hub revision (branch, tag or commit) to download.")
@click.option("--pooling", default=None, metavar="MODE", help="Override the model's pooling (as for 'bge-export onnx').")
@click.option("--prompt", "prompts", multiple=True, callback=parse_prompts, metavar="NAME=TEXT",
              help="Add a prompt to the model's own (repeatable), as for 'bge-export onnx'.")
@click.option("--precision", type=click.Choice(["fp16", "fp32"]), default="fp16", show_default=True,
              help="Compute precision of the ML Program (fp16 runs on the Neural Engine; the pooling and "
                   "normalize tail stays fp32).")
@click.option("--compress", multiple=True, type=click.Choice(["int8", "palettize4", "palettize6", "palettize8"]),
              help="Also write a weight-compressed package per method; repeat for several "
                   "(int8: linear symmetric per channel; palettizeN: N-bit k-means tables).")
@click.option("--seq-lens", callback=_seq_lens, default=None, metavar="N,N,...",
              help="Enumerated sequence lengths (batch 1), the Neural Engine's preferred form.  "
                   "[default: 64,128,256,512 capped at the model's max_seq_length, which is always included]")
@click.option("--seq-range", callback=_seq_range, default=None, metavar="LOW:HIGH",
              help="A flexible length range instead of enumerated lengths, e.g. 1:512 (runs on CPU/GPU).")
@click.option("--batch-size", type=int, default=1, show_default=True,
              help="Also accept batches of this size (enumerated: batch 1 and this; range: 1 to this).")
@click.option("--minimum-deployment-target", default=None, metavar="TARGET",
              help="iOS16, iOS17, iOS18, macOS13, macOS14 or macOS15.  [default: iOS18 with enumerated lengths, "
                   "which need it; iOS17 with --seq-range]")
@click.option("--compute-units", type=click.Choice(["all", "cpu", "cpu-and-ne", "cpu-and-gpu"]), default="all",
              show_default=True, help="Compute units of the Core ML check (macOS only).")
@click.option("--check-texts", type=int, default=96, show_default=True,
              help="Built-in check texts each package is computed on.")
@click.option("--allow-pickle", is_flag=True, help="Allow loading pickle (.bin) weights. Only for sources you trust.")
@click.option("--trust-remote-code", is_flag=True, help="Run custom model code from the model's repository.")
@click.option("--force", is_flag=True, help="Start the output folder afresh, replacing the export in it (its ONNX "
                                            "artifacts too); without it coreml/ is added to an export of the same model.")
@click.option("--no-check", is_flag=True, help="Skip the numerics check (packages stay 'unverified').")
@click.option("--quiet", "-q", is_flag=True, help="Print only the result lines.")
def coreml_command(model: str, output: str | None, revision: str | None, pooling: str | None,
                   prompts: dict[str, str] | None, precision: str,
                   compress: tuple[str, ...], seq_lens: list[int] | None, seq_range: tuple[int, int] | None,
                   batch_size: int, minimum_deployment_target: str | None, compute_units: str, check_texts: int,
                   allow_pickle: bool, trust_remote_code: bool, force: bool, no_check: bool, quiet: bool) -> None:
    """Convert MODEL to Core ML ML Program packages for iOS and macOS.

    \b
    Inputs:  input_ids, attention_mask [, token_type_ids]   int32 [1, sequence], right-padded
    Output:  sentence_embedding                             float32 [1, dim]
    Writes coreml/model_<precision>.mlpackage and, per --compress method,
    coreml/model_<precision>_<method>.mlpackage, beside the tokenizer, into the
    model's output folder (one manifest with the ONNX artifacts when the folder
    holds them). Each package's MIL program is computed in numpy against the
    PyTorch fp32 baseline; off macOS packages stay 'unverified' with those
    numbers (Core ML runs only on macOS), on macOS Core ML itself decides.
    """
    from bge_export.targets.coreml.export import CoreMLOptions, export_coreml

    options = CoreMLOptions(
        model=model, output=output, revision=revision, pooling=pooling, prompts=prompts, allow_pickle=allow_pickle,
        trust_remote_code=trust_remote_code, precision=precision, compress=list(compress), seq_lens=seq_lens,
        seq_range=seq_range, batch_size=batch_size, minimum_deployment_target=minimum_deployment_target,
        compute_units=compute_units, force=force, check=not no_check, check_texts=check_texts, quiet=quiet,
    )
    result = export_coreml(options)
    for entry in result.entries:
        click.echo(f"{entry.status.upper():10s} {result.output / entry.path}  ({entry.size_bytes / 1e6:.1f} MB; "
                   f"{entry.status_reason})")
    if not result.ok:
        names = ", ".join(e.path for e in result.failed)
        raise CheckFailedError(f"{names} failed its check; see {result.output / 'manifest.json'}")
