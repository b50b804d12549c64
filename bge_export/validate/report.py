"""Reports rendered from the report's JSON form only: report.json, report.md and a self-contained report.html.

Rendering from the dictionary (not from live objects) means a report can be re-rendered from an old
report.json, and that the three files can never disagree. Plots use matplotlib's object API on the Agg
canvas (no pyplot, no global backend switch), imported only when a report is written.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Sequence

from bge_export.errors import InputError
from bge_export.validate.speed import BASELINE_LABEL as BASELINE_ROW

HEADLINE_SEQ_LEN = 128


# --------------------------------------------------------------------------- writing


def write_validation_report(data: dict[str, Any], directory: Path, stem: str = "report") -> list[Path]:
    """report.json, report.md, report.html in `directory`; each written atomically."""
    directory.mkdir(parents=True, exist_ok=True)
    return [
        write_text_atomic(directory / f"{stem}.json", dumps(data) + "\n"),
        write_text_atomic(directory / f"{stem}.md", render_validation_markdown(data)),
        write_text_atomic(directory / f"{stem}.html", render_validation_html(data)),
    ]


def write_bench_report(data: dict[str, Any], directory: Path, stem: str = "bench") -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    return [
        write_text_atomic(directory / f"{stem}.json", dumps(data) + "\n"),
        write_text_atomic(directory / f"{stem}.md", render_bench_markdown(data)),
    ]


def write_text_atomic(path: Path, text: str) -> Path:
    """Write beside the target, then rename: a reader never sees half a report. Readable by all, like a report."""
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
        os.chmod(temp, 0o644)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return path


def check_writable(folder: Path, hint: str) -> None:
    """Refuse before minutes of work, not after: the nearest existing ancestor must be writable."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK):
        raise InputError(f"cannot write into '{folder}'; {hint}")


def _json_safe(value: Any) -> Any:
    """NaN and inf become null: strict JSON readers (browsers, jq) reject them."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def dumps(data: dict[str, Any]) -> str:
    return json.dumps(_json_safe(data), indent=2, ensure_ascii=False)


# --------------------------------------------------------------------------- shared table logic


def headline_cells(speed: dict[str, Any] | None) -> tuple[int, int, int] | None:
    """(latency batch, throughput batch, seq_len) the summary table quotes: batch 1 and the largest batch at
    seq 128, or the measured length closest to it."""
    if not speed or not speed.get("backends") or not speed["backends"][0]["cells"]:
        return None
    cells = speed["backends"][0]["cells"]
    seq_lens = sorted({c["seq_len"] for c in cells})
    batches = sorted({c["batch_size"] for c in cells})
    seq_len = min(seq_lens, key=lambda s: (abs(s - HEADLINE_SEQ_LEN), s))
    return batches[0], batches[-1], seq_len


def _speed_backend(speed: dict[str, Any] | None, label: str) -> dict[str, Any] | None:
    for backend in (speed or {}).get("backends", []):
        if backend["label"] == label:
            return backend
    return None


def _cell(backend: dict[str, Any] | None, batch_size: int, seq_len: int) -> dict[str, Any] | None:
    for cell in (backend or {}).get("cells", []):
        if cell["batch_size"] == batch_size and cell["seq_len"] == seq_len:
            return cell
    return None


def _num(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.{digits}f}"


def _delta(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    return f" ({value:+.{digits}f})"


def _size(size_bytes: Any) -> str:
    return "-" if not size_bytes else f"{size_bytes / 1e6:.1f} MB"


def _ratio(summary: dict[str, float] | None) -> str:
    if not summary:
        return "-"
    return f"{summary['median']:.2f}× [{summary['min']:.2f}–{summary['max']:.2f}]"


def _cosine(value: Any) -> str:
    return "-" if value is None else f"{value:.6f}"


def summary_rows(data: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The one comparison table (markdown and HTML alike): baseline first, then every artifact."""
    speed = data.get("speed")
    head = headline_cells(speed)
    baseline = data["baseline"]
    tasks = [t for t in ("sts", "retrieval") if t in baseline.get("tasks", {})]
    header = ["artifact", "backend", "precision", "size", "cos mean", "cos min", "top-10"]
    header += [{"sts": "STS ρ (Δ)", "retrieval": "nDCG@10 (Δ)"}[task] for task in tasks]
    if head:
        lat_batch, thr_batch, seq = head
        header += [f"p50 ms (b{lat_batch}, {seq} tok)", f"seq/s (b{thr_batch}, {seq} tok)", "speed-up"]
    header += ["status"]

    def task_cells(values: dict[str, Any]) -> list[str]:
        out = []
        for task in tasks:
            metric = "spearman" if task == "sts" else "ndcg@10"
            out.append(_num(values.get(task, {}).get(metric)) + _delta(values.get(task, {}).get(f"delta_{metric}")))
        return out

    def speed_cells(label: str, is_baseline: bool) -> list[str]:
        if not head:
            return []
        backend = _speed_backend(speed, label)
        if backend is None:
            return ["-", "-", "-"]
        lat_batch, thr_batch, seq = head
        latency = _cell(backend, lat_batch, seq)
        throughput = _cell(backend, thr_batch, seq)
        ratio = "1.00×" if is_baseline else _ratio(backend.get("speedup", {}).get(f"{thr_batch}x{seq}"))
        return [
            _num(latency["latency_ms"]["p50"], 2) if latency else "-",
            _num(throughput["throughput"]["median"], 1) if throughput else "-",
            ratio,
        ]

    rows = [[BASELINE_ROW, baseline["backend"], "fp32", _size(baseline["size_bytes"]), "1 (reference)", "1 (reference)",
             "1 (reference)", *task_cells(baseline.get("tasks", {})), *speed_cells(BASELINE_ROW, True), "reference"]]
    for artifact in data["artifacts"]:
        fid = artifact.get("fidelity") or {}
        rows.append([
            artifact["path"], artifact["backend"], artifact["precision"], _size(artifact["size_bytes"]),
            _cosine(fid.get("cosine_mean")), _cosine(fid.get("cosine_min")), _num(fid.get("top10_overlap")),
            *task_cells(artifact.get("tasks", {})), *speed_cells(artifact["path"], False), artifact["status"].upper(),
        ])
    return header, rows


def grid_rows(speed: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    header = ["backend", "batch", "seq len", "calls", "p50 ms", "p95 ms", "p99 ms", "seq/s median [min–max]", "spread",
              "speed-up median [min–max]"]
    rows = []
    for backend in speed.get("backends", []):
        for cell in backend["cells"]:
            key = f"{cell['batch_size']}x{cell['seq_len']}"
            t = cell["throughput"]
            rows.append([
                backend["label"], str(cell["batch_size"]), str(cell["seq_len"]), str(cell["calls"]),
                _num(cell["latency_ms"]["p50"], 2), _num(cell["latency_ms"]["p95"], 2), _num(cell["latency_ms"]["p99"], 2),
                f"{t['median']:.1f} [{t['min']:.1f}–{t['max']:.1f}]", f"{cell['spread'] * 100:.1f}%",
                "1.00× (reference)" if backend["label"] == BASELINE_ROW else _ratio(backend.get("speedup", {}).get(key)),
            ])
    return header, rows


def load_rows(data: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Load time, memory, size and end-to-end encode throughput per backend."""
    header = ["backend", "size", "load s", "load RSS MiB", "peak RSS MiB", "encode texts/s", "encode speed-up"]
    rows = []
    speed = data.get("speed") if "baseline" in data else data
    baseline_rate = None
    entries: list[tuple[str, dict[str, Any], dict[str, Any] | None]] = []
    if "baseline" in data:  # a validation report: the corpus encode of the fidelity pass
        entries.append((BASELINE_ROW, data["baseline"], data["baseline"].get("corpus_encode")))
        entries += [(a["path"], a, a.get("corpus_encode")) for a in data["artifacts"] if a.get("load_seconds") is not None]
    else:  # a bench report: the repeated end-to-end encode
        entries += [(b["label"], b, b.get("encode")) for b in (speed or {}).get("backends", [])]
    for label, item, encode in entries:
        memory = item.get("memory") or {}
        rate = encode["texts_per_second"]["median"] if encode else None
        if label == BASELINE_ROW:
            baseline_rate = rate
        ratio = "-" if not (rate and baseline_rate) else f"{rate / baseline_rate:.2f}×"
        rows.append([
            label, _size(item.get("size_bytes")), _num(item.get("load_seconds"), 2), _num(memory.get("load_mib"), 0),
            _num(memory.get("peak_mib"), 0), _num(rate, 1), ratio,
        ])
    return header, rows


# --------------------------------------------------------------------------- markdown


def _md_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    def clean(cell: str) -> str:
        return str(cell).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(clean(h) for h in header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(clean(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def render_validation_markdown(data: dict[str, Any]) -> str:
    model = data["model"]
    out = [
        f"# Validation: {model.get('reference')}",
        "",
        f"Folder `{data['folder']}`, {data['created']}, bge-export {data['toolkit_version']}. "
        f"Baseline: `{model.get('baseline')}` in PyTorch fp32. Corpus: {data['corpus']['source']} "
        f"({data['corpus']['texts']} texts).",
        "",
        _md_table(*summary_rows(data)),
        "",
    ]
    for artifact in data["artifacts"]:
        out.append(f"## {artifact['path']}: {artifact['status'].upper()}")
        out.append("")
        out.append(artifact["reason"])
        out.append("")
        if artifact.get("checks"):
            out.append(_md_table(["check", "value", "threshold", "result"], [
                [c["name"], f"{c['value']:.6g}", f"{'≥' if c['kind'] == 'min' else '≤'} {c['threshold']:g}",
                 "pass" if c["passed"] else "FAIL"] for c in artifact["checks"]]))
            out.append("")
        fid = artifact.get("fidelity")
        if fid:
            out.append(f"Cosine mean {fid['cosine_mean']:.6f}, min {fid['cosine_min']:.6f}, 1st percentile "
                       f"{fid['cosine_p1']:.6f}; top-10 neighbour overlap {fid['top10_overlap']:.4f}; max norm error "
                       f"{fid['norm_max_error']:.2e}. Texts that drifted most:")
            out.append("")
            out += [f"{i}. cos {w['cosine']:.6f}, text #{w['index']}: {w['text']}" for i, w in enumerate(fid["worst_texts"], 1)]
            out.append("")
    if data.get("speed"):
        out += ["## Speed", "", _md_table(*grid_rows(data["speed"])), ""]
        out += [f"Timing: {data['speed']['timing_method']}.", ""]
    out += ["## Load, memory, end-to-end encode", "", _md_table(*load_rows(data)), ""]
    if data.get("speed"):
        out += [f"Memory: {data['speed']['memory_method']}. End-to-end encode: the fidelity pass over the corpus "
                "(tokenization included, one timing).", ""]
    out += _notes_and_machine_md(data)
    return "\n".join(out)


def render_bench_markdown(data: dict[str, Any]) -> str:
    out = [
        f"# Speed: {data['folder']}",
        "",
        f"{data['created']}, bge-export {data['toolkit_version']}; baseline `{data['baseline_model']}` in PyTorch fp32; "
        f"{data['settings']['threads']} threads for every backend; {data['settings']['repeats']} interleaved repeats.",
        "",
        _md_table(*grid_rows(data)),
        "",
        _md_table(*load_rows(data)),
        "",
        f"Timing: {data['timing_method']}. Memory: {data['memory_method']}.",
        "",
    ]
    for path, reason in data.get("unverified", {}).items():
        out.append(f"- {path}: not measured, {reason}")
    out += _notes_and_machine_md(data)
    return "\n".join(out)


def _notes_and_machine_md(data: dict[str, Any]) -> list[str]:
    out = []
    notes = data.get("notes") or []
    if notes:
        out += ["## Notes", ""] + [f"- {note}" for note in notes] + [""]
    machine = data.get("machine") or {}
    if machine:
        out += ["## Machine", "", ", ".join(f"{k}: {v}" for k, v in machine.items()), ""]
    return out


# --------------------------------------------------------------------------- plots


def _png(figure: Any) -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _figure() -> tuple[Any, Any]:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7.0, 4.2))
    axes = figure.add_subplot(1, 1, 1)
    axes.grid(True, which="both", alpha=0.3)
    return figure, axes


def plot_cosine_distribution(data: dict[str, Any]) -> str | None:
    """ECDF of 1 - cosine per artifact on a log axis: fp32 sits near 1e-7, int8 near 1e-2; one glance tells."""
    artifacts = [a for a in data["artifacts"] if a.get("fidelity")]
    if not artifacts:
        return None
    figure, axes = _figure()
    for index, artifact in enumerate(artifacts):
        color = f"C{index % 10}"
        gaps = [max(g, 1e-10) for g in artifact["fidelity"]["one_minus_cosine_quantiles"]]
        percent = [100 * i / (len(gaps) - 1) for i in range(len(gaps))]
        axes.step(gaps, percent, where="post", color=color, label=f"{artifact['path']} ({artifact['status']})")
        threshold = (artifact.get("thresholds") or {}).get("min_cosine")
        if threshold is not None and threshold < 1:
            axes.axvline(1 - threshold, color=color, linestyle="--", linewidth=1, alpha=0.7)
    axes.set_xscale("log")
    axes.set_xlabel("1 − cosine to the PyTorch fp32 baseline (log; dashed: allowed worst)")
    axes.set_ylabel("% of texts at or below")
    axes.set_title(f"Cosine to baseline, {data['corpus']['texts']} texts")
    axes.legend(fontsize=8, loc="lower right")
    return _png(figure)


def plot_latency_vs_batch(speed: dict[str, Any] | None) -> str | None:
    head = headline_cells(speed)
    if head is None:
        return None
    seq = head[2]
    figure, axes = _figure()
    for index, backend in enumerate(speed["backends"]):
        cells = sorted((c for c in backend["cells"] if c["seq_len"] == seq), key=lambda c: c["batch_size"])
        axes.plot([c["batch_size"] for c in cells], [c["latency_ms"]["p50"] for c in cells], marker="o",
                  color=f"C{index % 10}", label=backend["label"])
    axes.set_xscale("log", base=2)
    axes.set_yscale("log")
    axes.set_xlabel("batch size")
    axes.set_ylabel("latency per call, p50 (ms)")
    axes.set_title(f"Latency vs batch size ({seq} tokens per sequence)")
    axes.legend(fontsize=8)
    return _png(figure)


def plot_throughput_vs_seq_len(speed: dict[str, Any] | None) -> str | None:
    head = headline_cells(speed)
    if head is None:
        return None
    batch = head[1]
    figure, axes = _figure()
    for index, backend in enumerate(speed["backends"]):
        cells = sorted((c for c in backend["cells"] if c["batch_size"] == batch), key=lambda c: c["seq_len"])
        medians = [c["throughput"]["median"] for c in cells]
        errors = [[m - c["throughput"]["min"] for m, c in zip(medians, cells)],
                  [c["throughput"]["max"] - m for m, c in zip(medians, cells)]]
        axes.errorbar([c["seq_len"] for c in cells], medians, yerr=errors, marker="o", capsize=3,
                      color=f"C{index % 10}", label=backend["label"])
    axes.set_xscale("log", base=2)
    axes.set_yscale("log")
    axes.set_xlabel("sequence length (tokens)")
    axes.set_ylabel("throughput (sequences/s; bars: min–max of repeats)")
    axes.set_title(f"Throughput vs sequence length (batch {batch})")
    axes.legend(fontsize=8)
    return _png(figure)


# --------------------------------------------------------------------------- html

_CSS = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1200px;
       color: #1d1d1f; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 1.6em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f0f2f5; }
.PASS { background: #d8f3dc; font-weight: bold; } .FAIL { background: #ffd6d6; font-weight: bold; }
.UNVERIFIED { background: #fff3bf; font-weight: bold; } .reference { color: #666; }
.meta { color: #555; } figure { margin: 1em 0; } img { max-width: 100%; border: 1px solid #eee; }
code { background: #f4f4f4; padding: 1px 4px; }
"""


def _html_table(header: Sequence[str], rows: Iterable[Sequence[str]], status_column: int | None = None) -> str:
    parts = ["<table>", "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>"]
    for row in rows:
        cells = []
        for index, cell in enumerate(row):
            css = f' class="{html.escape(cell)}"' if index == status_column else ""
            cells.append(f"<td{css}>{html.escape(str(cell))}</td>")
        parts.append("<tr>" + "".join(cells) + "</tr>")
    parts.append("</table>")
    return "\n".join(parts)


def _html_figure(png: str | None, caption: str) -> str:
    if png is None:
        return ""
    return (f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{png}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def render_validation_html(data: dict[str, Any]) -> str:
    """One file, nothing fetched: styles inline, plots as base64 PNG data URIs."""
    model = data["model"]
    header, rows = summary_rows(data)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Validation: {html.escape(str(model.get('reference')))}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>Validation: {html.escape(str(model.get('reference')))}</h1>",
        f"<p class=\"meta\">Folder <code>{html.escape(data['folder'])}</code>, {html.escape(data['created'])}, "
        f"bge-export {html.escape(data['toolkit_version'])}. Baseline <code>{html.escape(str(model.get('baseline')))}</code> "
        f"in PyTorch fp32. Corpus: {html.escape(data['corpus']['source'])} ({data['corpus']['texts']} texts).</p>",
        _html_table(header, rows, status_column=len(header) - 1),
        "<h2>Fidelity</h2>",
        _html_figure(plot_cosine_distribution(data), "Distribution of 1 − cosine to the baseline per artifact"),
    ]
    for artifact in data["artifacts"]:
        status = artifact["status"].upper()
        parts.append(f'<h3>{html.escape(artifact["path"])}: <span class="{status}">{status}</span></h3>')
        parts.append(f"<p>{html.escape(artifact['reason'])}</p>")
        if artifact.get("checks"):
            parts.append(_html_table(["check", "value", "threshold", "result"], [
                [c["name"], f"{c['value']:.6g}", f"{'≥' if c['kind'] == 'min' else '≤'} {c['threshold']:g}",
                 "PASS" if c["passed"] else "FAIL"] for c in artifact["checks"]], status_column=3))
        fid = artifact.get("fidelity")
        if fid:
            parts.append("<p>Texts that drifted most:</p><ol>")
            parts += [f"<li>cos {w['cosine']:.6f}, text #{w['index']}: {html.escape(w['text'])}</li>" for w in fid["worst_texts"]]
            parts.append("</ol>")
    speed = data.get("speed")
    if speed:
        parts += [
            "<h2>Speed</h2>",
            _html_figure(plot_latency_vs_batch(speed), "Latency per call vs batch size"),
            _html_figure(plot_throughput_vs_seq_len(speed), "Throughput vs sequence length"),
            _html_table(*grid_rows(speed)),
            f"<p class=\"meta\">Timing: {html.escape(speed['timing_method'])}.</p>",
        ]
    parts += ["<h2>Load, memory, end-to-end encode</h2>", _html_table(*load_rows(data))]
    if speed:
        parts.append(f"<p class=\"meta\">Memory: {html.escape(speed['memory_method'])}.</p>")
    if data.get("notes"):
        parts += ["<h2>Notes</h2><ul>"] + [f"<li>{html.escape(n)}</li>" for n in data["notes"]] + ["</ul>"]
    machine = data.get("machine") or {}
    parts += ["<h2>Machine</h2>", _html_table(["", ""], [[k, str(v)] for k, v in machine.items()])]
    parts.append("</body></html>")
    return "\n".join(p for p in parts if p)
