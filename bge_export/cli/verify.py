"""`bge-export verify FOLDER`: the click layer over bge_export.folder.verify.verify_folder (registered in cli.py)."""

from __future__ import annotations

from typing import Any

import click

from bge_export.cli.sign import check_signature, signature_options
from bge_export.errors import CheckFailedError, InputError
from bge_export.folder.manifest import MODEL_CARD_NAME
from bge_export.folder.verify import card_seal, verify_folder
from bge_export.report.model_card import write_model_card


@click.command("verify")
@click.argument("folder", type=click.Path())
@click.option("--rehash", is_flag=True,
              help="Show what sealing the folder as it is now would bless: each changed file with its old and new "
                   "sha256, each verdict that falls back to unverified, the manifest's seal. Only for changes you "
                   "made yourself (a manifest from an older bge-export, an edit on purpose); with any other problem "
                   "it blesses nothing. Writes only with --yes.")
@click.option("--yes", "confirm", is_flag=True, help="With --rehash: write what it listed (seal the manifest).")
@click.option("--verbose", "-v", is_flag=True, help="Also list every check that passed.")
@signature_options
def verify_command(folder: str, rehash: bool, confirm: bool, verbose: bool, **signature: Any) -> None:
    """Check that FOLDER is exactly what bge-export wrote, and that its parts fit.

    \b
    Every file against the sha256 in manifest.json, and manifest.json against
    its own seal; no file the manifest does not list (README.md and reports
    aside); config, pooling and tokenizer files against the manifest's model;
    every artifact loads, as its target checks it (ONNX: onnx.checker and an
    onnxruntime run; OpenVINO IR: compiled and run by OpenVINO; Core ML: the
    package parses; TensorRT: the plan deserializes where TensorRT runs).
    Exit 0 with one summary line when intact; 1 naming every problem; 2 when
    FOLDER is not an output folder. With --public-key (or the certificate or
    Sigstore flags): model.sig too, every file exactly as signed (bge-export sign).
    """
    if confirm and not rehash:
        raise InputError("--yes confirms what --rehash lists; pass both, after reading what --rehash alone shows")
    result = verify_folder(folder, rehash=rehash, confirm=confirm)
    for line in result.rehash_plan:
        click.echo(f"rehash: {line}")
    if result.sealed_now and card_seal(result.folder) is not None:
        write_model_card(result.folder)  # the card was made from the manifest before the edit
        click.echo(f"rehash: {MODEL_CARD_NAME} regenerated from the sealed manifest")
    signed = check_signature(result, **signature)  # model.sig, when a method is given
    if verbose:
        for line in result.checked:
            click.echo(f"ok: {line}")
    for problem in result.problems:
        click.echo(f"problem: {problem}")
    if not result.ok:
        raise CheckFailedError(f"'{folder}' failed verification: {len(result.problems)} problem(s), listed above")
    click.echo(result.summary)
    if signed:
        click.echo(f"signed: {signed}")
