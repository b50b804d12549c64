"""Bytes on disk, one way each: the sha256 rules, the atomic writer, the bounded reader of a file a user names,
the JSON reader.

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
import re
import shutil
import stat
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
    A file rewritten keeps its mode; a new one is readable by all (mkstemp creates 0600; manifests, reports,
    cards and plans are meant to be read by others). A refusal of the file system names `path` (`os_error_text`)."""
    path = Path(path)
    data = content.encode("utf-8") if isinstance(content, str) else content
    try:
        mode = path.stat().st_mode & 0o7777 if path.is_file() else 0o644
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as exc:
        raise _naming(exc, path) from None
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.chmod(temp, mode)
        os.replace(temp, path)
    except OSError as exc:
        Path(temp).unlink(missing_ok=True)
        raise _naming(exc, path) from None
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return path


def _naming(exc: OSError, path: Path) -> OSError:
    """`exc` with the file being written as its filename (a failed write() names none, mkstemp its temp file)."""
    return type(exc)(exc.errno, exc.strerror, str(path)) if exc.errno is not None else exc


def os_error_text(exc: OSError) -> str:
    """One line for a refusal of the file system that names what was being written: shutil's copies put the
    source in `filename` and the destination in `filename2`; a shutil.Error lists (source, destination, why)."""
    if isinstance(exc, shutil.Error) and exc.args and isinstance(exc.args[0], list) and exc.args[0]:
        first = exc.args[0][0]
        if isinstance(first, tuple) and len(first) == 3:
            why = re.sub(r"^\[Errno \d+\] ", "", str(first[2])).split(": '", 1)[0]
            more = f" (and {len(exc.args[0]) - 1} more files)" if len(exc.args[0]) > 1 else ""
            return f"{why}: writing '{first[1]}'{more}"
    cause = exc.strerror or type(exc).__name__
    target = exc.filename2 if exc.filename2 is not None else exc.filename
    return f"{cause}: '{os.fsdecode(target)}'" if target is not None else cause


def json_text(data: Any) -> str:
    """The JSON every file bge-export writes holds: indented, UTF-8 kept, a final newline."""
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def write_json_atomic(path: str | Path, data: Any) -> Path:
    return write_atomic(path, json_text(data))


# --------------------------------------------------------------------------- files a user names

JSON_FILE_LIMIT: Final = 256 << 20  # the largest JSON file read (a tokenizer.json is ~20 MB, a manifest ~100 kB)
_KINDS = ((stat.S_ISDIR, "is a folder"), (stat.S_ISFIFO, "is not a regular file (it is a named pipe)"),
          (stat.S_ISCHR, "is not a regular file (it is a character device)"),
          (stat.S_ISBLK, "is not a regular file (it is a block device)"),
          (stat.S_ISSOCK, "is not a regular file (it is a socket)"))


def size_words(count: int) -> str:
    """1048576 -> '1 MiB', 1536 -> '1.5 KiB': a size as an error message states it."""
    value, unit = float(count), "bytes"
    for name in ("KiB", "MiB", "GiB", "TiB"):
        if value < 1024:
            break
        value, unit = value / 1024, name
    return f"{value:.3g} {unit}" if unit != "bytes" else f"{count} bytes"


def _kind_problem(mode: int) -> str | None:
    if stat.S_ISREG(mode):
        return None
    return next((words for test, words in _KINDS if test(mode)), "is not a regular file")


def _read_bounded(path: Path, limit: int) -> tuple[bytes | None, str]:
    """(bytes, "") of a regular file of at most `limit` bytes, or (None, what is wrong: 'does not exist',
    'is a folder', 'is not a regular file (it is a named pipe)', 'is larger than ...', 'cannot be read (...)')."""
    try:
        found = os.stat(path)
        problem = _kind_problem(found.st_mode)  # before opening: a FIFO blocks, a device may act on open
        if problem is None and found.st_size > limit:
            problem = f"is {size_words(found.st_size)}, more than the {size_words(limit)} bge-export reads from such a file"
        if problem is not None:
            return None, problem
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        with os.fdopen(descriptor, "rb", buffering=0) as handle:
            problem = _kind_problem(os.fstat(handle.fileno()).st_mode)  # replaced since the first look?
            if problem is not None:
                return None, problem
            blocks, total = [], 0
            while block := handle.read(min(_BLOCK, limit + 1 - total)):
                blocks.append(block)
                total += len(block)
                if total > limit:  # grown since, or a file whose size the system does not state (/proc)
                    return None, f"holds more than the {size_words(limit)} bge-export reads from such a file"
    except (FileNotFoundError, NotADirectoryError):
        return None, "does not exist"
    except OSError as exc:
        return None, f"cannot be read ({exc.strerror or type(exc).__name__})"
    except ValueError:  # a NUL character in the path
        return None, "is not a usable path (it holds a NUL character)"
    return b"".join(blocks), ""


def read_user_file(path: str | Path, what: str, limit: int, fix: str) -> bytes:
    """The bytes of a file a user named, read only when it is a regular file of at most `limit` bytes: a FIFO
    would block, /dev/zero never ends and a folder holds no text. Anything else is one InputError line:
    "<what> '<path>' <problem>; <fix>"."""
    data, problem = _read_bounded(Path(path), limit)
    if data is None:
        raise InputError(f"{what} '{path}' {problem}; {fix}")
    return data


# --------------------------------------------------------------------------- JSON reading


def _load(path: Path) -> tuple[Any, str | None]:
    """(data, None), or (None, why it cannot be read) — the one place a JSON file is parsed."""
    raw, problem = _read_bounded(path, JSON_FILE_LIMIT)
    if raw is None:
        return None, f"it {problem}"
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None, "it is not UTF-8 text"
    try:
        return json.loads(text), None
    except json.JSONDecodeError as exc:
        return None, f"it is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
    except RecursionError:
        return None, "it is not valid JSON: nested too deeply"
    except ValueError as exc:  # e.g. an integer longer than Python's 4,300-digit conversion limit
        return None, f"it is not valid JSON: {str(exc).splitlines()[0][:80]}"


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
