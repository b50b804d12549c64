"""`bench` and `bge-export bench`: synthetic inputs, ratios to the baseline, noise that repeated runs respect."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from bge_export.runtime import load_encoder
from bge_export.validate.speed import (
    BenchOptions,
    available_cores,
    bench,
    disagreements,
    synthetic_features,
)
from helpers import export_folder
from test_cli_errors import assert_one_line_error, run_cli
from validate_helpers import add_int8_artifact, add_unrunnable_artifact

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
            assert cell.latency_ms["p50"] <= cell.latency_ms["p95"] <= cell.latency_ms["p99"]
            assert len(cell.throughput_per_repeat) == 2
            assert cell.throughput["min"] <= cell.throughput["median"] <= cell.throughput["max"]
        assert backend.cells[0].calls >= 2 * 20  # batch 1: enough calls per repeat for percentiles
        assert backend.load_seconds > 0 and backend.size_bytes > 0
        assert backend.memory.peak_mib is not None and backend.memory.peak_mib >= 0  # Linux: VmHWM
        assert backend.encode.texts == 24 and len(backend.encode.seconds_per_repeat) == 2
    for backend in speed.backends[1:]:
        assert set(backend.speedup) == {"1x16", "4x16"} and set(backend.latency_speedup) == {"1x16"}
        ratio = backend.speedup["4x16"]
        assert 0 < ratio.min <= ratio.median <= ratio.max
        assert backend.encode_speedup is not None
    assert speed.settings.threads == 1 and speed.machine["threads"] == 1
    data = json.loads((tmp_path / "bench.json").read_text())
    assert data["schema"] == "bge-export/bench-report" and data["schema_version"] == 1
    assert "speed-up median [min–max]" in (tmp_path / "bench.md").read_text()


def test_default_threads_are_all_cores_for_every_backend(bench_folder, monkeypatch):
    import torch

    from bge_export.runtime import onnx_backend

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


def test_cli_bench_json_and_unverified(bench_folder, tmp_path, capsys):
    folder = Path(shutil.copytree(bench_folder, tmp_path / "copy"))
    code, out, err = run_cli(capsys, "bench", str(folder), "--batch-sizes", "1", "--seq-lens", "16", "--repeats", "1",
                             "--threads", "1", "--encode-texts", "0", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert [b["label"] for b in data["backends"]][1:] == ARTIFACTS
    assert data["backends"][1]["speedup"]["1x16"]["median"] > 0
    assert "UNVERIFIED  tensorrt/model.plan" in err
    assert (folder / "bench.json").is_file() and (folder / "bench.md").is_file()


@pytest.mark.parametrize("flags, fragment", [
    (["--batch-sizes", "0,8"], "positive integers"),
    (["--seq-lens", "1"], "sequence lengths must be integers >= 2"),
    (["--seq-lens", "999"], "every requested sequence length exceeds the model's max_seq_length 128"),
    (["--artifact", "onnx/missing.onnx"], "no artifact 'onnx/missing.onnx'"),
])
def test_cli_bench_bad_options(bench_folder, capsys, flags, fragment):
    code, _, err = run_cli(capsys, "bench", str(bench_folder), *flags, "--threads", "1", "--repeats", "1",
                           "--encode-texts", "0", "--no-report", "-q")
    assert code == 2
    assert_one_line_error(err, fragment)
