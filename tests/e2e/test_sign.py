"""`bge-export sign` and `verify --public-key` as a publisher and a downloader meet them, on the real MiniLM export:
a signed folder verifies (exit 0); a tampered file behind a re-hashed, re-sealed manifest and a regenerated card,
an added or a removed file, an unsigned folder or another key fail (exit 1, naming the file); a missing or
garbage key is one line (exit 2); a folder that fails verify is never signed. `bge-export build` signs last."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import build_tiny_model
from helpers import assert_one_line_error, run_cli

from bge_export.files import file_sha256
from bge_export.folder.manifest import SIGNATURE_NAME, write_manifest

pytest.importorskip("model_signing", reason="the [sign] extra: pip install 'bge-export[sign]'")


def _keys(folder: Path, name: str = "signing") -> tuple[Path, Path]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    private, public = folder / f"{name}.pem", folder / f"{name}.pub.pem"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    return private, public


@pytest.fixture(scope="module")
def signed(minilm_export: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The MiniLM export with its model card, signed once by the CLI; tests copy it."""
    from bge_export.cli import main
    from bge_export.report.model_card import write_model_card

    root = tmp_path_factory.mktemp("signed")
    folder = root / "all-MiniLM-L6-v2"
    shutil.copytree(minilm_export, folder)
    write_model_card(folder)
    private, public = _keys(root)
    with pytest.raises(SystemExit) as exited:
        main(["sign", str(folder), "--private-key", str(private)])
    assert exited.value.code == 0
    return {"folder": folder, "private": private, "public": public}


@pytest.fixture
def folder(signed: dict[str, Path], tmp_path: Path) -> Path:
    copy = tmp_path / "all-MiniLM-L6-v2"
    shutil.copytree(signed["folder"], copy)
    return copy


def test_signed_folder_verifies_with_its_public_key(folder: Path, signed: dict[str, Path], capsys) -> None:
    code, out, err = run_cli(capsys, "verify", str(folder), "--public-key", str(signed["public"]))
    assert code == 0, out + err
    assert f"signed: {SIGNATURE_NAME}: verified with {signed['public']}" in out
    assert "bge-export verify . --public-key PUB.pem" in (folder / "README.md").read_text()


def test_tampered_artifact_behind_a_resealed_manifest_fails_naming_the_file(folder: Path, signed: dict[str, Path],
                                                                             capsys) -> None:
    """What the unkeyed seal cannot catch: new bytes, their sha256 in manifest.json, the seal and card redone."""
    from bge_export.report.model_card import write_model_card

    artifact = folder / "onnx/model.onnx"
    data = bytearray(artifact.read_bytes())
    data[len(data) // 2] ^= 0x01  # inside the weights: the graph still loads and runs
    artifact.write_bytes(bytes(data))
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"]["onnx/model.onnx"] = file_sha256(artifact)
    for entry in manifest["artifacts"]:
        if entry["path"] == "onnx/model.onnx":
            entry["sha256"] = file_sha256(artifact)
    write_manifest(folder, manifest)  # recomputes the seal, as anyone can
    write_model_card(folder, signed=True)
    code, out, _ = run_cli(capsys, "verify", str(folder))
    assert code == 0, out  # the manifest's own checks are satisfied: only the signature can tell
    code, out, err = run_cli(capsys, "verify", str(folder), "--public-key", str(signed["public"]))
    assert code == 1
    assert "problem: onnx/model.onnx changed since the folder was signed" in out
    assert "problem: manifest.json changed since the folder was signed" in out
    assert_one_line_error(err, "failed verification")


def test_added_file_fails(folder: Path, signed: dict[str, Path], capsys) -> None:
    (folder / "onnx" / "model_extra.onnx").write_bytes(b"not signed")
    code, out, _ = run_cli(capsys, "verify", str(folder), "--public-key", str(signed["public"]))
    assert code == 1
    assert "problem: onnx/model_extra.onnx was added after the folder was signed" in out


def test_removed_file_fails(folder: Path, signed: dict[str, Path], capsys) -> None:
    (folder / "README.md").unlink()  # unrecorded by the manifest, so only the signature misses it
    code, out, _ = run_cli(capsys, "verify", str(folder), "--public-key", str(signed["public"]))
    assert code == 1
    assert "problem: README.md was removed after the folder was signed" in out


def test_unsigned_folder_with_a_public_key_fails(minilm_export: Path, signed: dict[str, Path], capsys) -> None:
    code, out, _ = run_cli(capsys, "verify", str(minilm_export), "--public-key", str(signed["public"]))
    assert code == 1
    assert f"problem: no {SIGNATURE_NAME}: the folder is not signed" in out


def test_another_public_key_fails(folder: Path, tmp_path: Path, capsys) -> None:
    _, other = _keys(tmp_path, "other")
    code, out, _ = run_cli(capsys, "verify", str(folder), "--public-key", str(other))
    assert code == 1
    assert f"problem: {SIGNATURE_NAME} was not made with the key {other}" in out


@pytest.mark.parametrize("key", ["missing.pem", "garbage.pem", "a-folder"])
def test_missing_or_garbage_key_is_one_line_exit_2(folder: Path, tmp_path: Path, key: str, capsys) -> None:
    (tmp_path / "garbage.pem").write_bytes(b"-----BEGIN NONSENSE-----\n\x00\xff\n")
    (tmp_path / "a-folder").mkdir()
    before = (folder / SIGNATURE_NAME).read_bytes()
    for command, flag in (("sign", "--private-key"), ("verify", "--public-key")):
        code, out, err = run_cli(capsys, command, str(folder), flag, str(tmp_path / key))
        assert code == 2, out + err
        assert_one_line_error(err, flag, key)
    assert (folder / SIGNATURE_NAME).read_bytes() == before


def test_folder_that_fails_verify_is_not_signed(minilm_export: Path, signed: dict[str, Path], tmp_path: Path,
                                                capsys) -> None:
    folder = tmp_path / "damaged"
    shutil.copytree(minilm_export, folder)
    (folder / "vocab.txt").write_text("[PAD]\n")
    listing = sorted(p.name for p in folder.iterdir())
    code, _, err = run_cli(capsys, "sign", str(folder), "--private-key", str(signed["private"]))
    assert code == 2
    assert_one_line_error(err, "fails `bge-export verify`", "vocab.txt", "signs only an intact folder")
    assert sorted(p.name for p in folder.iterdir()) == listing and not (folder / SIGNATURE_NAME).exists()


RECIPE = """\
model: tiny/bge-tiny-en
output: {output}
targets:
  onnx: {{check_texts: 11}}
sign:
  private_key: {key}
"""


def test_build_signs_last_and_a_bad_key_stops_it_before_any_work(tmp_path: Path, capsys) -> None:
    model = build_tiny_model(tmp_path / "bge-tiny-en", pooling="cls")
    private, public = _keys(tmp_path)
    recipe = tmp_path / "tiny.yaml"
    output = tmp_path / "out"
    recipe.write_text(RECIPE.format(output=output, key=tmp_path / "missing.pem"))
    code, out, _ = run_cli(capsys, "build", str(recipe), "--model", str(model), "--dry-run")
    assert code == 0 and "sign" in out and "WOULD RUN: model.sig over every file" in out
    code, _, err = run_cli(capsys, "build", str(recipe), "--model", str(model), "-q")
    assert code == 2
    assert_one_line_error(err, "sign", "--private-key", "missing.pem", "does not exist")
    assert not output.exists()
    code, out, err = run_cli(capsys, "build", str(recipe), "--model", str(model), "-q", "--sign-key", str(private))
    assert code == 0, out + err
    assert "SIGNED" in out.splitlines()[-2]  # the last step before the summary line
    assert "bge-export verify . --public-key PUB.pem" in (output / "README.md").read_text()
    code, out, _ = run_cli(capsys, "verify", str(output), "--public-key", str(public))
    assert code == 0, out
