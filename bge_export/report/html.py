"""report.html: one self-contained page (styles inline, plots as base64 PNG), rendered from the report's dictionary.

Plots use matplotlib's object API on the Agg canvas (no pyplot, no global backend switch), imported only
when a page is rendered.
"""

from __future__ import annotations

import base64
import html
import io
from typing import Any, Callable, Iterable, Sequence

from bge_export.folder.target_folder import recorded_title
from bge_export.report import tables
from bge_export.report.recommendation import render_html as render_deploy_html  # "Which file to deploy"

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
    artifacts = [a for a in tables.report_rows(data) if a.get("fidelity")]
    if not artifacts:
        return None
    figure, axes = _figure()
    for index, artifact in enumerate(artifacts):
        color = f"C{index % 10}"
        gaps = [max(g, 1e-10) for g in artifact["fidelity"]["one_minus_cosine_quantiles"]]
        percent = [100 * i / (len(gaps) - 1) for i in range(len(gaps))]
        label = f"{tables.row_label(artifact)} ({artifact['status']})"
        axes.step(gaps, percent, where="post", color=color, label=label)
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
    """p50 latency per call against batch size, at the headline sequence length: one line per backend."""
    def draw(axes: Any, cells: list[dict[str, Any]], color: str, label: str) -> None:
        axes.plot([c["batch_size"] for c in cells], [c["latency_ms"]["p50"] for c in cells], marker="o",
                  color=color, label=label)

    return _plot_headline_slice(speed, "batch_size", draw, "batch size", "latency per call, p50 (ms)",
                                "Latency vs batch size ({seq_len} tokens per sequence)")


def plot_throughput_vs_seq_len(speed: dict[str, Any] | None) -> str | None:
    """Median throughput against sequence length, at the headline batch size; bars span the repeats."""
    def draw(axes: Any, cells: list[dict[str, Any]], color: str, label: str) -> None:
        medians = [c["throughput"]["median"] for c in cells]
        errors = [[m - c["throughput"]["min"] for m, c in zip(medians, cells)],
                  [c["throughput"]["max"] - m for m, c in zip(medians, cells)]]
        axes.errorbar([c["seq_len"] for c in cells], medians, yerr=errors, marker="o", capsize=3,
                      color=color, label=label)

    return _plot_headline_slice(speed, "seq_len", draw, "sequence length (tokens)",
                                "throughput (sequences/s; bars: min–max of repeats)",
                                "Throughput vs sequence length (batch {batch_size})")


def _plot_headline_slice(speed: dict[str, Any] | None, across: str,
                         draw: Callable[[Any, list[dict[str, Any]], str, str], None],
                         xlabel: str, ylabel: str, title: str) -> str | None:
    """The speed grid's line through the headline cell along `across` ("batch_size" or "seq_len"; the other
    setting held at the headline's), one curve per backend drawn by `draw`, on log-log axes; None without one."""
    head = tables.headline_cells(speed)
    if head is None or speed is None:  # (no headline without speed)
        return None
    headline = {"batch_size": head[1], "seq_len": head[2]}
    held = "seq_len" if across == "batch_size" else "batch_size"
    figure, axes = _figure()
    for index, backend in enumerate(speed["backends"]):
        cells = sorted((c for c in backend["cells"] if c[held] == headline[held]), key=lambda c: c[across])
        draw(axes, cells, f"C{index % 10}", backend["label"])
    axes.set_xscale("log", base=2)
    axes.set_yscale("log")
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.set_title(title.format(**headline))
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
.UNVERIFIED { background: #fff3bf; font-weight: bold; } [class="N/A"] { background: #eceff3; } .reference { color: #666; }
.meta { color: #555; } figure { margin: 1em 0; } img { max-width: 100%; border: 1px solid #eee; }
code { background: #f4f4f4; padding: 1px 4px; }
.warning { background: #ffd6d6; border: 2px solid #c00; padding: 0.6em 1em; font-weight: bold; }
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


def _html_warning(text: str | None) -> str:
    return "" if not text else f'<p class="warning">{html.escape(text)}</p>'


def _html_figure(png: str | None, caption: str) -> str:
    if png is None:
        return ""
    return (f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{png}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def render_validation_html(data: dict[str, Any]) -> str:
    """One file, nothing fetched: styles inline, plots as base64 PNG data URIs."""
    model = data["model"]
    header, rows = tables.summary_rows(data)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Validation: {html.escape(recorded_title(model))}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>Validation: {html.escape(recorded_title(model))}</h1>",
        f"<p class=\"meta\">Folder <code>{html.escape(data['folder'])}</code>, {html.escape(data['created'])}, "
        f"bge-export {html.escape(data['toolkit_version'])}. Baseline <code>{html.escape(str(model.get('baseline')))}</code> "
        f"in PyTorch fp32. Corpus: {html.escape(data['corpus']['source'])} ({data['corpus']['texts']} texts).</p>",
        _html_warning(tables.speed_warning(data.get("speed"))),
        render_deploy_html(data.get("recommended")),  # [recommend]
        "".join(f"<p>{html.escape(line)}</p>" for line in tables.fastest_pair_lines(data)),
        _html_table(header, rows, status_column=len(header) - 1),
        f"<p class=\"meta\">{html.escape(tables.MIXED_NOTE)}</p>",
        f"<p class=\"meta\">{html.escape(tables.machine_line(data.get('machine')))}</p>" if data.get("speed") else "",
        "<h2>Fidelity</h2>",
        _html_figure(plot_cosine_distribution(data), "Distribution of 1 − cosine to the baseline per artifact"),
    ]
    for artifact in tables.report_rows(data):
        status = artifact["status"].upper()
        parts.append(f'<h3>{html.escape(tables.row_label(artifact))}: <span class="{status}">{status}</span></h3>')
        parts.append(f"<p>{html.escape(artifact['reason'])}</p>")
        if artifact.get("runtime_details"):
            details = tables.runtime_details_line(artifact["runtime_details"])
            parts.append(f"<p class=\"meta\">{html.escape(details)}</p>")
        if artifact.get("checks"):
            parts.append(_html_table(["check", "value", "threshold", "result"], [
                [c["name"], f"{c['value']:.6g}", f"{'≥' if c['kind'] == 'min' else '≤'} {c['threshold']:g}",
                 "PASS" if c["passed"] else "FAIL"] for c in artifact["checks"]], status_column=3))
        fid = artifact.get("fidelity")
        if fid:
            parts.append(f"<p>Top-10 overlap {tables.fmt_num(fid.get('top10_overlap'))}; mixed precision (artifact "
                         f"queries, baseline documents) {tables.fmt_num(fid.get('cross_top10_overlap'))}.</p>")
            mixed = tables.mixed_retrieval_rows(data, artifact)
            if mixed:
                parts += ["<p>Retrieval, mixed precision:</p>", _html_table(*mixed)]
            parts.append("<p>Texts that drifted most:</p><ol>")
            parts += [f"<li>cos {w['cosine']:.6f}, text #{w['index']}: {html.escape(w['text'])}</li>" for w in fid["worst_texts"]]
            parts.append("</ol>")
    speed = data.get("speed")
    if speed:
        parts += [
            "<h2>Speed</h2>",
            _html_warning(tables.speed_warning(speed)),
            f"<p class=\"meta\">{html.escape(tables.machine_line(data.get('machine')))}</p>",
            _html_figure(plot_latency_vs_batch(speed), "Latency per call vs batch size"),
            _html_figure(plot_throughput_vs_seq_len(speed), "Throughput vs sequence length"),
            _html_table(*tables.grid_rows(speed)),
            f"<p class=\"meta\">Timing: {html.escape(speed['timing_method'])}.</p>",
        ]
    parts += ["<h2>Load, memory, end-to-end encode</h2>", _html_table(*tables.load_rows(data))]
    if speed:
        parts.append(f"<p class=\"meta\">Memory: {html.escape(speed['memory_method'])}.</p>")
    if data.get("notes"):
        parts += ["<h2>Notes</h2><ul>"] + [f"<li>{html.escape(n)}</li>" for n in data["notes"]] + ["</ul>"]
    machine = data.get("machine") or {}
    parts += ["<h2>Machine</h2>", _html_table(["", ""], [[k, str(v)] for k, v in machine.items()])]
    parts.append("</body></html>")
    return "\n".join(p for p in parts if p)
