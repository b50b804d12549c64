"""Accuracy metrics for comparing an exported model's embeddings with its baseline.

Pure numpy on purpose: validation must run wherever the exported model runs, without scipy,
scikit-learn, pytrec_eval or BEIR. Conventions follow those tools so the numbers are comparable:

* cosine is computed in float64, and a zero vector has cosine 0 with anything (never NaN);
* Spearman is Pearson on fractional ranks (ties get the mean of the ranks they span), as scipy does;
* nDCG@k uses linear gain (the relevance grade) and discount 1/log2(rank + 1) with ranks from 1,
  the ideal DCG taken from the query's own judgements, as trec_eval's ``ndcg_cut`` (and so BEIR) do;
* every top-k list breaks ties in score by the lower row index, so results are reproducible.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "CosineSummary",
    "cosine_per_row",
    "cross_topk_neighbour_overlap",
    "ndcg_at_k",
    "recall_at_k",
    "retrieval_scores",
    "spearman",
    "sts_spearman",
    "summarize_cosine",
    "topk_neighbour_overlap",
]

# Rows of a similarity matrix computed at once; bounds memory at _ROW_CHUNK x n_columns scores
# (256 x 10k float32 = 10 MB). Module-level so tests can shrink it to exercise the chunking.
_ROW_CHUNK = 256


# --------------------------------------------------------------------------- cosine


def _as_2d_float(x: np.ndarray, name: str, dtype: "np.typing.DTypeLike" = np.float64) -> np.ndarray:
    arr: np.ndarray = np.asarray(x, dtype=dtype)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (rows x dims), got shape {arr.shape}")
    return arr


def _unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length; zero rows stay zero (so their cosine with anything is 0)."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    safe = np.where(norms > 0, norms, 1.0)
    return x / safe


def cosine_per_row(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine of row i of ``a`` with row i of ``b``, in float64.

    A zero row (in either input) gives 0, never NaN, so one degenerate embedding cannot poison a
    mean. Values are clipped to [-1, 1] to hide float rounding just above 1.
    """
    a64 = _as_2d_float(a, "a")
    b64 = _as_2d_float(b, "b")
    if a64.shape != b64.shape:
        raise ValueError(f"a and b must have the same shape, got {a64.shape} and {b64.shape}")
    dots = np.einsum("ij,ij->i", a64, b64)
    denom = np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1)
    cos = np.divide(dots, denom, out=np.zeros_like(dots), where=denom > 0)
    return np.clip(cos, -1.0, 1.0)


@dataclass(frozen=True)
class CosineSummary:
    """Mean, minimum and 1st percentile of per-text cosines, plus the rows that agree least."""

    mean: float
    min: float
    p1: float
    worst_indices: list[int]


def summarize_cosine(cos: np.ndarray, n_worst: int = 5) -> CosineSummary:
    """Summarize per-row cosines; ``p1`` uses numpy's default (linear) percentile interpolation.

    ``worst_indices`` are the ``n_worst`` lowest-cosine rows, ascending by cosine (ties: lower
    index first), so a report can show the texts that drifted most.
    """
    c = np.asarray(cos, dtype=np.float64).ravel()
    if c.size == 0:
        raise ValueError("cannot summarize an empty array of cosines")
    if n_worst < 0:
        raise ValueError(f"n_worst must be >= 0, got {n_worst}")
    order = np.argsort(c, kind="stable")
    return CosineSummary(
        mean=float(np.mean(c)),
        min=float(np.min(c)),
        p1=float(np.percentile(c, 1)),
        worst_indices=[int(i) for i in order[:n_worst]],
    )


# --------------------------------------------------------------------------- top-k helpers


def _topk_sorted(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k highest scores per row, best first; equal scores: lower index first.

    argpartition finds the k best in O(n); only when a tie straddles the k-th place (argpartition
    may then pick any of the tied items) is the row redone exactly, so the result is deterministic.
    """
    n_rows, n_cols = scores.shape
    if k >= n_cols:
        return np.lexsort((np.broadcast_to(np.arange(n_cols), scores.shape), -scores), axis=-1)
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    top_scores = np.take_along_axis(scores, top, axis=1)
    kth = top_scores.min(axis=1)
    n_at_least_kth = (scores >= kth[:, None]).sum(axis=1)
    for r in np.flatnonzero(n_at_least_kth != k):
        cand = np.flatnonzero(scores[r] >= kth[r])
        order = np.lexsort((cand, -scores[r, cand]))[:k]
        top[r] = cand[order]
        top_scores[r] = scores[r, top[r]]
    order = np.lexsort((top, -top_scores), axis=-1)
    return np.take_along_axis(top, order, axis=1)


def topk_neighbour_overlap(reference: np.ndarray, candidate: np.ndarray, k: int = 10) -> float:
    """Mean over rows of |top-k neighbours in reference ∩ top-k in candidate| / k.

    Each corpus is searched with itself by cosine similarity, excluding the query row itself;
    with fewer than k + 1 rows, k becomes n - 1. Measures whether an artifact preserves the
    neighbourhood structure that search depends on, beyond per-row cosine.
    """
    ref = _unit_rows(_as_2d_float(reference, "reference"))
    cand = _unit_rows(_as_2d_float(candidate, "candidate"))
    return _neighbour_overlap(ref, cand, cand, k)


def cross_topk_neighbour_overlap(reference: np.ndarray, queries: np.ndarray, k: int = 10) -> float:
    """Top-k overlap of a mixed-precision search against the reference's own search.

    An index built with the reference model (documents = ``reference`` rows) is searched with
    queries embedded by another model (``queries``, row i the same text as reference row i),
    excluding the text itself; compared with the reference searched with itself. This is what an
    existing fp32 index sees when only its query side is upgraded to an artifact.
    """
    ref = _unit_rows(_as_2d_float(reference, "reference"))
    query = _unit_rows(_as_2d_float(queries, "queries"))
    return _neighbour_overlap(ref, query, ref, k)


def _neighbour_overlap(reference: np.ndarray, queries: np.ndarray, documents: np.ndarray, k: int) -> float:
    """Mean top-k overlap of (queries searched in documents) against (reference searched in itself)."""
    n = reference.shape[0]
    for name, other in (("candidate", queries), ("candidate", documents)):
        if other.shape[0] != n:
            raise ValueError(f"reference and {name} must have the same number of rows, got {n} and {other.shape[0]}")
    if n < 2:
        raise ValueError(f"need at least 2 rows to compare neighbours, got {n}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    k = min(k, n - 1)

    total = 0.0
    for start in range(0, n, _ROW_CHUNK):
        stop = min(start + _ROW_CHUNK, n)
        rows = np.arange(start, stop)
        neighbours = []
        for query, docs in ((reference, reference), (queries, documents)):
            sims = query[start:stop] @ docs.T
            sims[rows - start, rows] = -np.inf  # a row is not its own neighbour
            neighbours.append(_topk_sorted(sims, k))
        for nr, nc in zip(*neighbours):
            total += np.intersect1d(nr, nc, assume_unique=True).size / k
    return total / n


# --------------------------------------------------------------------------- rank correlation


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks; a run of equal values all get the mean of the ranks the run spans."""
    order = np.argsort(x, kind="stable")
    sorted_x = x[order]
    # start index of each run of equal values in the sorted array, plus the end sentinel
    boundaries = np.concatenate(([0], np.flatnonzero(sorted_x[1:] != sorted_x[:-1]) + 1, [x.size]))
    starts, ends = boundaries[:-1], boundaries[1:]
    run_rank = (starts + 1 + ends) / 2.0  # mean of ranks starts+1 .. ends
    ranks = np.empty(x.size, dtype=np.float64)
    ranks[order] = np.repeat(run_rank, ends - starts)
    return ranks


def spearman(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> float:
    """Spearman rank correlation: Pearson on fractional (tie-averaged) ranks, as scipy computes it.

    Raises ValueError on a length mismatch, fewer than 2 items or NaN input; returns NaN when
    either side is constant (the correlation is undefined there).
    """
    xa = np.asarray(x, dtype=np.float64).ravel()
    ya = np.asarray(y, dtype=np.float64).ravel()
    if xa.size != ya.size:
        raise ValueError(f"x and y must have the same length, got {xa.size} and {ya.size}")
    if xa.size < 2:
        raise ValueError(f"need at least 2 items for a correlation, got {xa.size}")
    if np.isnan(xa).any() or np.isnan(ya).any():
        raise ValueError("spearman got NaN input; ranks of NaN are undefined")
    rx = _average_ranks(xa)
    ry = _average_ranks(ya)
    dx = rx - rx.mean()
    dy = ry - ry.mean()
    denom = math.sqrt(float(dx @ dx) * float(dy @ dy))
    if denom == 0.0:
        return float("nan")
    return float(np.clip(float(dx @ dy) / denom, -1.0, 1.0))


def sts_spearman(emb1: np.ndarray, emb2: np.ndarray, gold: Sequence[float]) -> float:
    """STS score: Spearman of the row-wise cosines of the two embedding sets against gold scores."""
    return spearman(cosine_per_row(emb1, emb2), gold)


# --------------------------------------------------------------------------- retrieval


def _dedup(ranked_ids: Sequence[str]) -> list[str]:
    """First occurrence of each id, so a repeated document cannot be credited twice."""
    return list(dict.fromkeys(ranked_ids))


def ndcg_at_k(ranked_ids: Sequence[str], qrels: Mapping[str, int], k: int = 10) -> float:
    """nDCG@k with linear gain as trec_eval's ``ndcg_cut`` (BEIR, pytrec_eval) computes it.

    DCG = sum over ranks r = 1..k of grade / log2(r + 1); unjudged documents and grades <= 0
    gain 0; the ideal DCG sorts the query's own positive grades. Returns 0.0 for a query with no
    positive judgement; callers normally skip such queries rather than average in the 0.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    dcg = 0.0
    for rank, doc_id in enumerate(_dedup(ranked_ids)[:k], start=1):
        gain = qrels.get(doc_id, 0)
        if gain > 0:
            dcg += gain / math.log2(rank + 1)
    ideal = sorted((g for g in qrels.values() if g > 0), reverse=True)[:k]
    idcg = sum(g / math.log2(rank + 1) for rank, g in enumerate(ideal, start=1))
    if idcg == 0.0:
        return 0.0
    return dcg / idcg


def recall_at_k(ranked_ids: Sequence[str], qrels: Mapping[str, int], k: int = 100) -> float:
    """Fraction of the positively judged (grade > 0) documents found in the top k; 0.0 if none."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    relevant = {d for d, g in qrels.items() if g > 0}
    if not relevant:
        return 0.0
    found = relevant.intersection(_dedup(ranked_ids)[:k])
    return len(found) / len(relevant)


def retrieval_scores(
    query_emb: np.ndarray,
    query_ids: Sequence[str],
    doc_emb: np.ndarray,
    doc_ids: Sequence[str],
    qrels: Mapping[str, Mapping[str, int]],
    k_ndcg: int = 10,
    k_recall: int = 100,
) -> dict[str, float]:
    """Exact dense retrieval by dot product of (already normalized) embeddings, then mean metrics.

    Only queries that are in ``query_ids`` and have at least one positive judgement are scored
    (as pytrec_eval scores only queries present in both run and qrels). Queries are searched in
    chunks with argpartition, so ~10k docs x 1k queries stay within a few MB of scores.
    Returns ``{"ndcg@<k_ndcg>": mean, "recall@<k_recall>": mean, "queries": n}``; the means are
    NaN when no query qualifies.
    """
    if k_ndcg < 1 or k_recall < 1:
        raise ValueError(f"k_ndcg and k_recall must be >= 1, got {k_ndcg} and {k_recall}")
    q = np.asarray(query_emb)
    d = np.asarray(doc_emb)
    dtype = np.result_type(q.dtype, d.dtype, np.float32)  # float32 stays float32; ints promote
    q = _as_2d_float(q, "query_emb", dtype)
    d = _as_2d_float(d, "doc_emb", dtype)
    if q.shape[0] != len(query_ids):
        raise ValueError(f"query_emb has {q.shape[0]} rows but {len(query_ids)} query ids")
    if d.shape[0] != len(doc_ids):
        raise ValueError(f"doc_emb has {d.shape[0]} rows but {len(doc_ids)} doc ids")
    if q.shape[1] != d.shape[1]:
        raise ValueError(f"query and doc embeddings differ in width: {q.shape[1]} vs {d.shape[1]}")

    keep = [
        i for i, qid in enumerate(query_ids) if any(g > 0 for g in qrels.get(qid, {}).values())
    ]
    out: dict[str, float] = {f"ndcg@{k_ndcg}": float("nan"), f"recall@{k_recall}": float("nan"), "queries": 0}
    if not keep or d.shape[0] == 0:
        return out

    k = min(max(k_ndcg, k_recall), d.shape[0])
    doc_ids_arr = list(doc_ids)
    ndcgs: list[float] = []
    recalls: list[float] = []
    for start in range(0, len(keep), _ROW_CHUNK):
        rows = keep[start : start + _ROW_CHUNK]
        top = _topk_sorted(q[rows] @ d.T, k)
        for qi, doc_idx in zip(rows, top):
            ranked = [doc_ids_arr[j] for j in doc_idx]
            judged = qrels[query_ids[qi]]
            ndcgs.append(ndcg_at_k(ranked, judged, k_ndcg))
            recalls.append(recall_at_k(ranked, judged, k_recall))
    out[f"ndcg@{k_ndcg}"] = float(np.mean(ndcgs))
    out[f"recall@{k_recall}"] = float(np.mean(recalls))
    out["queries"] = len(keep)
    return out
