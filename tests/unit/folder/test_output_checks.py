"""Writing an output: refused before any work when it cannot be written, and a full disk named where it is.

Real file systems: a small tmpfs for a full disk and a read-only mount (mounted here when the tests run as root
with the right to mount; skipped otherwise), and `chmod a-w` folders (which root could write, and must not).
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import subprocess
import uuid
from pathlib import Path
from typing import Iterator

import pytest
from helpers import assert_nothing_written, assert_one_line_error, run_cli, shared_export

from bge_export.errors import InputError
from bge_export.files import file_sha256, os_error_text, write_atomic
from bge_export.folder.loading import load_encoder
from bge_export.folder.staging import check_writable_output


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_export(tmp_path_factory)


def _mount(path: Path, options: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode(errors='replace').strip()[:80]})")


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MB tmpfs: a 4 MB graph cannot be written to it."""
    disk = tmp_path / f"disk-{uuid.uuid4().hex[:6]}"
    _mount(disk, "size=1m")
    try:
        yield disk
    finally:
        subprocess.run(["umount", str(disk)], check=False)


@pytest.fixture
def read_only_copy(export: Path, tmp_path: Path) -> Iterator[Path]:
    """The shared export on a tmpfs remounted read-only."""
    disk = tmp_path / f"ro-{uuid.uuid4().hex[:6]}"
    _mount(disk, "size=64m")
    try:
        shutil.copytree(export, disk / "out")
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        yield disk / "out"
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def _snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    return {p.relative_to(folder).as_posix(): (file_sha256(p), stat.S_IMODE(p.stat().st_mode))
            for p in sorted(folder.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------- load_encoder


@pytest.mark.parametrize("path, shown", [(None, "NoneType"), ("", "an empty string"), (3, "int")])
def test_load_encoder_without_a_folder_is_one_input_error(path: object, shown: str) -> None:
    with pytest.raises(InputError) as error:
        load_encoder(path)  # type: ignore[arg-type]
    message = str(error.value)
    assert "\n" not in message and message.startswith("path must be an output folder") and message.endswith(shown)


# --------------------------------------------------------------------------- a full disk


def test_a_full_disk_names_the_output_folder(tiny_model, small_disk: Path, capsys) -> None:
    model = tiny_model(pooling="cls")
    code, _, err = run_cli(capsys, "onnx", "--model", str(model), "--output", str(small_disk / "out"), "-q")
    assert code == 2
    assert_one_line_error(err, f"cannot write the output folder '{small_disk / 'out'}'", "No space left on device",
                          "nothing was written")
    assert str(model) not in err and ".partial-" not in err  # the destination, not the source or the stage
    assert_nothing_written(small_disk, "out")


def test_core_ml_on_a_full_disk_names_the_package_it_was_writing(tiny_model, small_disk: Path, capsys) -> None:
    pytest.importorskip("coremltools")
    model = tiny_model(pooling="cls")
    code, _, err = run_cli(capsys, "coreml", "--model", str(model), "--output", str(small_disk / "out"),
                           "--seq-lens", "64", "-q")
    assert code == 2
    assert_one_line_error(err, f"cannot write the output folder '{small_disk / 'out'}'", "No space left on device",
                          f"writing '{small_disk / 'out' / 'coreml'}/model_fp16.mlpackage/")
    assert "error: Error;" not in err
    assert_nothing_written(small_disk, "out")


def test_a_report_on_a_full_disk_names_the_report(export: Path, small_disk: Path, tmp_path: Path, capsys) -> None:
    folder = shutil.copytree(export, tmp_path / "copy")
    with open(small_disk / "filler", "wb") as filler:  # fill the disk to its last block
        try:
            while True:
                filler.write(b"\0" * 65536)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    code, _, err = run_cli(capsys, "validate", str(folder), "--artifact", "onnx/model.onnx", "--max-texts", "24",
                           "--no-speed", "--threads", "1", "--report-dir", str(small_disk), "--no-manifest-update",
                           "-q")
    assert code == 2
    assert_one_line_error(err, "No space left on device: '" + str(small_disk) + "/report.")


def test_a_failed_copy_names_its_destination(small_disk: Path, tmp_path: Path) -> None:
    """A real ENOSPC from shutil's copy (sendfile), which puts the source in `filename`, the destination in
    `filename2`."""
    source = tmp_path / "weights.bin"
    source.write_bytes(b"\1" * (2 << 20))
    with pytest.raises(OSError) as failed:
        shutil.copyfile(source, small_disk / "weights.bin")
    assert failed.value.errno == errno.ENOSPC
    text = os_error_text(failed.value)
    assert text == f"No space left on device: '{small_disk / 'weights.bin'}'" and str(source) not in text


# --------------------------------------------------------------------------- read-only outputs


def test_a_read_only_mount_is_refused_before_any_work(read_only_copy: Path, tmp_path: Path, tiny_model,
                                                      capsys) -> None:
    before = _snapshot(read_only_copy)
    commands = [("openvino", str(read_only_copy), "--precision", "fp32"), ("tensorrt", str(read_only_copy),
                "--prepare-only"), ("validate", str(read_only_copy)), ("onnx", "--model", str(tiny_model()),
                "--output", str(read_only_copy / "inner")), ("triton", str(read_only_copy), "--output",
                str(read_only_copy.parent / "repository"))]
    if _has("coremltools"):
        commands.append(("coreml", "--model", str(tiny_model()), "--output", str(read_only_copy)))
    for command in commands:
        code, _, err = run_cli(capsys, *command, "-q") if command[0] != "triton" else run_cli(capsys, *command)
        assert code == 2, (command, err)
        assert_one_line_error(err, "is on a read-only file system")
    assert _snapshot(read_only_copy) == before


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def test_a_chmod_a_w_folder_is_refused_and_keeps_its_modes(export: Path, tmp_path: Path, capsys) -> None:
    folder = Path(shutil.copytree(export, tmp_path / "locked"))
    for path in [folder, *folder.rglob("*")]:
        path.chmod(stat.S_IMODE(path.stat().st_mode) & ~0o222)
    try:
        before = _snapshot(folder)
        assert before["manifest.json"][1] == 0o444
        for command in [("openvino", str(folder), "--precision", "fp32", "-q"),
                        ("tensorrt", str(folder), "--prepare-only", "-q"),
                        ("validate", str(folder), "--artifact", "onnx/model.onnx", "--no-speed", "-q")]:
            code, _, err = run_cli(capsys, *command)
            assert code == 2, (command, err)
            assert_one_line_error(err, f"'{folder}' is read-only (chmod a-w): make it writable (chmod u+w)")
        assert _snapshot(folder) == before  # no file written, manifest.json still 0444

        folder.chmod(0o755)  # the folder writable again, its manifest.json still read-only
        code, _, err = run_cli(capsys, "openvino", str(folder), "--precision", "fp32", "-q")
        assert code == 2
        assert_one_line_error(err, f"'{folder / 'manifest.json'}' is read-only (chmod a-w)")
    finally:
        for path in [folder, *folder.rglob("*")]:
            path.chmod(stat.S_IMODE(path.stat().st_mode) | 0o200)


def test_check_writable_output_accepts_a_new_folder_and_a_writable_export(export: Path, tmp_path: Path) -> None:
    check_writable_output(tmp_path / "new" / "deeper")
    check_writable_output(export)
    (tmp_path / "file").write_text("x")
    check_writable_output(tmp_path / "file" / "below")  # a file on the way is output_folder_path's to name


def test_a_rewritten_file_keeps_its_mode(tmp_path: Path) -> None:
    path = tmp_path / "report.json"
    write_atomic(path, "{}\n")
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # a new file: readable by all
    path.chmod(0o640)
    write_atomic(path, '{"a": 1}\n')
    assert stat.S_IMODE(path.stat().st_mode) == 0o640 and path.read_text() == '{"a": 1}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]  # no temporary file left


def test_a_failed_write_names_the_file_being_written(small_disk: Path) -> None:
    with pytest.raises(OSError) as failed:
        write_atomic(small_disk / "big.json", b"\0" * (2 << 20))
    assert failed.value.errno == errno.ENOSPC and failed.value.filename == str(small_disk / "big.json")
    assert os_error_text(failed.value) == f"No space left on device: '{small_disk / 'big.json'}'"
    assert os.listdir(small_disk) == []  # the temporary file is gone
