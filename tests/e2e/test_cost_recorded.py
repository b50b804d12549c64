"""Cost is recorded, and --max-memory is kept, as a user meets them: `bge-export build` prints each step's time
and peak RSS and each artifact's steps, the manifest records them (sealed, read back typed, old manifests still
read), `inspect` shows them; a limit below a step's estimate stops `onnx` and `tensorrt` before any work, and a
step that grows past the limit is stopped by the watchdog; one line, exit 2, nothing written either way."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import build_tiny_model
from helpers import DATA_DIR, assert_nothing_written, assert_one_line_error, run_cli

from bge_export.cost import StepCost, estimate_peak_bytes, fp32_weight_bytes, rss_bytes
from bge_export.folder.manifest import parse_manifest, read_manifest

RECIPE = "model: tiny/bge-tiny-en\noutput: {output}\ntargets:\n  onnx:\n    optimize: true\n    max_memory: 64GB\n"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("cost")
    model = build_tiny_model(root / "bge-tiny-en", pooling="cls", max_seq_length=128)
    recipe = root / "tiny.yaml"
    recipe.write_text(RECIPE.format(output=root / "out"))
    return {"root": root, "model": model, "recipe": recipe, "folder": root / "out"}


def test_build_prints_and_the_manifest_records_each_steps_time_and_peak(built: dict, capsys) -> None:
    code, out, err = run_cli(capsys, "build", str(built["recipe"]), "--model", str(built["model"]), "-q",
                             "--max-memory", "60GB")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("onnx") and " BUILT in " in lines[0] and ": peak RSS " in lines[0]
    assert any(line.strip().startswith("onnx/model.onnx: load ") and "export " in line and "check " in line
               for line in lines), out
    assert any(line.strip().startswith("onnx/model_optimized.onnx: fusion ") for line in lines), out

    folder = built["folder"]
    manifest = read_manifest(folder)  # sealed with the cost in it, read back typed
    costs = {entry.path: entry.cost for entry in manifest.artifacts}
    assert [c.step for c in costs["onnx/model.onnx"]] == ["load", "export", "check"]
    assert [c.step for c in costs["onnx/model_optimized.onnx"]] == ["fusion", "check"]
    for cost in (c for steps in costs.values() for c in steps):
        assert isinstance(cost, StepCost) and cost.peak_rss_bytes > 50_000_000 and cost.seconds >= 0
    record = json.loads((folder / "manifest.json").read_text())["build"]["steps"]["onnx"]
    assert record["peak_rss_bytes"] >= max(c.peak_rss_bytes for steps in costs.values() for c in steps)

    code, out, _ = run_cli(capsys, "inspect", str(folder))
    assert code == 0 and "  cost: load " in out and "  cost: fusion " in out


def test_a_manifest_written_before_costs_is_read_and_written_as_it_was() -> None:
    path = DATA_DIR / "manifest_v1" / "manifest.json"
    manifest = parse_manifest(json.loads(path.read_text()), path)
    assert manifest.artifacts and all(entry.cost == [] for entry in manifest.artifacts)
    assert all("cost" not in item for item in manifest.to_dict()["artifacts"])


def test_onnx_over_its_estimate_stops_before_any_work(built: dict, tmp_path: Path, capsys) -> None:
    code, _, err = run_cli(capsys, "onnx", "--model", str(built["model"]), "-o", str(tmp_path / "out"),
                           "--max-memory", "1MB")
    assert code == 2
    assert_one_line_error(err, "step 'export' needs an estimated", "over the --max-memory limit of 1 MB",
                          "raise --max-memory, drop the step, or run it on a larger machine")
    assert_nothing_written(tmp_path, "out")


def test_tensorrt_over_its_estimate_leaves_the_folder_as_it_was(built: dict, tmp_path: Path, capsys) -> None:
    folder = tmp_path / "export"  # its own export: the test does not lean on another test having run first
    code, _, err = run_cli(capsys, "onnx", "--model", str(built["model"]), "-o", str(folder), "-q")
    assert code == 0, err
    before = (folder / "manifest.json").read_bytes()
    code, _, err = run_cli(capsys, "tensorrt", str(folder), "--prepare-only", "--precision", "int8",
                           "--max-memory", "1MB")
    assert code == 2
    assert_one_line_error(err, "step 'tensorrt-prepare-int8' needs an estimated")
    assert (folder / "manifest.json").read_bytes() == before
    assert not (folder / "tensorrt").exists()


def test_a_step_growing_past_the_limit_is_stopped_and_nothing_is_written(built: dict, tmp_path: Path,
                                                                         capsys) -> None:
    """The estimate fits; this process is already past the limit (a real ballast), so the watchdog stops the
    first step that runs longer than its sampling period."""
    weights = fp32_weight_bytes(sorted(built["model"].glob("*.safetensors")))
    limit = (estimate_peak_bytes("export", weights) or 0) + 20_000_000
    ballast = np.ones(max(0, limit + 100_000_000 - rss_bytes()) // 8 + 1)
    try:
        code, _, err = run_cli(capsys, "onnx", "--model", str(built["model"]), "-o", str(tmp_path / "out"),
                               "--max-memory", f"{limit}B", "-q")
    finally:
        del ballast
    assert code == 2
    assert_one_line_error(err, "reached", "over the --max-memory limit of", "it was stopped and nothing was written")
    assert_nothing_written(tmp_path, "out")
