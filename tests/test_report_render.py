"""report.json / report.md / report.html rendered from a report built by hand (no model runs), and the HTML
rendered by headless Chromium to prove the page and its plots display."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from bge_export.validate.harness import (
    REPORT_SCHEMA,
    ArtifactResult,
    BaselineResult,
    Check,
    Fidelity,
    Thresholds,
    ValidationReport,
    WorstText,
)
from bge_export.validate.report import (
    render_bench_markdown,
    render_validation_html,
    render_validation_markdown,
    summary_rows,
    write_validation_report,
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
    return Fidelity(texts, float(cos.mean()), float(cos.min()), float(np.percentile(cos, 1)), 1 - 30 * gap, 1e-7, 0,
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
    speed = SpeedResult(SpeedSettings((1, 8, 32), (16, 64, 128), 3, threads=2), {"cpu": "test cpu", "threads": 2},
                        speed_backends, ["sequence lengths [512] skipped: above the model's max_seq_length 256"])
    fp32 = ArtifactResult(
        "onnx/model.onnx", "onnx", "fp32", "onnxruntime", 90_400_000, "pass", "min cosine 0.99999 >= 0.9999",
        Thresholds(0.9999, 0.99999, 0.99, 1e-4), [Check("min cosine", 0.9999999, 0.9999, "min")], _fidelity(1e-8),
        {"sts": {"dataset": "sts.tsv", "pairs": 240, "spearman": 0.8212, "delta_spearman": 0.0}}, 0.3,
        MemoryUse(95.0, 140.0), encode_timing(500, [2.0]),
    )
    int8 = ArtifactResult(
        "onnx/model_qint8.onnx", "onnx", "int8-dynamic", "onnxruntime", 23_000_000, "fail",
        "top-10 overlap 0.88 < 0.95", Thresholds(0.98, 0.995, 0.95, 1e-2),
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
