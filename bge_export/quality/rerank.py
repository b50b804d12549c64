"""The built-in check of a cross-encoder artifact: its scores against the PyTorch fp32 baseline's on the same
query-candidate pairs, by score error and by how each query's candidates are ranked (Kendall tau)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from bge_export.model.corpus import builtin_texts
from bge_export.quality.floors import RerankFloors, rerank_floors_for
from bge_export.runtime.reranker import Reranker


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


def builtin_rerank_pairs(part: str = "verdict", queries: int = 8,
                         candidates: int = 12) -> tuple[list[tuple[str, str]], list[int]]:
    """Pairs from one part of the built-in corpus (the export's verdict, the INT8 search's selection): each of
    `queries` texts against the same `candidates` other texts (a reranker's job: order one query's candidates).
    Returns the pairs and each pair's query index."""
    texts = builtin_texts(part, queries + candidates)
    pairs = [(texts[q], texts[queries + c]) for q in range(queries) for c in range(candidates)]
    return pairs, [q for q in range(queries) for _ in range(candidates)]


SEARCH_QUERIES, SEARCH_CANDIDATES = 12, 40  # the INT8 search's selection pairs: 480, top-10 of 40 per query


def calibration_pairs(texts: Sequence[str]) -> list[tuple[str, str]]:
    """Calibration text as a cross-encoder reads it: consecutive texts paired, so activation ranges see both
    segments (token types included)."""
    texts = list(texts)
    return [(texts[i], texts[(i + 1) % len(texts)]) for i in range(len(texts))] if len(texts) > 1 else []


def calibration_items(spec: Any, texts: Sequence[str]) -> list[Any]:
    """Calibration text as the model reads it: the texts, or a cross-encoder's pairs of them."""
    return calibration_pairs(texts) if spec.is_reranker else list(texts)


def rerank_record(result: "RerankCheck", backend: str, floors: RerankFloors) -> dict[str, Any]:
    """A check's numbers as a manifest's CheckRecord keeps them."""
    return {"passed": result.passed, "reason": result.reason, "pairs": result.pairs, "texts": result.pairs,
            "max_score_error": result.max_score_error, "kendall_tau_mean": result.kendall_tau_mean,
            "kendall_tau_min": result.kendall_tau_min, "top10_overlap": result.top10_overlap,
            "backend": backend, "floors": floors.to_dict()}


def kendall_tau(reference: np.ndarray, scores: np.ndarray, tie: float = 0.0) -> float:
    """Kendall's tau over the candidate pairs the reference orders: (concordant - discordant) / those pairs; a pair
    the artifact ties counts as neither. Reference scores `tie` or less apart count as unordered: an artifact
    allowed to move every score by half that promises nothing about their order. 1.0: the same order (also when
    the reference orders no pair); without ties this is Kendall's tau."""
    difference = reference[:, None] - reference[None, :]
    upper = np.triu_indices(len(reference), 1)
    ordered = np.abs(difference[upper]) > tie
    if not ordered.any():
        return 1.0
    agreement = np.sign(difference[upper]) * np.sign(scores[:, None] - scores[None, :])[upper]
    return float(agreement[ordered].mean())


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
    tie = 2 * floors.max_score_error  # each score may move by the floor: closer candidates may swap
    taus = [kendall_tau(ranked_by[groups == q], ranked[groups == q], tie) for q in queries]
    tau_min, tau_mean = (min(taus), float(np.mean(taus))) if taus else (1.0, 1.0)
    overlaps = [_top10_shared(ranked_by[groups == q], ranked[groups == q]) for q in queries
                if int((groups == q).sum()) > 10]
    top10 = float(np.mean(overlaps)) if overlaps else None
    passed = (error <= floors.max_score_error and tau_min >= floors.min_kendall_tau
              and (top10 is None or top10 >= floors.min_top10_overlap))
    reason = (f"max |score error| {error:.2e} {'<=' if error <= floors.max_score_error else '>'} "
              f"{floors.max_score_error:g}, worst query's Kendall tau (ties within {tie:g}) {tau_min:.4f} "
              f"{'>=' if tau_min >= floors.min_kendall_tau else '<'} {floors.min_kendall_tau} (mean {tau_mean:.4f})"
              + (f", top-10 of each query's candidates {top10:.4f} {'>=' if top10 >= floors.min_top10_overlap else '<'} "
                 f"{floors.min_top10_overlap}" if top10 is not None else "")
              + f" to the PyTorch fp32 baseline on {len(scores)} {what} of {len(taus)} queries")
    return RerankCheck(passed, reason, len(scores), len(taus), error, tau_mean, tau_min, top10)


def _top10_shared(reference: np.ndarray, scores: np.ndarray) -> float:
    """The share of the baseline's 10 best candidates among the artifact's 10 best."""
    best = set(np.argsort(-reference, kind="stable")[:10].tolist())
    return len(best & set(np.argsort(-scores, kind="stable")[:10].tolist())) / 10.0


def score_check(baseline: np.ndarray, encoder: Any, precision: str, backend: str) -> dict[str, Any]:
    """A target's built-in check of a cross-encoder artifact: `encoder` (any runtime's Encoder over the artifact)
    scores the verdict's built-in pairs, judged against the baseline's scores of them with `precision`'s rerank
    floors; returns the record a manifest entry keeps (`passed` and `reason` included)."""
    pairs, query_of_pair = builtin_rerank_pairs()
    floors = rerank_floors_for(precision)
    result = check_scores(baseline, Reranker(encoder).predict(pairs, batch_size=16), query_of_pair, floors)
    return rerank_record(result, backend, floors)


def verdict_pairs() -> list[tuple[str, str]]:
    """The pairs every target's built-in check scores (their baseline is computed once per run)."""
    return builtin_rerank_pairs()[0]
