"""Data files a user names (validate's --corpus, --sts, --retrieval; bench's --corpus; onnx's --calibration) are
read only when they are regular files: /dev/zero, a FIFO or a folder is one line saying what the path is (issue
20: `--corpus /dev/zero` said the file "does not exist"), exit 2, before any work, nothing written."""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path
from typing import Callable

import pytest
from helpers import DATA_DIR, assert_one_line_error, export_folder, run_cli

from bge_export.errors import InputError
from bge_export.model import corpus
from bge_export.model.corpus import read_corpus_file
from bge_export.validate.datasets import read_beir_folder, read_sts_tsv

DEVICE = "is not a regular file (it is a character device)"
PIPE = "is not a regular file (it is a named pipe)"


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def _refused_without_blocking(read: Callable[[], object]) -> str:
    """The refusal of `read`; a reader that opened a FIFO would block forever, so it runs aside, bounded."""
    found: list[BaseException | object] = []

    def run() -> None:
        try:
            found.append(read())
        except BaseException as exc:  # noqa: BLE001 - handed to the test below
            found.append(exc)

    reader = threading.Thread(target=run, daemon=True)
    reader.start()
    reader.join(timeout=10)
    assert not reader.is_alive(), "the reader blocked"
    assert isinstance(found[0], InputError), found
    message = str(found[0])
    assert "\n" not in message
    return message


# --------------------------------------------------------------------------- the readers


def test_corpus_and_calibration_readers_check_the_kind(tmp_path: Path) -> None:
    assert f"corpus file '/dev/zero' {DEVICE}" in _refused_without_blocking(lambda: read_corpus_file("/dev/zero"))
    pipe = _fifo(tmp_path / "texts.txt")
    assert f"calibration file '{pipe}' {PIPE}" in _refused_without_blocking(
        lambda: read_corpus_file(pipe, "calibration file"))
    assert f"corpus file '{tmp_path}' is a folder" in _refused_without_blocking(lambda: read_corpus_file(tmp_path))


def test_sts_reader_checks_the_kind(tmp_path: Path) -> None:
    assert f"STS file '/dev/zero' {DEVICE}" in _refused_without_blocking(lambda: read_sts_tsv("/dev/zero"))
    pipe = _fifo(tmp_path / "pairs.tsv")
    assert f"STS file '{pipe}' {PIPE}" in _refused_without_blocking(lambda: read_sts_tsv(pipe))


@pytest.mark.parametrize("name,what", [("corpus.jsonl", "BEIR corpus file"), ("queries.jsonl", "BEIR queries file"),
                                       ("qrels/test.tsv", "BEIR qrels file")])
def test_beir_reader_checks_the_kind_of_each_file(tmp_path: Path, name: str, what: str) -> None:
    folder = Path(shutil.copytree(DATA_DIR / "retrieval_sample", tmp_path / "beir"))
    (folder / name).unlink()
    (folder / name).symlink_to("/dev/zero")
    assert f"{what} '{folder / name}' {DEVICE}" in _refused_without_blocking(lambda: read_beir_folder(folder))
    (folder / name).unlink()
    _fifo(folder / name)
    assert f"{what} '{folder / name}' {PIPE}" in _refused_without_blocking(lambda: read_beir_folder(folder))
    assert "'/dev/zero' is not a folder" in _refused_without_blocking(lambda: read_beir_folder("/dev/zero"))


def test_data_files_are_bounded_in_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "texts.txt"
    path.write_text("a text\n" * 400)  # 2,800 bytes
    monkeypatch.setattr(corpus, "DATA_FILE_LIMIT", 1024)
    assert (f"corpus file '{path}' is 2.73 KiB, more than the 1 KiB bge-export reads from such a file; pass a UTF-8 "
            "text file of at most 1 KiB") in _refused_without_blocking(lambda: read_corpus_file(path))


# --------------------------------------------------------------------------- the commands


@pytest.fixture(scope="module")
def tiny_export(bge_shaped_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_folder(bge_shaped_dir, tmp_path_factory.mktemp("kinds") / "tiny", check=False)


def test_validate_and_bench_refuse_dev_zero_and_fifo(tiny_export: Path, tmp_path: Path, capsys) -> None:
    manifest = (tiny_export / "manifest.json").read_bytes()
    pipe = _fifo(tmp_path / "pairs.tsv")
    beir = Path(shutil.copytree(DATA_DIR / "retrieval_sample", tmp_path / "beir"))
    (beir / "corpus.jsonl").unlink()
    (beir / "corpus.jsonl").symlink_to("/dev/zero")
    for args, fragment in ((["validate", "--corpus", "/dev/zero"], f"corpus file '/dev/zero' {DEVICE}"),
                           (["validate", "--sts", str(pipe)], f"STS file '{pipe}' {PIPE}"),
                           (["validate", "--retrieval", str(beir)], f"'{beir / 'corpus.jsonl'}' {DEVICE}"),
                           (["bench", "--corpus", "/dev/zero"], f"corpus file '/dev/zero' {DEVICE}")):
        code, out, err = run_cli(capsys, args[0], str(tiny_export), "-q", *args[1:])
        assert code == 2, err
        assert_one_line_error(err, fragment)
    assert (tiny_export / "manifest.json").read_bytes() == manifest  # nothing recorded
    assert not (tiny_export / "report.json").exists()


def test_onnx_refuses_a_dev_zero_calibration_before_any_work(bge_shaped_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    code, _, err = run_cli(capsys, "onnx", "-m", str(bge_shaped_dir), "-o", str(out), "--quantize", "int8-static",
                           "--calibration", "/dev/zero", "-q")
    assert code == 2, err
    assert_one_line_error(err, f"calibration file '/dev/zero' {DEVICE}")
    assert list(tmp_path.iterdir()) == []
