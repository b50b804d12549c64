"""`bench` and `bge-export bench`: synthetic inputs, ratios to the baseline, noise that repeated runs respect."""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import assert_one_line_error, export_folder, run_cli
from validate_helpers import add_int8_artifact, add_unrunnable_artifact

from bge_export.folder.loading import load_encoder
from bge_export.runtime.machine import CpuLoad, CpuLoadMeter, assess_speed_trust
from bge_export.validate.speed import (
    BenchOptions,
    available_cores,
    bench,
    disagreements,
    synthetic_features,
)

ARTIFACTS = ["onnx/model.onnx", "onnx/model_qint8_test.onnx"]


@pytest.fixture(scope="module")
def bench_folder(bge_shaped_dir, tmp_path_factory) -> Path:
    folder = export_folder(bge_shaped_dir, tmp_path_factory.mktemp("bench") / "tiny")
    add_int8_artifact(folder)
    add_unrunnable_artifact(folder, "tensorrt", "tensorrt/model.plan")
    return folder


def test_synthetic_inputs_are_exact_length_real_tokens(bench_folder):
    encoder = load_encoder(bench_folder)
    features = synthetic_features(encoder, 4, 37)
    assert features["input_ids"].shape == (4, 37) and features["input_ids"].dtype == np.int64
    assert (features["attention_mask"] == 1).all()  # exactly that length: no padding
    cls_id, sep_id = encoder.tokenizer.tokenize([""])[0]
    assert (features["input_ids"][:, 0] == cls_id).all() and (features["input_ids"][:, -1] == sep_id).all()
    assert len({tuple(row) for row in features["input_ids"]}) == 4  # rows differ
    again = synthetic_features(encoder, 4, 37)
    assert all(np.array_equal(features[name], again[name]) for name in features)  # same arrays every time
    assert set(features) == set(encoder.spec.input_names)


def test_bench_reports_ratios_latency_memory_and_skips(bench_folder, tmp_path):
    report = bench(BenchOptions(
        folder=str(bench_folder), batch_sizes=[1, 4], seq_lens=[16, 512], threads=1, repeats=2, encode_texts=24,
        report_dir=str(tmp_path), quiet=True,
    ))
    speed = report.speed
    assert [b.label for b in speed.backends] == ["baseline (PyTorch fp32)", *ARTIFACTS]
    assert list(report.unverified) == ["tensorrt/model.plan"] and "GPU" in report.unverified["tensorrt/model.plan"]
    assert any("[512] skipped" in note and "max_seq_length 128" in note for note in speed.notes)
    for backend in speed.backends:
        assert [(c.batch_size, c.seq_len) for c in backend.cells] == [(1, 16), (4, 16)]
        for cell in backend.cells:
            assert len(cell.throughput_per_repeat) == 2
            assert cell.throughput["median"] == pytest.approx(statistics.median(cell.throughput_per_repeat))
            # latency and throughput come from the same timed calls: the pooled rate (batch / mean latency) is a
            # weighted mean of the per-repeat rates, so it lies between their extremes
            pooled = cell.batch_size * 1e3 / cell.latency_ms["mean"]
            assert min(cell.throughput_per_repeat) * (1 - 1e-9) <= pooled <= max(cell.throughput_per_repeat) * (1 + 1e-9)
        assert backend.cells[0].calls >= 2 * 20  # batch 1: enough calls per repeat for percentiles
        assert backend.load_seconds > 0 and backend.size_bytes > 0
        assert backend.memory.peak_mib is not None  # Linux reports VmHWM (a 4 MB model may add no new pages)
        assert backend.encode.texts == 24 and len(backend.encode.seconds_per_repeat) == 2
    for backend in speed.backends[1:]:
        assert set(backend.speedup) == {"1x16", "4x16"} and set(backend.latency_speedup) == {"1x16"}
        ratio = backend.speedup["4x16"]
        assert ratio.min > 0
        assert backend.encode_speedup is not None
    assert speed.settings.threads == 1 and speed.machine["threads"] == 1
    data = json.loads((tmp_path / "bench.json").read_text())
    assert data["schema"] == "bge-export/bench-report" and data["schema_version"] == 1
    assert "speed-up median [min–max]" in (tmp_path / "bench.md").read_text()


def test_default_threads_are_all_cores_for_every_backend(bench_folder, monkeypatch):
    import torch

    from bge_export.runtime import onnxruntime_encoder as onnx_backend

    session_threads = []
    original = onnx_backend.make_session

    def spy(path, threads=None, providers=None):
        session_threads.append(threads)
        return original(path, threads, providers)

    monkeypatch.setattr(onnx_backend, "make_session", spy)
    report = bench(BenchOptions(folder=str(bench_folder), artifacts=ARTIFACTS, batch_sizes=[2], seq_lens=[8],
                                repeats=1, encode_texts=0, write_report=False, quiet=True))
    cores = available_cores()
    assert report.speed.settings.threads == cores == torch.get_num_threads()
    assert session_threads == [cores, cores]


@pytest.mark.timing  # needs two benchmark runs to agree / pins busy loops to the cores: not in the default run
def test_repeated_runs_agree_within_the_noise_they_report(bench_folder):
    def run() -> object:
        return bench(BenchOptions(folder=str(bench_folder), artifacts=ARTIFACTS, batch_sizes=[1, 8], seq_lens=[32],
                                  threads=1, repeats=5, encode_texts=0, write_report=False, quiet=True)).speed

    first, second = run(), run()
    assert disagreements(first, second) == []


def test_disagreement_is_detected():
    from bge_export.validate.speed import BackendSpeed, MemoryUse, RatioSummary, SpeedResult, SpeedSettings

    def result(median: float) -> SpeedResult:
        backends = [BackendSpeed("baseline", "torch", "fp32", 1, 1.0, MemoryUse(None, None)),
                    BackendSpeed("a.onnx", "onnxruntime", "fp32", 1, 1.0, MemoryUse(None, None),
                                 speedup={"1x16": RatioSummary(median, median - 0.1, median + 0.1)})]
        return SpeedResult(SpeedSettings(), {}, backends)

    assert disagreements(result(2.0), result(2.3)) == []  # 0.3 <= 0.2 + 0.2
    assert disagreements(result(2.0), result(2.5)) == ["a.onnx at 1x16: 2.000x vs 2.500x, noise 0.400"]


BUSY_LOOP = "import os, sys; os.sched_setaffinity(0, {int(c) for c in sys.argv[1].split(',')})\nwhile True: pass"


def _busy_processes(count: int) -> list[subprocess.Popen]:
    """`count` busy loops pinned to the cores this process may use: load another engineer's job would put there."""
    cores = ",".join(str(c) for c in sorted(os.sched_getaffinity(0)))
    return [subprocess.Popen([sys.executable, "-c", BUSY_LOOP, cores]) for _ in range(count)]


@pytest.mark.timing  # needs two benchmark runs to agree / pins busy loops to the cores: not in the default run
def test_busy_cores_make_the_speed_result_untrusted(bench_folder, tmp_path):
    cores = available_cores()
    busy = _busy_processes(cores)
    try:
        time.sleep(0.3)  # let them spin up before the measurement window opens
        report = bench(BenchOptions(folder=str(bench_folder), artifacts=ARTIFACTS[:1], batch_sizes=[1, 4],
                                    seq_lens=[16], repeats=2, encode_texts=0, report_dir=str(tmp_path), quiet=True))
    finally:
        for process in busy:
            process.kill()
            process.wait()
    trust = report.speed.trust
    assert not report.speed.trustworthy, trust
    # the scheduler shares the cores: the busy loops get about half of them, well above a quiet machine's ~0
    assert trust.load.other_cores >= 0.3 * cores and trust.threads == cores
    assert any(reason.startswith("other processes used") and f"of {cores} cores" in reason for reason in trust.reasons)
    data = json.loads((tmp_path / "bench.json").read_text())
    assert data["trustworthy"] is False and data["trust"]["load"]["other_cores"] >= 0.3 * cores
    markdown = (tmp_path / "bench.md").read_text()
    assert "WARNING: speed-ups not trustworthy: other processes used" in markdown
    assert "untrusted: " in markdown
    features = data["machine"]["cpu_features"]
    assert set(features) == {"amx_tile", "amx_int8", "amx_bf16", "avx512_vnni", "avx_vnni", "avx512_bf16"}
    flags = set(Path("/proc/cpuinfo").read_text().split("flags", 1)[1].split("\n", 1)[0].split())
    assert all(on == (name in flags) for name, on in features.items())


def test_cpu_load_meter_sees_our_work_and_theirs():
    meter = CpuLoadMeter()
    busy = _busy_processes(1)
    try:
        deadline = time.perf_counter() + 1.0
        while time.perf_counter() < deadline:  # this process spins too
            pass
    finally:
        busy[0].kill()
        busy[0].wait()
    load = meter.stop()
    assert load.cores == available_cores()
    assert load.own_cores > 0.0 and load.other_cores is not None
    assert load.other_cores > 0.3  # the busy loop gets its fair share of a core however loaded the box is
    assert load.own_cores + load.other_cores <= load.cores + 0.1  # no core is counted twice


# The incident behind the issue (another job took 1.6 of the 2 cores; the baseline's cell spread 2296%), and
# what a quiet 2-core box gives: our 2 threads busy, a few hundredths of a core of daemons. (A quiet run is not
# asserted live: on this shared box other engineers' tests take 1-2 cores most of the time.)
INCIDENT = CpuLoad(wall_seconds=95.0, cores=2, own_cores=1.3, other_cores=1.6)
QUIET = CpuLoad(wall_seconds=41.0, cores=2, own_cores=1.97, other_cores=0.06)


def test_trust_decision_on_measured_inputs():
    flagged = assess_speed_trust(INCIDENT, 2, [0.08, 0.30, 0.40, 22.96], [0.30, 22.96])
    assert not flagged.trustworthy
    assert flagged.reasons == [
        "other processes used 1.6 of 2 cores during the measurement while it ran 2 threads (1.3 cores busy)",
        "throughput varied by 35% between repeats in the median cell (up to 2296%; limit 25%)",
        "the baseline's throughput varied up to 2296% between repeats (limit 50%); every speed-up divides by it",
    ]
    assert assess_speed_trust(QUIET, 2, [0.02, 0.05, 0.09, 0.14], [0.05, 0.09]).trustworthy
    # One busy core beside a 1-thread run on 2 cores is no contention; beside a 2-thread run it is.
    half = CpuLoad(30.0, 2, 1.0, 1.0)
    assert assess_speed_trust(half, 1, [], []).trustworthy
    assert not assess_speed_trust(CpuLoad(30.0, 2, 2.0, 1.0), 2, [], []).trustworthy
    # The margin: a fifth of a core of background is tolerated, a third is not.
    assert assess_speed_trust(CpuLoad(30.0, 2, 2.0, 0.2), 2, [], []).trustworthy
    assert not assess_speed_trust(CpuLoad(30.0, 2, 2.0, 0.3), 2, [], []).trustworthy
    # Spread alone (no /proc/stat, e.g. macOS): a noisy baseline cell is enough.
    noisy = assess_speed_trust(CpuLoad(30.0, 2, 2.0, None), 2, [0.05, 0.06, 0.07], [0.05, 0.6])
    assert not noisy.trustworthy and noisy.reasons == [
        "the baseline's throughput varied up to 60% between repeats (limit 50%); every speed-up divides by it"]


def test_cli_bench_json_and_unverified(bench_folder, tmp_path, capsys):
    folder = Path(shutil.copytree(bench_folder, tmp_path / "copy"))
    code, out, err = run_cli(capsys, "bench", str(folder), "--batch-sizes", "1", "--seq-lens", "16", "--repeats", "1",
                             "--threads", "1", "--encode-texts", "12", "--json")
    assert code == 0, err
    progress = [line for line in err.splitlines() if line.startswith("[")]  # stderr is no TTY here: step lines
    for expected in (r"checking 3 artifact\(s\) and the tokenizer/config files", r"loading onnx/model_qint8_test.onnx",
                     r"speed 1/1 \(repeat 1/1\): batch 1 x 16 tokens, per call: baseline \(PyTorch fp32\) [\d.]+ ms, "
                     r"onnx/model.onnx [\d.]+ ms, onnx/model_qint8_test.onnx [\d.]+ ms",
                     r"end-to-end encode, repeat 1/1: baseline \(PyTorch fp32\) [\d.]+s, onnx/model.onnx [\d.]+s"):
        assert any(re.search(r"^\[ *\d+\.\ds\] .*" + expected, line) for line in progress), (expected, err)
    data = json.loads(out)
    assert [b["label"] for b in data["backends"]][1:] == ARTIFACTS
    assert data["backends"][1]["speedup"]["1x16"]["median"] > 0
    assert "UNVERIFIED  tensorrt/model.plan" in err
    assert (folder / "bench.json").is_file() and (folder / "bench.md").is_file()


@pytest.mark.parametrize("flags, fragment", [
    (["--batch-sizes", "0,8"], "--batch-sizes (batch_sizes[0]) must be a whole number >= 1, got 0"),
    (["--seq-lens", "1"], "--seq-lens (seq_lens[0]) must be a whole number >= 2, got 1"),
    (["--seq-lens", "999"], "every requested sequence length exceeds the model's max_seq_length 128"),
    (["--artifact", "onnx/missing.onnx"], "no artifact 'onnx/missing.onnx'"),
])
def test_cli_bench_bad_options(bench_folder, capsys, flags, fragment):
    code, _, err = run_cli(capsys, "bench", str(bench_folder), *flags, "--threads", "1", "--repeats", "1",
                           "--encode-texts", "0", "--no-report", "-q")
    assert code == 2
    assert_one_line_error(err, fragment)
