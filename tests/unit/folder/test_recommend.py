"""Which artifact to deploy: the recommendation per runtime, load_encoder's default, inspect and the report.

A tiny random BGE-shaped model exported with every ONNX kind (fp32, fused, fp16, dynamic INT8), real
onnxruntime and real checks; speed grids are built from speed.py's own dataclasses, so the choice of the
fastest artifact is known in advance.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
from helpers import export_folder
from validate_helpers import add_broken_artifact, add_int8_artifact, add_unrunnable_artifact

from bge_export.errors import InputError
from bge_export.folder.loading import load_encoder
from bge_export.folder.manifest import read_manifest
from bge_export.folder.recommend import choose_for_machine, recommend, status_evidence
from bge_export.runtime.machine import SpeedTrust
from bge_export.validate.speed import (
    BASELINE_LABEL,
    BackendSpeed,
    CellTiming,
    MemoryUse,
    RatioSummary,
    SpeedResult,
    SpeedSettings,
)

FP32, FUSED, FP16 = "onnx/model.onnx", "onnx/model_optimized.onnx", "onnx/model_fp16.onnx"


@pytest.fixture(scope="module")
def exported(bge_shaped_dir, tmp_path_factory) -> Path:
    """fp32, fused, fp16 and dynamic INT8, each through the export's built-in check (96 texts). The INT8 bound is
    cosine only: a random tiny model cannot keep top-10 among the search's 2,000-text pool."""
    return export_folder(bge_shaped_dir, tmp_path_factory.mktemp("recommend") / "tiny",
                         optimize=True, fp16=True, quantize="int8", min_cosine=0.99)


@pytest.fixture
def folder(exported, tmp_path) -> Path:
    return Path(shutil.copytree(exported, tmp_path / "tiny"))


def int8_path(folder: Path) -> str:
    """The export's own INT8 file (its name carries this CPU's preset); test helpers add others."""
    (path,) = [e.path for e in read_manifest(folder).artifacts if e.precision == "int8-dynamic" and "preset" in e.options]
    return path


def speed_grid(ratios: dict[str, float], trustworthy: bool = True, reasons: tuple[str, ...] = (),
               backend: str = "onnxruntime") -> SpeedResult:
    """A validate speed result at batch 1/32 x 16/128 tokens: each artifact `ratio` times the baseline."""
    def cells(scale: float) -> list[CellTiming]:
        out = []
        for seq in (16, 128):
            for batch in (1, 32):
                rate = 100.0 * batch * scale
                out.append(CellTiming(batch, seq, 20, {"p50": 1e3 / rate, "p95": 1e3 / rate, "p99": 1e3 / rate,
                                                       "mean": 1e3 / rate}, {"median": rate, "min": rate, "max": rate},
                                      [rate, rate], 0.0))
        return out

    backends = [BackendSpeed(BASELINE_LABEL, "torch", "fp32", 1, 0.1, MemoryUse(None, None), cells(1.0))]
    for label, ratio in ratios.items():
        b = BackendSpeed(label, backend, "x", 1, 0.1, MemoryUse(None, None), cells(ratio))
        b.speedup = {f"{c.batch_size}x{c.seq_len}": RatioSummary(ratio, ratio * 0.97, ratio * 1.03) for c in b.cells}
        backends.append(b)
    return SpeedResult(SpeedSettings((1, 32), (16, 128), 2, threads=2), {"cpu": "Test CPU", "threads": 2}, backends,
                       [], SpeedTrust(trustworthy, list(reasons)))


# --------------------------------------------------------------------------- recommend()


def test_export_only_recommends_by_kind(exported):
    manifest = read_manifest(exported)
    assert {e.status for e in manifest.artifacts} == {"pass"}
    rec = recommend(manifest)
    cpu, gpu, coreml = rec["onnxruntime-cpu"], rec["gpu"], rec["coreml"]
    assert cpu["artifact"] == int8_path(exported) and cpu["basis"] == "by kind"
    assert "by kind, not measured" in cpu["reason"] and "no validate speed run" in cpu["reason"]
    assert "on 96 texts (built-in check)" in cpu["reason"]
    assert [r["artifact"] for r in cpu["ranking"]] == [int8_path(exported), FUSED, FP32, FP16]
    assert gpu["artifact"] == FP16 and gpu["basis"] == "by kind"  # dynamic INT8 is no GPU target
    assert int8_path(exported) not in [r["artifact"] for r in gpu["ranking"]]
    assert coreml["artifact"] is None and coreml["reason"].startswith("none passed: this folder has no artifact for coreml")


def test_export_stores_the_recommendation(exported):
    """api.export writes recommend(manifest) into manifest.json (needs the one call in api.py)."""
    stored = read_manifest(exported).recommended
    assert stored["onnxruntime-cpu"]["artifact"] == int8_path(exported) and stored["gpu"]["artifact"] == FP16
    assert stored["coreml"]["artifact"] is None


def test_trustworthy_speed_picks_the_fastest_passing_artifact(exported):
    manifest = read_manifest(exported)
    int8 = int8_path(exported)
    grid = speed_grid({FP32: 3.4, FUSED: 2.5, FP16: 1.1, int8: 2.0})
    rec = recommend(manifest, grid, when="2026-01-02T03:04:05+00:00", measured_on="onnxruntime-cpu")
    cpu = rec["onnxruntime-cpu"]
    assert cpu["artifact"] == FP32 and cpu["basis"] == "measured", cpu["reason"]  # speed beats the kind order
    assert cpu["reason"].startswith("fastest passing artifact on this CPU (Test CPU, 2 threads) in the speed grid of "
                                    "the validate run at 2026-01-02T03:04:05+00:00: 3.40×")
    assert "at batch 32 × 128 tokens" in cpu["reason"] and f"Next: {FUSED} 2.50×." in cpu["reason"]
    assert cpu["speedup"]["median"] == pytest.approx(3.4) and cpu["speedup"]["cell"] == "32x128"
    assert [r["artifact"] for r in cpu["ranking"]] == [FP32, FUSED, int8, FP16]
    # The grid ran on the CPU: the GPU recommendation cannot use it.
    assert rec["gpu"]["basis"] == "by kind" and "ran on onnxruntime-cpu, not on gpu" in rec["gpu"]["reason"]

    # The same grid measured with CUDA counts for the GPU, not the CPU.
    on_gpu = recommend(manifest, grid, measured_on="gpu")
    assert on_gpu["gpu"]["artifact"] == FP32 and on_gpu["gpu"]["basis"] == "measured"
    assert on_gpu["onnxruntime-cpu"]["basis"] == "by kind"

    # A dict form (report.json / to_dict()) works alike.
    assert recommend(manifest, grid.to_dict(), measured_on="onnxruntime-cpu")["onnxruntime-cpu"]["artifact"] == FP32


def test_untrusted_or_unmarked_speed_is_ignored(exported):
    manifest = read_manifest(exported)
    grid = speed_grid({FP32: 3.4, FUSED: 2.5}, trustworthy=False, reasons=("other processes used 1.3 of 2 cores",))
    cpu = recommend(manifest, grid, measured_on="onnxruntime-cpu")["onnxruntime-cpu"]
    assert cpu["artifact"] == int8_path(exported) and cpu["basis"] == "by kind" and cpu["speedup"] is None
    assert "validate's speed run at " in cpu["reason"]
    assert "was flagged untrusted (other processes used 1.3 of 2 cores)" in cpu["reason"]
    unmarked = grid.to_dict()
    del unmarked["trustworthy"]
    unmarked.pop("trust", None)
    cpu = recommend(manifest, unmarked, measured_on="onnxruntime-cpu")["onnxruntime-cpu"]
    assert cpu["basis"] == "by kind" and "flagged untrusted (it is not marked trustworthy)" in cpu["reason"]


def test_failed_and_unverified_artifacts_are_never_recommended(folder, tmp_path):
    from bge_export.validate.harness import ValidateOptions, validate

    broken = add_broken_artifact(folder, noise=2.0, matmuls=4)
    unchecked = add_int8_artifact(folder)  # registered without a check: unverified
    plan = add_unrunnable_artifact(folder, "tensorrt", "tensorrt/model.plan")
    report = validate(ValidateOptions(folder=str(folder), artifacts=[FP32, broken, plan], max_texts=24, threads=1,
                                      speed=False, quiet=True))
    statuses = {a.path: a.status for a in report.artifacts}
    assert statuses == {FP32: "pass", broken: "fail", plan: "unverified"}, [a.reason for a in report.artifacts]

    manifest = read_manifest(folder)
    # Fastest of all: the failed copy, then the unverified ones.
    grid = speed_grid({broken: 9.0, unchecked: 8.0, FP32: 1.5, FUSED: 1.2})
    rec = recommend(manifest, grid, measured_on="onnxruntime-cpu")
    cpu = rec["onnxruntime-cpu"]
    assert cpu["artifact"] == FP32 and cpu["basis"] == "measured"
    assert {u["artifact"] for u in cpu["unverified_candidates"]} == {unchecked}
    assert [f["artifact"] for f in cpu["failed"]] == [broken]
    assert broken not in [r["artifact"] for r in cpu["ranking"]] and unchecked not in [r["artifact"] for r in cpu["ranking"]]
    assert f"Not in the speed grid: {int8_path(folder)}, {FP16}." in cpu["reason"]
    assert "on 24 texts (validate)" in cpu["reason"]  # fp32's verdict now comes from validate
    gpu = rec["gpu"]  # the TensorRT plan ranks first by kind but could not be checked here
    assert gpu["artifact"] == FP16 and [u["artifact"] for u in gpu["unverified_candidates"]] == [plan]

    # validate stored its own recommendation (no speed: by kind) in manifest.json and in the report.
    stored = manifest.recommended
    assert stored["onnxruntime-cpu"]["artifact"] == int8_path(folder) and stored["onnxruntime-cpu"]["basis"] == "by kind"
    assert "no validate speed run" in stored["onnxruntime-cpu"]["reason"]
    data = json.loads((folder / "report.json").read_text())
    assert data["recommended"]["onnxruntime-cpu"]["artifact"] == int8_path(folder)
    markdown = (folder / "report.md").read_text()
    assert markdown.index("## Which file to deploy") < markdown.index("| artifact | backend")
    assert f"| onnxruntime-cpu | `{int8_path(folder)}` |" in markdown
    assert "none passed: this folder has no artifact for coreml" in markdown
    assert "Which file to deploy" in (folder / "report.html").read_text()

    # inspect: deploy block first; each status with the numbers that decided it, and their text count.
    code, out, _ = run_cli("inspect", str(folder))
    assert code == 0 and out.startswith("deploy (stored in manifest.json)")
    assert out.index("onnxruntime-cpu") < out.index("model       ")
    rows = {line.split()[0]: line for line in out.splitlines() if line.startswith(("onnx/", "tensorrt/"))
            and "  " in line and ":" not in line.split()[0]}
    assert "validate, 24 texts" in rows[FP32] and "built-in check" not in rows[FP32]
    assert "fail" in rows[broken] and "validate, 24 texts" in rows[broken]
    assert "built-in check, 96 texts" in rows[FUSED]
    assert "pass" not in rows[unchecked] and "unverified" in rows[unchecked] and "texts" not in rows[unchecked]
    assert "judged by validate on 24 texts (built-in corpus (report part))" in out
    assert "floors: min cosine ≥ 0.9999, mean ≥ 0.99999, top-10 ≥ 0.99" in out  # fp32 floors, recorded by validate

    code, out, _ = run_cli("inspect", str(folder), "--json")
    data = json.loads(out)
    judged = {a["path"]: a["judged_by"] for a in data["artifacts"]}
    fp32_entry = read_manifest(folder).find(FP32)
    assert judged[FP32]["source"] == "validate" and judged[FP32]["texts"] == 24
    assert judged[FP32]["cosine_min"] == fp32_entry.validation.validate_run.cosine_min
    assert judged[FUSED]["source"] == "builtin_check" and judged[FUSED]["texts"] == 96
    assert judged[unchecked]["source"] is None
    assert data["recommended"]["onnxruntime-cpu"]["artifact"] == int8_path(folder)


def test_none_passed_and_load_encoder_falls_back(bge_shaped_dir, tmp_path, caplog):
    folder = export_folder(bge_shaped_dir, tmp_path / "unchecked", check=False)
    manifest = read_manifest(folder)
    rec = recommend(manifest)
    for runtime in ("onnxruntime-cpu", "gpu"):
        assert rec[runtime]["artifact"] is None and rec[runtime]["basis"] == "none passed"
        assert rec[runtime]["reason"].startswith(f"none passed: {FP32} is unverified (the built-in check was skipped")
        assert [u["artifact"] for u in rec[runtime]["unverified_candidates"]] == [FP32]
    with caplog.at_level(logging.INFO, logger="bge_export"):
        encoder = load_encoder(folder)
    assert encoder.artifact == FP32
    assert "no artifact passed for onnxruntime-cpu" in encoder.selection
    assert "Falling back to onnx/model.onnx, whose status is unverified." in encoder.selection
    assert any(FP32 in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)  # nothing passed


# --------------------------------------------------------------------------- load_encoder


def test_load_encoder_defaults_to_the_recommendation_and_says_so(folder, caplog):
    int8 = int8_path(folder)
    with caplog.at_level(logging.INFO, logger="bge_export"):
        encoder = load_encoder(folder, threads=1)
    assert encoder.artifact == int8 and encoder.path == folder / int8  # what it says is what it loaded
    # the export stored its by-kind recommendation in the manifest
    assert encoder.selection.startswith("onnxruntime-cpu recommendation (stored in manifest.json): by kind")
    assert "\n" not in encoder.selection
    assert [r for r in caplog.records if r.name == "bge_export" and int8 in r.getMessage()]
    assert encoder.encode(["a test"]).shape == (1, 32)

    # A stored, measured recommendation wins over the kind order.
    manifest = read_manifest(folder)
    manifest.recommended = recommend(manifest, speed_grid({FUSED: 2.9, int8: 2.0}), measured_on="onnxruntime-cpu")
    manifest.write(folder)
    encoder = load_encoder(folder, providers=["CPUExecutionProvider"])
    assert encoder.artifact == FUSED and "stored in manifest.json" in encoder.selection and "2.90×" in encoder.selection

    # A stored choice whose artifact no longer passes is not used.
    manifest.find(FUSED).set_status("fail", "sha256 differs from the export's")
    manifest.write(folder)
    encoder = load_encoder(folder)
    assert encoder.artifact == int8 and "computed now by kind" in encoder.selection

    # Naming an artifact loads exactly that one.
    encoder = load_encoder(folder, artifact=FP16)
    assert encoder.artifact == FP16 and "named by the caller" in encoder.selection


def test_gpu_machine_takes_the_gpu_recommendation_if_onnxruntime_can_run_it(folder):
    manifest = read_manifest(folder)
    path, why = choose_for_machine(manifest, ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert path == FP16 and why.startswith("gpu recommendation")
    path, why = choose_for_machine(manifest, ["CPUExecutionProvider"])
    assert path == int8_path(folder) and why.startswith("onnxruntime-cpu recommendation")

    # A passing TensorRT plan heads the GPU ranking; onnxruntime cannot run it, so the best ONNX file for the
    # GPU is loaded instead (a plan cannot be built or checked on this machine: its status is set by hand).
    plan = add_unrunnable_artifact(folder, "tensorrt", "tensorrt/model.plan")
    manifest = read_manifest(folder)
    manifest.find(plan).set_status("pass", "checked on a GPU host")
    manifest.recommended = recommend(manifest)
    assert manifest.recommended["gpu"]["artifact"] == plan
    path, why = choose_for_machine(manifest, ["CUDAExecutionProvider"])
    assert path == FP16 and f"the gpu recommendation {plan} is not a file onnxruntime runs" in why


@pytest.mark.parametrize("threads", [-1, 0, "2", True, 1.5])
def test_bad_threads_is_an_input_error(exported, threads):
    with pytest.raises(InputError, match=r"^threads must be a positive whole number.*got"):
        load_encoder(exported, threads=threads)


@pytest.mark.parametrize("providers, fragment", [
    (["NopeExecutionProvider"], "unknown onnxruntime provider 'NopeExecutionProvider'; available here: "),
    (["CPUExecutionProvider", 3], "unknown onnxruntime provider 3"),
    ("CPUExecutionProvider", "providers must be a non-empty list"),
    ([], "providers must be a non-empty list"),
])
def test_bad_providers_is_an_input_error(exported, providers, fragment):
    with pytest.raises(InputError) as error:
        load_encoder(exported, providers=providers)
    assert fragment in str(error.value)
    if "unknown" in fragment:
        assert "CPUExecutionProvider" in str(error.value).split("available here:")[1]


def test_unknown_artifact_is_an_input_error(exported):
    with pytest.raises(InputError, match="no artifact 'onnx/nope.onnx' in this folder's manifest"):
        load_encoder(exported, artifact="onnx/nope.onnx")


def test_status_set_by_something_else_shows_no_check_numbers(exported):
    entry = read_manifest(exported).find(FP32)
    assert status_evidence(entry)["source"] == "builtin_check" and status_evidence(entry)["texts"] == 96
    entry.set_status("fail", "sha256 differs from the export's")
    assert status_evidence(entry) == {"source": None, "label": "other", "reason": "sha256 differs from the export's"}


def run_cli(*args: str) -> tuple[int, str, str]:
    import contextlib
    import io

    from bge_export.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), pytest.raises(SystemExit) as exited:
        main(list(args))
    return exited.value.code, out.getvalue(), err.getvalue()


def test_adding_a_target_keeps_the_measured_rows_whose_candidates_did_not_change(folder):
    """A validated folder (its onnxruntime-cpu row measured) gets OpenVINO IR added: that row stays measured,
    the openvino row is computed by kind for the new files."""
    pytest.importorskip("openvino", reason="pip install 'bge-export[openvino]'")
    from bge_export.folder.manifest import write_manifest

    manifest = read_manifest(folder)
    measured = recommend(manifest, speed_grid({FP32: 3.4, FUSED: 2.5, FP16: 1.1, int8_path(folder): 2.0}),
                         when="2026-01-02T03:04:05+00:00", measured_on="onnxruntime-cpu")
    data = json.loads((folder / "manifest.json").read_text())
    data["recommended"] = measured
    write_manifest(folder, data)  # as validate writes it: the one writer, sealed
    code, _, err = run_cli("openvino", str(folder), "--precision", "fp32", "-q")
    assert code == 0, err
    after = read_manifest(folder).recommended
    assert after["onnxruntime-cpu"] == measured["onnxruntime-cpu"]  # measured, same candidates: kept as it was
    assert after["openvino"]["artifact"] == "openvino/openvino_model.xml" and after["openvino"]["basis"] == "by kind"
