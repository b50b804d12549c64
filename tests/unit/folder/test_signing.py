"""model.sig (bge_export/folder/signing.py) on a real tiny export: signed with keys made here, checked by
bge-export and by model_signing's own CLI; every key problem is one line (exit 2), every change to a signed
folder is named (exit 1), and nothing is signed that bge-export cannot vouch for."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import build_tiny_model
from helpers import REPO_ROOT, assert_one_line_error, run_cli

from bge_export.errors import InputError
from bge_export.folder.manifest import SIGNATURE_NAME
from bge_export.folder.signing import SignOptions, sign_folder, signable_files, verify_signature
from bge_export.folder.verify import verify_folder

pytest.importorskip("model_signing", reason="the [sign] extra: pip install 'bge-export[sign]'")


def write_keys(folder: Path, name: str = "signing", password: bytes | None = None, curve: str = "p256",
               ) -> tuple[Path, Path]:
    """A fresh key pair as PEM files (what `openssl ecparam -genkey` and `openssl ec -pubout` write)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    key = (rsa.generate_private_key(65537, 2048) if curve == "rsa" else
           ec.generate_private_key(ec.SECP256R1() if curve == "p256" else ec.SECP256K1()))
    encryption = (serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption())
    private = folder / f"{name}.pem"
    public = folder / f"{name}.pub.pem"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption))
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    return private, public


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from bge_export.report.model_card import write_model_card
    from bge_export.targets.onnx.export import ExportOptions, export

    root = tmp_path_factory.mktemp("signing")
    model = build_tiny_model(root / "tiny-bge", pooling="cls")
    output = root / "out"
    assert export(ExportOptions(model=str(model), output=str(output), check_texts=11, quiet=True)).ok
    write_model_card(output)
    return output


@pytest.fixture
def folder(tiny_export: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "export"
    shutil.copytree(tiny_export, copy)
    return copy


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    return write_keys(tmp_path)


def test_signature_covers_every_file_and_model_signing_itself_accepts_it(folder: Path, keys: tuple[Path, Path]) -> None:
    private, public = keys
    result = sign_folder(folder, private_key=private)
    expected = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                      if p.is_file() and p.name != SIGNATURE_NAME)
    assert {"manifest.json", "README.md"} <= set(expected)
    assert sorted(signable_files(folder)) == expected and result.files == len(expected)
    bundle = json.loads((folder / SIGNATURE_NAME).read_text())
    assert bundle["mediaType"].startswith("application/vnd.dev.sigstore.bundle")
    check = verify_signature(folder, public_key=public)
    assert check.ok and f"the {len(expected)} files" in check.checked
    # the card's claim: model_signing's own CLI checks the folder without bge-export
    done = subprocess.run([sys.executable, "-m", "model_signing", "verify", "key", str(folder), "--signature",
                           str(folder / SIGNATURE_NAME), "--public_key", str(public)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "Verification succeeded" in done.stdout, done.stdout + done.stderr


def test_each_change_after_signing_is_named(folder: Path, keys: tuple[Path, Path], tmp_path: Path) -> None:
    private, public = keys
    sign_folder(folder, private_key=private)
    (folder / "notes.txt").write_text("added later")
    (folder / "vocab.txt").rename(tmp_path / "vocab.txt")
    with (folder / "README.md").open("a") as card:
        card.write("\nnot what was signed\n")
    problems = verify_signature(folder, public_key=public).problems
    assert any(p.startswith("notes.txt was added after the folder was signed") for p in problems), problems
    assert any(p.startswith("vocab.txt was removed after the folder was signed") for p in problems), problems
    assert any(p.startswith("README.md changed since the folder was signed") for p in problems), problems
    assert len(problems) == 3


def test_another_key_and_a_damaged_signature_are_problems(folder: Path, keys: tuple[Path, Path],
                                                          tmp_path: Path) -> None:
    private, _ = keys
    _, other_public = write_keys(tmp_path, "other")
    sign_folder(folder, private_key=private)
    (problem,) = verify_signature(folder, public_key=other_public).problems
    assert problem.startswith(f"{SIGNATURE_NAME} was not made with the key {other_public}")
    (folder / SIGNATURE_NAME).write_text("{}")
    (problem,) = verify_signature(folder, public_key=other_public).problems
    assert problem.startswith(f"{SIGNATURE_NAME} is not a model-signing signature")


def test_a_symbolic_link_is_never_signed(folder: Path, keys: tuple[Path, Path], tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("not the folder's")
    (folder / "extra").mkdir()
    (folder / "extra" / "link.txt").symlink_to(outside)
    with pytest.raises(InputError, match="extra/link.txt is a symbolic link"):
        sign_folder(folder, private_key=keys[0])
    assert not (folder / SIGNATURE_NAME).exists()


def test_signed_folder_that_gains_a_link_fails_its_signature_check(folder: Path, keys: tuple[Path, Path]) -> None:
    private, public = keys
    sign_folder(folder, private_key=private)
    (folder / "vocab-link.txt").symlink_to(folder / "vocab.txt")
    (problem,) = verify_signature(folder, public_key=public).problems
    assert problem.startswith("vocab-link.txt is a symbolic link")


def test_encrypted_key_takes_its_password_from_the_environment(folder: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    private, public = write_keys(tmp_path, "locked", password=b"correct horse")
    code, _, err = run_cli(capsys, "sign", str(folder), "--private-key", str(private))
    assert code == 2
    assert_one_line_error(err, "it is encrypted", "--password-env")
    code, _, err = run_cli(capsys, "sign", str(folder), "--private-key", str(private), "--password-env", "KEY_PW")
    assert code == 2
    assert_one_line_error(err, "--password-env KEY_PW", "not set")
    monkeypatch.setenv("KEY_PW", "wrong")
    code, _, err = run_cli(capsys, "sign", str(folder), "--private-key", str(private), "--password-env", "KEY_PW")
    assert code == 2
    assert_one_line_error(err, "the password does not decrypt it")
    assert not (folder / SIGNATURE_NAME).exists()
    monkeypatch.setenv("KEY_PW", "correct horse")
    code, out, _ = run_cli(capsys, "sign", str(folder), "--private-key", str(private), "--password-env", "KEY_PW")
    assert code == 0 and "signed" in out
    assert verify_signature(folder, public_key=public).ok


@pytest.mark.parametrize("kind, fragment", [("rsa", "not an elliptic-curve key"),
                                            ("secp256k1", "Unsupported key for curve")])
def test_keys_model_signing_cannot_use_are_one_line(folder: Path, tmp_path: Path, kind: str, fragment: str,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    private, _ = write_keys(tmp_path, kind, curve=kind)
    code, _, err = run_cli(capsys, "sign", str(folder), "--private-key", str(private))
    assert code == 2
    assert_one_line_error(err, fragment)
    assert not (folder / SIGNATURE_NAME).exists()


def test_one_signing_method_at_a_time() -> None:
    with pytest.raises(InputError, match="sign with one method"):
        SignOptions(folder="x")
    with pytest.raises(InputError, match="sign with one method"):
        SignOptions(folder="x", private_key="k.pem", sigstore=True)
    with pytest.raises(InputError, match="--certificate-chain goes with --signing-certificate"):
        SignOptions(folder="x", private_key="k.pem", certificate_chain=["c.pem"])
    with pytest.raises(InputError, match="go with --sigstore"):
        SignOptions(folder="x", private_key="k.pem", sigstore_staging=True)


def test_signing_rewrites_our_card_to_say_how_to_verify_and_leaves_an_edited_one(
        folder: Path, keys: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    card = folder / "README.md"
    assert "Not signed: `bge-export sign . --private-key KEY.pem`" in card.read_text()
    code, _, _ = run_cli(capsys, "sign", str(folder), "--private-key", str(keys[0]))
    assert code == 0
    text = card.read_text()
    assert "bge-export verify . --public-key PUB.pem" in text and "Not signed" not in text
    assert f"model_signing verify key . --signature {SIGNATURE_NAME} --public_key PUB.pem" in text
    assert verify_signature(folder, public_key=keys[1]).ok  # the rewritten card is what was signed
    edited = text.replace("Not signed", "x") + "\nOur own words.\n"
    card.write_text(edited.replace("bge-export verify . --public-key PUB.pem", "see our site"))
    (folder / SIGNATURE_NAME).unlink()
    code, _, _ = run_cli(capsys, "sign", str(folder), "--private-key", str(keys[0]))
    assert code == 0 and "Our own words." in card.read_text()  # a card someone edited is theirs


def test_verify_without_a_key_notes_model_sig_and_never_calls_it_foreign(
        folder: Path, keys: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    sign_folder(folder, private_key=keys[0])
    assert verify_folder(folder).ok
    code, out, _ = run_cli(capsys, "verify", str(folder))
    assert code == 0
    assert "model.sig present: pass --public-key PUB.pem" in out and "not recorded" not in out


def test_without_the_extra_sign_and_verify_name_it_in_one_line(folder: Path, keys: tuple[Path, Path]) -> None:
    """model_signing made unimportable the way Python marks a missing module (sys.modules entry None)."""
    code = ("import sys; sys.modules['model_signing'] = None\n"
            "from bge_export.cli import main\nmain(sys.argv[1:])\n")
    for args in (["sign", str(folder), "--private-key", str(keys[0])],
                 ["verify", str(folder), "--public-key", str(keys[1])]):
        done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120,
                              cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
        assert done.returncode == 2, done.stdout + done.stderr
        assert_one_line_error(done.stderr, "model-signing", "pip install 'bge-export[sign]'")
    assert not (folder / SIGNATURE_NAME).exists()


def test_load_encoder_with_a_public_key_loads_only_what_the_key_signed(folder: Path, keys: tuple[Path, Path]) -> None:
    from bge_export import load_encoder
    from bge_export.errors import IntegrityError
    from bge_export.files import file_sha256
    from bge_export.folder.manifest import read_manifest_data, write_manifest

    private, public = keys
    with pytest.raises(IntegrityError, match="no model.sig: the folder is not signed"):
        load_encoder(folder, public_key=public)
    sign_folder(folder, private_key=private)
    assert load_encoder(folder, public_key=public).encode("one text").ndim == 1
    # someone deliberate: a byte flipped, its sha256 recorded, the seal recomputed; only the signature tells
    graph = folder / "onnx" / "model.onnx"
    data = bytearray(graph.read_bytes())
    data[int(len(data) * 0.9)] ^= 0x01
    graph.write_bytes(bytes(data))
    manifest = read_manifest_data(folder)
    manifest["files"]["onnx/model.onnx"] = file_sha256(graph)
    next(e for e in manifest["artifacts"] if e["path"] == "onnx/model.onnx")["sha256"] = file_sha256(graph)
    write_manifest(folder, manifest)
    with pytest.raises(IntegrityError, match="fails its signature check"):
        load_encoder(folder, artifact="onnx/model.onnx", public_key=public)
    problems = verify_signature(folder, public_key=public).problems
    assert any(p.startswith("onnx/model.onnx changed since the folder was signed") for p in problems), problems


def test_a_file_changed_between_the_check_and_the_signing_is_never_signed(folder: Path,
                                                                           keys: tuple[Path, Path]) -> None:
    """model_signing reads the files again after verify_folder checked them: what it signed must be what was
    checked. before_signing runs exactly in that gap, so it stands in for whoever writes the folder then."""
    from bge_export.errors import IntegrityError

    private, _ = keys

    def tamper(target: Path) -> None:
        graph = target / "onnx" / "model.onnx"
        data = bytearray(graph.read_bytes())
        data[int(len(data) * 0.9)] ^= 0x01
        graph.write_bytes(bytes(data))

    with pytest.raises(IntegrityError, match="onnx/model.onnx changed while .* was being signed"):
        sign_folder(folder, private_key=private, before_signing=tamper)
    assert not (folder / SIGNATURE_NAME).exists()
