"""model.sig: an OpenSSF `model-signing` signature over every file of an output folder (`bge-export sign`).

manifest.json proves a folder is what bge-export wrote only against accidents: its seal is an unkeyed sha256
anyone can recompute. A signature ties every file, the manifest, the model card and the reports included, to a
key the publisher holds. The signing itself is the field's own library (https://github.com/sigstore/model-transparency,
`pip install 'bge-export[sign]'`), so `model_signing verify` checks the same file without bge-export.

- Method: an elliptic-curve key pair (offline, the default); a signing certificate and its chain; or Sigstore
  (keyless: an OIDC identity, online). Verification takes the matching public key, chain or identity.
- Coverage: model_signing's file-by-file sha256 manifest of the folder, leaving out only model.sig itself (its
  name is recorded in the signed payload, so verification leaves out the same) and git's own files, which
  model_signing always leaves out (`bge-export verify` leaves out .git/ as well and names any other file).
  Symbolic links are refused (model_signing's default, kept): a link's target is not the folder's to sign.
- Only a folder that passes `verify_folder` is signed: bge-export never signs a folder it cannot vouch for.
- Written last: `before_signing` lets a caller rewrite what describes the signed folder first (the CLI and
  `bge-export build` rewrite the model card so it says how to verify), then nothing is written after model.sig.
"""

from __future__ import annotations

import ast
import base64
import json
import os
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

from pydantic import model_validator

from bge_export.errors import BgeExportError, InputError, IntegrityError, MissingDependencyError
from bge_export.files import file_sha256, write_atomic
from bge_export.folder.manifest import MANIFEST_NAME, MODEL_CARD_NAME, SIGNATURE_NAME, read_manifest
from bge_export.folder.signing_keys import check_private_key, check_public_key, from_environment, pem_file
from bge_export.folder.staging import check_writable_output
from bge_export.folder.verify import verify_folder
from bge_export.options import OptionsModel, option

if TYPE_CHECKING:
    from model_signing import signing, verifying

EXTRA = "sign"
# What model_signing leaves out of every signature (hashing.Config's ignore_git_paths, on by default).
GIT_PATHS = (".git", ".gitattributes", ".github", ".gitignore")
_SIGN_HINT = "sign it with `bge-export sign FOLDER --private-key KEY.pem`"


class SignOptions(OptionsModel):
    """What `bge-export sign FOLDER` (and a recipe's `sign:` section) is asked for: one method, its key material.
    Passwords and tokens are named by environment variable, never given on a command line or in a recipe."""

    folder: str = option(..., cli="argument", path=True, recipe=False, help="An output folder made by bge-export.")
    private_key: str | None = option(None, path=True, metavar="KEY.pem",
                                     help="PEM elliptic-curve private key (P-256, P-384 or P-521) to sign with, "
                                          "offline (the default method); with --signing-certificate, that "
                                          "certificate's key.")
    password_env: str | None = option(None, metavar="VAR",
                                      help="Name of the environment variable holding the private key's password "
                                           "(for an encrypted key; the password itself is never a flag).")
    signing_certificate: str | None = option(None, path=True, metavar="CERT.pem",
                                             help="Sign with this PEM certificate (of --private-key) instead of a "
                                                  "bare key; verifiers trust it through its chain.")
    certificate_chain: list[str] = option([], multiple=True, path=True, metavar="CHAIN.pem",
                                          help="With --signing-certificate: the certificates up to the root, one "
                                               "PEM file each; repeat for several.")
    sigstore: bool = option(False, help="Sign with Sigstore (keyless: an OIDC identity, online, recorded in its "
                                        "public transparency log) instead of a key.")
    identity_token_env: str | None = option(None, metavar="VAR",
                                            help="With --sigstore: the environment variable holding an OIDC "
                                                 "identity token (CI); without it Sigstore asks for a browser login.")
    sigstore_staging: bool = option(False, help="With --sigstore: Sigstore's staging instance (for tests).")

    @model_validator(mode="after")
    def _one_method(self) -> "SignOptions":
        if self.sigstore == (self.private_key is not None):
            raise InputError("sign with one method: --private-key KEY.pem (an elliptic-curve key, offline), or "
                             "--sigstore (keyless, online)")
        if self.sigstore and (self.password_env or self.signing_certificate or self.certificate_chain):
            raise InputError("--sigstore signs without a key: drop --password-env, --signing-certificate and "
                             "--certificate-chain, or drop --sigstore")
        if not self.sigstore and (self.identity_token_env or self.sigstore_staging):
            raise InputError("--identity-token-env and --sigstore-staging go with --sigstore; add it, or drop them")
        if self.certificate_chain and not self.signing_certificate:
            raise InputError("--certificate-chain goes with --signing-certificate; add it, or drop the chain")
        return self


@dataclass
class SignResult:
    folder: Path
    signature: Path
    files: int  # files the signature covers
    method: str
    seconds: float

    @property
    def summary(self) -> str:
        return (f"{self.signature}: signed {self.files} files ({self.method}) in {self.seconds:.1f}s; check it "
                f"with `bge-export verify {self.folder} --public-key PUB.pem`" if self.method == "key" else
                f"{self.signature}: signed {self.files} files ({self.method}) in {self.seconds:.1f}s")


@dataclass
class SignatureCheck:
    """What `verify_signature` found: `problems` (each names a file and the fix), `checked` when none."""

    folder: Path
    problems: list[str] = field(default_factory=list)
    checked: str = ""

    @property
    def ok(self) -> bool:
        return not self.problems


def sign(options: SignOptions, before_signing: Callable[[Path], None] | None = None) -> SignResult:
    """`bge-export sign`: `sign_folder` with the options' method, the password or token read from the named
    environment variable."""
    return sign_folder(options.folder, private_key=options.private_key,
                       password=from_environment(options.password_env, "--password-env", "the key's password"),
                       signing_certificate=options.signing_certificate, certificate_chain=options.certificate_chain,
                       sigstore=options.sigstore, sigstore_staging=options.sigstore_staging,
                       identity_token=from_environment(options.identity_token_env, "--identity-token-env",
                                                        "an OIDC identity token"),
                       before_signing=before_signing)


def check_sign_options(options: SignOptions) -> None:
    """What `bge-export build` checks before its first step, so a bad key fails in seconds, not after the
    build: the extra installed, the variables named set, the key and certificates readable (Sigstore's login
    happens only when signing)."""
    _require_model_signing()
    password = from_environment(options.password_env, "--password-env", "the key's password")
    from_environment(options.identity_token_env, "--identity-token-env", "an OIDC identity token")
    if not options.sigstore:
        signing_config(options.private_key, password, options.signing_certificate, options.certificate_chain)


def sign_folder(folder: str | Path, private_key: str | Path | None = None, password: str | None = None, *,
                signing_certificate: str | Path | None = None, certificate_chain: Sequence[str | Path] = (),
                sigstore: bool = False, sigstore_staging: bool = False, identity_token: str | None = None,
                before_signing: Callable[[Path], None] | None = None) -> SignResult:
    """Write FOLDER/model.sig over every file of FOLDER (see the module docstring).

    The key is loaded first, then the folder must pass `verify_folder` (else InputError naming its first
    problem, nothing written); `before_signing(folder)` runs next, then the signature is written atomically.
    """
    started = time.perf_counter()
    folder = Path(folder).expanduser()
    if folder.is_dir():  # a missing folder is named by verify_folder below
        check_writable_output(folder, "make the folder writable, or sign a copy of it", replaced=False)
    with _sigstore_errors(sigstore):
        config = signing_config(private_key, password, signing_certificate, certificate_chain, sigstore,
                                sigstore_staging, identity_token)
    files = signable_files(folder)
    manifest_digest = file_sha256(folder / MANIFEST_NAME) if (folder / MANIFEST_NAME).is_file() else ""
    result = verify_folder(folder)
    if not result.ok:
        raise InputError(f"'{folder}' fails `bge-export verify` ({result.problems[0]}); bge-export signs only an "
                         "intact folder: fix it, or re-run the export, then sign")
    verified = {**read_manifest(folder).files, MANIFEST_NAME: manifest_digest}  # what verify_folder vouched for
    card = folder / MODEL_CARD_NAME
    card_before = card.read_bytes() if card.is_file() and not card.is_symlink() else None
    try:
        if before_signing is not None:
            before_signing(folder)
            files = signable_files(folder)
        signature = _write_signature(config, folder, sigstore, verified)
    except BaseException:  # the card says the folder is signed only when it is (an interrupt included)
        if card_before is not None and card.read_bytes() != card_before:
            write_atomic(card, card_before)
        raise
    method = "sigstore" if sigstore else "certificate" if signing_certificate else "key"
    return SignResult(folder, signature, len(files), method, time.perf_counter() - started)


def _write_signature(config: "signing.Config", folder: Path, sigstore: bool, verified: dict[str, str]) -> Path:
    """model_signing hashes the folder and signs; model.sig then appears whole (written aside, renamed), and only
    if every digest it signed is the one `verify_folder` checked: model_signing reads the files again, and a file
    changed in between must not be signed unchecked."""
    with tempfile.TemporaryDirectory(prefix="bge-export-sign-") as scratch:
        written = Path(scratch) / SIGNATURE_NAME
        try:
            with _sigstore_errors(sigstore):
                config.sign(folder, written)
        except (ValueError, OSError) as exc:
            raise InputError(f"model_signing could not sign '{folder}' ({_first_line(exc)}); nothing was "
                             "written") from None
        signed = signed_digests(written)
        changed = sorted(name for name, digest in verified.items() if signed.get(name, digest) != digest)
        if changed:
            raise IntegrityError(f"{changed[0]} changed while '{folder}' was being signed (after bge-export checked "
                                 "it); nothing was signed: run `bge-export verify`, then sign again")
        return write_atomic(folder / SIGNATURE_NAME, written.read_bytes())


def signed_digests(signature: Path) -> dict[str, str]:
    """{file name: sha256} as a model_signing signature (a Sigstore bundle whose DSSE payload is an in-toto
    statement, one resource per file) records them."""
    try:
        bundle = json.loads(signature.read_text(encoding="utf-8"))
        statement = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
        return {str(r["name"]): str(r["digest"]) for r in statement["predicate"]["resources"]
                if r.get("algorithm") == "sha256"}
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{signature.name} is not a model_signing signature this bge-export reads ({exc}); "
                         "pin model-signing to the version the [sign] extra names") from None


def signing_config(private_key: str | Path | None, password: str | None = None,
                   signing_certificate: str | Path | None = None, certificate_chain: Sequence[str | Path] = (),
                   sigstore: bool = False, sigstore_staging: bool = False,
                   identity_token: str | None = None) -> "signing.Config":
    """A model_signing signing configuration for one method, its key checked and loaded now (InputError, one
    line, for a missing, unreadable or wrong key or password), the signature file itself left out."""
    _require_model_signing()
    from model_signing import hashing, signing

    config = signing.Config().set_hashing_config(hashing.Config().set_ignored_paths(paths=[SIGNATURE_NAME]))
    if sigstore:
        return config.use_sigstore_signer(use_staging=sigstore_staging, identity_token=identity_token)
    if private_key is None:
        raise InputError("sign with --private-key KEY.pem (an elliptic-curve key), or with --sigstore")
    key = pem_file(private_key, "--private-key", "private key")
    check_private_key(key, password)
    with _refused_by_model_signing("--private-key", key):
        if signing_certificate is None:
            # model_signing 1.1.1 annotates the password as str, but cryptography's loader needs bytes (a str
            # raises TypeError, as its own CLI's --password does); bytes work.
            return config.use_elliptic_key_signer(
                private_key=key, password=password.encode() if password else None)  # type: ignore[arg-type]
        certificate = pem_file(signing_certificate, "--signing-certificate", "signing certificate")
        chain = [pem_file(c, "--certificate-chain", "certificate") for c in certificate_chain]
        return config.use_certificate_signer(private_key=key, signing_certificate=certificate,
                                             certificate_chain=chain)


def verify_signature(folder: str | Path, public_key: str | Path | None = None, *,
                     certificate_chain: Sequence[str | Path] | None = None, sigstore_identity: str | None = None,
                     sigstore_issuer: str | None = None, sigstore_staging: bool = False) -> SignatureCheck:
    """Check FOLDER/model.sig and every file of FOLDER against it, with one method: the signer's public key;
    the certificate chain of a certificate signature (`certificate_chain`, [] for the system's roots); or the
    Sigstore identity and its OIDC issuer. A missing signature, a changed, added or removed file, a link, or a
    signature made with another key is a problem naming it; InputError only for unusable key material."""
    folder = Path(folder).expanduser()
    check = SignatureCheck(folder)
    online = sigstore_identity is not None
    with _sigstore_errors(online):
        config = _verifying_config(public_key, certificate_chain, sigstore_identity, sigstore_issuer,
                                   sigstore_staging)
    path = folder / SIGNATURE_NAME
    if path.is_symlink() or (path.exists() and not path.is_file()):
        check.problems.append(f"{SIGNATURE_NAME} is not a regular file (a link or a folder); remove it, then "
                              f"{_SIGN_HINT}")
        return check
    if not path.is_file():
        check.problems.append(f"no {SIGNATURE_NAME}: the folder is not signed; {_SIGN_HINT}")
        return check
    try:
        files = signable_files(folder)
    except InputError as exc:
        check.problems.append(str(exc))
        return check
    from cryptography.exceptions import InvalidSignature

    with _sigstore_errors(online):
        try:
            config.verify(folder, path)
        except (ValueError, KeyError, TypeError, InvalidSignature) as exc:  # its verdicts, and a damaged bundle
            check.problems += _mismatch(exc, public_key)
            return check
    how = f"with {public_key}" if public_key else "with the given identity" if sigstore_identity else \
        "through its certificate chain"
    check.checked = f"{SIGNATURE_NAME}: verified {how}; the {len(files)} files are exactly those signed"
    return check


def signable_files(folder: Path) -> list[str]:
    """The relative paths a signature of FOLDER covers; InputError naming the first symbolic link found (a
    link's target is not the folder's to sign or trust) or when FOLDER is not a folder."""
    if folder.is_symlink() or not folder.is_dir():
        what = "a symbolic link" if folder.is_symlink() else "not a folder"
        raise InputError(f"'{folder}' is {what}; pass the output folder itself")
    found = []
    for root, dirs, names in os.walk(folder):
        base = Path(root)
        for name in sorted([*dirs, *names]):
            path = base / name
            relative = path.relative_to(folder).as_posix()
            if relative.split("/", 1)[0] in GIT_PATHS:
                continue
            if path.is_symlink():
                raise InputError(f"{relative} is a symbolic link; a signature covers the folder's own files only: "
                                 "replace it with the file it points to, or remove it")
            if name in names and relative != SIGNATURE_NAME:
                found.append(relative)
        dirs[:] = [d for d in dirs if (base / d).relative_to(folder).as_posix() not in GIT_PATHS]
    return found


# --------------------------------------------------------------------------- model_signing and its errors


def _require_model_signing() -> None:
    """One line naming the extra when model_signing (or pyopenssl, which it imports undeclared) is missing."""
    try:
        from model_signing import hashing, signing, verifying  # noqa: F401  (optional: the [sign] extra)
    except ImportError:
        raise MissingDependencyError("model-signing", EXTRA, "signing and checking signatures (model.sig)") from None


def _verifying_config(public_key: str | Path | None, certificate_chain: Sequence[str | Path] | None,
                      identity: str | None, issuer: str | None, staging: bool) -> "verifying.Config":
    _require_model_signing()
    from model_signing import verifying

    methods = [public_key is not None, certificate_chain is not None, identity is not None]
    if sum(methods) != 1:
        raise InputError("check model.sig with one method: --public-key PUB.pem (a key signature), "
                         "--certificate-chain CHAIN.pem (a certificate signature), or --sigstore-identity with "
                         "--sigstore-issuer (a Sigstore signature)")
    config = verifying.Config()
    if public_key is not None:
        key = pem_file(public_key, "--public-key", "public key")
        check_public_key(key)
        with _refused_by_model_signing("--public-key", key):
            return config.use_elliptic_key_verifier(public_key=key)
    if certificate_chain is not None:
        chain = [pem_file(c, "--certificate-chain", "certificate") for c in certificate_chain]
        return config.use_certificate_verifier(certificate_chain=chain)
    if not issuer:
        raise InputError("--sigstore-identity needs --sigstore-issuer, the OIDC issuer that vouched for it "
                         "(e.g. https://github.com/login/oauth)")
    return config.use_sigstore_verifier(identity=str(identity), oidc_issuer=issuer, use_staging=staging)


def _mismatch(exc: Exception, public_key: str | Path | None) -> list[str]:
    """model_signing's verdict as problems naming each file: 'Signature mismatch: [...]' lists the differences
    (its verifying.Config._get_manifest_diff); other errors concern the signature itself."""
    text = str(exc)
    fix = "restore the folder as it was signed, or re-sign it if the change is yours"
    if text.startswith("Signature mismatch: "):
        try:
            differences = ast.literal_eval(text.removeprefix("Signature mismatch: "))
        except (ValueError, SyntaxError):
            differences = [text]
        problems = []
        for difference in differences if isinstance(differences, list) else [text]:
            problems += _difference(str(difference), fix)
        return problems or [f"the folder differs from what {SIGNATURE_NAME} signed; {fix}"]
    if text.startswith("Key mismatch"):
        return [f"{SIGNATURE_NAME} was not made with the key {public_key}: the folder was signed by someone else "
                "(or re-signed); get the publisher's public key, or do not trust the folder"]
    if isinstance(exc, (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError)):
        return [f"{SIGNATURE_NAME} is not a model-signing signature ({_first_line(exc)}); {_SIGN_HINT}"]
    return [f"{SIGNATURE_NAME} does not verify ({type(exc).__name__}: {_first_line(exc) or 'invalid signature'}): "
            "it was altered, or made for another folder; do not trust the folder"]


def _difference(text: str, fix: str) -> list[str]:
    for prefix, what in (("Extra files found in model", "was added after the folder was signed"),
                         ("Missing files in model", "was removed after the folder was signed")):
        if text.startswith(prefix) and "': " in text:
            return [f"{name} {what} ({SIGNATURE_NAME}); {fix}" for name in text.split("': ", 1)[1].split(", ")]
    if text.startswith("Hash mismatch for '"):
        name = text.removeprefix("Hash mismatch for '").split("': ", 1)[0]
        return [f"{name} changed since the folder was signed (its sha256 differs from {SIGNATURE_NAME}'s); {fix}"]
    return [f"{text}; {fix}"]


@contextmanager
def _refused_by_model_signing(flag: str, path: Path) -> Iterator[None]:
    """model_signing's own refusal of key material it loads (e.g. 'Unsupported key for curve ...'), in one line."""
    try:
        yield
    except ValueError as exc:
        raise InputError(f"{flag} '{path}': model-signing refuses it ({_first_line(exc)}); use an elliptic-curve "
                         "P-256, P-384 or P-521 key (openssl ecparam -name prime256v1 -genkey)") from None


@contextmanager
def _sigstore_errors(active: bool) -> Iterator[None]:
    """Sigstore talks to its servers (OIDC discovery, Fulcio, Rekor): whatever their client raises is one line."""
    try:
        yield
    except BgeExportError:
        raise
    except Exception as exc:
        if not active:
            raise
        raise InputError(f"Sigstore failed ({type(exc).__name__}: {_first_line(exc)}); check the network and the "
                         "identity (--identity-token-env), or sign with --private-key; nothing was written") from None


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [""])[0][:200]

