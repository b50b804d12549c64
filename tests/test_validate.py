"""`validate` and `bge-export validate`: verdicts, task metrics, reports, manifest records and exit codes.

Most tests use a tiny random BGE-shaped model; the acceptance check on the real all-MiniLM-L6-v2 is the last one.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bge_export.errors import InputError
from bge_export.manifest import read_manifest
from bge_export.validate.harness import (
    ValidateOptions,
    parse_threshold_overrides,
    precision_class,
    thresholds_for,
    validate,
)
from helpers import export_folder
from test_cli_errors import assert_one_line_error, run_cli
from validate_helpers import add_broken_artifact, add_int8_artifact, add_unrunnable_artifact

DATA = Path(__file__).parent / "data"
STS = str(DATA / "sts_sample.tsv")
RETRIEVAL = str(DATA / "retrieval_sample")
FAST = ["--max-texts", "48", "--threads", "1", "--no-speed", "-q"]  # CLI flags for quick runs


@pytest.fixture(scope="module")
def tiny_folder(bge_shaped_dir, tmp_path_factory) -> Path:
    """A tiny export holding fp32, INT8, a broken fp32 copy, a TensorRT plan and a CoreML package."""
    folder = export_folder(bge_shaped_dir, tmp_path_factory.mktemp("validate") / "tiny")
    add_int8_artifact(folder)
    add_broken_artifact(folder)
    add_unrunnable_artifact(folder, "tensorrt", "tensorrt/model.plan")
    add_unrunnable_artifact(folder, "coreml", "coreml/model.mlpackage")
    return folder


@pytest.fixture
def folder(tiny_folder, tmp_path) -> Path:
    """A fresh copy per test, since validate records its verdicts in the manifest."""
    return Path(shutil.copytree(tiny_folder, tmp_path / "tiny"))


def test_validate_verdicts_metrics_reports_and_manifest(folder, tmp_path):
    report = validate(ValidateOptions(
        folder=str(folder), sts=STS, retrieval=RETRIEVAL, max_texts=64, threads=1, batch_sizes=[1, 4],
        seq_lens=[16, 512], repeats=2, quiet=True,
    ))
    by_path = {a.path: a for a in report.artifacts}
    fp32, broken = by_path["onnx/model.onnx"], by_path["onnx/model_broken.onnx"]
    assert fp32.status == "pass", fp32.reason
    assert broken.status == "fail" and "min cosine" in broken.reason and "worst texts" in broken.reason
    assert broken.fidelity.worst_texts[0].text in broken.reason[broken.reason.index("worst texts"):]
    assert "GPU" in by_path["tensorrt/model.plan"].reason and by_path["tensorrt/model.plan"].status == "unverified"
    assert "macOS" in by_path["coreml/model.mlpackage"].reason and by_path["coreml/model.mlpackage"].status == "unverified"
    assert report.exit_code == 1

    # Task metrics for baseline and each artifact, with the difference; fp32 matches the baseline.
    baseline_sts = report.baseline.tasks["sts"]["spearman"]
    assert abs(fp32.tasks["sts"]["spearman"] - baseline_sts) <= 1e-4
    assert abs(fp32.tasks["sts"]["delta_spearman"]) <= 1e-4
    assert abs(fp32.tasks["retrieval"]["delta_ndcg@10"]) <= 1e-4
    assert fp32.tasks["retrieval"]["queries"] == 60 and "delta_recall@100" in fp32.tasks["retrieval"]
    assert "delta_spearman" in by_path["onnx/model_qint8_test.onnx"].tasks["sts"]

    # Fidelity pieces: cosine summary, overlap, norms, worst texts.
    assert fp32.fidelity.cosine_min >= 0.9999 and fp32.fidelity.top10_overlap >= 0.99
    assert fp32.fidelity.norm_max_error < 1e-4 and fp32.fidelity.non_finite == 0
    assert len(fp32.fidelity.one_minus_cosine_quantiles) == 101

    # Speed: every runnable backend, ratios to the baseline, lengths above max_seq_length skipped with a note.
    labels = [b.label for b in report.speed.backends]
    assert labels[0].startswith("baseline") and set(labels[1:]) == {"onnx/model.onnx", "onnx/model_qint8_test.onnx",
                                                                     "onnx/model_broken.onnx"}
    assert set(report.speed.backends[1].speedup) == {"1x16", "4x16"}
    assert any("[512] skipped" in note for note in report.notes)

    data = json.loads((folder / "report.json").read_text())
    assert data["schema"] == "bge-export/validation-report" and data["summary"]["exit_code"] == 1
    assert "| onnx/model_broken.onnx | onnxruntime | fp32 |" in (folder / "report.md").read_text()
    assert (folder / "report.html").stat().st_size > 20_000

    manifest = read_manifest(folder)
    assert manifest.find("onnx/model.onnx").status == "pass"
    assert "builtin_check" in manifest.find("onnx/model.onnx").validation  # the export's own check is kept
    record = manifest.find("onnx/model_broken.onnx").validation["validate"]
    assert record["status"] == "fail" and record["report"].endswith("report.json") and record["sts"]["delta_spearman"] < 0
    assert manifest.find("onnx/model_broken.onnx").status == "fail"
    assert manifest.find("tensorrt/model.plan").status == "unverified"


def test_cli_broken_artifact_fails_with_exit_1_and_names_worst_texts(folder, capsys):
    code, out, err = run_cli(capsys, "validate", str(folder), "--artifact", "onnx/model_broken.onnx", *FAST)
    assert code == 1
    assert_one_line_error(err, "failed validation", "onnx/model_broken.onnx")
    line = next(line for line in out.splitlines() if line.startswith("FAIL"))
    assert "min cosine" in line and 'worst texts: "' in line
    assert (folder / "report.md").is_file()


def test_cli_unverified_alone_does_not_fail(folder, capsys, tmp_path):
    code, out, err = run_cli(capsys, "validate", str(folder), "--artifact", "onnx/model.onnx",
                             "--artifact", "tensorrt/model.plan", "--report-dir", str(tmp_path / "reports"), *FAST)
    assert code == 0, err
    assert "PASS        onnx/model.onnx" in out
    assert "UNVERIFIED  tensorrt/model.plan  (a TensorRT engine needs an NVIDIA GPU" in out
    assert sorted(p.name for p in (tmp_path / "reports").iterdir()) == ["report.html", "report.json", "report.md"]
    assert not (folder / "report.json").exists()


def test_cli_json_prints_the_report(folder, capsys):
    code, out, _ = run_cli(capsys, "validate", str(folder), "--artifact", "onnx/model.onnx", "--json", *FAST)
    assert code == 0
    data = json.loads(out)
    assert data["schema_version"] == 1 and data["artifacts"][0]["status"] == "pass"
    assert data["corpus"]["texts"] == 48 and data["speed"] is None


def test_cli_threshold_overrides(folder, capsys):
    loose = ["--min-cosine", "0.1", "--min-mean-cosine", "0.1", "--min-overlap", "fp32=0"]
    code, out, _ = run_cli(capsys, "validate", str(folder), "--artifact", "onnx/model_broken.onnx", *loose, *FAST)
    assert code == 0 and out.startswith("PASS")
    code, _, err = run_cli(capsys, "validate", str(folder), "--min-cosine", "int4=0.9", *FAST)
    assert code == 2
    assert_one_line_error(err, "--min-cosine 'int4=0.9'")


def test_threshold_defaults_by_precision():
    options = ValidateOptions(folder=".")
    assert thresholds_for("fp32", options).min_top10_overlap == 0.99
    assert thresholds_for("fp16", options).min_mean_cosine == 0.9995
    int8 = thresholds_for("int8-dynamic", options)
    assert (int8.min_cosine, int8.min_mean_cosine, int8.min_top10_overlap) == (0.98, 0.995, 0.95)
    assert precision_class("int8-static") == "int8" and precision_class("fp32-optimized") == "fp32"
    overrides = ValidateOptions(folder=".", min_cosine=parse_threshold_overrides(["0.5", "int8=0.9"], "--min-cosine"))
    assert thresholds_for("int8-dynamic", overrides).min_cosine == 0.9
    assert thresholds_for("fp16", overrides).min_cosine == 0.5
    with pytest.raises(InputError, match="between 0 and 1"):
        parse_threshold_overrides(["1.5"], "--min-cosine")


def _non_utf8_corpus(tmp: Path) -> list[str]:
    path = tmp / "texts.txt"
    path.write_bytes(b"first line\nsecond line\ncaf\xe9 au lait\n")
    return ["--corpus", str(path)], f"{path}:3: not UTF-8"


def _empty_corpus(tmp: Path) -> tuple[list[str], str]:
    path = tmp / "empty.jsonl"
    path.write_text("\n\n")
    return ["--corpus", str(path)], f"corpus file '{path}' has no texts"


def _bad_tsv_row(tmp: Path) -> tuple[list[str], str]:
    path = tmp / "pairs.tsv"
    path.write_text("score\tsentence1\tsentence2\n4.0\ta cat\ta kitten\n2.0\tmissing a field\n")
    return ["--sts", str(path)], f"{path}:3: expected 3 tab-separated fields"


def _qrels_unknown_id(tmp: Path) -> tuple[list[str], str]:
    folder = Path(shutil.copytree(DATA / "retrieval_sample", tmp / "beir"))
    qrels = folder / "qrels" / "test.tsv"
    lines = qrels.read_text().splitlines()
    qrels.write_text("\n".join(lines + ["q01\tno-such-doc\t1"]) + "\n")
    return ["--retrieval", str(folder)], f"{qrels}:{len(lines) + 1}: corpus-id 'no-such-doc' is not in corpus.jsonl"


def _non_utf8_sts(tmp: Path) -> tuple[list[str], str]:
    path = tmp / "latin1.tsv"
    path.write_bytes(b"4.0\ta\tb\n3.0\tna\xefve\tc\n")
    return ["--sts", str(path)], f"{path}:2: not UTF-8"


@pytest.mark.parametrize("make_input", [_empty_corpus, _bad_tsv_row, _qrels_unknown_id, _non_utf8_corpus, _non_utf8_sts],
                         ids=lambda f: f.__name__.strip("_"))
def test_cli_malformed_inputs_are_one_line_errors(tiny_folder, tmp_path, capsys, make_input):
    flags, expected = make_input(tmp_path)
    code, out, err = run_cli(capsys, "validate", str(tiny_folder), *flags, "-q")
    assert code == 2
    assert_one_line_error(err, expected)
    assert out == ""


def test_cli_input_errors_about_the_folder(tiny_folder, tmp_path, capsys):
    code, _, err = run_cli(capsys, "validate", str(tiny_folder), "--artifact", "onnx/nope.onnx", "-q")
    assert code == 2
    assert_one_line_error(err, "no artifact 'onnx/nope.onnx'")
    moved = Path(shutil.copytree(tiny_folder, tmp_path / "moved"))
    manifest = read_manifest(moved)
    manifest.model["folder"] = str(tmp_path / "deleted-model")
    manifest.write(moved)
    code, _, err = run_cli(capsys, "validate", str(moved), *FAST)
    assert code == 2
    assert_one_line_error(err, "deleted-model", "--model")
    code, _, err = run_cli(capsys, "validate", str(moved), "--seq-lens", "16,abc", *FAST)
    assert code == 2
    assert_one_line_error(err, "16,abc")


def test_minilm_fp32_and_int8_acceptance(minilm_export, tmp_path, capsys):
    """The issue's acceptance: three report files; fp32 STS Spearman = baseline's within 1e-4; INT8 delta reported."""
    folder = Path(shutil.copytree(minilm_export, tmp_path / "minilm"))
    int8 = add_int8_artifact(folder, "onnx/model_qint8_dynamic.onnx")
    code, out, err = run_cli(capsys, "validate", str(folder), "--sts", STS, "--max-texts", "160", "--threads", "1",
                             "--batch-sizes", "1,8", "--seq-lens", "32,128", "--repeats", "2", "--json")
    data = json.loads(out)
    artifacts = {a["path"]: a for a in data["artifacts"]}
    assert code == (1 if artifacts[int8]["status"] == "fail" else 0), err
    assert all((folder / f"report.{ext}").is_file() for ext in ("json", "md", "html"))
    assert artifacts["onnx/model.onnx"]["status"] == "pass", artifacts["onnx/model.onnx"]["reason"]
    baseline = data["baseline"]["tasks"]["sts"]["spearman"]
    assert abs(artifacts["onnx/model.onnx"]["tasks"]["sts"]["spearman"] - baseline) <= 1e-4
    delta = artifacts[int8]["tasks"]["sts"]["delta_spearman"]
    assert isinstance(delta, float) and abs(delta) < 0.05
    assert f"({delta:+.4f})" in (folder / "report.md").read_text()
    speedups = {b["label"]: b["speedup"] for b in data["speed"]["backends"][1:]}
    assert set(speedups) == {"onnx/model.onnx", int8} and set(speedups[int8]) == {"1x32", "8x32", "1x128", "8x128"}
