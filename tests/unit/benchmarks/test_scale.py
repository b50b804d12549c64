"""benchmarks/scale.py, the harness of docs/benchmarks.md's "Cost at scale": one real step measured into a results
line and rendered as the table, a failing step as a row that says why, and the flagship recipe rewritten for a
model it does not fit so that build accepts it."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import yaml
from helpers import REPO_ROOT, assert_one_line_error, run_cli

from bge_export.errors import InputError
from bge_export.recipes.recipe import load_recipe
from bge_export.targets.tensorrt.options import check_profiles, parse_profile

FLAGSHIP = REPO_ROOT / "configs" / "bge-base-en-v1.5.yaml"


def _scale():
    spec = importlib.util.spec_from_file_location("scale", REPO_ROOT / "benchmarks" / "scale.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["scale"] = module
    spec.loader.exec_module(module)
    return module


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_real_export_step_becomes_a_results_line_and_a_table_row(tmp_path, tiny_model, capsys):
    scale = _scale()
    model, results = tiny_model(), tmp_path / "results.jsonl"
    broken = tmp_path / "no-weights"
    broken.mkdir()
    (broken / "config.json").write_text("{}")

    assert scale.main(["--model", str(model), "--label", "tiny (BERT)", "--steps", "export",
                       "--work", str(tmp_path / "work"), "--results", str(results)]) == 0
    assert scale.main(["--model", str(broken), "--label", "no weights", "--steps", "export",
                       "--work", str(tmp_path / "work"), "--results", str(results)]) == 1
    capsys.readouterr()
    machine, step, _, failed = _lines(results)

    assert machine["kind"] == "machine" and machine["cpu"] and machine["memory_bytes"] > 0
    assert set(machine["flags"]) == set(scale.CPU_FLAGS)
    out = tmp_path / "work" / "tiny-bert" / "export" / "out"
    on_disk = {str(p.relative_to(out)): p.stat().st_size for p in out.rglob("*") if p.is_file()}
    assert step["command"] == f"bge-export onnx -m {model} -o {out}" and step["exit"] == 0
    assert step["outputs"] == on_disk and step["output_bytes"] == sum(on_disk.values())
    assert on_disk["onnx/model.onnx"] > 0
    assert 0 < step["wall_s"] < 60 and step["peak_rss_bytes"] > 50_000_000 and len(step["load_before"]) == 3
    assert failed["exit"] == 2 and "no weights" in failed["error"] and failed["output_bytes"] == 0

    assert scale.main(["--table", str(results)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0] == f"Machine: {scale.machine_line(machine)}" and machine["cpu"] in table[0]
    assert table[2] == "| model | step | wall | peak RSS GB | output | load before | exit |"
    wall = step["wall_s"]
    assert table[4] == (f"| tiny (BERT) | export | {wall:.{1 if wall < 10 else 0}f} s | "
                        f"{step['peak_rss_bytes'] / 1e9:.2f} | {step['output_bytes'] / 1e6:.1f} MB | "
                        f"{step['load_before'][0]:.2f} | 0 |")
    assert table[5].startswith("| no weights | export |") and "| 2: error: " in table[5]


def test_the_flagship_recipe_is_rewritten_to_fit_the_model_and_build_plans_it(tmp_path, tiny_model, capsys):
    scale = _scale()
    model = tiny_model(max_seq_length=128)
    original = yaml.safe_load(FLAGSHIP.read_text())
    with pytest.raises(InputError, match="exceeds the model's max_seq_length"):  # why the rewrite is needed
        check_profiles([parse_profile(p) for p in original["targets"]["tensorrt"]["profiles"]], 128)

    data, notes = scale.rewrite_recipe(original, str(model), str(tmp_path / "out"), 128)

    assert (data["model"], data["output"]) == (str(model), str(tmp_path / "out")) and "revision" not in data
    assert check_profiles([parse_profile(p) for p in data["targets"]["tensorrt"]["profiles"]], 128)
    assert data["targets"]["coreml"]["seq_lens"] == [64, 128]
    assert data["validation"] == original["validation"]  # seq_lens [128] fit: left as they are
    assert data["targets"]["onnx"] == original["targets"]["onnx"]
    assert [n.split(":")[0] for n in notes] == ["revision", "query prompt", "targets.tensorrt.profiles",
                                                "targets.coreml.seq_lens"]
    assert original["revision"]  # the recipe given is not changed
    copy = tmp_path / "recipe.yaml"
    copy.write_text(yaml.safe_dump(data))
    recipe = load_recipe(copy)
    for name in recipe.targets:
        recipe.check_target(name)
    code, out, err = run_cli(capsys, "build", str(copy), "--dry-run")
    assert code == 0, err
    steps = scale.step_times(tmp_path / "out", out, err, 1.0)
    assert {name: s["state"] for name, s in steps.items()} == {
        "onnx": "would run", "tensorrt": "would run", "coreml": "would run", "validate": "would run",
        "model card": "would run"}


def test_bad_harness_input_is_one_line_and_touches_nothing(tmp_path, tiny_model, capsys):
    scale = _scale()
    model, work = tiny_model(), tmp_path / "work"
    foreign = work / "tiny" / "export"
    foreign.mkdir(parents=True)
    (foreign / "mine.txt").write_text("the user's")
    results = tmp_path / "results.jsonl"

    assert scale.main(["--model", str(model), "--steps", "export,nope", "--work", str(work),
                       "--results", str(results)]) == 2
    assert_one_line_error(capsys.readouterr().err, "--steps: unknown nope")
    assert scale.main(["--model", str(model), "--label", "tiny", "--steps", "export", "--work", str(work),
                       "--results", str(results)]) == 2
    assert_one_line_error(capsys.readouterr().err, f"{foreign} exists and was not made by this harness")
    assert [p.name for p in foreign.iterdir()] == ["mine.txt"]
    assert scale.main(["--table", str(tmp_path / "missing.jsonl")]) == 2
    assert_one_line_error(capsys.readouterr().err, "no such file")
