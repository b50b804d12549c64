"""Key material for model.sig (bge_export/folder/signing.py): each key, certificate, password or token checked
before model_signing loads it, so every problem is one line naming the flag, the file and the fix (exit 2) instead
of a cryptography exception."""

from __future__ import annotations

import os
from pathlib import Path

from bge_export.errors import InputError

MAX_KEY_BYTES = 256 * 1024  # PEM keys and certificates are a few KB; anything larger is not one


def pem_file(path: str | Path, flag: str, what: str) -> Path:
    """A key or certificate file, refused in one line unless it is a small regular file we can read."""
    path = Path(path).expanduser()
    if not path.exists():
        raise InputError(f"{flag} '{path}' does not exist; pass the PEM file of your {what}")
    if not path.is_file():
        raise InputError(f"{flag} '{path}' is not a regular file; pass the PEM file of your {what}")
    size = path.stat().st_size
    if size > MAX_KEY_BYTES:
        raise InputError(f"{flag} '{path}' is {size} bytes, too large for a PEM {what}; pass the {what} file")
    if not os.access(path, os.R_OK):
        raise InputError(f"{flag} '{path}' cannot be read (permission denied); fix its permissions")
    return path


def check_private_key(path: Path, password: str | None) -> None:
    """Load the key once with cryptography (model_signing loads it again) to say exactly what is wrong with it."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        key = load_pem_private_key(path.read_bytes(), password.encode() if password else None)
    except TypeError as exc:  # cryptography says "password ... not given / given but not encrypted" this way
        fix = ("it is encrypted: name the variable holding its password with --password-env VAR"
               if "not given" in str(exc) else "it is not encrypted: drop --password-env")
        raise InputError(f"--private-key '{path}': {fix}") from None
    except ValueError as exc:
        if "password" in str(exc).lower():
            raise InputError(f"--private-key '{path}': the password does not decrypt it; check the variable "
                             "--password-env names") from None
        raise InputError(f"--private-key '{path}' is not a PEM private key; pass the PEM file of an "
                         "elliptic-curve private key (openssl ecparam -name prime256v1 -genkey)") from None
    except UnsupportedAlgorithm:
        raise InputError(f"--private-key '{path}' uses a key type this cryptography cannot read; pass an "
                         "elliptic-curve P-256, P-384 or P-521 key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise InputError(f"--private-key '{path}' is a {type(key).__name__.lstrip('_')}, not an elliptic-curve "
                         "key; model-signing signs with P-256, P-384 or P-521 keys")


def check_public_key(path: Path) -> None:
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    try:
        key = load_pem_public_key(path.read_bytes())
    except (ValueError, UnsupportedAlgorithm):
        raise InputError(f"--public-key '{path}' is not a PEM public key; pass the signer's public key "
                         "(openssl ec -in KEY.pem -pubout)") from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise InputError(f"--public-key '{path}' is not an elliptic-curve key; model-signing keys are P-256, "
                         "P-384 or P-521")


def from_environment(name: str | None, flag: str, what: str) -> str | None:
    if name is None:
        return None
    value = os.environ.get(name)
    if not value:
        raise InputError(f"{flag} {name}: the environment variable is not set; set it to {what}, or drop the flag")
    return value
