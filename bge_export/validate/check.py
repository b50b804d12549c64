"""The quick check every export runs: baseline vs artifact cosine on the built-in texts, with a per-precision floor."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np

from bge_export.runtime.base import Encoder
from bge_export.validate.metrics import cosine_per_row, summarize_cosine

# Floors every artifact is held to against the PyTorch fp32 baseline, by precision class: the minimum cosine
# over texts (also the built-in export check), and, for `validate`, the mean cosine and top-10 neighbour overlap.
MIN_COSINE = {"fp32": 0.9999, "fp16": 0.999, "int8": 0.98}
MIN_MEAN_COSINE = {"fp32": 0.99999, "fp16": 0.9995, "int8": 0.995}
MIN_TOP10_OVERLAP = {"fp32": 0.99, "fp16": 0.98, "int8": 0.95}


def precision_class(precision: str) -> str:
    """int8-dynamic, int8-static ... -> int8; fp16 -> fp16; anything else is held to fp32's standard."""
    for name in ("int8", "fp16"):
        if precision.startswith(name):
            return name
    return "fp32"


@dataclass(frozen=True)
class CheckResult:
    texts: int
    cosine_mean: float
    cosine_min: float
    cosine_p1: float
    min_cosine_required: float
    worst_texts: list[str]
    backend: str

    @property
    def passed(self) -> bool:
        return self.cosine_min >= self.min_cosine_required

    @property
    def reason(self) -> str:
        verdict = ">=" if self.passed else "<"
        return (
            f"min cosine {self.cosine_min:.6f} {verdict} {self.min_cosine_required} to the PyTorch fp32 baseline "
            f"on {self.texts} built-in texts"
        )

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}


def min_cosine_for(precision: str) -> float:
    return MIN_COSINE[precision_class(precision)]


def check_against_baseline(
    baseline_embeddings: np.ndarray,
    artifact: Encoder,
    texts: Sequence[str],
    min_cosine: float,
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
        min_cosine_required=min_cosine,
        worst_texts=[texts[i][:120] for i in summary.worst_indices],
        backend=backend_label or artifact.backend,
    )
