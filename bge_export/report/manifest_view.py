"""Human-readable view of a manifest (what `bge-export inspect` prints), and its JSON form (`inspect --json`).

First the deploy block (which file to use per runtime, and why); then, per artifact, its status with the
numbers of the check that decided it: validate's (on its corpus, e.g. 1,328 texts) when validate set the
status, else the export's built-in check (96 texts), each labelled with its text count and the floors it
was judged against. The 96-text numbers are never shown next to validate's verdict.
"""

from __future__ import annotations

from typing import Any

from bge_export.folder.manifest import ArtifactEntry, Manifest
from bge_export.folder.reasons import describe_floors
from bge_export.folder.recommend import recommend, status_evidence
from bge_export.folder.target_folder import recorded_title
from bge_export.report.recommendation import render_text


def recommendation_of(manifest: Manifest) -> tuple[dict[str, Any], str]:
    """The stored recommendation, or one computed now (by kind) for a manifest written before it was stored."""
    if manifest.recommended:
        return manifest.recommended, "stored in manifest.json"
    return recommend(manifest), "computed now by kind: this manifest.json stores no recommendation"


def size_text(entry: ArtifactEntry) -> str:
    """Megabytes, or 'not built' for an entry whose file does not exist yet (prepared for another host)."""
    return "not built" if not entry.sha256 and not entry.size_bytes else f"{entry.size_bytes / 1e6:.1f}"


def number_text(value: Any, digits: int) -> str:
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) else "-"


def format_manifest(manifest: Manifest) -> str:
    spec = manifest.spec
    model = manifest.model
    recommended, origin = recommendation_of(manifest)
    lines = [f"deploy ({origin})", *render_text(recommended), ""]
    lines += [
        f"model       {recorded_title(model)}" + (f" @ {model['revision']}" if model.get("revision") else ""),
        f"weights     {model['weights_format']} sha256 {model['weights_sha256'][:16]}…",
        f"encoder     {spec.architecture} ({spec.model_type}), hidden {spec.hidden_size}",
        (f"task        cross-encoder (reranker): {spec.embedding_dim} label(s), scores through {spec.score_activation}"
         if spec.is_reranker else
         f"pooling     {spec.pooling} ({spec.pooling_source}), normalize={spec.normalize}, dim {spec.embedding_dim}"),
        f"max length  {spec.max_seq_length} tokens; inputs {', '.join(spec.input_names)}",
    ]
    if spec.prompts:
        lines.append("prompts     " + "; ".join(f"{k}: {v!r}" for k, v in spec.prompts.items() if v))
    lines.append(f"made by     bge-export {manifest.toolkit_version} at {manifest.created}")
    lines.append("")
    scored = spec.is_reranker  # a cross-encoder's numbers: score error and candidate order
    unit = "pairs" if scored else "texts"
    header = ("artifact", "precision", "size MB", "opset", "status", "judged by",
              *(("max score err", "tau min") if scored else ("cos mean", "cos min")), "top-10")
    rows = []
    evidence = {entry.path: status_evidence(entry, manifest.created) for entry in manifest.artifacts}
    for entry in manifest.artifacts:
        ev = evidence[entry.path]
        judged = f"{ev['label']}, {ev.get('texts', '?')} {unit}" if ev["source"] else "-"
        error = ev.get("max_score_error")
        numbers = ((f"{error:.2e}" if isinstance(error, float) else "-", number_text(ev.get("kendall_tau_min"), 4))
                   if scored else (number_text(ev.get("cosine_mean"), 6), number_text(ev.get("cosine_min"), 6)))
        rows.append((entry.path, entry.precision, size_text(entry), str(entry.opset or "-"), entry.status, judged,
                     *numbers, number_text(ev.get("top10_overlap"), 3)))
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines.append("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    lines.append("  ".join("-" * w for w in widths))
    for row in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths)))
    lines.append("")
    for entry in manifest.artifacts:
        ev = evidence[entry.path]
        lines.append(f"{entry.path}: {entry.status} - {entry.status_reason}")
        if ev["source"]:
            where = f" ({ev['corpus']})" if ev.get("corpus") else ""
            when = f" at {ev['when']}" if ev.get("when") else ""
            lines.append(f"  judged by {ev['label']} on {ev.get('texts', '?')} {unit}{where}{when}")
            lines.append(f"  floors: {describe_floors(ev.get('floors'))} ({ev['floors_source']})")
        else:
            lines.append("  judged by: no recorded check matches this status (see the reason above)")
        io = ", ".join(f"{t.name} {t.dtype}{t.shape}" for t in entry.inputs)
        out = ", ".join(f"{t.name} {t.dtype}{t.shape}" for t in entry.outputs)
        lines.append(f"  inputs: {io}")
        lines.append(f"  outputs: {out}")
        if entry.cost:
            lines.append(f"  cost: {'; '.join(step.describe() for step in entry.cost)}")
    return "\n".join(lines)


def inspect_dict(manifest: Manifest) -> dict[str, Any]:
    """`inspect --json`: the manifest, its recommendation (computed by kind if none is stored) and, per
    artifact, `judged_by`: the check that decided its status, with its numbers, text count and floors."""
    data = manifest.to_dict()
    recommended, origin = recommendation_of(manifest)
    data["recommended"] = recommended
    data["recommended_origin"] = origin
    for item, entry in zip(data["artifacts"], manifest.artifacts):
        item["judged_by"] = status_evidence(entry, manifest.created)
    return data
