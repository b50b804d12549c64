"""`bge-export`: a thin click layer over the Python API; every flag maps onto one options field.

Each target's command comes from its registry row; at start-up no model runtime or optional backend is imported
(no torch, onnx, onnxruntime, ...: each target's build is imported when its command runs; tests/unit/test_imports.py),
so `bge-export --help` stays instant and needs no optional backend.
"""

from __future__ import annotations

import json
import os
import sys

import click

from bge_export.cli.build import build_command
from bge_export.cli.sign import sign_command
from bge_export.cli.triton import triton_command
from bge_export.cli.validate import bench_command, validate_command
from bge_export.cli.verify import verify_command
from bge_export.errors import BgeExportError
from bge_export.files import os_error_text
from bge_export.folder.manifest import read_manifest
from bge_export.folder.staging import Terminated, terminate_as_interrupt
from bge_export.registry import targets
from bge_export.report.manifest_view import format_manifest, inspect_dict
from bge_export.version import __version__

_CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(context_settings=_CONTEXT)
@click.version_option(__version__, prog_name="bge-export")
def cli() -> None:
    """Export sentence-embedding models to validated ONNX, TensorRT, Core ML and OpenVINO artifacts.

    \b
    Typical use (every command; each has --help):
      bge-export onnx --model BAAI/bge-base-en-v1.5 --output artifacts/bge-base --optimize --quantize int8
      bge-export validate artifacts/bge-base       (report.json/.md/.html; --sts, --retrieval)
      bge-export inspect artifacts/bge-base        (which file to deploy, every artifact's status)
      bge-export bench artifacts/bge-base          (the speed grid alone)
      bge-export tensorrt artifacts/bge-base --precision fp16   (GPU host; --prepare-only on a CPU)
      bge-export coreml --model BAAI/bge-base-en-v1.5 --output artifacts/bge-base
      bge-export openvino artifacts/bge-base --precision int8
      bge-export build configs/bge-base-en-v1.5.yaml   (a recipe: every target, validated, one folder)
      bge-export verify artifacts/bge-base         (every file against the manifest)
      bge-export sign artifacts/bge-base --private-key KEY.pem   (model.sig; verify --public-key PUB.pem)
      bge-export triton artifacts/bge-base --output model_repository

    Every artifact is checked against the model run in PyTorch fp32 (what
    sentence-transformers computes); a failed check exits with code 1, bad
    input with code 2.
    """


@click.command("inspect")
@click.argument("folder", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON (with the recommendation and what judged each status).")
def inspect_command(folder: str, as_json: bool) -> None:
    """Show what an output FOLDER holds: which file to deploy per runtime, model, spec and one row per artifact."""
    manifest = read_manifest(folder)
    if as_json:
        click.echo(json.dumps(inspect_dict(manifest), indent=2, ensure_ascii=False))
    else:
        click.echo(format_manifest(manifest))


def main(argv: list[str] | None = None) -> None:
    """Entry point: errors become one line on stderr and an exit code.

    0 success; 1 an artifact failed its check; 2 bad input or usage; 3 an internal error (a bug: set
    BGE_EXPORT_DEBUG=1 for its traceback); 130 interrupted (Ctrl-C); 143 / 129 terminated by SIGTERM / SIGHUP.
    Interrupted and terminated runs leave nothing half-written behind.
    """
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
        _fail(f"{os_error_text(exc)}; free space, fix the permissions or choose another path", 2)
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


def _add_commands() -> None:
    """Every target's command from the registry (bge-export onnx, tensorrt, coreml, openvino, ...), then the
    commands over folders and recipes."""
    for target in targets().values():
        cli.add_command(target.load(target.command))
    for command in (inspect_command, validate_command, bench_command, build_command, verify_command, sign_command,
                    triton_command):
        cli.add_command(command)


_add_commands()


if __name__ == "__main__":  # pragma: no cover
    main()
