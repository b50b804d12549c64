"""The tables every report shows, built from the report's dictionary: markdown, HTML and the CLI share them.

Speed-ups are quoted only when the run judged its own speed trustworthy (validate/machine.py); otherwise the
cells say "untrusted" and a warning with the measured reasons goes above every speed table.
"""

from __future__ import annotations

import math
from typing import Any

from bge_export.folder.speed_evidence import HEADLINE_SEQ_LEN, headline_cells  # noqa: F401  (the recommendation's cell)

BASELINE_ROW = "baseline (PyTorch fp32)"  # the reference row's label; validate writes its data under it

CROSS_COLUMN = "top-10 mixed"  # artifact queries searched in baseline (fp32) documents
MIXED_NDCG_COLUMN = "nDCG@10 mixed (art. q→fp32 docs / fp32 q→art. docs)"


def speed_trusted(speed: dict[str, Any] | None) -> bool:
    """False when the run found the machine too loaded (or its repeats too far apart) to quote speed-ups.

    Reports written before the check existed carry no verdict and count as trusted."""
    return bool(((speed or {}).get("trust") or {}).get("trustworthy", True))


def speed_warning(speed: dict[str, Any] | None) -> str | None:
    """One paragraph for the top of every speed table, or None when the speed-ups can be quoted."""
    if not speed or speed_trusted(speed):
        return None
    reasons = "; ".join(speed["trust"].get("reasons") or ["the measurement was noisy"])
    return (f"WARNING: speed-ups not trustworthy: {reasons}. They are not results; the grid below is raw data. "
            "Re-run on a quiet machine, or with --threads at most the cores other processes leave free.")


def report_rows(data: dict[str, Any]) -> list[dict[str, Any]]:
    """Every row of a validation report in display order: each artifact's verdict row, then its runs on other
    runtimes (`runtime_rows`: "path [openvino-bf16]"); runs whose artifact has no verdict row in this run last."""
    extra = list(data.get("runtime_rows") or [])
    rows: list[dict[str, Any]] = []
    for artifact in data["artifacts"]:
        rows.append(artifact)
        rows += [r for r in extra if r["path"] == artifact["path"]]
    shown = {a["path"] for a in data["artifacts"]}
    return rows + [r for r in extra if r["path"] not in shown]


def row_label(row: dict[str, Any]) -> str:
    return row.get("label") or row["path"]


def runtime_details_line(details: dict[str, Any]) -> str:
    """'Runtime: openvino-bf16, OpenVINO 2026.4.1, compute precision bf16 (read back from the compiled model),
    performance hint LATENCY, threads 2, ...': what the runtime really compiled, under a row that ran on it."""
    parts = [f"{details.get('runtime', 'runtime')}"]
    if details.get("openvino"):
        parts.append(f"OpenVINO {details['openvino']}")
    if details.get("precision"):
        parts.append(f"compute precision {details['precision']} (read back from the compiled model)")
    parts += [f"{key.replace('_', ' ')} {details[key]}" for key in ("performance_hint", "threads", "streams",
                                                                   "dynamic_quantization_group_size") if key in details]
    return "Runtime: " + ", ".join(parts) + "."


def fastest_pair_lines(data: dict[str, Any]) -> list[str]:
    """When other runtimes ran beside onnxruntime: the fastest passing (artifact, runtime) pair at the headline
    cell, and the fastest on onnxruntime alone, as ratios to the baseline (only from a trustworthy run)."""
    if not data.get("runtime_rows") or not data.get("speed"):
        return []
    speed = data["speed"]
    head = headline_cells(speed)
    if head is None:
        return []
    if not speed_trusted(speed):
        return ["Fastest passing (artifact, runtime) pair: not quoted, the speed measurement is not trustworthy "
                "(see the warning)."]
    _, batch, seq = head
    key = f"{batch}x{seq}"
    ratios = []
    for row in report_rows(data):
        backend = _speed_backend(speed, row_label(row))
        ratio = (backend or {}).get("speedup", {}).get(key)
        if row["status"] == "pass" and ratio:
            ratios.append((ratio["median"], row_label(row), row.get("runtime") or row["backend"], ratio))
    if not ratios:
        return [f"Fastest passing (artifact, runtime) pair: none; no passing run was measured at batch {batch} × {seq} tokens."]
    ratios.sort(key=lambda item: -item[0])
    _, label, runtime, ratio = ratios[0]
    line = (f"Fastest passing (artifact, runtime) pair in this run: `{label}` on {runtime}, {_ratio(ratio)} the PyTorch "
            f"fp32 baseline at batch {batch} × {seq} tokens")
    own = [item for item in ratios if item[2] == "onnxruntime"]
    if own and own[0][1] != label:
        line += f"; fastest on onnxruntime: `{own[0][1]}`, {_ratio(own[0][3])}"
    return [line + ". (The recommendation above ranks onnxruntime runs only.)"]


def machine_line(machine: dict[str, Any] | None) -> str:
    """CPU model, its AMX / VNNI / bf16 flags, threads and runtime versions: what every speed figure depends on."""
    machine = machine or {}
    features = machine.get("cpu_features")
    if features is None:
        flags = "flags unknown"
    else:
        present = [name for name, on in features.items() if on]
        absent = [name for name, on in features.items() if not on]
        flags = (", ".join(present) or "none of the AMX/VNNI/bf16 flags") + (f"; no {', '.join(absent)}" if absent else "")
    versions = ", ".join(f"{name} {machine[name]}" for name in ("onnxruntime", "openvino", "torch") if machine.get(name))
    return (f"Machine: CPU {machine.get('cpu', 'unknown')} ({flags}); {machine.get('threads', '?')} threads on "
            f"{machine.get('cores_available', '?')} available cores" + (f"; {versions}" if versions else "")
            + (f"; bf16: {machine['bf16']}" if machine.get("bf16") else ""))


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


def fmt_num(value: Any, digits: int = 4) -> str:
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
    trusted = speed_trusted(speed)
    header = ["artifact", "backend", "precision", "size", "cos mean", "cos min", "top-10", CROSS_COLUMN]
    header += [{"sts": "STS ρ (Δ)", "retrieval": "nDCG@10 (Δ)"}[task] for task in tasks]
    if "retrieval" in tasks:
        header.append(MIXED_NDCG_COLUMN)
    if head:
        lat_batch, thr_batch, seq = head
        header += [f"p50 ms (b{lat_batch}, {seq} tok)", f"seq/s (b{thr_batch}, {seq} tok)", "speed-up"]
    header += ["status"]

    def task_cells(values: dict[str, Any]) -> list[str]:
        out = []
        for task in tasks:
            metric = "spearman" if task == "sts" else "ndcg@10"
            out.append(fmt_num(values.get(task, {}).get(metric)) + _delta(values.get(task, {}).get(f"delta_{metric}")))
        if "retrieval" in tasks:
            mixed = values.get("retrieval", {}).get("mixed")
            out.append("-" if not mixed else " / ".join(
                fmt_num(mixed[way].get("ndcg@10")) for way in ("artifact_queries_baseline_documents",
                                                             "baseline_queries_artifact_documents")))
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
        if is_baseline:
            ratio = "1.00×"
        elif not trusted:
            ratio = "untrusted"  # never quoted as a result; the raw number stays in the grid under the warning
        else:
            ratio = _ratio(backend.get("speedup", {}).get(f"{thr_batch}x{seq}"))
        return [
            fmt_num(latency["latency_ms"]["p50"], 2) if latency else "-",
            fmt_num(throughput["throughput"]["median"], 1) if throughput else "-",
            ratio,
        ]

    rows = [[BASELINE_ROW, baseline["backend"], "fp32", _size(baseline["size_bytes"]), "1 (reference)", "1 (reference)",
             "1 (reference)", "1 (reference)", *task_cells(baseline.get("tasks", {})), *speed_cells(BASELINE_ROW, True), "reference"]]
    for artifact in report_rows(data):
        fid = artifact.get("fidelity") or {}
        verdict = artifact.get("verdict", True)
        rows.append([
            row_label(artifact), artifact["backend"] if verdict else artifact["runtime"], artifact["precision"],
            _size(artifact["size_bytes"]), _cosine(fid.get("cosine_mean")), _cosine(fid.get("cosine_min")),
            fmt_num(fid.get("top10_overlap")), fmt_num(fid.get("cross_top10_overlap")),
            *task_cells(artifact.get("tasks", {})), *speed_cells(row_label(artifact), False), artifact["status"].upper(),
        ])
    return header, rows


def grid_rows(speed: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    header = ["backend", "batch", "seq len", "calls", "p50 ms", "p95 ms", "p99 ms", "seq/s median [min–max]", "spread",
              "speed-up median [min–max]"]
    rows = []
    mark = "" if speed_trusted(speed) else "untrusted: "
    for backend in speed.get("backends", []):
        for cell in backend["cells"]:
            key = f"{cell['batch_size']}x{cell['seq_len']}"
            t = cell["throughput"]
            rows.append([
                backend["label"], str(cell["batch_size"]), str(cell["seq_len"]), str(cell["calls"]),
                fmt_num(cell["latency_ms"]["p50"], 2), fmt_num(cell["latency_ms"]["p95"], 2), fmt_num(cell["latency_ms"]["p99"], 2),
                f"{t['median']:.1f} [{t['min']:.1f}–{t['max']:.1f}]", f"{cell['spread'] * 100:.1f}%",
                "1.00× (reference)" if backend["label"] == BASELINE_ROW else mark + _ratio(backend.get("speedup", {}).get(key)),
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
        entries += [(row_label(a), a, a.get("corpus_encode")) for a in report_rows(data) if a.get("load_seconds") is not None]
    else:  # a bench report: the repeated end-to-end encode
        entries += [(b["label"], b, b.get("encode")) for b in (speed or {}).get("backends", [])]
    for label, item, encode in entries:
        memory = item.get("memory") or {}
        rate = encode["texts_per_second"]["median"] if encode else None
        if label == BASELINE_ROW:
            baseline_rate = rate
        ratio = "-" if not (rate and baseline_rate) else f"{'' if speed_trusted(speed) else 'untrusted: '}{rate / baseline_rate:.2f}×"
        rows.append([
            label, _size(item.get("size_bytes")), fmt_num(item.get("load_seconds"), 2), fmt_num(memory.get("load_mib"), 0),
            fmt_num(memory.get("peak_mib"), 0), fmt_num(rate, 1), ratio,
        ])
    return header, rows


MIXED_NOTE = ("top-10 mixed: the corpus searched with artifact queries in documents embedded by the baseline "
              "(an fp32 index whose query side was upgraded first), overlap with the baseline's own search.")


def mixed_retrieval_rows(data: dict[str, Any], artifact: dict[str, Any]) -> tuple[list[str], list[list[str]]] | None:
    """nDCG@10 / recall@100 of the four query x document pairings, when BEIR data was given."""
    retrieval = (artifact.get("tasks") or {}).get("retrieval") or {}
    mixed = retrieval.get("mixed")
    baseline = (data["baseline"].get("tasks") or {}).get("retrieval") or {}
    if not mixed:
        return None
    pairings = [("baseline", "baseline", baseline), ("artifact", "artifact", retrieval),
                ("artifact", "baseline", mixed["artifact_queries_baseline_documents"]),
                ("baseline", "artifact", mixed["baseline_queries_artifact_documents"])]
    rows = [[queries, documents, fmt_num(values.get("ndcg@10")), fmt_num(values.get("recall@100"))]
            for queries, documents, values in pairings]
    return ["queries by", "documents by", "nDCG@10", "recall@100"], rows
