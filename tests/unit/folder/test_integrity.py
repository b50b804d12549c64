"""Verify before you write, contain before you load: the tampering sweep of issue 20, each case a test.

A real tiny export (ONNX fp32 + dynamic INT8, a TensorRT entry prepared for a GPU host), copied, then changed
the ways someone deliberate would: a byte flipped in an artifact with its new sha256 put into the manifest
(seal left broken), artifact paths that leave the folder (the seal recomputed, as anyone can: it is unkeyed), a
listed file swapped for a link to an identical file outside, an in-folder swap, an added file. Every command
that reads the folder must refuse with one line naming the file (exit 2; the API: IntegrityError), write
nothing and reseal nothing. What a recomputed seal hides is what `bge-export sign` / `verify --public-key`
catch (tests/unit/folder/test_signing.py).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Callable

import pytest
from helpers import INT8, assert_one_line_error, run_cli, shared_export

from bge_export import load_encoder
from bge_export.errors import IntegrityError
from bge_export.files import file_sha256
from bge_export.folder.manifest import MANIFEST_NAME, SEAL_FIELD, read_manifest_data, write_manifest
from bge_export.folder.verify import verify_folder


@pytest.fixture
def folder(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> Path:
    copy = tmp_path / "export"
    shutil.copytree(shared_export(tmp_path_factory), copy)
    return copy


def _edit(folder: Path, change: Callable[[dict[str, Any]], None], reseal: bool) -> bytes:
    """Change manifest.json's JSON; reseal: recompute its (unkeyed) seal as an attacker can. Returns the bytes."""
    data = read_manifest_data(folder)
    change(data)
    if reseal:
        write_manifest(folder, data)
    else:
        (folder / MANIFEST_NAME).write_text(json.dumps(data, indent=2))
    return (folder / MANIFEST_NAME).read_bytes()


def _entry(data: dict[str, Any], path: str) -> dict[str, Any]:
    return next(e for e in data["artifacts"] if e["path"] == path)


def _flip_int8_and_record_it(folder: Path) -> str:
    """The sweep's first case: a byte of the INT8 file flipped and its new sha256 put into the manifest."""
    path = folder / INT8
    data = bytearray(path.read_bytes())
    data[int(len(data) * 0.9)] ^= 0x01
    path.write_bytes(bytes(data))
    digest = file_sha256(path)

    def record(manifest: dict[str, Any]) -> None:
        manifest["files"][INT8] = digest
        _entry(manifest, INT8)["sha256"] = digest

    _edit(folder, record, reseal=False)
    return digest


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------- an edited manifest is never resealed


@pytest.mark.parametrize("command", [
    ["validate", "{folder}", "-q", "--no-speed", "--artifact", INT8],
    ["bench", "{folder}", "-q"],
    ["tensorrt", "{folder}", "--prepare-only", "-q"],
    ["openvino", "{folder}", "--precision", "fp32", "-q"],
    ["inspect", "{folder}"],
], ids=["validate", "bench", "tensorrt-prepare-only", "openvino", "inspect"])
def test_no_command_acts_on_or_reseals_a_hand_edited_manifest(folder: Path, capsys, command: list[str]) -> None:
    _flip_int8_and_record_it(folder)
    before = _snapshot(folder)
    code, _, err = run_cli(capsys, *[part.format(folder=folder) for part in command])
    assert code == 2
    assert_one_line_error(err, "manifest.json was edited after bge-export wrote it", "bge-export verify")
    assert _snapshot(folder) == before  # nothing written, nothing resealed
    assert not verify_folder(folder).ok  # and verify still says so


def test_load_encoder_refuses_a_hand_edited_manifest(folder: Path) -> None:
    _flip_int8_and_record_it(folder)
    with pytest.raises(IntegrityError, match="manifest.json was edited after bge-export wrote it"):
        load_encoder(folder, artifact=INT8)


def test_an_unsealed_manifest_is_refused_with_the_way_to_seal_it(folder: Path, capsys) -> None:
    _edit(folder, lambda data: data.pop(SEAL_FIELD), reseal=False)
    code, _, err = run_cli(capsys, "inspect", str(folder))
    assert code == 2
    assert_one_line_error(err, f"has no {SEAL_FIELD}", "--rehash")


# --------------------------------------------------------------------------- contain before you load


@pytest.mark.parametrize("where", ["../outside.onnx", "/abs/outside.onnx", "onnx/../../outside.onnx"])
def test_an_artifact_path_outside_the_folder_is_never_loaded_validated_or_served(
        folder: Path, tmp_path: Path, capsys, where: str) -> None:
    outside = (tmp_path / "outside.onnx") if not where.startswith("/") else Path(where)
    shutil.copy(folder / "onnx" / "model.onnx", tmp_path / "outside.onnx")

    def point(data: dict[str, Any]) -> None:
        _entry(data, INT8)["path"] = where

    _edit(folder, point, reseal=True)  # a valid seal: the unkeyed sha256 anyone can recompute
    with pytest.raises(IntegrityError, match="a path outside the folder"):
        load_encoder(folder, artifact=where)
    before = _snapshot(folder)
    for command in (["validate", str(folder), "-q", "--no-speed"], ["triton", str(folder), "--output",
                                                                     str(tmp_path / "repo")]):
        code, _, err = run_cli(capsys, *command)
        assert code == 2, command
        assert_one_line_error(err, "a path outside the folder")
    assert _snapshot(folder) == before and not (tmp_path / "repo").exists()
    assert outside.name == "outside.onnx"


def test_a_changed_file_under_an_intact_manifest_is_named_before_loading(folder: Path) -> None:
    path = folder / INT8
    data = bytearray(path.read_bytes())
    data[int(len(data) * 0.9)] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=f"{INT8} changed since the export"):
        load_encoder(folder, artifact=INT8)


def test_an_in_folder_swap_is_named(folder: Path) -> None:
    shutil.copy(folder / "onnx" / "model.onnx", folder / INT8)
    with pytest.raises(IntegrityError, match=f"{INT8} changed since the export"):
        load_encoder(folder, artifact=INT8)


def test_a_listed_file_linked_to_an_identical_file_outside_is_refused(folder: Path, tmp_path: Path, capsys) -> None:
    outside = tmp_path / "same.onnx"
    shutil.copy(folder / INT8, outside)
    (folder / INT8).unlink()
    (folder / INT8).symlink_to(outside)
    with pytest.raises(IntegrityError, match="is a symbolic link .to a path outside the folder"):
        load_encoder(folder, artifact=INT8)
    code, _, err = run_cli(capsys, "validate", str(folder), "-q", "--no-speed", "--artifact", INT8)
    assert code == 2
    assert_one_line_error(err, INT8, "symbolic link")
    code, out, _ = run_cli(capsys, "verify", str(folder))
    assert code == 1 and "symbolic link" in out


def test_a_file_the_export_did_not_write_is_not_read_unchecked(folder: Path) -> None:
    (folder / "added_tokens.json").write_text('{"evil": 30000}')
    with pytest.raises(IntegrityError, match="added_tokens.json is in .* but not in manifest.json"):
        load_encoder(folder)


def test_an_intact_folder_loads_and_its_digests_are_kept_for_the_process(folder: Path) -> None:
    from bge_export.folder import integrity

    encoder = load_encoder(folder, artifact=INT8)
    assert encoder.encode(["one text"]).shape[0] == 1
    kept = len(integrity._DIGESTS)
    load_encoder(folder, artifact=INT8)
    assert len(integrity._DIGESTS) == kept  # the second load hashed nothing new
