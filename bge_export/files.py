"""Bytes on disk, one way each: the sha256 rules, the atomic writer, the JSON reader.

A core module (standard library only) so every layer may use it, `model/` included (the weights' sha256, its
config files). What a digest means is fixed here and nowhere else:

- `file_sha256`: one file's bytes.
- `tree_sha256`: a folder (a `.mlpackage` bundle, a data folder): each file's relative POSIX name and sha256, in
  name order, so a renamed, moved, added or removed file changes it, not only changed bytes.
- `path_sha256`: an artifact's digest, `file_sha256` for a file and `tree_sha256` for a folder.
- `contents_sha256`: several files' bytes concatenated (the weights' shards, in order); also the rule manifests
  of schema 1 used for folders (names ignored), kept only to check what they recorded.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Final, Iterable, Mapping

from bge_export.errors import InputError

_BLOCK = 1 << 22
# How an artifact entry's sha256 was computed (manifest `sha256_rule`): "tree" (path_sha256, schema 2 on) or
# "contents" (schema 1: a folder's files concatenated in sorted order, their names ignored).
TREE_RULE: Final = "tree"
CONTENTS_RULE: Final = "contents"
SHA256_RULES = (TREE_RULE, CONTENTS_RULE)


# --------------------------------------------------------------------------- sha256


def _update(digest: Any, path: Path) -> None:
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_BLOCK), b""):
            digest.update(block)


def file_sha256(path: str | Path) -> str:
    """sha256 of one file's bytes."""
    digest = hashlib.sha256()
    _update(digest, Path(path))
    return digest.hexdigest()


def contents_sha256(paths: Iterable[str | Path]) -> str:
    """sha256 of the files' bytes concatenated in the order given (no names): the weights' shards."""
    digest = hashlib.sha256()
    for path in paths:
        _update(digest, Path(path))
    return digest.hexdigest()


def file_digests(folder: str | Path, include: Callable[[str], bool] | None = None) -> dict[str, str]:
    """Relative POSIX name -> sha256 of every file under `folder` that `include` accepts, in name order."""
    folder = Path(folder)
    names = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    return {name: file_sha256(folder / name) for name in names if include is None or include(name)}


def listing_sha256(digests: Mapping[str, str]) -> str:
    """One sha256 for named files ({relative name: sha256}): over 'name NUL sha256 LF' lines in name order."""
    digest = hashlib.sha256()
    for name in sorted(digests):
        digest.update(f"{name}\0{digests[name]}\n".encode("utf-8"))
    return digest.hexdigest()


def tree_sha256(folder: str | Path) -> str:
    """sha256 of a folder: its files' relative names and contents (`listing_sha256` of `file_digests`)."""
    return listing_sha256(file_digests(folder))


def path_sha256(path: str | Path, rule: str = TREE_RULE) -> str:
    """An artifact's digest: a file's bytes; a folder by `rule` (TREE_RULE, or CONTENTS_RULE for schema-1 entries)."""
    path = Path(path)
    if not path.is_dir():
        return file_sha256(path)
    if rule == CONTENTS_RULE:  # schema 1: the files in Path order, concatenated
        return contents_sha256(sorted(p for p in path.rglob("*") if p.is_file()))
    return tree_sha256(path)


# --------------------------------------------------------------------------- atomic writes


def write_atomic(path: str | Path, content: str | bytes) -> Path:
    """Write beside the target, then rename: a reader never sees half a file. Text is written as UTF-8.
    Readable by all (mkstemp creates 0600; manifests, reports, cards and plans are meant to be read by others)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    data = content.encode("utf-8") if isinstance(content, str) else content
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.chmod(temp, 0o644)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return path


def json_text(data: Any) -> str:
    """The JSON every file bge-export writes holds: indented, UTF-8 kept, a final newline."""
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def write_json_atomic(path: str | Path, data: Any) -> Path:
    return write_atomic(path, json_text(data))


# --------------------------------------------------------------------------- JSON reading


def _load(path: Path) -> tuple[Any, str | None]:
    """(data, None), or (None, why it cannot be read) — the one place a JSON file is parsed."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None, "it does not exist"
    except IsADirectoryError:
        return None, "it is a folder"
    except OSError as exc:
        return None, f"it cannot be read: {exc.strerror}"
    except UnicodeDecodeError:
        return None, "it is not UTF-8 text"
    try:
        return json.loads(text), None
    except json.JSONDecodeError as exc:
        return None, f"it is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"


def read_json(path: str | Path, fix: str) -> Any:
    """The JSON in `path`; a missing, unreadable or malformed file is one InputError line: the file, why, `fix`."""
    data, problem = _load(Path(path))
    if problem is not None:
        raise InputError(f"{path}: {problem}; {fix}")
    return data


def read_json_object(path: str | Path, fix: str) -> dict[str, Any]:
    """As `read_json`, and the JSON must be an object."""
    data = read_json(path, fix)
    if not isinstance(data, dict):
        raise InputError(f"{path}: it holds a JSON {type(data).__name__}, not an object; {fix}")
    return data


def json_or_none(path: str | Path) -> Any:
    """The JSON in `path`, or None where `read_json` would refuse it: for files that are optional evidence."""
    return _load(Path(path))[0]
