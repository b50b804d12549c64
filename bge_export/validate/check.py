"""The one table of fidelity floors, and the quick check every export runs against it.

Every verdict in the toolkit (the export's built-in check, the INT8 search's default bound, `validate`,
`inspect`, the README) reads `FLOORS`; nothing else holds a threshold.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np

from bge_export.runtime.base import Encoder
from bge_export.validate.metrics import cosine_per_row, summarize_cosine


@dataclass(frozen=True)
class Floors:
    """What an artifact must keep against the PyTorch fp32 baseline, per text set it is judged on."""

    min_cosine: float  # every text
    min_mean_cosine: float  # mean over texts
    min_top10_overlap: float  # the corpus searched with itself: top-10 neighbours shared with the baseline's
    min_cross_top10_overlap: float  # artifact queries against baseline documents (mixed-precision index)
    max_norm_error: float  # |norm - baseline norm| / baseline norm, largest over texts

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


FLOORS: dict[str, Floors] = {
    "fp32": Floors(min_cosine=0.9999, min_mean_cosine=0.99999, min_top10_overlap=0.99,
                   min_cross_top10_overlap=0.99, max_norm_error=1e-4),
    "fp16": Floors(min_cosine=0.999, min_mean_cosine=0.9995, min_top10_overlap=0.98,
                   min_cross_top10_overlap=0.98, max_norm_error=1e-2),
    "int8": Floors(min_cosine=0.99, min_mean_cosine=0.996, min_top10_overlap=0.95,
                   min_cross_top10_overlap=0.95, max_norm_error=1e-2),
}
PRECISION_CLASSES = tuple(FLOORS)


def precision_class(precision: str) -> str:
    """int8-dynamic, int8-static ... -> int8; fp16 -> fp16; anything else is held to fp32's standard."""
    for name in ("int8", "fp16"):
        if precision.startswith(name):
            return name
    return "fp32"


def floors_for(precision: str) -> Floors:
    return FLOORS[precision_class(precision)]


@dataclass(frozen=True)
class CheckResult:
    texts: int
    cosine_mean: float
    cosine_min: float
    cosine_p1: float
    min_cosine_required: float
    min_mean_cosine_required: float
    worst_texts: list[str]
    backend: str

    @property
    def passed(self) -> bool:
        return self.cosine_min >= self.min_cosine_required and self.cosine_mean >= self.min_mean_cosine_required

    @property
    def reason(self) -> str:
        def rel(value: float, floor: float) -> str:
            return f"{value:.6f} {'>=' if value >= floor else '<'} {floor}"

        return (
            f"min cosine {rel(self.cosine_min, self.min_cosine_required)}, mean "
            f"{rel(self.cosine_mean, self.min_mean_cosine_required)} to the PyTorch fp32 baseline "
            f"on {self.texts} built-in check texts"
        )

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}


def check_against_baseline(
    baseline_embeddings: np.ndarray,
    artifact: Encoder,
    texts: Sequence[str],
    floors: Floors,
    batch_size: int = 16,
    backend_label: str | None = None,
) -> CheckResult:
    embeddings = artifact.encode(texts, batch_size=batch_size)
    cosine = cosine_per_row(baseline_embeddings, embeddings)
    summary = summarize_cosine(cosine, n_worst=3)
    return CheckResult(
        texts=len(texts),
        cosine_mean=float(summary.mean),
        cosine_min=float(summary.min),
        cosine_p1=float(summary.p1),
        min_cosine_required=floors.min_cosine,
        min_mean_cosine_required=floors.min_mean_cosine,
        worst_texts=[texts[i][:120] for i in summary.worst_indices],
        backend=backend_label or artifact.backend,
    )
