"""Bad input: one line naming the problem and the fix, a non-zero exit, no traceback, nothing left behind."""

from __future__ import annotations

import json
import shutil

from helpers import assert_nothing_written, assert_one_line_error, run_cli


def test_missing_model_folder(capsys, tmp_path):
    code, _, err = run_cli(capsys, "onnx", "-m", str(tmp_path / "nope"), "-o", str(tmp_path / "out"), "-q")
    assert code == 2
    assert_one_line_error(err, "does not exist")
    assert_nothing_written(tmp_path, "out")


def test_folder_without_weights(capsys, tmp_path, tiny_model):
    folder = tiny_model(pooling="mean")
    (folder / "model.safetensors").unlink()
    code, _, err = run_cli(capsys, "onnx", "-m", str(folder), "-o", str(tmp_path / "out"), "-q")
    assert code == 2
    assert_one_line_error(err, "no weights")
    assert_nothing_written(tmp_path, "out")


def test_pickle_weights_need_opt_in(capsys, tmp_path, tiny_model):
    import torch
    from safetensors.torch import load_file

    folder = tiny_model(pooling="mean")
    torch.save(load_file(str(folder / "model.safetensors")), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    code, _, err = run_cli(capsys, "onnx", "-m", str(folder), "-o", str(tmp_path / "out"), "-q")
    assert code == 2
    assert_one_line_error(err, "pickle", "--allow-pickle")
    assert_nothing_written(tmp_path, "out")
    code, out, _ = run_cli(capsys, "onnx", "-m", str(folder), "-o", str(tmp_path / "out"), "-q", "--allow-pickle")
    assert code == 0
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["model"]["weights_format"] == "pickle"


def test_unsupported_architecture(capsys, tmp_path):
    from transformers import GPT2Config, GPT2Model

    folder = tmp_path / "gpt2-tiny"
    GPT2Model(GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=100)).save_pretrained(str(folder))
    code, _, err = run_cli(capsys, "onnx", "-m", str(folder), "-o", str(tmp_path / "out"), "-q")
    assert code == 2
    assert_one_line_error(err, "architecture 'gpt2'", "supported")
    assert_nothing_written(tmp_path, "out")


def test_output_path_is_a_file(capsys, tmp_path, tiny_model):
    folder = tiny_model(pooling="mean")
    target = tmp_path / "out.txt"
    target.write_text("keep me")
    code, _, err = run_cli(capsys, "onnx", "-m", str(folder), "-o", str(target), "-q")
    assert code == 2
    assert_one_line_error(err, "is a file")
    assert target.read_text() == "keep me"
    assert_nothing_written(tmp_path, "out.txt.")


def test_existing_output_needs_force(capsys, tmp_path, tiny_model):
    folder = tiny_model(pooling="mean")
    out = tmp_path / "out"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    code, _, err = run_cli(capsys, "onnx", "-m", str(folder), "-o", str(out), "-q")
    assert code == 2
    assert_one_line_error(err, "already exists", "--force")
    assert sorted(p.name for p in out.iterdir()) == ["precious.txt"]
    # --force replaces only a previous export: a folder holding the user's files is refused, untouched
    code, _, err = run_cli(capsys, "onnx", "-m", str(folder), "-o", str(out), "-q", "--force")
    assert code == 2
    assert_one_line_error(err, "not a previous bge-export export")
    assert sorted(p.name for p in out.iterdir()) == ["precious.txt"]
    # ... while a previous export is replaced
    (out / "precious.txt").unlink()
    assert run_cli(capsys, "onnx", "-m", str(folder), "-o", str(out), "-q")[0] == 0
    first = (out / "manifest.json").read_text()
    code, _, _ = run_cli(capsys, "onnx", "-m", str(folder), "-o", str(out), "-q", "--force", "--optimize")
    assert code == 0
    assert (out / "onnx" / "model_optimized.onnx").is_file() and (out / "manifest.json").read_text() != first
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []


def test_unknown_pooling_mode(capsys, tmp_path, tiny_model):
    folder = tiny_model(pooling="mean")
    code, _, err = run_cli(capsys, "onnx", "-m", str(folder), "-o", str(tmp_path / "out"), "-q", "--pooling", "avg")
    assert code == 2
    assert_one_line_error(err, "unknown pooling mode 'avg'", "cls")
    assert_nothing_written(tmp_path, "out")


def test_unknown_option_is_one_line(capsys):
    code, _, err = run_cli(capsys, "onnx", "--bogus")
    assert code == 2
    assert_one_line_error(err, "--bogus", "--help")


def test_inspect_of_a_folder_that_is_not_an_export(capsys, tmp_path):
    code, _, err = run_cli(capsys, "inspect", str(tmp_path))
    assert code == 2
    assert_one_line_error(err, "manifest.json")


def test_failed_check_exits_1_and_marks_the_artifact(capsys, tmp_path, tiny_model, monkeypatch):
    from bge_export.quality import floors as check

    monkeypatch.setitem(check.FLOORS, "fp32", check.Floors(1.5, 1.5, 1.0, 1.0, 0.0))  # impossible to meet: the check must fail
    folder = tiny_model(pooling="mean")
    code, _, err = run_cli(capsys, "onnx", "-m", str(folder), "-o", str(tmp_path / "out"), "-q")
    assert code == 1
    assert_one_line_error(err, "failed its check")
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["artifacts"][0]["status"] == "fail"
    assert "1.5" in manifest["artifacts"][0]["status_reason"]


def test_one_exit_code_rule_for_an_artifact_its_runtime_refuses(capsys, tmp_path, tiny_model):
    """A file that is what the export recorded (hash matches) but that onnxruntime refuses is a failed artifact:
    exit 1 in validate and in bench alike; a file changed since the export is bad input: exit 2 in both."""
    from bge_export.folder.manifest import file_sha256, read_manifest

    folder = tiny_model(pooling="mean")
    out = tmp_path / "out"
    assert run_cli(capsys, "onnx", "-m", str(folder), "-o", str(out), "-q", "--optimize")[0] == 0
    broken = out / "onnx" / "model_optimized.onnx"
    broken.write_bytes(b"not an onnx graph")
    # changed since the export: bad input, named, nothing written
    for command in ("validate", "bench"):
        code, _, err = run_cli(capsys, command, str(out), "-q", "--batch-sizes", "1", "--seq-lens", "8", "--repeats", "1")
        assert code == 2, (command, err)
        assert_one_line_error(err, "onnx/model_optimized.onnx changed since the export")
    assert not (out / "report.json").exists() and not (out / "bench.json").exists()
    # the same bytes recorded as the export's: the artifact itself is broken, which is a failed check
    manifest = read_manifest(out)
    manifest.find("onnx/model_optimized.onnx").sha256 = file_sha256(broken)
    manifest.files["onnx/model_optimized.onnx"] = file_sha256(broken)
    manifest.write(out)
    code, _, err = run_cli(capsys, "validate", str(out), "-q", "--no-speed", "--max-texts", "20")
    assert code == 1, err
    assert_one_line_error(err, "onnx/model_optimized.onnx")
    assert read_manifest(out).find("onnx/model_optimized.onnx").status == "fail"
    code, _, err = run_cli(capsys, "bench", str(out), "-q", "--batch-sizes", "1", "--seq-lens", "8", "--repeats", "1",
                           "--encode-texts", "0")
    assert code == 1, err
    assert_one_line_error(err, "onnx/model_optimized.onnx", "could not be run")
    assert json.loads((out / "bench.json").read_text())["failed"]["onnx/model_optimized.onnx"].startswith("cannot be loaded")


def test_validate_keeps_the_floor_a_user_set_at_export(capsys, tmp_path, tiny_model):
    """--min-cosine at export is the INT8 artifact's own floor: validate judges it against that, not the table."""
    from bge_export.folder.manifest import read_manifest

    folder = tiny_model(pooling="mean")
    out = tmp_path / "out"
    code, _, err = run_cli(capsys, "onnx", "-m", str(folder), "-o", str(out), "-q", "--quantize", "int8",
                           "--min-cosine", "0.5")
    assert code == 0, err
    int8 = [a for a in read_manifest(out).artifacts if a.precision == "int8-dynamic"][0]
    code, _, err = run_cli(capsys, "validate", str(out), "-q", "--no-speed", "--max-texts", "30",
                           "--artifact", int8.path)
    assert code in (0, 1), err
    data = json.loads((out / "report.json").read_text())
    (result,) = data["artifacts"]
    assert result["thresholds"]["min_cosine"] == 0.5 and result["thresholds"]["min_mean_cosine"] == 0.5


def test_force_refuses_what_only_looks_like_ours(capsys, tmp_path, tiny_model):
    """A user's file named like our temp files in a sub-folder, or a folder whose manifest lists no files, is not a
    previous export: --force refuses it and touches nothing."""
    folder = tiny_model(pooling="mean")
    out = tmp_path / "out"
    assert run_cli(capsys, "onnx", "-m", str(folder), "-o", str(out), "-q", "--no-check")[0] == 0
    (out / "notes").mkdir()
    (out / "notes" / ".manifest.json.mythesis").write_text("mine")
    code, _, err = run_cli(capsys, "onnx", "-m", str(folder), "-o", str(out), "-q", "--force")
    assert code == 2
    assert_one_line_error(err, "notes/.manifest.json.mythesis")
    assert (out / "notes" / ".manifest.json.mythesis").read_text() == "mine"
    shutil.rmtree(out / "notes")
    manifest = json.loads((out / "manifest.json").read_text())
    manifest.pop("files")
    (out / "manifest.json").write_text(json.dumps(manifest))
    code, _, err = run_cli(capsys, "onnx", "-m", str(folder), "-o", str(out), "-q", "--force")
    assert code == 2
    assert_one_line_error(err, "not a previous bge-export export")


def test_symlinked_output_and_escaping_module_paths_are_refused(capsys, tmp_path, tiny_model):
    folder = tiny_model(pooling="mean")
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    code, _, err = run_cli(capsys, "onnx", "-m", str(folder), "-o", str(tmp_path / "link"), "-q")
    assert code == 2
    assert_one_line_error(err, "symbolic link")
    modules = json.loads((folder / "modules.json").read_text())
    modules.insert(2, {"idx": 2, "name": "2", "path": "../../outside", "type": "sentence_transformers.models.Dense"})
    (folder / "modules.json").write_text(json.dumps(modules))
    code, _, err = run_cli(capsys, "onnx", "-m", str(folder), "-o", str(tmp_path / "out"), "-q")
    assert code == 2
    assert_one_line_error(err, "inside the model folder")
    assert_nothing_written(tmp_path, "out")


def test_a_partial_named_with_an_impossible_pid_is_left_alone(capsys, tmp_path, tiny_model):
    folder = tiny_model(pooling="mean")
    odd = tmp_path / ".out.partial-99999999999999999999-0123abcd"
    odd.mkdir()
    assert run_cli(capsys, "onnx", "-m", str(folder), "-o", str(tmp_path / "out"), "-q", "--no-check")[0] == 0
    assert odd.is_dir()


def test_an_invalid_hub_id_is_an_input_error(capsys, tmp_path):
    code, _, err = run_cli(capsys, "onnx", "-m", "foo--bar", "-o", str(tmp_path / "out"), "-q")
    assert code == 2
    assert_one_line_error(err, "foo--bar")
