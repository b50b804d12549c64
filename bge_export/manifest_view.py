"""Human-readable view of a manifest (what `bge-export inspect` prints)."""

from __future__ import annotations

from bge_export.manifest import Manifest


def format_manifest(manifest: Manifest) -> str:
    spec = manifest.spec
    model = manifest.model
    lines = [
        f"model       {model['reference']}" + (f" @ {model['revision']}" if model.get("revision") else ""),
        f"weights     {model['weights_format']} sha256 {model['weights_sha256'][:16]}…",
        f"encoder     {spec.architecture} ({spec.model_type}), hidden {spec.hidden_size}",
        f"pooling     {spec.pooling} ({spec.pooling_source}), normalize={spec.normalize}, dim {spec.embedding_dim}",
        f"max length  {spec.max_seq_length} tokens; inputs {', '.join(spec.input_names)}",
    ]
    if spec.prompts:
        lines.append("prompts     " + "; ".join(f"{k}: {v!r}" for k, v in spec.prompts.items() if v))
    lines.append(f"made by     bge-export {manifest.toolkit_version} at {manifest.created}")
    lines.append("")
    header = ("artifact", "precision", "size MB", "opset", "cos mean", "cos min", "status")
    rows = []
    for entry in manifest.artifacts:
        check = entry.validation.get("builtin_check", {})
        rows.append((
            entry.path, entry.precision, f"{entry.size_bytes / 1e6:.1f}", str(entry.opset or "-"),
            f"{check['cosine_mean']:.6f}" if check else "-", f"{check['cosine_min']:.6f}" if check else "-",
            entry.status,
        ))
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines.append("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    lines.append("  ".join("-" * w for w in widths))
    for row in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths)))
    lines.append("")
    for entry in manifest.artifacts:
        lines.append(f"{entry.path}: {entry.status} - {entry.status_reason}")
        io = ", ".join(f"{t.name} {t.dtype}{t.shape}" for t in entry.inputs)
        out = ", ".join(f"{t.name} {t.dtype}{t.shape}" for t in entry.outputs)
        lines.append(f"  inputs: {io}")
        lines.append(f"  outputs: {out}")
    return "\n".join(lines)
