"""The built-in check of a cross-encoder artifact: its scores against the PyTorch fp32 baseline's on the same
query-candidate pairs, by score error and by how each query's candidates are ranked (Kendall tau-b)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from bge_export.model.corpus import builtin_texts
from bge_export.quality.floors import RerankFloors


@dataclass(frozen=True)
class RerankCheck:
    passed: bool
    reason: str
    pairs: int
    queries: int
    max_score_error: float
    kendall_tau_mean: float
    kendall_tau_min: float
    top10_overlap: float | None  # mean over queries; None with 10 candidates or fewer a query


def builtin_rerank_pairs(queries: int = 8, candidates: int = 12) -> tuple[list[tuple[str, str]], list[int]]:
    """Pairs from the built-in corpus's verdict part: each of `queries` texts against the same `candidates` other
    texts (a reranker's job: order one query's candidates). Returns the pairs and each pair's query index."""
    texts = builtin_texts("verdict", queries + candidates)
    pairs = [(texts[q], texts[queries + c]) for q in range(queries) for c in range(candidates)]
    return pairs, [q for q in range(queries) for _ in range(candidates)]


def kendall_tau_b(a: np.ndarray, b: np.ndarray) -> float:
    """Kendall's tau-b of two score lists (1.0: the same order; ties in both count as agreement)."""
    da = np.sign(a[:, None] - a[None, :])
    db = np.sign(b[:, None] - b[None, :])
    upper = np.triu_indices(len(a), 1)
    da, db = da[upper], db[upper]
    concordant_minus_discordant = float((da * db).sum())
    ties_a, ties_b = float((da != 0).sum()), float((db != 0).sum())
    if ties_a == 0 or ties_b == 0:
        return 1.0 if ties_a == ties_b else 0.0
    return concordant_minus_discordant / float(np.sqrt(ties_a * ties_b))


def check_scores(baseline: np.ndarray, scores: np.ndarray, query_of_pair: Sequence[int], floors: RerankFloors,
                 what: str = "built-in pairs") -> RerankCheck:
    """Judge `scores` against the baseline's: every pair's error and every query's candidate order."""
    baseline, scores = np.asarray(baseline, np.float64), np.asarray(scores, np.float64)
    error = float(np.max(np.abs(scores - baseline))) if scores.size else 0.0
    if not np.isfinite(scores).all():
        error = float("inf")
    groups = np.asarray(query_of_pair)
    ranked_by = baseline if baseline.ndim == 1 else baseline[:, -1]  # several labels: the last (e.g. "relevant")
    ranked = scores if scores.ndim == 1 else scores[:, -1]
    queries = np.unique(groups)
    taus = [kendall_tau_b(ranked_by[groups == q], ranked[groups == q]) for q in queries]
    tau_min, tau_mean = (min(taus), float(np.mean(taus))) if taus else (1.0, 1.0)
    overlaps = [_top10_shared(ranked_by[groups == q], ranked[groups == q]) for q in queries
                if int((groups == q).sum()) > 10]
    top10 = float(np.mean(overlaps)) if overlaps else None
    passed = (error <= floors.max_score_error and tau_min >= floors.min_kendall_tau
              and (top10 is None or top10 >= floors.min_top10_overlap))
    reason = (f"max |score error| {error:.2e} {'<=' if error <= floors.max_score_error else '>'} "
              f"{floors.max_score_error:g}, worst query's Kendall tau {tau_min:.4f} "
              f"{'>=' if tau_min >= floors.min_kendall_tau else '<'} {floors.min_kendall_tau} (mean {tau_mean:.4f})"
              + (f", top-10 of each query's candidates {top10:.4f} {'>=' if top10 >= floors.min_top10_overlap else '<'} "
                 f"{floors.min_top10_overlap}" if top10 is not None else "")
              + f" to the PyTorch fp32 baseline on {len(scores)} {what} of {len(taus)} queries")
    return RerankCheck(passed, reason, len(scores), len(taus), error, tau_mean, tau_min, top10)


def _top10_shared(reference: np.ndarray, scores: np.ndarray) -> float:
    """The share of the baseline's 10 best candidates among the artifact's 10 best."""
    best = set(np.argsort(-reference, kind="stable")[:10].tolist())
    return len(best & set(np.argsort(-scores, kind="stable")[:10].tolist())) / 10.0
