"""Rows and markdown of benchmarks/compare_peers.py: one speed-and-fidelity table, one fidelity-per-text-set table."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

NAN = float("nan")
FLAGS = ("amx_int8", "amx_bf16", "avx512_vnni", "avx_vnni", "avx512_bf16")


@dataclass
class Row:
    key: str
    variant: str
    runtime: str
    precision: str  # what actually computed: "f32 → f32", "default → bf16", "bf16 weights", ...
    size_mb: float = NAN
    cos_mean: float = NAN  # on all evaluation texts; per text set in by_text_set
    cos_min: float = NAN
    top10: float = NAN  # top-10 neighbour overlap over all evaluation texts
    top10_small: float = NAN  # the same over the first context["small_corpus"] of them: density's effect shows
    p50_ms_b1: float = NAN
    seq_per_s_b32: float = NAN
    vs_pytorch_fp32: float = NAN
    vs_openvino_int8: float = NAN
    vs_peer_int8: float = NAN
    by_text_set: dict[str, dict[str, float]] = field(default_factory=dict)
    note: str = ""


def _num(value: float, spec: str, suffix: str = "") -> str:
    return "—" if value is None or math.isnan(value) else f"{value:{spec}}{suffix}"


def cpu_line(cpu: dict[str, Any]) -> str:
    flags = ", ".join(f"{flag} {'yes' if cpu['flags'].get(flag) else 'no'}" for flag in FLAGS) \
        if cpu.get("flags_known") else "flags unknown"
    openvino = f"OpenVINO {cpu.get('openvino')}"
    if cpu.get("openvino_capabilities"):
        openvino += f" (CPU capabilities {', '.join(cpu['openvino_capabilities'])})"
    return f"CPU: **{cpu['cpu']}** (`{cpu['kind']}`; {flags}); {cpu.get('cores_available')} cores available; {openvino}"


def markdown(rows: list[Row], context: dict[str, Any]) -> str:
    peers = any(r.vs_peer_int8 == r.vs_peer_int8 for r in rows)
    small = context.get("small_corpus")  # None when it is not below the number of texts
    top10 = (f"top-10 @{small} | " if small else "") + f"top-10 @{context['texts']}"
    lines = [
        f"**{context['model']}**: {context['texts']} texts ({context['text_sets_note']}), batch {context['batch']}, "
        f"{context['threads']} threads, one run, fastest of {context['rounds']} rounds (variant order rotating); "
        f"p50 over {context['latency_texts']} single texts. Cosine and top-10 neighbour overlap against PyTorch fp32; "
        + (f"top-10 over the first {small} texts and over all {context['texts']} (more texts, closer neighbours: "
           "density's effect)." if small else f"top-10 over all {context['texts']} texts."),
        "",
        cpu_line(context["cpu"]),
        "",
        f"OpenVINO peers made from {context['openvino_peer_source']}; NNCF INT8 as sentence-transformers' "
        "`export_static_quantized_openvino_model` (NNCF defaults for model_type TRANSFORMER, SmoothQuant included; preset "
        "MIXED, fast bias correction, "
        f"subset {context['nncf'].get('settings', {}).get('subset_size', '—')}), calibrated on "
        f"{context['nncf']['calibration']}.",
        "",
    ]
    header = (f"| variant | runtime | precision (hint → used) | size MB | cos mean / min | {top10} | p50 ms (b=1) | "
              "seq/s (b=32) | × PyTorch fp32 | × OV INT8 (f32) |" + (" × ST INT8 ONNX |" if peers else "") + " note |")
    lines += [header, "|" + "---|" * header.count(" |")]
    for r in rows:
        cells = [r.variant, r.runtime, r.precision or "—", _num(r.size_mb, ".0f"),
                 f"{_num(r.cos_mean, '.4f')} / {_num(r.cos_min, '.4f')}"]
        cells += ([_num(r.top10_small, ".3f")] if small else []) + [
            _num(r.top10, ".3f"), _num(r.p50_ms_b1, ".1f"), _num(r.seq_per_s_b32, ".0f"),
            _num(r.vs_pytorch_fp32, ".2f", "×"), _num(r.vs_openvino_int8, ".2f", "×")]
        if peers:
            cells.append(_num(r.vs_peer_int8, ".2f", "×"))
        lines.append("| " + " | ".join(cells + [r.note]) + " |")
    sets = [name for name in next((r.by_text_set for r in rows if r.by_text_set), {}) if name != "all"]
    if sets:
        lines += ["", "Fidelity per text set (cos mean / min, top-10 overlap within the set):", "",
                  "| variant | runtime | precision | " + " | ".join(
                      f"{name} ({rows[0].by_text_set.get(name, {}).get('texts', '?')}): cos | top-10" for name in sets)
                  + " |", "|" + "---|" * (3 + 2 * len(sets))]
        for r in rows:
            if not r.by_text_set:
                continue
            cells = [r.variant, r.runtime, r.precision]
            for name in sets:
                m = r.by_text_set[name]
                cells += [f"{m['cos_mean']:.4f} / {m['cos_min']:.4f}", f"{m['top10']:.3f}"]
            lines.append("| " + " | ".join(cells) + " |")
    if context.get("skipped"):
        lines += ["", "Left out:"] + [f"- {what}: {why}" for what, why in context["skipped"].items()]
    return "\n".join(lines)
