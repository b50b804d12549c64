"""`bge-export`: a thin click layer over the Python API; every flag maps onto one API argument.

Only click is imported at start-up, so `bge-export --help` stays instant and needs no optional backend.
"""

from __future__ import annotations

import sys

import click

from bge_export import __version__
from bge_export.errors import BgeExportError, CheckFailedError

_CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}

def parse_prompts(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict[str, str] | None:
    """--prompt query="query: " --prompt passage="passage: " -> {"query": "query: ", "passage": "passage: "}."""
    prompts: dict[str, str] = {}
    for value in values:
        name, sep, text = value.partition("=")
        if not sep or not name.strip():
            raise click.BadParameter(f"'{value}' is not NAME=TEXT, e.g. query='query: '")
        prompts[name.strip()] = text
    return prompts or None


@click.group(context_settings=_CONTEXT)
@click.version_option(__version__, prog_name="bge-export")
def cli() -> None:
    """Export sentence-embedding models to validated ONNX, TensorRT and Core ML artifacts.

    \b
    Typical use:
      bge-export onnx --model BAAI/bge-base-en-v1.5 --output artifacts/bge-base
      bge-export tensorrt artifacts/bge-base --precision fp16   (GPU host; --prepare-only on a CPU)
      bge-export coreml --model BAAI/bge-base-en-v1.5 --output artifacts/bge-base
      bge-export inspect artifacts/bge-base

    Every artifact is checked against the model run in PyTorch fp32 (what
    sentence-transformers computes); a failed check exits with code 1, bad
    input with code 2.
    """


@cli.command("onnx")
@click.option("--model", "-m", default="BAAI/bge-base-en-v1.5", show_default=True,
              help="Hub id or local folder of a sentence-transformers (or plain transformers) model.")
@click.option("--output", "-o", type=click.Path(), default=None,
              help="Output folder (created atomically).  [default: artifacts/<model name>]")
@click.option("--revision", default=None, help="Hub revision (branch, tag or commit) to download.")
@click.option("--pooling", default=None, metavar="MODE",
              help="Override the model's pooling: cls, mean, max, mean_sqrt_len_tokens, weightedmean, "
                   "lasttoken (combine with '+'). Default: the model's 1_Pooling config, else mean.")
@click.option("--prompt", "prompts", multiple=True, callback=parse_prompts, metavar="NAME=TEXT",
              help="Add a prompt to the model's own (repeatable), e.g. --prompt query='query: ' for E5.")
@click.option("--optimize", is_flag=True, help="Also write onnx/model_optimized.onnx: fused attention, embeddings and GELU; per-token work skips the padding.")
@click.option("--fp16", is_flag=True, help="Also write onnx/model_fp16.onnx (attention cores with their softmax, LayerNorm, pooling and normalize stay fp32; checked with real fp16 rounding).")
@click.option("--quantize", multiple=True, type=click.Choice(["int8", "int8-static", "int8-openvino"]),
              help="int8: dynamic, accuracy-aware, fastest on onnxruntime CPU -> onnx/model_qint8_<preset>.onnx; "
                   "int8-static: QDQ with calibration (TensorRT & co) -> onnx/model_qint8_static.onnx; "
                   "int8-openvino: outliers tamed, then NNCF's Q/DQ layout, fastest on OpenVINO (x86 VNNI/AMX) "
                   "-> onnx/model_qint8_openvino.onnx (needs the [openvino] extra). Repeat for several.")
@click.option("--int8-preset", type=click.Choice(["avx512_vnni", "avx2", "arm64"]), default=None,
              help="Target CPU for dynamic INT8.  [default: detected from this CPU]")
@click.option("--min-cosine", type=float, default=None,
              help="INT8 fidelity bound: every held-apart validation text keeps at least this cosine to fp32 "
                   "(and their mean too).  [default: min 0.99 and mean 0.996]")
@click.option("--calibration", type=click.Path(), default=None,
              help="Calibration texts (.txt one per line, or .jsonl with 'text').  [default: built-in set]")
@click.option("--calibration-method", type=click.Choice(["minmax", "percentile", "entropy"]), default="percentile",
              show_default=True, help="Activation range estimation for --quantize int8-static.")
@click.option("--opset", type=int, default=17, show_default=True, help="ONNX opset (>= 17 keeps LayerNormalization one op).")
@click.option("--with-token-embeddings", is_flag=True,
              help="Also expose 'token_embeddings' [batch, sequence, hidden] for tools that pool for themselves.")
@click.option("--allow-pickle", is_flag=True, help="Allow loading pickle (.bin) weights. Only for sources you trust.")
@click.option("--trust-remote-code", is_flag=True, help="Run custom model code from the model's repository.")
@click.option("--force", is_flag=True, help="Replace the output folder if it exists.")
@click.option("--no-check", is_flag=True, help="Skip the built-in check against the PyTorch baseline (artifact stays 'unverified').")
@click.option("--quiet", "-q", is_flag=True, help="Print only the result line.")
def onnx_command(model: str, output: str | None, revision: str | None, pooling: str | None,
                 prompts: dict[str, str] | None, optimize: bool,
                 fp16: bool, quantize: tuple[str, ...], int8_preset: str | None, min_cosine: float | None,
                 calibration: str | None, calibration_method: str, opset: int,
                 with_token_embeddings: bool, allow_pickle: bool, trust_remote_code: bool, force: bool,
                 no_check: bool, quiet: bool) -> None:
    """Export MODEL to one ONNX graph: encoder + pooling + L2 normalize.

    \b
    Inputs:  input_ids, attention_mask [, token_type_ids]   int64 [batch, sequence], right-padded
    Output:  sentence_embedding                             float32 [batch, dim]
    Writes onnx/model.onnx, the tokenizer, the model's sentence-transformers
    files and manifest.json into the output folder; with --optimize, --fp16
    and --quantize also model_optimized.onnx, model_fp16.onnx and
    model_qint8_<preset>.onnx / model_qint8_static.onnx. Every artifact is
    checked against the PyTorch fp32 baseline and recorded in the manifest.
    """
    from bge_export.targets.onnx.export import ExportOptions, export

    options = ExportOptions(
        model=model, output=output, revision=revision, pooling=pooling, prompts=prompts, opset=opset,
        with_token_embeddings=with_token_embeddings, allow_pickle=allow_pickle,
        trust_remote_code=trust_remote_code, force=force, check=not no_check, quiet=quiet,
        optimize=optimize, fp16=fp16, quantize=list(quantize), int8_preset=int8_preset, min_cosine=min_cosine,
        calibration=calibration, calibration_method=calibration_method,
    )
    result = export(options)
    for entry in result.manifest.artifacts:
        click.echo(f"{entry.status.upper():10s} {result.output / entry.path}  ({entry.status_reason})")
    if not result.ok:
        names = ", ".join(e.path for e in result.failed)
        raise CheckFailedError(f"{names} failed its check; see {result.output / 'manifest.json'}")


@cli.command("inspect")
@click.argument("folder", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON (with the recommendation and what judged each status).")
def inspect_command(folder: str, as_json: bool) -> None:
    """Show what an output FOLDER holds: which file to deploy per runtime, model, spec and one row per artifact."""
    from bge_export.report.manifest_view import format_manifest, inspect_dict
    from bge_export.folder.manifest import read_manifest

    manifest = read_manifest(folder)
    if as_json:
        import json

        click.echo(json.dumps(inspect_dict(manifest), indent=2, ensure_ascii=False))
    else:
        click.echo(format_manifest(manifest))


def main(argv: list[str] | None = None) -> None:
    """Entry point: errors become one line on stderr and an exit code.

    0 success; 1 an artifact failed its check; 2 bad input or usage; 3 an internal error (a bug: set
    BGE_EXPORT_DEBUG=1 for its traceback); 130 interrupted (Ctrl-C); 143 / 129 terminated by SIGTERM / SIGHUP.
    Interrupted and terminated runs leave nothing half-written behind.
    """
    import os

    from bge_export.folder.staging import Terminated, terminate_as_interrupt

    try:
        with terminate_as_interrupt():
            cli.main(args=argv, prog_name="bge-export", standalone_mode=False)
    except BgeExportError as exc:
        _fail(str(exc), exc.exit_code)
    except click.exceptions.UsageError as exc:
        hint = f" (see 'bge-export {exc.ctx.info_name} --help')" if exc.ctx and exc.ctx.parent else " (see 'bge-export --help')"
        _fail(exc.format_message() + hint, 2)
    except click.exceptions.Abort as exc:  # click turns KeyboardInterrupt (and so Terminated) into Abort
        if isinstance(exc.__cause__, Terminated):
            _fail(f"terminated by signal {exc.__cause__.signum}; nothing was written", 128 + exc.__cause__.signum)
        _fail("interrupted; nothing was written", 130)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except Terminated as exc:
        _fail(f"terminated by signal {exc.signum}; nothing was written", 128 + exc.signum)
    except KeyboardInterrupt:
        _fail("interrupted; nothing was written", 130)
    except OSError as exc:  # the file system said no (disk full, permissions, read-only): the user can act on it
        if os.environ.get("BGE_EXPORT_DEBUG"):
            raise
        where = f" ({exc.filename})" if exc.filename else ""
        _fail(f"{exc.strerror or type(exc).__name__}{where}; free space, fix the permissions or choose another path", 2)
    except Exception as exc:  # a bug, not bad input: say so in one line, keep the traceback one variable away
        if os.environ.get("BGE_EXPORT_DEBUG"):
            raise
        first = (str(exc).splitlines() or [""])[0][:300]
        _fail(f"internal error ({type(exc).__name__}: {first}); this is a bug in bge-export, please report it "
              "with the command you ran (BGE_EXPORT_DEBUG=1 shows the traceback)", 3)
    sys.exit(0)


def _fail(message: str, code: int) -> None:
    click.echo("error: " + " ".join(message.split()), err=True)
    sys.exit(code)


from bge_export.cli.validate import bench_command, validate_command  # noqa: E402  (validation helper's commands)

cli.add_command(validate_command)
cli.add_command(bench_command)
from bge_export.targets.tensorrt.command import tensorrt_command  # noqa: E402  (TensorRT target's command)
cli.add_command(tensorrt_command)
from bge_export.targets.coreml.command import coreml_command  # noqa: E402  (CoreML target's command)
cli.add_command(coreml_command)
from bge_export.cli.build import build_command  # noqa: E402  (a recipe's whole flow)
cli.add_command(build_command)
from bge_export.cli.verify import verify_command  # noqa: E402  (a folder against its manifest)
cli.add_command(verify_command)
from bge_export.cli.triton import triton_command  # noqa: E402  (a Triton model repository from a folder)
cli.add_command(triton_command)


if __name__ == "__main__":  # pragma: no cover
    main()
