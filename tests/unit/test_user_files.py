"""files.read_user_file, the one reader of a file a user names (recipe, corpus, calibration, STS, BEIR) and of
every JSON file: a regular file under a size limit, or one line saying what the path is instead."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from bge_export.errors import InputError
from bge_export.files import read_json, read_user_file, size_words

FIX = "pass a text file"


def _refusal(path: str | Path, limit: int = 1 << 20) -> str:
    with pytest.raises(InputError) as raised:
        read_user_file(path, "data file", limit, FIX)
    message = str(raised.value)
    assert "\n" not in message and message.endswith(f"; {FIX}"), message
    return message


def test_a_regular_file_within_the_limit_is_read_whole(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    path.write_bytes(b"x" * 100)
    assert read_user_file(path, "data file", 100, FIX) == b"x" * 100
    link = tmp_path / "link.txt"
    link.symlink_to(path)  # a link to a regular file is that file
    assert read_user_file(link, "data file", 100, FIX) == b"x" * 100


def test_each_kind_that_is_not_a_regular_file_is_named(tmp_path: Path) -> None:
    assert _refusal("/dev/zero") == f"data file '/dev/zero' is not a regular file (it is a character device); {FIX}"
    assert "is a folder" in _refusal(tmp_path)
    assert "does not exist" in _refusal(tmp_path / "nope.txt")
    assert "does not exist" in _refusal(tmp_path / "nope" / "deeper.txt")
    (tmp_path / "file").write_text("x")
    assert "does not exist" in _refusal(tmp_path / "file" / "under-a-file.txt")
    zero = tmp_path / "corpus.txt"
    zero.symlink_to("/dev/zero")  # a file name that looks right is not enough
    assert "is not a regular file (it is a character device)" in _refusal(zero)


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    """Opening a FIFO nobody writes to blocks forever; the reader looks at the kind first."""
    fifo = tmp_path / "pipe.txt"
    os.mkfifo(fifo)
    found: list[str] = []
    reader = threading.Thread(target=lambda: found.append(_refusal(fifo)), daemon=True)
    reader.start()
    reader.join(timeout=10)
    assert not reader.is_alive(), "the reader blocked on a FIFO"
    assert found == [f"data file '{fifo}' is not a regular file (it is a named pipe); {FIX}"]


def test_size_is_bounded_by_the_file_size_and_by_what_is_read(tmp_path: Path) -> None:
    path = tmp_path / "big.txt"
    path.write_bytes(b"x" * 2048)
    assert _refusal(path, limit=1024) == (f"data file '{path}' is 2 KiB, more than the 1 KiB bge-export reads from "
                                          f"such a file; {FIX}")
    # a file whose size the system does not state (st_size 0) is still cut at the limit while reading
    assert Path("/proc/self/status").stat().st_size == 0
    assert "holds more than the 100 bytes" in _refusal("/proc/self/status", limit=100)
    assert size_words(1 << 20) == "1 MiB" and size_words(1 << 30) == "1 GiB" and size_words(10) == "10 bytes"


def test_json_reading_uses_the_same_checks(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"^/dev/zero: it is not a regular file \(it is a character device\); fix$"):
        read_json("/dev/zero", "fix")
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(InputError, match=r"deep\.json: it is not valid JSON: nested too deeply; fix$"):
        read_json(deep, "fix")
