"""Comparing an artifact with the baseline: fidelity numbers, the floors that apply, and the verdict.

The floors come from validate/check.py's one table; the user's overrides (--min-cosine and friends) are
applied per precision class here, and judge() turns numbers and floors into pass / fail with the reason.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from bge_export.errors import InputError
from bge_export.quality.floors import PRECISION_CLASSES, Floors, floors_for, precision_class
from bge_export.quality.metrics import (
    cosine_per_row,
    cross_topk_neighbour_overlap,
    summarize_cosine,
    topk_neighbour_overlap,
)
from bge_export.validate.results import Check, Fidelity, WorstText

if TYPE_CHECKING:
    from bge_export.validate.harness import ValidateOptions

NEIGHBOURS = 10
WORST_TEXTS = 5
CURVE_POINTS = 101  # quantiles of 1 - cosine kept for the distribution plot


def parse_threshold_overrides(values: Sequence[str], option: str) -> dict[str, float]:
    """CLI form: '0.97' (every artifact) or 'int8=0.97' (one precision class); repeatable."""
    overrides: dict[str, float] = {}
    for value in values:
        name, _, number = value.rpartition("=")
        name = name.strip() or "*"
        if name not in ("*", *PRECISION_CLASSES):
            raise InputError(f"{option} '{value}': the precision before '=' must be one of {', '.join(PRECISION_CLASSES)}")
        try:
            overrides[name] = float(number)
        except ValueError:
            raise InputError(f"{option} '{value}' is not a number; give e.g. 0.97 or int8=0.97") from None
        if not 0.0 <= overrides[name] <= 1.0:
            raise InputError(f"{option} '{value}' must lie between 0 and 1")
    return overrides


def thresholds_for(precision: str, options: "ValidateOptions", recorded: Mapping[str, Any] | None = None) -> Floors:
    """The table's floors for this precision (validate/check.py); an artifact's own floors recorded at export
    (`--min-cosine`) replace them; this run's overrides win over both."""
    group = precision_class(precision)
    table = floors_for(precision)
    if recorded:
        table = replace(table, **{k: float(v) for k, v in recorded.items() if k in table.to_dict()})

    def pick(overrides: Mapping[str, float], default: float) -> float:
        return overrides.get(group, overrides.get("*", default))

    return replace(
        table,
        min_cosine=pick(options.min_cosine, table.min_cosine),
        min_mean_cosine=pick(options.min_mean_cosine, table.min_mean_cosine),
        min_top10_overlap=pick(options.min_overlap, table.min_top10_overlap),
        min_cross_top10_overlap=pick(options.min_cross_overlap, table.min_cross_top10_overlap),
    )


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
