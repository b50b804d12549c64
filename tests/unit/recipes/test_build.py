"""`bge-export build RECIPE`: one folder, one report; an unchanged build is up to date from hashes alone (no model
loaded), a changed recipe section rebuilds that target only, and the exit codes are the other commands'."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import build_tiny_model

from bge_export.recipes.build import BuildOptions, build

RECIPE = """\
model: tiny/bge-tiny-en            # --model points at the local tiny folder
output: {output}
targets:
  onnx:
    optimize: true
  tensorrt:
    precisions: [{precision}]
    profiles: ["batch=1:4:8,seq=1:16:128"]
validation:
  max_texts: 24
  speed: false
"""


def _states(result) -> dict[str, str]:
    return {step.name: step.state for step in result.steps}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("build")
    model = build_tiny_model(root / "bge-tiny-en", pooling="cls", max_seq_length=128)
    recipe = root / "tiny.yaml"
    recipe.write_text(RECIPE.format(output=root / "out", precision="fp16"))
    result = build(BuildOptions(recipe=str(recipe), model=str(model), quiet=True))
    return {"root": root, "model": model, "recipe": recipe, "result": result, "folder": root / "out"}


def test_build_makes_every_target_into_one_folder_and_one_report(built: dict) -> None:
    from bge_export.folder.manifest import read_manifest
    from bge_export.recipes.inputs import build_mode
    from bge_export.recipes.recipe import load_recipe
    from bge_export.registry import targets

    result, folder = built["result"], built["folder"]
    engines = build_mode(load_recipe(built["recipe"]), targets()["tensorrt"])
    assert _states(result) == {"onnx": "built", "tensorrt": "prepared" if engines == "prepare-only" else "built",
                               "validate": "built", "model card": _states(result)["model card"]}
    assert result.ok and result.output == folder
    manifest = read_manifest(folder)
    paths = {e.path: e.status for e in manifest.artifacts}
    assert paths["onnx/model.onnx"] == paths["onnx/model_optimized.onnx"] == "pass"
    assert "tensorrt/model_fp16.plan" in paths and (folder / "tensorrt/model_fp16.onnx").is_file()
    report = json.loads((folder / "report.json").read_text())
    assert {a["path"] for a in report["artifacts"]} == set(paths)  # one report over every target's artifacts
    record = json.loads((folder / "manifest.json").read_text())["build"]
    assert set(record["steps"]) == {"onnx", "tensorrt", "validate"}
    assert record["steps"]["onnx"]["inputs"]["model"]["weights_sha256"] == manifest.model["weights_sha256"]
    if engines == "prepare-only":
        assert any(note.startswith("tensorrt: engines not built here") for note in result.notes)


def test_unchanged_build_is_up_to_date_without_touching_the_folder(built: dict) -> None:
    folder = built["folder"]
    before = {p.name: p.stat().st_mtime_ns for p in (folder / "manifest.json", folder / "report.json")}
    started = time.perf_counter()
    again = build(BuildOptions(recipe=str(built["recipe"]), model=str(built["model"]), quiet=True))
    assert time.perf_counter() - started < 5
    assert {s.name: s.state for s in again.steps if s.name != "model card"} == {
        "onnx": "up to date", "tensorrt": "up to date", "validate": "up to date"}
    assert again.ok
    assert before == {p.name: p.stat().st_mtime_ns for p in (folder / "manifest.json", folder / "report.json")}


def test_up_to_date_check_in_a_fresh_process_loads_no_model(built: dict) -> None:
    """What CI sees on a cache hit: the CLI decides from hashes alone, without importing torch, in seconds."""
    code = ("import sys, time; t = time.perf_counter(); from bge_export.cli import main\n"
            "try:\n    main(sys.argv[1:])\nexcept SystemExit as exc:\n"
            "    print('EXIT', exc.code, 'torch' in sys.modules, round(time.perf_counter() - t, 2))\n")
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code, "build", str(built["recipe"]), "--model", str(built["model"])],
                          capture_output=True, text=True, timeout=60)
    elapsed = time.perf_counter() - started
    assert done.stdout.splitlines()[-1].startswith("EXIT 0 False"), done.stdout + done.stderr
    assert done.stdout.count("UP TO DATE") >= 3 and "BUILT" not in done.stdout, done.stdout
    assert elapsed < 10


def test_changed_section_rebuilds_that_target_only(built: dict, tmp_path: Path) -> None:
    folder = tmp_path / "out"
    shutil.copytree(built["folder"], folder)
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(RECIPE.format(output=folder, precision="fp32"))
    onnx_record = json.loads((folder / "manifest.json").read_text())["build"]["steps"]["onnx"]
    options = BuildOptions(recipe=str(recipe), model=str(built["model"]), quiet=True)

    planned = build(BuildOptions(**{**options.__dict__, "dry_run": True}))
    assert {s.name: (s.state, s.detail) for s in planned.steps} == {
        "onnx": ("up to date", ""), "tensorrt": ("would run", "its recipe section changed"),
        "validate": ("would run", "artifacts were rebuilt"),
        "model card": ("would run", "README.md, written last from the manifest")}

    result = build(options)
    states = _states(result)
    assert states["onnx"] == "up to date" and states["tensorrt"] in ("prepared", "built") and states["validate"] == "built"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["build"]["steps"]["onnx"] == onnx_record  # the export was not redone
    trt = sorted(e["path"] for e in manifest["artifacts"] if e["format"] == "tensorrt")
    assert trt == ["tensorrt/model_fp32.plan"]  # the precision the recipe no longer names is gone, files and all
    assert not (folder / "tensorrt/model_fp16.onnx").exists()
    assert "model_fp16" not in (folder / "tensorrt/build.sh").read_text()
    again = _states(build(options))
    assert {again.pop(s) for s in ("onnx", "tensorrt", "validate")} == {"up to date"}


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    from bge_export.cli import main

    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        main(list(args))
    captured = capsys.readouterr()
    return int(exited.value.code), captured.out, captured.err


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("[")]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


def test_cli_exit_codes_for_bad_input(built: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    recipe, model = str(built["recipe"]), str(built["model"])
    code, out, _ = run_cli(capsys, "build", recipe, "--model", model, "-q")
    assert code == 0 and "UP TO DATE" in out
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: m\ntargets:\n  onnx:\n    quantize: int4\n")
    code, _, err = run_cli(capsys, "build", str(bad))
    assert code == 2
    line = _one_error_line(err)
    assert f"{bad}:4: targets.onnx.quantize: 'int4' is not allowed; allowed: " in line and "int8, int8-static" in line
    code, _, err = run_cli(capsys, "build", recipe, "--model", model, "--only", "onnx,triton")
    line = _one_error_line(err)  # the flag, the bad value and the steps there are
    assert code == 2 and "--only" in line and "'triton'" in line and "onnx, tensorrt, coreml" in line
    code, _, err = run_cli(capsys, "build", recipe, "--model", model, "--only", "coreml")
    assert code == 2 and "names no coreml step" in _one_error_line(err)
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "notes.txt").write_text("mine")
    code, _, err = run_cli(capsys, "build", recipe, "--model", model, "--output", str(occupied))
    assert code == 2 and "pass --force" in _one_error_line(err)
    assert (occupied / "notes.txt").read_text() == "mine"


def test_failed_check_exits_1_with_both_int8_methods_written(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """quantize: [int8, int8-static] writes both in one export; an unreachable bound fails both: exit 1, kept."""
    model = build_tiny_model(tmp_path / "bge-tiny-en", pooling="cls", max_seq_length=128)
    recipe = tmp_path / "int8.yaml"
    recipe.write_text(f"model: tiny/m\noutput: {tmp_path / 'out'}\ntargets:\n  onnx:\n"
                      "    quantize: [int8, int8-static]\n    min_cosine: 0.9999999\n    check_texts: 16\n")
    code, out, err = run_cli(capsys, "build", str(recipe), "--model", str(model), "-q")
    assert code == 1, out + err
    line = _one_error_line(err)
    assert "onnx/model_qint8_static.onnx" in line and "onnx/model_qint8_" in line.replace("static", "")
    manifest = json.loads((tmp_path / "out/manifest.json").read_text())
    statuses = {e["path"]: e["status"] for e in manifest["artifacts"]}
    assert statuses.pop("onnx/model.onnx") == "pass"
    assert len(statuses) == 2 and set(statuses.values()) == {"fail"}
    assert all((tmp_path / "out" / path).is_file() for path in statuses)
    code, out, _ = run_cli(capsys, "build", str(recipe), "--model", str(model), "-q")
    assert code == 1 and out.startswith("onnx") and "UP TO DATE: 3 artifacts: 2 fail, 1 pass" in out  # kept verdict


@pytest.mark.slow
def test_coreml_target_in_a_build_and_pruned_when_its_compression_goes(tmp_path: Path) -> None:
    pytest.importorskip("coremltools")
    model = build_tiny_model(tmp_path / "bge-tiny-en", pooling="cls", max_seq_length=128)
    recipe = tmp_path / "coreml.yaml"
    text = (f"model: tiny/m\noutput: {tmp_path / 'out'}\ntargets:\n  onnx: {{}}\n  coreml:\n"
            "    seq_lens: [32, 128]\n    compress: [int8]\nvalidation:\n  max_texts: 16\n  speed: false\n")
    recipe.write_text(text)
    options = BuildOptions(recipe=str(recipe), model=str(model), quiet=True)
    first = build(options)
    assert _states(first)["coreml"] == "built" and first.ok
    assert (tmp_path / "out/coreml/model_fp16_int8.mlpackage").is_dir()
    recipe.write_text(text.replace("compress: [int8]", "compress: [palettize8]"))
    second = build(options)
    assert _states(second)["onnx"] == "up to date" and _states(second)["coreml"] == "built"
    manifest = json.loads((tmp_path / "out/manifest.json").read_text())
    assert sorted(e["path"] for e in manifest["artifacts"] if e["format"] == "coreml") == [
        "coreml/model_fp16.mlpackage", "coreml/model_fp16_palettize8.mlpackage"]
    assert not (tmp_path / "out/coreml/model_fp16_int8.mlpackage").exists()
