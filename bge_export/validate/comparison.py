"""Comparing an artifact with the baseline: fidelity numbers, the floors that apply, and the verdict.

The floors come from bge_export/quality/floors.py's one table; the user's overrides (--min-cosine and friends) are
applied per precision class here, and judge() turns numbers and floors into pass / fail with the reason.
"""

from __future__ import annotations

from typing import Mapping, Protocol, Sequence

import numpy as np

from bge_export.folder.records import RecordedFloors
from bge_export.quality.floors import Floors, floors_for, precision_class, with_overrides
from bge_export.quality.metrics import (
    cosine_per_row,
    cross_topk_neighbour_overlap,
    summarize_cosine,
    topk_neighbour_overlap,
)
from bge_export.validate.results import Check, Fidelity, WorstText

NEIGHBOURS = 10
WORST_TEXTS = 5
CURVE_POINTS = 101  # quantiles of 1 - cosine kept for the distribution plot


class FloorOverrides(Protocol):
    """What this run overrides, per precision class or "*": the part of validate's ValidateOptions read here
    (a protocol, so comparison.py does not import the harness that imports it)."""

    @property
    def min_cosine(self) -> Mapping[str, float]: ...
    @property
    def min_mean_cosine(self) -> Mapping[str, float]: ...
    @property
    def min_overlap(self) -> Mapping[str, float]: ...
    @property
    def min_cross_overlap(self) -> Mapping[str, float]: ...


def thresholds_for(precision: str, options: FloorOverrides, recorded: RecordedFloors | None = None) -> Floors:
    """The table's floors for this precision (bge_export/quality/floors.py); an artifact's own floors recorded at
    export (`--min-cosine`) replace them; this run's overrides (per precision class, or "*") win over both."""
    group = precision_class(precision)
    table = with_overrides(floors_for(precision), recorded.values() if recorded is not None else {})

    def pick(overrides: Mapping[str, float]) -> float | None:
        return overrides.get(group, overrides.get("*"))

    return with_overrides(table, {
        "min_cosine": pick(options.min_cosine),
        "min_mean_cosine": pick(options.min_mean_cosine),
        "min_top10_overlap": pick(options.min_overlap),
        "min_cross_top10_overlap": pick(options.min_cross_overlap),
    })


def fidelity(baseline: np.ndarray, embeddings: np.ndarray, texts: Sequence[str]) -> Fidelity:
    finite = np.isfinite(embeddings).all(axis=1)
    safe = np.where(finite[:, None], embeddings, 0.0)  # a NaN row counts as cosine 0, not as NaN
    cosine = cosine_per_row(baseline, safe)
    summary = summarize_cosine(cosine, n_worst=WORST_TEXTS)
    base_norm = np.linalg.norm(baseline.astype(np.float64), axis=1)
    norm_error = np.abs(np.linalg.norm(safe.astype(np.float64), axis=1) - base_norm) / np.where(base_norm > 0, base_norm, 1.0)
    gaps = np.clip(1.0 - cosine, 0.0, 2.0)
    return Fidelity(
        texts=len(texts),
        cosine_mean=summary.mean,
        cosine_min=summary.min,
        cosine_p1=summary.p1,
        top10_overlap=topk_neighbour_overlap(baseline, safe, k=NEIGHBOURS),
        cross_top10_overlap=cross_topk_neighbour_overlap(baseline, safe, k=NEIGHBOURS),
        norm_max_error=float(norm_error.max()),
        non_finite=int((~finite).sum()),
        worst_texts=[WorstText(i, float(cosine[i]), _clip_text(texts[i])) for i in summary.worst_indices],
        one_minus_cosine_quantiles=[float(v) for v in np.percentile(gaps, np.linspace(0, 100, CURVE_POINTS))],
    )


def judge(result: Fidelity, thresholds: Floors) -> tuple[str, str, list[Check]]:
    checks = [
        Check("min cosine", result.cosine_min, thresholds.min_cosine, "min"),
        Check("mean cosine", result.cosine_mean, thresholds.min_mean_cosine, "min"),
        Check(f"top-{NEIGHBOURS} overlap", result.top10_overlap, thresholds.min_top10_overlap, "min"),
        Check(f"cross top-{NEIGHBOURS} overlap", result.cross_top10_overlap, thresholds.min_cross_top10_overlap, "min"),
        Check("norm error", result.norm_max_error, thresholds.max_norm_error, "max"),
        Check("non-finite embeddings", float(result.non_finite), 0.0, "max"),
    ]
    failed = [check for check in checks if not check.passed]
    where = f"to the PyTorch fp32 baseline on {result.texts} texts"
    if failed:
        worst = "; ".join(f'"{w.text[:60]}" ({w.cosine:.4f})' for w in result.worst_texts[:3])
        return "fail", f"{'; '.join(c.describe() for c in failed)} {where}; worst texts: {worst}", checks
    return "pass", f"{'; '.join(c.describe() for c in checks[:4])} {where}", checks


def _clip_text(text: str, limit: int = 200) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
