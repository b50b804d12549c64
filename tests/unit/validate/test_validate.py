"""`validate` and `bge-export validate`: verdicts, task metrics, reports, manifest records and exit codes.

Most tests use a tiny random BGE-shaped model; the acceptance check on the real all-MiniLM-L6-v2 is the last one.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from helpers import DATA_DIR, assert_one_line_error, export_folder, run_cli
from validate_helpers import add_broken_artifact, add_int8_artifact, add_unrunnable_artifact

from bge_export.errors import InputError
from bge_export.folder.manifest import read_manifest, write_manifest
from bge_export.quality.floors import FLOORS
from bge_export.validate.harness import (
    ValidateOptions,
    parse_threshold_overrides,
    precision_class,
    thresholds_for,
    validate,
)

STS = str(DATA_DIR / "sts_sample.tsv")
RETRIEVAL = str(DATA_DIR / "retrieval_sample")
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
    # Mixed precision: the faithful copy's queries find the baseline's neighbours; the broken copy's do not.
    assert fp32.fidelity.cross_top10_overlap >= 0.99
    assert broken.fidelity.cross_top10_overlap < fp32.fidelity.cross_top10_overlap
    assert "cross top-10 overlap" in [check.name for check in fp32.checks]
    mixed = fp32.tasks["retrieval"]["mixed"]
    for way in ("artifact_queries_baseline_documents", "baseline_queries_artifact_documents"):
        assert abs(mixed[way]["ndcg@10"] - report.baseline.tasks["retrieval"]["ndcg@10"]) <= 1e-4
    broken_mixed = broken.tasks["retrieval"]["mixed"]["artifact_queries_baseline_documents"]["ndcg@10"]
    assert broken_mixed != pytest.approx(report.baseline.tasks["retrieval"]["ndcg@10"], abs=1e-4)
    # Sizes are what is on disk now, not the manifest's numbers.
    assert fp32.size_bytes == (folder / "onnx/model.onnx").stat().st_size
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
    record = manifest.find("onnx/model_broken.onnx").validation.validate_run
    assert record.status == "fail" and record.report.endswith("report.json") and record.sts["delta_spearman"] < 0
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
    assert "UNVERIFIED  tensorrt/model.plan  (TensorRT needs the 'tensorrt' package" in out
    assert sorted(p.name for p in (tmp_path / "reports").iterdir()) == ["report.html", "report.json", "report.md"]
    assert not (folder / "report.json").exists()


def test_cli_json_prints_the_report(folder, capsys):
    code, out, _ = run_cli(capsys, "validate", str(folder), "--artifact", "onnx/model.onnx", "--json", *FAST)
    assert code == 0
    data = json.loads(out)
    assert data["schema_version"] == 1 and data["artifacts"][0]["status"] == "pass"
    assert data["corpus"]["texts"] == 48 and data["speed"] is None


def test_cli_threshold_overrides(folder, capsys):
    loose = ["--min-cosine", "0.1", "--min-mean-cosine", "0.1", "--min-overlap", "fp32=0", "--min-cross-overlap", "0"]
    code, out, _ = run_cli(capsys, "validate", str(folder), "--artifact", "onnx/model_broken.onnx", *loose, *FAST)
    assert code == 0 and out.startswith("PASS")
    code, _, err = run_cli(capsys, "validate", str(folder), "--min-cosine", "int4=0.9", *FAST)
    assert code == 2
    assert_one_line_error(err, "--min-cosine (min_cosine) has key 'int4'")


@pytest.fixture(scope="module")
def other_model_onnx(tmp_path_factory) -> Path:
    """onnx/model.onnx of a different model (same shape, other weights): what a careless copy would put in place."""
    from conftest import build_tiny_model

    root = tmp_path_factory.mktemp("other")
    folder = export_folder(build_tiny_model(root / "model", pooling="cls", seed=7), root / "export")
    return folder / "onnx/model.onnx"


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("command", ["validate", "bench"])
def test_swapped_artifact_is_refused_before_anything_runs(folder, other_model_onnx, capsys, command):
    shutil.copyfile(other_model_onnx, folder / "onnx/model.onnx")
    before = _snapshot(folder)
    code, out, err = run_cli(capsys, command, str(folder), "--threads", "1", "-q")
    assert code == 2
    assert_one_line_error(err, "onnx/model.onnx changed since the export (sha256 recorded ", ", now ",
                          "re-run the export, or restore the file")
    assert out == ""
    assert _snapshot(folder) == before  # no report files, manifest untouched


def test_changed_missing_and_unrecorded_files_are_named(folder, capsys):
    fast = ["--threads", "1", "--no-speed", "-q"]
    recorded = read_manifest(folder).files
    assert {"onnx/model.onnx", "tokenizer.json", "config.json"} <= set(recorded)

    config = folder / "tokenizer_config.json"
    original = config.read_bytes()
    config.write_bytes(original.replace(b"}", b', "model_max_length": 8}', 1))
    code, _, err = run_cli(capsys, "validate", str(folder), *fast)
    assert code == 2
    assert_one_line_error(err, "tokenizer_config.json changed since the export")
    config.write_bytes(original)

    (folder / "tokenizer.json").rename(folder / "tokenizer.json.bak")
    code, _, err = run_cli(capsys, "validate", str(folder), *fast)
    assert code == 2
    assert_one_line_error(err, "tokenizer.json is missing from", "re-run the export, or restore the file")
    (folder / "tokenizer.json.bak").rename(folder / "tokenizer.json")

    # An artifact added after the export is not in `files`: its own entry's sha256 is checked instead.
    with open(folder / "onnx/model_broken.onnx", "ab") as handle:
        handle.write(b"\0")
    code, _, err = run_cli(capsys, "validate", str(folder), "--artifact", "onnx/model_broken.onnx", *fast)
    assert code == 2
    assert_one_line_error(err, "onnx/model_broken.onnx changed since the export")
    # An artifact that is not validated is not read at all.
    code, _, err = run_cli(capsys, "validate", str(folder), "--artifact", "onnx/model.onnx", *fast)
    assert code == 0, err


def test_old_manifest_without_files_falls_back_to_artifact_hashes(folder, other_model_onnx, capsys):
    manifest_path = folder / "manifest.json"
    data = json.loads(manifest_path.read_text())
    del data["files"]
    data["artifacts"][0]["size_bytes"] = 1  # a wrong recorded size: reports must show the size on disk
    write_manifest(folder, data)  # sealed, as every bge-export manifest since schema 1
    report = validate(ValidateOptions(folder=str(folder), artifacts=["onnx/model.onnx"], max_texts=24, threads=1,
                                      speed=False, quiet=True, update_manifest=False))
    assert report.artifacts[0].size_bytes == (folder / "onnx/model.onnx").stat().st_size
    shutil.copyfile(other_model_onnx, folder / "onnx/model.onnx")
    with pytest.raises(InputError, match=r"^onnx/model.onnx changed since the export"):
        validate(ValidateOptions(folder=str(folder), max_texts=24, threads=1, speed=False, quiet=True))


def test_cli_cross_overlap_floor_is_judged_and_overridable(folder, capsys):
    loose = ["--min-cosine", "0", "--min-mean-cosine", "0", "--min-overlap", "0"]
    broken = ["--artifact", "onnx/model_broken.onnx"]
    code, out, _ = run_cli(capsys, "validate", str(folder), *broken, *loose, "--min-cross-overlap", "fp32=0", *FAST)
    assert code == 0 and out.startswith("PASS")
    code, out, _ = run_cli(capsys, "validate", str(folder), *broken, *loose, *FAST)
    assert code == 1  # the table's fp32 floor for the mixed search alone fails the broken copy
    line = next(line for line in out.splitlines() if line.startswith("FAIL"))
    assert "cross top-10 overlap" in line and "min cosine" not in line
    code, _, err = run_cli(capsys, "validate", str(folder), "--min-cross-overlap", "bf16=0.9", *FAST)
    assert code == 2
    assert_one_line_error(err, "--min-cross-overlap (min_cross_overlap) has key 'bf16'; keys must be *, fp32, fp16, int8")


def test_progress_on_stderr_for_every_long_phase(folder, capsys, monkeypatch):
    from bge_export.validate import tasks

    monkeypatch.setattr(tasks, "PROGRESS_EVERY_SECONDS", 0.0)  # a line after every chunk, not every 10 s
    code, _, err = run_cli(capsys, "validate", str(folder), "--artifact", "onnx/model.onnx", "--artifact",
                           "onnx/model_qint8_test.onnx", "--max-texts", "300", "--batch-size", "8", "--sts", STS,
                           "--min-overlap", "int8=0", "--min-cross-overlap", "int8=0",  # a random tiny model's INT8
                           "--threads", "1", "--batch-sizes", "1,4", "--seq-lens", "16", "--repeats", "2")
    assert code == 0, err
    lines = err.splitlines()
    assert all(re.match(r"^\[ *\d+\.\ds\] ", line) for line in lines), lines  # elapsed time on every line
    for expected in (r"checking 2 artifact\(s\) and the tokenizer/config files",
                     r"loading the PyTorch fp32 baseline \(1 threads\)",
                     r"baseline: corpus \(built-in corpus[^:]*: 32/300 texts, \d+s",  # mid-encode, not a TTY
                     r"baseline: corpus \(built-in corpus[^:]*: 300 texts in [\d.]+s \(\d+ texts/s\)",
                     r"baseline: STS sentences: \d+ texts in", r"artifact 1/2: onnx/model.onnx",
                     r"onnx/model.onnx: corpus: 300 texts in", r"onnx/model.onnx: cosine and top-10 searches over 300",
                     r"artifact 2/2: onnx/model_qint8_test.onnx", r"onnx/model_qint8_test.onnx: STS sentences",
                     r"speed 1/4 \(repeat 1/2\): batch 1 x 16 tokens, per call: baseline \(PyTorch fp32\) [\d.]+ ms, "
                     r"onnx/model.onnx [\d.]+ ms, onnx/model_qint8_test.onnx [\d.]+ ms",
                     r"speed 4/4 \(repeat 2/2\): batch 4 x 16 tokens"):
        assert any(re.search(expected, line) for line in lines), (expected, err)
    code, _, err = run_cli(capsys, "validate", str(folder), "--artifact", "onnx/model.onnx", "--repeats", "1",
                           "--batch-sizes", "1", "--seq-lens", "16", "--max-texts", "24", "--threads", "1", "-q")
    assert code == 0 and err == ""


def test_threshold_defaults_by_precision():
    options = ValidateOptions(folder=".")
    assert thresholds_for("fp32", options).min_top10_overlap == 0.99
    assert thresholds_for("fp16", options).min_mean_cosine == 0.9995
    int8 = thresholds_for("int8-dynamic", options)
    assert (int8.min_cosine, int8.min_mean_cosine, int8.min_top10_overlap) == (0.99, 0.996, 0.95)
    assert thresholds_for("int8-static", options).min_cross_top10_overlap == FLOORS["int8"].min_cross_top10_overlap
    assert precision_class("int8-static") == "int8" and precision_class("fp32-optimized") == "fp32"
    overrides = ValidateOptions(folder=".", min_cosine=parse_threshold_overrides(["0.5", "int8=0.9"], "--min-cosine"))
    assert thresholds_for("int8-dynamic", overrides).min_cosine == 0.9
    assert thresholds_for("fp16", overrides).min_cosine == 0.5
    with pytest.raises(InputError, match=re.escape("--min-cosine (min_cosine['*']) must be a number in [0, 1]")):
        ValidateOptions(folder=".", min_cosine=parse_threshold_overrides(["1.5"], "--min-cosine"))


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
    folder = Path(shutil.copytree(DATA_DIR / "retrieval_sample", tmp / "beir"))
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


def test_our_own_artifacts_of_every_kind_pass_validate_and_bench_and_a_broken_one_fails(
        minilm_int8_export, minilm_static_export, tmp_path, capsys):
    """Our own fused, FP16, dynamic and static INT8 artifacts of the real MiniLM through validate (with STS) and
    bench; a deliberately broken copy must fail. The texts are validate's report part, which neither the INT8
    search nor the export's verdict saw."""
    folder = Path(shutil.copytree(minilm_int8_export, tmp_path / "minilm"))
    static = "onnx/model_qint8_static.onnx"
    shutil.copyfile(minilm_static_export / static, folder / static)
    recorded = read_manifest(minilm_static_export).find(static)
    manifest = read_manifest(folder)
    manifest.add(recorded)
    manifest.files[static] = recorded.sha256
    manifest.write(folder)
    code, out, err = run_cli(capsys, "validate", str(folder), "--sts", STS, "--max-texts", "240", "--threads", "1",
                             "--batch-sizes", "1,8", "--seq-lens", "32,128", "--repeats", "2", "--json")
    assert code == 0, err
    data = json.loads(out)
    artifacts = {a["path"]: a for a in data["artifacts"]}
    kinds = {a["precision"]: a for a in data["artifacts"]}
    assert set(kinds) == {"fp32", "fp32-optimized", "fp16", "int8-dynamic", "int8-static"}
    assert all(a["status"] == "pass" for a in data["artifacts"]), {p: a["reason"] for p, a in artifacts.items()}
    assert all((folder / f"report.{ext}").is_file() for ext in ("json", "md", "html"))
    baseline = data["baseline"]["tasks"]["sts"]["spearman"]
    for precision, artifact in kinds.items():
        fidelity, floors = artifact["fidelity"], FLOORS[precision_class(precision)]
        assert fidelity["texts"] == 240 and fidelity["cosine_min"] >= floors.min_cosine, precision
        assert fidelity["cross_top10_overlap"] >= floors.min_cross_top10_overlap, precision
        # the task score barely moves: within 0.002 Spearman for fp32/fp16, 0.01 for INT8 on 240 STS pairs
        allowed = 0.01 if precision.startswith("int8") else 0.002
        assert abs(artifact["tasks"]["sts"]["spearman"] - baseline) <= allowed, precision
    assert abs(kinds["fp32"]["tasks"]["sts"]["spearman"] - baseline) <= 1e-4
    speedups = {b["label"]: b["speedup"] for b in data["speed"]["backends"][1:]}
    assert set(speedups) == set(artifacts) and all(set(s) == {"1x32", "8x32", "1x128", "8x128"} for s in speedups.values())
    # Speed comes with its trust verdict and the CPU's flags, whatever the load on this machine was.
    trust = data["speed"]["trust"]
    assert data["speed"]["trustworthy"] is trust["trustworthy"] and trust["load"]["other_cores"] is not None
    assert trust["trustworthy"] == (not trust["reasons"])
    assert set(data["machine"]["cpu_features"]) >= {"amx_int8", "avx512_vnni", "avx512_bf16"}
    markdown = (folder / "report.md").read_text()
    assert "top-10 mixed" in markdown and "Machine: CPU " in markdown
    assert ("WARNING: speed-ups not trustworthy" in markdown) == (not trust["trustworthy"])

    # bench measures every one of them next to the baseline
    code, out, err = run_cli(capsys, "bench", str(folder), "--json", "-q", "--threads", "1", "--batch-sizes", "4",
                             "--seq-lens", "64", "--repeats", "1", "--encode-texts", "16")
    assert code == 0, err
    bench_data = json.loads(out)
    assert {b["label"] for b in bench_data["backends"][1:]} == set(artifacts) and not bench_data["failed"]
    assert all(b["speedup"]["4x64"]["median"] > 0 for b in bench_data["backends"][1:])

    # a deliberately broken copy (the fp32 graph with noise on three weight matrices) fails
    broken = add_broken_artifact(folder, "onnx/model_broken.onnx", noise=0.5)
    code, out, err = run_cli(capsys, "validate", str(folder), "--artifact", broken, "--max-texts", "120", "--threads",
                             "1", "--no-speed", "-q")
    assert code == 1
    assert_one_line_error(err, "onnx/model_broken.onnx")
    assert read_manifest(folder).find(broken).status == "fail"
