"""`bge-export sign FOLDER`, and the signature flags of `bge-export verify` (bge_export/folder/signing.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import click

from bge_export.folder.manifest import SIGNATURE_NAME
from bge_export.folder.signing import SignOptions, sign, verify_signature
from bge_export.folder.verify_graphs import VerifyResult
from bge_export.options import click_options
from bge_export.report.model_card import mark_card_signed

NOT_CHECKED = f"{SIGNATURE_NAME} present: pass --public-key PUB.pem (or the certificate or Sigstore flags) to check it"


@click.command("sign")
@click_options(SignOptions)
def sign_command(**values: Any) -> None:
    """Sign FOLDER: model.sig, an OpenSSF model-signing signature over every file (manifest, card, reports).

    \b
    Only an intact folder is signed (it must pass `bge-export verify` first);
    the model card is rewritten first to say how to check the signature, and
    nothing is written after model.sig. Needs: pip install 'bge-export[sign]'.
    \b
      bge-export sign artifacts/bge-base --private-key keys/signing.pem
      bge-export verify artifacts/bge-base --public-key keys/signing.pub.pem
    \b
    Keys: openssl ecparam -name prime256v1 -genkey -noout -out signing.pem;
    openssl ec -in signing.pem -pubout -out signing.pub.pem. An encrypted
    key's password comes from the environment: --password-env VAR.
    Exit 0 signed; 2 bad input (key, password, a folder that fails verify).
    """
    result = sign(SignOptions(**values), before_signing=mark_card_signed)
    click.echo(result.summary)


def signature_options(function: Callable[..., Any]) -> Callable[..., Any]:
    """verify's flags for model.sig: one method, as the folder was signed."""
    options = [
        click.option("--public-key", type=click.Path(), metavar="PUB.pem",
                     help="Also check model.sig with the signer's PEM public key: every file exactly as signed "
                          "(a changed, added or removed file, or another signer, exits 1)."),
        click.option("--certificate-chain", type=click.Path(), multiple=True, metavar="CHAIN.pem",
                     help="Check a certificate signature (bge-export sign --signing-certificate) through this chain "
                          "to its root; repeat for several."),
        click.option("--sigstore-identity", metavar="IDENTITY",
                     help="Check a Sigstore signature: the identity (e-mail, workflow) that must have signed."),
        click.option("--sigstore-issuer", metavar="URL", help="With --sigstore-identity: its OIDC issuer."),
        click.option("--sigstore-staging", is_flag=True, help="With --sigstore-identity: Sigstore's staging instance."),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def check_signature(result: VerifyResult, public_key: str | None, certificate_chain: tuple[str, ...],
                    sigstore_identity: str | None, sigstore_issuer: str | None, sigstore_staging: bool) -> str | None:
    """Add model.sig's verdict to verify's result; returns the line to print when it verified. Without a
    method, a model.sig present is said not checked (and is never an unrecorded file)."""
    if public_key is None and not certificate_chain and sigstore_identity is None:
        if (Path(result.folder) / SIGNATURE_NAME).is_file():
            result.not_checked.append(NOT_CHECKED)
        return None
    check = verify_signature(result.folder, public_key, certificate_chain=list(certificate_chain) or None,
                             sigstore_identity=sigstore_identity, sigstore_issuer=sigstore_issuer,
                             sigstore_staging=sigstore_staging)
    result.problems += check.problems
    return check.checked or None
