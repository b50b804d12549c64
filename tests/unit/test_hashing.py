"""bge_export/files.py: one sha256 rule per kind of thing, one atomic writer, one JSON reader with one error style."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest

from bge_export.errors import InputError
from bge_export.files import (
    CONTENTS_RULE,
    contents_sha256,
    file_digests,
    file_sha256,
    json_or_none,
    listing_sha256,
    path_sha256,
    read_json,
    read_json_object,
    tree_sha256,
    write_atomic,
    write_json_atomic,
)
from bge_export.folder.manifest import UNRECORDED_FILES, hash_files


def _bundle(root: Path) -> Path:
    """A folder artifact shaped like an .mlpackage: a manifest and weights two levels down."""
    bundle = root / "model.mlpackage"
    (bundle / "Data" / "com.apple.CoreML" / "weights").mkdir(parents=True)
    (bundle / "Manifest.json").write_text('{"items": 2}')
    (bundle / "Data" / "com.apple.CoreML" / "model.mlmodel").write_bytes(b"program")
    (bundle / "Data" / "com.apple.CoreML" / "weights" / "weight.bin").write_bytes(b"\x00\x01" * 1000)
    return bundle


def test_a_file_digest_is_the_sha256_of_its_bytes(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"graph bytes" * 1000)
    assert file_sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest() == path_sha256(path)


def test_renaming_a_file_inside_a_folder_artifact_changes_its_digest(tmp_path):
    bundle = _bundle(tmp_path)
    before = path_sha256(bundle)
    weights = bundle / "Data" / "com.apple.CoreML" / "weights"
    (weights / "weight.bin").rename(weights / "weights.bin")
    assert path_sha256(bundle) != before
    (weights / "weights.bin").rename(weights / "weight.bin")
    assert path_sha256(bundle) == before  # the same names and bytes: the same digest


def test_moving_a_file_changes_the_digest_though_every_byte_stays(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    (second / "y").mkdir(parents=True)
    for folder, names in ((first, ("x.bin", "y.bin")), (second, ("x.bin", "y/z.bin"))):  # y.bin moved to y/z.bin
        (folder / names[0]).write_bytes(b"one")
        (folder / names[1]).write_bytes(b"two")
    assert tree_sha256(first) != tree_sha256(second)
    assert path_sha256(first, CONTENTS_RULE) == path_sha256(second, CONTENTS_RULE)  # why schema 1's rule was dropped


def test_schema_one_rule_is_the_files_concatenated_in_path_order(tmp_path):
    bundle = _bundle(tmp_path)
    files = sorted(p for p in bundle.rglob("*") if p.is_file())
    expected = hashlib.sha256(b"".join(p.read_bytes() for p in files)).hexdigest()
    assert path_sha256(bundle, CONTENTS_RULE) == expected == contents_sha256(files)


def test_a_tree_digest_is_the_listing_of_its_file_digests(tmp_path):
    bundle = _bundle(tmp_path)
    digests = file_digests(bundle)
    assert list(digests) == sorted(digests) and "Data/com.apple.CoreML/weights/weight.bin" in digests
    assert tree_sha256(bundle) == listing_sha256(digests)


def test_recorded_files_leave_out_the_manifest_card_and_reports(tmp_path):
    (tmp_path / "onnx").mkdir()
    (tmp_path / "onnx" / "model.onnx").write_bytes(b"graph")
    for name in UNRECORDED_FILES:
        (tmp_path / name).write_text("{}")
    (tmp_path / "marker.json").write_text("{}")
    assert set(hash_files(tmp_path)) == {"onnx/model.onnx", "marker.json"}
    assert set(hash_files(tmp_path, skip=("marker.json",))) == {"onnx/model.onnx"}


def test_atomic_writes_of_text_and_bytes_leave_no_temporary_file(tmp_path):
    text = write_atomic(tmp_path / "new" / "report.md", "naïve ✓\n")
    assert text.read_text(encoding="utf-8") == "naïve ✓\n"
    data = write_atomic(tmp_path / "model.plan", b"\x00\xffplan")
    assert data.read_bytes() == b"\x00\xffplan"
    write_json_atomic(tmp_path / "report.json", {"cosine": 0.5, "text": "é"})
    assert (tmp_path / "report.json").read_text(encoding="utf-8") == '{\n  "cosine": 0.5,\n  "text": "é"\n}\n'
    assert stat.S_IMODE(os.stat(data).st_mode) == 0o644  # readable by others, unlike mkstemp's 0600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.plan", "new", "report.json"]


def test_an_interrupted_atomic_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "manifest.json"
    path.write_text("old")

    def interrupted(source: str, target: str) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_atomic(path, "new")
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["manifest.json"]


@pytest.mark.parametrize("content, why", [
    (None, "it does not exist"),
    (b'{"a": 1,}', "it is not valid JSON: Expecting property name enclosed in double quotes at line 1 column 9"),
    (b"\xff\xfe{}", "it is not UTF-8 text"),
])
def test_an_unreadable_json_file_is_one_input_error_line_naming_file_reason_and_fix(tmp_path, content, why):
    path = tmp_path / "config.json"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(InputError) as raised:
        read_json(path, "download the model again")
    assert str(raised.value) == f"{path}: {why}; download the model again"
    assert json_or_none(path) is None


def test_a_json_folder_or_a_non_object_is_refused_in_the_same_style(tmp_path):
    (tmp_path / "folder.json").mkdir()
    with pytest.raises(InputError, match=r"folder\.json: it is a folder; fix it$"):
        read_json(tmp_path / "folder.json", "fix it")
    (tmp_path / "list.json").write_text("[1, 2]")
    assert read_json(tmp_path / "list.json", "fix it") == [1, 2] == json_or_none(tmp_path / "list.json")
    with pytest.raises(InputError, match=r"list\.json: it holds a JSON list, not an object; fix it$"):
        read_json_object(tmp_path / "list.json", "fix it")
