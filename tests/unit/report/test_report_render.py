"""report.json / report.md / report.html rendered from a report built by hand (no model runs), and the HTML
rendered by headless Chromium to prove the page and its plots display."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from bge_export.quality.floors import Floors
from bge_export.report.html import render_validation_html
from bge_export.report.markdown import render_bench_markdown, render_validation_markdown, write_validation_report
from bge_export.report.tables import summary_rows
from bge_export.runtime.machine import CpuLoad, SpeedTrust
from bge_export.validate.harness import (
    REPORT_SCHEMA,
    ArtifactResult,
    BaselineResult,
    Check,
    Fidelity,
    ValidationReport,
    WorstText,
)
from bge_export.validate.speed import (
    BASELINE_LABEL,
    BackendSpeed,
    CellTiming,
    MemoryUse,
    RatioSummary,
    SpeedResult,
    SpeedSettings,
    encode_timing,
)

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars"]


def _cells(scale: float) -> list[CellTiming]:
    cells = []
    for seq in (16, 64, 128):
        for batch in (1, 8, 32):
            per_call = (0.002 + 0.00005 * batch * seq) / scale
            rates = [batch / per_call * f for f in (0.95, 1.0, 1.04)]
            cells.append(CellTiming(batch, seq, 30, {"p50": per_call * 1e3, "p95": per_call * 1.2e3,
                                                     "p99": per_call * 1.4e3, "mean": per_call * 1.05e3},
                                    {"median": rates[1], "min": rates[0], "max": rates[2]}, rates,
                                    (rates[2] - rates[0]) / rates[1]))
    return cells


def _fidelity(gap: float, texts: int = 500) -> Fidelity:
    gaps = np.sort(np.random.default_rng(0).exponential(gap, texts))
    cos = 1 - gaps
    return Fidelity(texts, float(cos.mean()), float(cos.min()), float(np.percentile(cos, 1)), 1 - 30 * gap,
                    1 - 20 * gap, 1e-7, 0,
                    [WorstText(7, float(cos.min()), "a <b>tagged</b> text & more"), WorstText(3, float(cos[-2]), "second")],
                    [float(v) for v in np.percentile(gaps, np.linspace(0, 100, 101))])


def sample_report() -> ValidationReport:
    """Numbers shaped like a real MiniLM run: fp32 near-exact, int8 failing its overlap floor, a TensorRT plan."""
    speed_backends = [
        BackendSpeed(BASELINE_LABEL, "torch", "fp32", 90_000_000, 1.2, MemoryUse(180.0, 260.0), _cells(1.0)),
        BackendSpeed("onnx/model.onnx", "onnxruntime", "fp32", 90_400_000, 0.3, MemoryUse(95.0, 140.0), _cells(1.1)),
        BackendSpeed("onnx/model_qint8.onnx", "onnxruntime", "int8-dynamic", 23_000_000, 0.2, MemoryUse(30.0, 60.0), _cells(2.2)),
    ]
    for backend, ratio in zip(speed_backends[1:], (1.1, 2.2)):
        backend.speedup = {f"{c.batch_size}x{c.seq_len}": RatioSummary(ratio, ratio * 0.95, ratio * 1.05) for c in backend.cells}
    machine = {"cpu": "test cpu", "cpu_features": {"amx_tile": False, "amx_int8": False, "amx_bf16": False,
                                                   "avx512_vnni": True, "avx_vnni": False, "avx512_bf16": True},
               "cores_available": 2, "threads": 2}
    speed = SpeedResult(SpeedSettings((1, 8, 32), (16, 64, 128), 3, threads=2), machine,
                        speed_backends, ["sequence lengths [512] skipped: above the model's max_seq_length 256"])
    fp32 = ArtifactResult(
        "onnx/model.onnx", "onnx", "fp32", "onnxruntime", 90_400_000, "pass", "min cosine 0.99999 >= 0.9999",
        Floors(0.9999, 0.99999, 0.99, 0.99, 1e-4), [Check("min cosine", 0.9999999, 0.9999, "min")], _fidelity(1e-8),
        {"sts": {"dataset": "sts.tsv", "pairs": 240, "spearman": 0.8212, "delta_spearman": 0.0}}, 0.3,
        MemoryUse(95.0, 140.0), encode_timing(500, [2.0]),
    )
    int8 = ArtifactResult(
        "onnx/model_qint8.onnx", "onnx", "int8-dynamic", "onnxruntime", 23_000_000, "fail",
        "top-10 overlap 0.88 < 0.95", Floors(0.98, 0.995, 0.95, 0.95, 1e-2),
        [Check("top-10 overlap", 0.88, 0.95, "min"), Check("non-finite embeddings", 0.0, 0.0, "max")], _fidelity(5e-3),
        {"sts": {"dataset": "sts.tsv", "pairs": 240, "spearman": 0.8171, "delta_spearman": -0.0041}}, 0.2,
        MemoryUse(30.0, 60.0), encode_timing(500, [1.0]),
    )
    plan = ArtifactResult("tensorrt/model.plan", "tensorrt", "fp16", "-", 50_000_000, "unverified",
                          "a TensorRT engine needs an NVIDIA GPU (and TensorRT); this machine has no CUDA device")
    baseline = BaselineResult("/models/minilm", "torch", 90_000_000, 1.2, MemoryUse(180.0, 260.0),
                              encode_timing(500, [4.0]), {"sts": {"dataset": "sts.tsv", "pairs": 240, "spearman": 0.8212}})
    return ValidationReport(
        folder="/artifacts/minilm", model={"reference": "sentence-transformers/all-MiniLM-L6-v2", "baseline": "/models/minilm"},
        corpus={"source": "built-in corpus", "texts": 500}, baseline=baseline, artifacts=[fp32, int8, plan], speed=speed,
        machine=speed.machine, notes=speed.notes, created="2026-01-01T00:00:00+00:00",
    )


def test_report_json_is_versioned_and_strict(tmp_path):
    report = sample_report()
    report.artifacts[0].tasks["sts"]["spearman"] = float("nan")  # NaN must become null, not invalid JSON
    paths = write_validation_report(report.to_dict(), tmp_path)
    assert [p.name for p in paths] == ["report.json", "report.md", "report.html"]
    data = json.loads(paths[0].read_text(), parse_constant=lambda name: pytest.fail(f"{name} in report.json"))
    assert data["schema"] == REPORT_SCHEMA and data["schema_version"] == 1
    assert data["summary"] == {"exit_code": 1, "pass": ["onnx/model.onnx"], "fail": ["onnx/model_qint8.onnx"],
                               "unverified": ["tensorrt/model.plan"]}
    assert data["artifacts"][0]["tasks"]["sts"]["spearman"] is None
    assert data["speed"]["settings"]["batch_sizes"] == [1, 8, 32]
    assert "VmHWM" in data["speed"]["memory_method"]
    assert all(p.stat().st_mode & 0o044 for p in paths)  # readable by others, like any report


def test_markdown_table_has_every_column_the_issue_names():
    data = sample_report().to_dict()
    header, rows = summary_rows(data)
    for column in ("artifact", "backend", "precision", "size", "cos mean", "cos min", "top-10", "STS ρ (Δ)",
                   "p50 ms (b1, 128 tok)", "seq/s (b32, 128 tok)", "speed-up", "status"):
        assert column in header
    assert rows[0][0] == BASELINE_LABEL and rows[0][-1] == "reference"
    int8_row = dict(zip(header, rows[2]))
    assert int8_row["STS ρ (Δ)"] == "0.8171 (-0.0041)"
    assert int8_row["speed-up"] == "2.20× [2.09–2.31]"
    assert int8_row["status"] == "FAIL"
    markdown = render_validation_markdown(data)
    assert "| onnx/model_qint8.onnx | onnxruntime | int8-dynamic | 23.0 MB |" in markdown
    assert "## tensorrt/model.plan: UNVERIFIED" in markdown and "no CUDA device" in markdown
    assert "a <b>tagged</b> text & more" in markdown  # worst texts are named
    assert "skipped: above the model's max_seq_length" in markdown


def test_bench_markdown_renders_ratios():
    report = sample_report()
    data = {"folder": "/x", "created": "now", "toolkit_version": "0", "baseline_model": "/m", "unverified": {},
            **report.speed.to_dict()}
    markdown = render_bench_markdown(data)
    assert "| onnx/model_qint8.onnx | 32 | 128 | 30 |" in markdown and "2.20× [2.09–2.31]" in markdown


def test_html_is_self_contained_and_escaped():
    page = render_validation_html(sample_report().to_dict())
    assert page.count('src="data:image/png;base64,') == 3  # cosine distribution, latency, throughput
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page), "the report must not fetch anything"
    assert "<b>tagged</b>" not in page and "&lt;b&gt;tagged&lt;/b&gt; text &amp; more" in page
    assert '<td class="FAIL">FAIL</td>' in page and '<td class="UNVERIFIED">UNVERIFIED</td>' in page


def test_report_without_speed_or_fidelity_still_renders():
    report = sample_report()
    report.speed = None
    report.artifacts = [report.artifacts[2]]
    page = render_validation_html(report.to_dict())
    assert "data:image/png" not in page and "UNVERIFIED" in page
    assert "speed-up" not in render_validation_markdown(report.to_dict()).splitlines()[4]


def _untrusted(report: ValidationReport) -> ValidationReport:
    """The trust verdict of the run that once showed 137.8x: another process on one of the two cores."""
    load = CpuLoad(wall_seconds=40.0, cores=2, own_cores=1.9, other_cores=1.6)
    report.speed.trust = SpeedTrust(False, ["other processes used 1.6 of 2 cores during the measurement",
                                            "the baseline's throughput varied up to 2296% between repeats"],
                                    2, load, 0.31, 22.96, 22.96)
    return report


def test_untrusted_speed_is_a_warning_not_a_result(tmp_path):
    trusted = sample_report().to_dict()
    header, rows = summary_rows(trusted)
    assert dict(zip(header, rows[2]))["speed-up"] == "2.20× [2.09–2.31]"
    assert "WARNING" not in render_validation_markdown(trusted) and 'class="warning"' not in render_validation_html(trusted)

    data = _untrusted(sample_report()).to_dict()
    assert data["speed"]["trustworthy"] is False and data["speed"]["trust"]["load"]["other_cores"] == 1.6
    header, rows = summary_rows(data)
    speedups = [dict(zip(header, row))["speed-up"] for row in rows[1:3]]
    assert speedups == ["untrusted", "untrusted"]
    markdown = render_validation_markdown(data)
    summary_table = markdown[:markdown.index("## onnx/model.onnx")]
    assert "> **WARNING: speed-ups not trustworthy: other processes used 1.6 of 2 cores" in summary_table
    assert "2296%" in summary_table and "2.20×" not in summary_table
    speed_section = markdown[markdown.index("## Speed"):]
    assert speed_section.index("WARNING") < speed_section.index("| backend |")  # the warning sits above the grid
    assert "untrusted: 2.20× [2.09–2.31]" in speed_section and "| 2.20× [" not in speed_section
    page = render_validation_html(data)
    assert page.count('<p class="warning">WARNING: speed-ups not trustworthy') == 2
    assert "<td>2.20× [2.09–2.31]</td>" not in page and "<td>untrusted</td>" in page
    bench = render_bench_markdown({"folder": "/x", "created": "now", "toolkit_version": "0", "baseline_model": "/m",
                                   "unverified": {}, **_untrusted(sample_report()).speed.to_dict()})
    assert bench.index("WARNING: speed-ups not trustworthy") < bench.index("| backend |")
    assert "| 2.20× [" not in bench


def test_machine_line_with_cpu_flags_sits_next_to_speed_figures():
    data = sample_report().to_dict()
    line = ("Machine: CPU test cpu (avx512_vnni, avx512_bf16; no amx_tile, amx_int8, amx_bf16, avx_vnni); "
            "2 threads on 2 available cores")
    markdown = render_validation_markdown(data)
    assert markdown.count(line) == 2  # under the summary table and at the top of the speed grid
    assert line in render_validation_html(data)
    bench = render_bench_markdown({"folder": "/x", "created": "now", "toolkit_version": "0", "baseline_model": "/m",
                                   "unverified": {}, **sample_report().speed.to_dict()})
    assert line in bench
    data["machine"]["cpu_features"] = None  # macOS: no /proc/cpuinfo
    assert "CPU test cpu (flags unknown)" in render_validation_markdown(data)


def test_mixed_precision_columns_and_retrieval_table():
    report = sample_report()
    int8 = report.artifacts[1]
    report.baseline.tasks["retrieval"] = {"ndcg@10": 0.70, "recall@100": 0.95}
    int8.tasks["retrieval"] = {"ndcg@10": 0.68, "recall@100": 0.94, "delta_ndcg@10": -0.02, "mixed": {
        "artifact_queries_baseline_documents": {"ndcg@10": 0.6912, "recall@100": 0.9431},
        "baseline_queries_artifact_documents": {"ndcg@10": 0.6875, "recall@100": 0.9402}}}
    data = report.to_dict()
    header, rows = summary_rows(data)
    row = dict(zip(header, rows[2]))
    assert row["top-10 mixed"] == f"{1 - 20 * 5e-3:.4f}" and row["nDCG@10 (Δ)"] == "0.6800 (-0.0200)"
    assert row["nDCG@10 mixed (art. q→fp32 docs / fp32 q→art. docs)"] == "0.6912 / 0.6875"
    markdown = render_validation_markdown(data)
    assert "| artifact | baseline | 0.6912 | 0.9431 |" in markdown
    assert "| baseline | artifact | 0.6875 | 0.9402 |" in markdown
    assert "| baseline | baseline | 0.7000 | 0.9500 |" in markdown


@pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is missing (Debian: apt-get install chromium)")
def test_html_displays_in_headless_chromium(tmp_path):
    import matplotlib.image

    html_path = write_validation_report(sample_report().to_dict(), tmp_path)[2]
    screenshot = tmp_path / "report.png"
    command = [str(CHROMIUM), *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,2600",
               f"--screenshot={screenshot}", html_path.as_uri()]
    subprocess.run(command, check=True, capture_output=True, timeout=120)
    assert screenshot.stat().st_size > 60_000  # a blank page compresses to a few KB
    pixels = matplotlib.image.imread(str(screenshot))[..., :3]
    non_white = (pixels.min(axis=2) < 0.9).mean()
    assert non_white > 0.03, f"only {non_white:.1%} of the page is drawn"
    # The plots are where the colour is: matplotlib's default blue (C0) must show up.
    blue = (np.abs(pixels - np.array([0.12, 0.47, 0.71])).max(axis=2) < 0.08).sum()
    assert blue > 500, "no plot lines found in the screenshot"
