"""Adding a target to an output folder: one manifest, hashes kept true, and nothing half-updated on failure."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import export_folder

from bge_export.errors import InputError
from bge_export.folder.integrity import verify_folder
from bge_export.folder.manifest import ArtifactEntry, file_sha256, read_manifest
from bge_export.folder.target_folder import open_model_folder, open_target_folder
from bge_export.registry import target_of, targets, unavailable_reason


@pytest.fixture
def export(tiny_model, tmp_path) -> Path:
    return export_folder(tiny_model(), tmp_path / "out", check_texts=11)


def _snapshot(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): file_sha256(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def _entry(stage: Path, relative: str, fmt: str) -> ArtifactEntry:
    path = stage / relative
    return ArtifactEntry(path=relative, format=fmt, precision="fp16", sha256=file_sha256(path),
                         size_bytes=path.stat().st_size)


def test_added_target_shares_the_manifest_and_its_hashes(export):
    with open_target_folder(export) as folder:
        (folder.stage / "tensorrt").mkdir()
        (folder.stage / "tensorrt" / "model_fp16.plan").write_bytes(b"engine bytes")
        folder.add(_entry(folder.stage, "tensorrt/model_fp16.plan", "tensorrt"))
    manifest = read_manifest(export)
    assert [a.format for a in manifest.artifacts] == ["onnx", "tensorrt"]
    assert "tensorrt/model_fp16.plan" in manifest.files and "onnx/model.onnx" in manifest.files
    assert verify_folder(export, manifest, manifest.artifacts).files_checked  # every hash true after the swap
    assert not [p for p in export.parent.iterdir() if p.name.startswith(".")]  # no staging left behind


def test_a_failing_target_leaves_the_folder_exactly_as_it_was(export):
    before = _snapshot(export)
    with pytest.raises(RuntimeError, match="conversion broke"):
        with open_target_folder(export) as folder:
            (folder.stage / "coreml").mkdir()
            (folder.stage / "coreml" / "half.bin").write_bytes(b"x" * 100)
            (folder.stage / "onnx" / "model.onnx").write_bytes(b"overwritten in the copy only")
            raise RuntimeError("conversion broke")
    assert _snapshot(export) == before
    assert not [p for p in export.parent.iterdir() if p.name.startswith(".")]


def test_a_damaged_or_foreign_file_is_refused_before_any_copy(export):
    (export / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="notes.txt"):
        with open_target_folder(export):
            pass
    (export / "notes.txt").unlink()
    (export / "onnx" / "model.onnx").write_bytes(b"flipped")
    with pytest.raises(InputError, match="onnx/model.onnx changed since the export"):
        with open_target_folder(export):
            pass


def test_model_folder_joins_an_export_of_the_same_model_and_refuses_another(tiny_model, tmp_path):
    from bge_export.model.source import read_spec, resolve_model

    model = tiny_model()
    export = export_folder(model, tmp_path / "out", check_texts=11)
    source = resolve_model(str(model))
    with open_model_folder(export, source, read_spec(source)) as folder:
        assert folder.manifest.artifacts[0].path == "onnx/model.onnx"
    other = resolve_model(str(tiny_model(seed=1)))
    with pytest.raises(InputError, match="another model"):
        with open_model_folder(export, other, read_spec(other)):
            pass
    fresh = tmp_path / "fresh"
    with open_model_folder(fresh, other, read_spec(other)) as folder:
        assert folder.manifest.artifacts == []
    manifest = json.loads((fresh / "manifest.json").read_text())
    assert "tokenizer.json" in manifest["files"] and manifest["model"]["weights_sha256"] == other.weights_sha256()


def test_every_known_format_has_one_target_and_a_reason_when_it_cannot_run(export):
    manifest = read_manifest(export)
    assert target_of(manifest.artifacts[0]) is targets()["onnx"] and unavailable_reason(manifest.artifacts[0]) is None
    unknown = ArtifactEntry(path="x/model.bin", format="openvino-ir", precision="fp32", sha256="", size_bytes=0)
    with pytest.raises(InputError, match="format 'openvino-ir'.*known: onnx, tensorrt, coreml"):
        target_of(unknown)
