"""Reports rendered from the report's JSON form only: report.json, report.md and a self-contained report.html.

Rendering from the dictionary (not from live objects) means a report can be re-rendered from an old
report.json, and that the three files can never disagree. This module writes the files and renders the markdown;
tables.py builds the tables every format shares, html.py the page and its plots.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable, Sequence

from bge_export.files import write_atomic
from bge_export.folder.staging import check_writable_output
from bge_export.folder.target_folder import recorded_title
from bge_export.report import tables
from bge_export.report.html import render_validation_html
from bge_export.report.recommendation import render_markdown as render_deploy_markdown  # "Which file to deploy"

# --------------------------------------------------------------------------- writing


def write_validation_report(data: dict[str, Any], directory: Path, stem: str = "report") -> list[Path]:
    """report.json, report.md, report.html in `directory`; each written atomically."""
    directory.mkdir(parents=True, exist_ok=True)
    return [
        write_atomic(directory / f"{stem}.json", dumps(data) + "\n"),
        write_atomic(directory / f"{stem}.md", render_validation_markdown(data)),
        write_atomic(directory / f"{stem}.html", render_validation_html(data)),
    ]


def write_bench_report(data: dict[str, Any], directory: Path, stem: str = "bench") -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    return [
        write_atomic(directory / f"{stem}.json", dumps(data) + "\n"),
        write_atomic(directory / f"{stem}.md", render_bench_markdown(data)),
    ]


def check_writable(folder: Path, hint: str) -> None:
    """Refuse before minutes of work, not after: the folder the reports (and manifest) are written into
    (bge_export/folder/staging.py check_writable_output, the one check)."""
    check_writable_output(folder, hint, replaced=False)


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
        f"# Validation: {recorded_title(model)}",
        "",
        f"Folder `{data['folder']}`, {data['created']}, bge-export {data['toolkit_version']}. "
        f"Baseline: `{model.get('baseline')}` in PyTorch fp32. Corpus: {data['corpus']['source']} "
        f"({data['corpus']['texts']} texts).",
        "",
    ]
    warning = tables.speed_warning(data.get("speed"))
    if warning:
        out += [f"> **{warning}**", ""]
    out += render_deploy_markdown(data.get("recommended"))  # [recommend]
    out += [line for text in tables.fastest_pair_lines(data) for line in (text, "")]
    out += [_md_table(*tables.summary_rows(data)), "", tables.MIXED_NOTE, ""]
    if data.get("speed"):
        out += [tables.machine_line(data.get("machine")), ""]
    for artifact in tables.report_rows(data):
        out.append(f"## {tables.row_label(artifact)}: {artifact['status'].upper()}")
        out.append("")
        out.append(artifact["reason"])
        out.append("")
        if artifact.get("runtime_details"):
            out += [tables.runtime_details_line(artifact["runtime_details"]), ""]
        if artifact.get("checks"):
            out.append(_md_table(["check", "value", "threshold", "result"], [
                [c["name"], f"{c['value']:.6g}", f"{'≥' if c['kind'] == 'min' else '≤'} {c['threshold']:g}",
                 "pass" if c["passed"] else "FAIL"] for c in artifact["checks"]]))
            out.append("")
        fid = artifact.get("fidelity")
        if fid:
            out.append(f"Cosine mean {fid['cosine_mean']:.6f}, min {fid['cosine_min']:.6f}, 1st percentile "
                       f"{fid['cosine_p1']:.6f}; top-10 neighbour overlap {fid['top10_overlap']:.4f}; mixed precision "
                       f"(artifact queries, baseline documents) {tables.fmt_num(fid.get('cross_top10_overlap'))}; "
                       f"max norm error {fid['norm_max_error']:.2e}. Texts that drifted most:")
            out.append("")
            out += [f"{i}. cos {w['cosine']:.6f}, text #{w['index']}: {w['text']}" for i, w in enumerate(fid["worst_texts"], 1)]
            out.append("")
        mixed = tables.mixed_retrieval_rows(data, artifact)
        if mixed:
            out += ["Retrieval, mixed precision:", "", _md_table(*mixed), ""]
    if data.get("speed"):
        out += ["## Speed", ""]
        if warning:
            out += [f"> **{warning}**", ""]
        out += [tables.machine_line(data.get("machine")), "", _md_table(*tables.grid_rows(data["speed"])), ""]
        out += [f"Timing: {data['speed']['timing_method']}.", ""]
    out += ["## Load, memory, end-to-end encode", "", _md_table(*tables.load_rows(data)), ""]
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
        *([f"> **{tables.speed_warning(data)}**", ""] if tables.speed_warning(data) else []),
        tables.machine_line(data.get("machine")),
        "",
        _md_table(*tables.grid_rows(data)),
        "",
        _md_table(*tables.load_rows(data)),
        "",
        f"Timing: {data['timing_method']}. Memory: {data['memory_method']}.",
        "",
    ]
    for path, reason in data.get("unverified", {}).items():
        out.append(f"- {path}: not measured, {reason}")
    for label, reason in (data.get("not_applicable") or {}).items():
        out.append(f"- {label}: not applicable, {reason}")
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


