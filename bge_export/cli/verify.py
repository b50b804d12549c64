"""`bge-export verify FOLDER`: the click layer over bge_export.folder.verify.verify_folder (registered in cli.py)."""

from __future__ import annotations

import click

from bge_export.errors import CheckFailedError
from bge_export.folder.verify import verify_folder


@click.command("verify")
@click.argument("folder", type=click.Path())
@click.option("--rehash", is_flag=True,
              help="Seal manifest.json as it is (its manifest_sha256) when that seal is the only problem: a "
                   "manifest from an older bge-export, or one you edited on purpose. Writes nothing otherwise.")
@click.option("--verbose", "-v", is_flag=True, help="Also list every check that passed.")
def verify_command(folder: str, rehash: bool, verbose: bool) -> None:
    """Check that FOLDER is exactly what bge-export wrote, and that its parts fit.

    \b
    Every file against the sha256 in manifest.json, and manifest.json against
    its own seal; no file the manifest does not list (README.md and reports
    aside); config, pooling and tokenizer files against the manifest's model;
    every artifact loads, as its target checks it (ONNX: onnx.checker and an
    onnxruntime run; OpenVINO IR: compiled and run by OpenVINO; Core ML: the
    package parses; TensorRT: the plan deserializes where TensorRT runs).
    Exit 0 with one summary line when intact; 1 naming every problem; 2 when
    FOLDER is not an output folder.
    """
    result = verify_folder(folder, rehash=rehash)
    if verbose:
        for line in result.checked:
            click.echo(f"ok: {line}")
    for problem in result.problems:
        click.echo(f"problem: {problem}")
    if not result.ok:
        raise CheckFailedError(f"'{folder}' failed verification: {len(result.problems)} problem(s), listed above")
    click.echo(result.summary)
