"""Output folders appear whole or not at all: everything is written into a hidden sibling, then renamed."""

from __future__ import annotations

import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from bge_export.errors import InputError


def check_output_location(output: str | Path, force: bool) -> Path:
    """Refuse, before any work starts, an output that would clobber something."""
    path = Path(output).expanduser()
    if path.exists() and not path.is_dir():
        raise InputError(f"output '{output}' is a file; pass a folder path (it will be created)")
    if path.is_dir() and any(path.iterdir()) and not force:
        raise InputError(f"output folder '{output}' already exists; pass --force to replace it, or choose another folder")
    parent = path.resolve().parent
    if not parent.exists():
        parent.mkdir(parents=True, exist_ok=True)
    if not os.access(parent, os.W_OK):
        raise InputError(f"cannot write into '{parent}'; choose an output folder you can write to")
    return path


@contextmanager
def staged_folder(output: str | Path, force: bool) -> Iterator[Path]:
    """Yield a temporary folder next to `output`; on success it replaces `output` atomically-enough.

    On any error the temporary folder is removed and `output` is left exactly as it was.
    """
    final = check_output_location(output, force).resolve()
    staging = final.parent / f".{final.name}.partial-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    retired = None
    if final.exists():
        retired = final.parent / f".{final.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(final, retired)
    os.replace(staging, final)
    if retired is not None:
        shutil.rmtree(retired, ignore_errors=True)
