"""The one table of fidelity floors, the one rule for overriding it, the baseline's embeddings computed once, and
the quick check every export runs against them.

Every verdict in the toolkit (the export's built-in check, the INT8 search's default bound, `validate`,
`inspect`, the README) reads `FLOORS` through `floors_for`; a user's override goes through `floors_for`'s
`min_cosine` (an export's --min-cosine) or `with_overrides` (floors recorded at export, validate's flags);
nothing else holds a threshold.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from bge_export.progress import Progress
from bge_export.quality.metrics import cosine_per_row, summarize_cosine
from bge_export.runtime.encoder import Encoder


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


# min_cross_top10_overlap, measured with `validate` on all-MiniLM-L6-v2 (AMD EPYC, AVX-512 VNNI, no AMX). On the
# report part of the built-in corpus (1,058 texts): fp32 and fp32-optimized 1.0000, fp16 0.9998, our INT8
# (avx512_vnni) 0.9760 (its plain top-10 0.9673). On all 1,328 texts, copies that miss other floors: onnxruntime's
# plain quantize_dynamic per-channel 0.9434, per-tensor 0.8774, QUInt8 0.9139 (our INT8 0.9795 there); fp32 with
# 5% / 20% noise on three MatMul weights 0.9921 / 0.9703. The mixed search moves only the query side, so it sits
# above the plain top-10 (1 - cross ~ 0.65-0.75 x (1 - top-10) in every row above), and each floor sits above its
# top-10 floor: fp32 0.995 and fp16 0.99 (faithful copies measure >= 0.9998), int8 0.96 (ours clears it by 0.016;
# a margin of 0.005 is 50 of 10,580 neighbours); every broken copy above fails.
FLOORS: dict[str, Floors] = {
    "fp32": Floors(min_cosine=0.9999, min_mean_cosine=0.99999, min_top10_overlap=0.99,
                   min_cross_top10_overlap=0.995, max_norm_error=1e-4),
    "fp16": Floors(min_cosine=0.999, min_mean_cosine=0.9995, min_top10_overlap=0.98,
                   min_cross_top10_overlap=0.99, max_norm_error=1e-2),
    "int8": Floors(min_cosine=0.99, min_mean_cosine=0.996, min_top10_overlap=0.95,
                   min_cross_top10_overlap=0.96, max_norm_error=1e-2),
}
PRECISION_CLASSES = tuple(FLOORS)


@dataclass(frozen=True)
class RerankFloors:
    """What a cross-encoder artifact must keep against the PyTorch fp32 baseline (CrossEncoder.predict)."""

    max_score_error: float  # |score - baseline score|, largest over pairs
    min_kendall_tau: float  # each query's candidate order (quality/rerank.py kendall_tau), the worst query
    min_top10_overlap: float  # each query's 10 best candidates shared with the baseline's, mean over queries

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


# A faithful fp32 graph differs from PyTorch by float rounding (onnxruntime against torch: about 1e-7 on sigmoid
# scores) and orders every query's candidates as it does. fp16 and INT8 are the bounds a reranker's user can rely
# on (a score within 1e-2 / 5e-2 of the model's, so a relevance threshold keeps its meaning; the order of every
# pair of candidates the model separates by more than twice that; the top-10 kept), checked against
# benchmarks/reranker_proxy.py (all-MiniLM-L6-v2's real encoder under a seeded classifier, not a trained reranker)
# on 20 queries x 100 candidates of the built-in corpus's report part: FP16 files 2.8e-3-2.9e-3 (3.5e-3 with every
# fp16 tensor rounded; a 24-layer reranker's fp16 error grows with depth, hence 1e-2 and not 5e-3), tau 1.0; INT8
# files 0.11-0.12, which misses (docs/benchmarks.md, "Rerankers"). Score errors are on the activated scores.
RERANK_FLOORS: dict[str, RerankFloors] = {
    "fp32": RerankFloors(max_score_error=1e-4, min_kendall_tau=0.99, min_top10_overlap=0.99),
    "fp16": RerankFloors(max_score_error=1e-2, min_kendall_tau=0.98, min_top10_overlap=0.98),
    "int8": RerankFloors(max_score_error=5e-2, min_kendall_tau=0.90, min_top10_overlap=0.90),
}


def rerank_floors_for(precision: str) -> RerankFloors:
    """The rerank table's floors for this precision (its class, as for embeddings)."""
    return RERANK_FLOORS[precision_class(precision)]


def precision_class(precision: str) -> str:
    """int8-dynamic, int8-static, palettized weights ... -> int8; fp16 -> fp16; anything else is held to fp32's
    standard. Weight-compressed packages (palettize4/6/8: k-means lookup tables) lose as much as INT8 or more, so
    they are held to INT8's floors: whether they meet them is what their validation reports."""
    if precision.startswith(("int8", "palettize")):
        return "int8"
    if precision.startswith("fp16"):
        return "fp16"
    return "fp32"


def floors_for(precision: str, min_cosine: float | None = None) -> Floors:
    """The table's floors for this precision. An export's --min-cosine (`min_cosine`) is the bound of the INT8
    search, so for INT8 it replaces both cosine floors (search and verdict alike); other precisions keep theirs."""
    floors = FLOORS[precision_class(precision)]
    if min_cosine is not None and precision_class(precision) == "int8":
        floors = replace(floors, min_cosine=min_cosine, min_mean_cosine=min_cosine)
    return floors


def with_overrides(floors: Floors, values: Mapping[str, float | None]) -> Floors:
    """`floors` with the named floors replaced (names of `Floors`' fields; None or another name: kept)."""
    names = {f.name for f in fields(Floors)}
    return replace(floors, **{k: float(v) for k, v in values.items() if k in names and v is not None})


class BaselineEmbeddings:
    """The PyTorch fp32 baseline's embeddings of named text sets (the verdict texts, the INT8 search's selection
    texts), each computed once; the baseline itself is made on first use, so a run that needs none loads none.
    A cross-encoder's baseline gives the scores of named pair sets instead (CrossEncoder.predict's)."""

    def __init__(self, make_encoder: Callable[[], Encoder], progress: Progress, batch_size: int = 16) -> None:
        self._make_encoder = make_encoder
        self._encoder: Encoder | None = None
        self._progress = progress
        self._batch_size = batch_size
        self._embeddings: dict[str, np.ndarray] = {}

    def of(self, name: str, texts: Sequence[Any]) -> np.ndarray:
        """The baseline's embeddings of `texts`, known as `name` (one name, one text set)."""
        if name not in self._embeddings:
            if self._encoder is None:
                self._encoder = self._make_encoder()
            if self._encoder.spec.is_reranker:
                from bge_export.runtime.reranker import Reranker

                self._progress.step(f"scoring {len(texts)} built-in {name} pairs with the PyTorch fp32 baseline")
                self._embeddings[name] = Reranker(self._encoder).predict(list(texts), batch_size=self._batch_size)
            else:
                self._progress.step(f"encoding {len(texts)} built-in {name} texts with the PyTorch fp32 baseline")
                self._embeddings[name] = self._encoder.encode(list(texts), batch_size=self._batch_size)
        return self._embeddings[name]

    def release(self) -> None:
        """Drop the baseline encoder (and the model it holds) once every text set it must encode is encoded: the
        INT8 searches that follow then run without the PyTorch weights in memory."""
        self._encoder = None
        self._make_encoder = _released


def _released() -> Encoder:
    raise RuntimeError("the PyTorch baseline was released; encode every text set before calling release()")


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
    return judge_embeddings(baseline_embeddings, embeddings, texts, floors, backend_label or artifact.backend)


def judge_embeddings(baseline_embeddings: np.ndarray, embeddings: np.ndarray, texts: Sequence[str], floors: Floors,
                     backend: str) -> CheckResult:
    """The cosine floors on embeddings already computed (a caller that also needs them, e.g. for top-10)."""
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
        backend=backend,
    )
