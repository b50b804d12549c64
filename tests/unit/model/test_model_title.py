"""Titles name the model by the id the user gave (or the recipe's), never by a local path: `inspect`'s model
line, the validation report's title and the model card's, for an export from a local folder, with --model-id,
and for `build --model FOLDER` with a recipe that names the hub id."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import assert_nothing_written, assert_one_line_error, run_cli

from bge_export.folder.manifest import read_manifest
from bge_export.folder.target_folder import recorded_title
from bge_export.model.source import model_title, resolve_model


def test_model_title_rules(tmp_path: Path) -> None:
    cache = tmp_path / "hub" / "models--BAAI--bge-small-en-v1.5" / "snapshots" / "5c38ec7c"
    assert model_title("BAAI/bge-small-en-v1.5", cache, from_hub=True) == "BAAI/bge-small-en-v1.5"
    assert model_title(str(cache), cache, from_hub=False) == "BAAI/bge-small-en-v1.5"  # the cache path names it
    assert model_title("./models/my-bge/", tmp_path / "models" / "my-bge", from_hub=False) == "my-bge (local folder)"
    assert model_title("./models/my-bge", None, False, model_id="BAAI/bge-base-en-v1.5") == "BAAI/bge-base-en-v1.5"
    # a manifest written before titles were recorded: derived the same way, never the path
    assert recorded_title({"reference": "/home/me/models/my-bge", "folder": "/home/me/models/my-bge"}) \
        == "my-bge (local folder)"
    assert recorded_title({"reference": "BAAI/bge-small-en-v1.5", "revision": "main",
                           "folder": str(cache)}) == "BAAI/bge-small-en-v1.5"
    assert recorded_title({"reference": "/x/y", "title": "BAAI/bge-m3"}) == "BAAI/bge-m3"


def test_a_local_folder_is_named_not_pathed(tiny_model, tmp_path: Path, capsys) -> None:
    model = tiny_model(pooling="mean")
    out = tmp_path / "out"
    code, _, err = run_cli(capsys, "onnx", "--model", str(model), "--output", str(out), "-q")
    assert code == 0, err
    title = f"{model.name} (local folder)"
    assert read_manifest(out).model["title"] == title
    code, text, _ = run_cli(capsys, "inspect", str(out))
    (line,) = [row for row in text.splitlines() if row.startswith("model ")]
    assert line == f"model       {title}" and str(tmp_path) not in line
    code, _, err = run_cli(capsys, "validate", str(out), "--max-texts", "24", "--no-speed", "--threads", "1", "-q")
    assert code == 0, err
    assert (out / "report.md").read_text().startswith(f"# Validation: {title}\n")
    assert f"<h1>Validation: {title}</h1>" in (out / "report.html").read_text()


def test_model_id_names_a_local_copy(tiny_model, tmp_path: Path, capsys) -> None:
    model = tiny_model(pooling="cls")
    out = tmp_path / "out"
    code, _, err = run_cli(capsys, "onnx", "--model", str(model), "--model-id", "BAAI/bge-small-en-v1.5",
                           "--output", str(out), "-q")
    assert code == 0, err
    code, text, _ = run_cli(capsys, "inspect", str(out))
    assert "model       BAAI/bge-small-en-v1.5\n" in text
    assert resolve_model(str(model), model_id="BAAI/bge-small-en-v1.5").title == "BAAI/bge-small-en-v1.5"


@pytest.mark.parametrize("bad", ["../../etc/passwd", "/abs/path", "a/b/c", "x" * 300, "BAAI/bge small"])
def test_a_bad_model_id_is_one_line(tiny_model, tmp_path: Path, capsys, bad: str) -> None:
    model = tiny_model(pooling="cls")
    code, _, err = run_cli(capsys, "onnx", "--model", str(model), "--model-id", bad, "--output",
                           str(tmp_path / "out"), "-q")
    assert code == 2
    assert_one_line_error(err, "is not a hub id", "BAAI/bge-small-en-v1.5")
    assert_nothing_written(tmp_path, "out")


def test_build_with_a_local_copy_keeps_the_recipes_id(tiny_model, tmp_path: Path, capsys) -> None:
    model = tiny_model(pooling="cls")
    recipe = tmp_path / "recipe.yaml"
    out = tmp_path / "built"
    recipe.write_text(f"model: BAAI/bge-small-en-v1.5\noutput: {out}\ntargets:\n  onnx:\n    check_texts: 11\n")
    code, _, err = run_cli(capsys, "build", str(recipe), "--model", str(model), "-q")
    assert code == 0, err
    card = (out / "README.md").read_text()
    assert "\n# BAAI/bge-small-en-v1.5: deployable exports\n" in card
    assert f"# {model.name}:" not in card and read_manifest(out).model["reference"] == str(model)
