"""Tests for bge_export.quality.metrics against values worked out by hand (arithmetic in comments)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bge_export.quality import metrics
from bge_export.quality.metrics import (
    CosineSummary,
    cosine_per_row,
    cross_topk_neighbour_overlap,
    ndcg_at_k,
    recall_at_k,
    retrieval_scores,
    spearman,
    sts_spearman,
    summarize_cosine,
    topk_neighbour_overlap,
)

# --------------------------------------------------------------------------- spearman


def test_spearman_with_ties_by_hand():
    # x = [1, 2, 2, 3] -> ranks [1, 2.5, 2.5, 4]   (the two 2s share ranks 2 and 3 -> 2.5)
    # y = [1, 3, 2, 4] -> ranks [1, 3, 2, 4]
    # both rank means are 2.5
    # dx = [-1.5, 0, 0, 1.5]; dy = [-1.5, 0.5, -0.5, 1.5]
    # sum dx*dy = 2.25 + 0 + 0 + 2.25 = 4.5
    # sum dx^2  = 2.25 + 0 + 0 + 2.25 = 4.5
    # sum dy^2  = 2.25 + 0.25 + 0.25 + 2.25 = 5.0
    # rho = 4.5 / sqrt(4.5 * 5.0) = 4.5 / sqrt(22.5) = sqrt(0.9) = 0.9486832980505138
    assert spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(math.sqrt(0.9), abs=1e-12)


def test_spearman_ties_on_both_sides_by_hand():
    # x = [1, 1, 2, 2] -> ranks [1.5, 1.5, 3.5, 3.5]; y = [5, 6, 6, 7] -> ranks [1, 2.5, 2.5, 4]
    # means 2.5; dx = [-1, -1, 1, 1]; dy = [-1.5, 0, 0, 1.5]
    # sum dx*dy = 1.5 + 0 + 0 + 1.5 = 3; sum dx^2 = 4; sum dy^2 = 4.5
    # rho = 3 / sqrt(18) = 0.7071067811865475 (= 1/sqrt(2))
    assert spearman([1, 1, 2, 2], [5, 6, 6, 7]) == pytest.approx(1 / math.sqrt(2), abs=1e-12)


def test_spearman_perfect_and_inverse():
    # monotone (not linear) relation -> ranks identical -> 1; reversed ranks -> -1
    assert spearman([1, 2, 3, 4, 5], [1, 4, 9, 16, 100]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4, 5], [10, 8, 3, 2, -7]) == pytest.approx(-1.0)


def test_spearman_constant_is_nan():
    assert math.isnan(spearman([1, 2, 3], [4, 4, 4]))
    assert math.isnan(spearman([7, 7], [1, 2]))


def test_spearman_bad_input_raises():
    with pytest.raises(ValueError):
        spearman([1, 2, 3], [1, 2])
    with pytest.raises(ValueError):
        spearman([1], [1])
    with pytest.raises(ValueError):
        spearman([], [])


def _brute_force_spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Independent reference: ordinal ranks by double argsort, then tie-averaging per unique value."""

    def ranks(v: np.ndarray) -> np.ndarray:
        ordinal = np.argsort(np.argsort(v, kind="stable"), kind="stable").astype(float) + 1.0
        out = ordinal.copy()
        for value in np.unique(v):
            mask = v == value
            out[mask] = ordinal[mask].mean()
        return out

    return float(np.corrcoef(ranks(x), ranks(y))[0, 1])


@pytest.mark.parametrize("seed", range(5))
def test_spearman_matches_brute_force_with_many_ties(seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 5, size=60).astype(float)
    y = (x + rng.integers(0, 4, size=60)).astype(float)  # correlated, heavily tied
    assert spearman(x, y) == pytest.approx(_brute_force_spearman(x, y), abs=1e-12)
    z = rng.integers(0, 3, size=60)
    assert spearman(x, z) == pytest.approx(_brute_force_spearman(x, z), abs=1e-12)


def test_sts_spearman():
    # cosines of the pairs: [1, 0] vs [1, 0] -> 1; [1, 0] vs [1, 1] -> 1/sqrt2; [1, 0] vs [0, 1] -> 0
    e1 = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    e2 = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    assert sts_spearman(e1, e2, [5.0, 3.0, 0.5]) == pytest.approx(1.0)
    assert sts_spearman(e1, e2, [0.0, 1.0, 2.0]) == pytest.approx(-1.0)
    # gold [5, 0.5, 3]: cos ranks [3, 2, 1], gold ranks [3, 1, 2]; means 2
    # d = [1, 0, -1], [1, -1, 0] -> sum prod 1, sums of squares 2 and 2 -> rho = 0.5
    assert sts_spearman(e1, e2, [5.0, 0.5, 3.0]) == pytest.approx(0.5)


# --------------------------------------------------------------------------- nDCG / recall


def test_ndcg_graded_by_hand():
    # ranking a, b, c; grades b=2, c=1, a unjudged
    # DCG  = 0/log2(2) + 2/log2(3) + 1/log2(4) = 1.2618595 + 0.5 = 1.7618595
    # IDCG = 2/log2(2) + 1/log2(3)             = 2 + 0.6309298 = 2.6309298
    # nDCG = 1.7618595 / 2.6309298 = 0.6696718
    dcg = 2 / math.log2(3) + 1 / 2
    idcg = 2 / 1 + 1 / math.log2(3)
    got = ndcg_at_k(["a", "b", "c"], {"b": 2, "c": 1}, k=3)
    assert got == pytest.approx(dcg / idcg, abs=1e-12)
    assert got == pytest.approx(0.6696718, abs=1e-6)


def test_ndcg_perfect_ranking_is_one():
    assert ndcg_at_k(["b", "c", "a"], {"b": 2, "c": 1}, k=3) == pytest.approx(1.0)


def test_ndcg_relevant_doc_beyond_k():
    # ranking a, b, c, d; a=1, d=1; k=2 -> d (rank 4) is cut off
    # DCG@2  = 1/log2(2) = 1
    # IDCG@2 = 1/log2(2) + 1/log2(3) = 1 + 0.6309298 = 1.6309298
    # nDCG@2 = 0.6131472
    got = ndcg_at_k(["a", "b", "c", "d"], {"a": 1, "d": 1}, k=2)
    assert got == pytest.approx(1 / (1 + 1 / math.log2(3)), abs=1e-12)
    assert got == pytest.approx(0.6131472, abs=1e-6)


def test_ndcg_ideal_is_cut_at_k():
    # three docs of grade 1, k=1: IDCG@1 = 1 (not 1 + 1/log2(3) + 1/2); relevant first -> 1.0
    assert ndcg_at_k(["a", "x"], {"a": 1, "b": 1, "c": 1}, k=1) == pytest.approx(1.0)


def test_ndcg_missing_and_nonpositive_judgements():
    # x, y unjudged -> 0; n judged 0 -> 0; m judged -1 -> 0; b=1 at rank 3
    # DCG = 1/log2(4) = 0.5; IDCG = 1/log2(2) = 1 (only b is positive) -> 0.5
    qrels = {"b": 1, "n": 0, "m": -1}
    assert ndcg_at_k(["x", "y", "b"], qrels, k=10) == pytest.approx(0.5)
    assert ndcg_at_k(["m", "n", "b"], qrels, k=10) == pytest.approx(0.5)


def test_ndcg_no_positive_judgement_is_zero():
    assert ndcg_at_k(["a", "b"], {"a": 0, "b": -1}, k=10) == 0.0
    assert ndcg_at_k(["a", "b"], {}, k=10) == 0.0


def test_recall_by_hand():
    # positives {a, c, e} (f judged 0 is not positive); ranking a, b, c, d
    qrels = {"a": 1, "c": 2, "e": 1, "f": 0}
    ranked = ["a", "b", "c", "d"]
    assert recall_at_k(ranked, qrels, k=3) == pytest.approx(2 / 3)  # a, c found
    assert recall_at_k(ranked, qrels, k=1) == pytest.approx(1 / 3)  # a found
    assert recall_at_k(ranked, qrels, k=100) == pytest.approx(2 / 3)  # e never retrieved
    assert recall_at_k(ranked, {"a": 0}, k=3) == 0.0
    assert recall_at_k(ranked, {}, k=3) == 0.0


def test_retrieval_scores_by_hand():
    docs = np.eye(4)  # doc j is the j-th unit vector -> score(q, d_j) = q[j]
    doc_ids = ["d0", "d1", "d2", "d3"]
    queries = np.array(
        [
            [0.9, 0.4, 0.1, 0.0],  # q1: ranking d0, d1, d2, d3
            [0.0, 0.0, 0.0, 1.0],  # q2: d3, then d0/d1/d2 tied at 0 -> lower index first: d0, d1
            [1.0, 0.0, 0.0, 0.0],  # q3: only non-positive judgements -> skipped
            [0.0, 1.0, 0.0, 0.0],  # q4: not in qrels -> skipped
        ]
    )
    qrels = {"q1": {"d1": 1}, "q2": {"d2": 1}, "q3": {"d0": 0}}
    got = retrieval_scores(queries, ["q1", "q2", "q3", "q4"], docs, doc_ids, qrels, k_ndcg=2, k_recall=2)
    # q1: d1 at rank 2 -> nDCG@2 = (1/log2(3)) / 1 = 0.6309298; recall@2 = 1
    # q2: top 2 = d3, d0 -> nDCG@2 = 0; recall@2 = 0
    assert got["queries"] == 2
    assert got["ndcg@2"] == pytest.approx((1 / math.log2(3) + 0.0) / 2)
    assert got["recall@2"] == pytest.approx((1.0 + 0.0) / 2)
    assert set(got) == {"ndcg@2", "recall@2", "queries"}
    # k_recall larger than the corpus: all 4 docs retrieved -> q1 recall 1, q2 recall 1
    # q2 nDCG@10: d2 at rank 4 (d3, d0, d1, d2) -> 1/log2(5) = 0.4306766
    got = retrieval_scores(queries, ["q1", "q2", "q3", "q4"], docs, doc_ids, qrels)
    assert got["recall@100"] == pytest.approx(1.0)
    assert got["ndcg@10"] == pytest.approx((1 / math.log2(3) + 1 / math.log2(5)) / 2)


def test_retrieval_scores_chunking_does_not_change_results(monkeypatch):
    rng = np.random.default_rng(0)
    docs = rng.normal(size=(300, 16)).astype(np.float32)
    docs /= np.linalg.norm(docs, axis=1, keepdims=True)
    queries = docs[:50] + 0.3 * rng.normal(size=(50, 16)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    qids = [f"q{i}" for i in range(50)]
    dids = [f"d{i}" for i in range(300)]
    # query i is relevant to doc i (grade 2) and doc i+50 (grade 1)
    qrels = {f"q{i}": {f"d{i}": 2, f"d{i + 50}": 1} for i in range(50)}
    whole = retrieval_scores(queries, qids, docs, dids, qrels)
    monkeypatch.setattr(metrics, "_ROW_CHUNK", 7)
    chunked = retrieval_scores(queries, qids, docs, dids, qrels)
    assert chunked == whole
    # brute force for one query: full stable sort by (-score, index)
    scores = docs @ queries[0]
    order = sorted(range(300), key=lambda j: (-scores[j], j))
    ranked = [dids[j] for j in order]
    monkeypatch.setattr(metrics, "_ROW_CHUNK", 256)
    one = retrieval_scores(queries[:1], qids[:1], docs, dids, qrels)
    assert one["ndcg@10"] == pytest.approx(ndcg_at_k(ranked, qrels["q0"], 10))
    assert one["recall@100"] == pytest.approx(recall_at_k(ranked, qrels["q0"], 100))


# --------------------------------------------------------------------------- neighbour overlap


def _on_circle(degrees: list[float]) -> np.ndarray:
    rad = np.deg2rad(degrees)
    return np.stack([np.cos(rad), np.sin(rad)], axis=1)


# Unit vectors at these angles: cosine falls with angular distance (all gaps < 180 degrees), so
# the 2 nearest neighbours by angle are the 2 nearest by cosine.
#   row 0 (0):   dist to 10,25,45 = 10,25,45  -> {1, 2}
#   row 1 (10):  dist to 0,25,45  = 10,15,35  -> {0, 2}
#   row 2 (25):  dist to 10,0,45  = 15,25,20  -> {1, 3}
#   row 3 (45):  dist to 25,70,10 = 20,25,35  -> {2, 4}
#   row 4 (70):  dist to 45,100,25 = 25,30,45 -> {3, 5}
#   row 5 (100): dist to 70,45    = 30,55     -> {4, 3}
_ANGLES = [0.0, 10.0, 25.0, 45.0, 70.0, 100.0]


def test_overlap_identical_is_one():
    ref = _on_circle(_ANGLES)
    assert topk_neighbour_overlap(ref, ref, k=2) == pytest.approx(1.0)
    # scaling rows does not change cosine neighbours
    assert topk_neighbour_overlap(ref, 3.0 * ref, k=2) == pytest.approx(1.0)


def test_overlap_one_swapped_neighbour():
    ref = _on_circle(_ANGLES)
    # move row 5 from 100 to 160 degrees in the candidate:
    #   row 4 (70): dist to 45,160,25 = 25,90,45 -> {3, 2} instead of {3, 5} -> overlap 1/2 = (k-1)/k
    #   row 5 (160): dist to 70,45 = 90,115 -> {4, 3}, unchanged
    #   rows 0..3: their 2 nearest are all within 35 degrees, row 5 is not among them -> unchanged
    # mean = (5 * 1 + 1/2) / 6 = 0.9166667
    cand = _on_circle(_ANGLES[:5] + [160.0])
    assert topk_neighbour_overlap(ref, cand, k=2) == pytest.approx(5.5 / 6)


def test_overlap_k_capped_at_n_minus_1():
    # 3 rows, k=10 -> k = 2: each row's neighbours are the other two rows in both corpora -> 1.0
    rng = np.random.default_rng(1)
    ref = rng.normal(size=(3, 4))
    cand = rng.normal(size=(3, 4))
    assert topk_neighbour_overlap(ref, cand, k=10) == pytest.approx(1.0)


def test_overlap_ties_are_deterministic():
    # rows 1 and 2 are identical, so for row 0 they tie; lower index wins with k=1.
    # ref: row 0 = [1,0], rows 1,2 = [0,1], row 3 = [-1,0]
    #   row 0: cos to rows 1,2,3 = 0, 0, -1 -> top1 = row 1 (tie broken by index)
    ref = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [-1.0, 0.0]])
    a = topk_neighbour_overlap(ref, ref, k=1)
    b = topk_neighbour_overlap(ref, ref.copy(), k=1)
    assert a == b == pytest.approx(1.0)
    # cand where row 0's unique nearest is row 2 (row 1 tilted away): ref picks row 1 by tie-break,
    # cand picks row 2 -> row 0 overlap 0.
    #   cand row 1 = [-0.1, 1] (cos with row 0 < 0), row 2 = [0, 1] (cos 0) -> row 0 top1 = row 2
    #   other rows: row 1 top1 in ref = row 2 (cos 1); cand row 1's nearest = row 2 (cos ~0.995) -> 1
    #   row 2 top1 in ref = row 1 (cos 1); cand = row 1 -> 1
    #   row 3 ([-1,0]): ref cos to rows 0,1,2 = -1,0,0 -> row 1 by tie-break;
    #                   cand cos to row 1 = 0.1/|[-0.1,1]| > 0 = cos to row 2 -> row 1 -> 1
    # mean = (0 + 1 + 1 + 1) / 4 = 0.75
    cand = np.array([[1.0, 0.0], [-0.1, 1.0], [0.0, 1.0], [-1.0, 0.0]])
    assert topk_neighbour_overlap(ref, cand, k=1) == pytest.approx(0.75)


def test_overlap_chunking_matches_brute_force(monkeypatch):
    rng = np.random.default_rng(2)
    ref = rng.normal(size=(40, 8))
    cand = ref + 0.5 * rng.normal(size=(40, 8))
    k = 5

    def brute_neighbours(x: np.ndarray) -> list[set[int]]:
        u = x / np.linalg.norm(x, axis=1, keepdims=True)
        sims = u @ u.T
        out = []
        for i in range(len(x)):
            others = sorted((j for j in range(len(x)) if j != i), key=lambda j: (-sims[i, j], j))
            out.append(set(others[:k]))
        return out

    expected = np.mean([len(a & b) / k for a, b in zip(brute_neighbours(ref), brute_neighbours(cand))])
    monkeypatch.setattr(metrics, "_ROW_CHUNK", 6)
    assert topk_neighbour_overlap(ref, cand, k=k) == pytest.approx(expected)


def test_cross_overlap_moves_only_the_query_side():
    ref = _on_circle(_ANGLES)
    # Same candidate as test_overlap_one_swapped_neighbour (row 5 moved from 100 to 160 degrees), but only the
    # queries come from it; documents stay at the reference angles:
    #   query 4 (70) among docs 0,10,25,45,100: dist 70,60,45,25,30 -> {3, 5}, as the reference -> 1
    #   query 5 (160) among docs 0..70: dist 160,150,135,115,90 -> {4, 3}, as the reference -> 1
    #   queries 0..3 are unchanged and search unchanged documents -> 1
    # mean 1.0, while the artifact searched with itself loses row 4's neighbour (5.5 / 6).
    cand = _on_circle(_ANGLES[:5] + [160.0])
    assert cross_topk_neighbour_overlap(ref, cand, k=2) == pytest.approx(1.0)
    assert topk_neighbour_overlap(ref, cand, k=2) == pytest.approx(5.5 / 6)
    # Query 4 moved to 20 degrees: among docs 0,10,25,45,100 -> dist 20,10,5,25,80 -> {2, 1}; reference {3, 5}
    # -> overlap 0 for row 4; the other five rows keep theirs (queries and documents as the reference).
    moved = _on_circle(_ANGLES[:4] + [20.0, 100.0])
    assert cross_topk_neighbour_overlap(ref, moved, k=2) == pytest.approx(5 / 6)


def test_cross_overlap_chunking_matches_brute_force(monkeypatch):
    rng = np.random.default_rng(3)
    ref = rng.normal(size=(40, 8))
    queries = ref + 0.6 * rng.normal(size=(40, 8))
    k = 5

    def unit(x: np.ndarray) -> np.ndarray:
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    def top(sims: np.ndarray, i: int) -> set[int]:
        return set(sorted((j for j in range(len(sims)) if j != i), key=lambda j: (-sims[i, j], j))[:k])

    own, mixed = unit(ref) @ unit(ref).T, unit(queries) @ unit(ref).T
    expected = np.mean([len(top(own, i) & top(mixed, i)) / k for i in range(40)])
    assert expected < 0.9  # the noise really moves neighbours, so the comparison means something
    monkeypatch.setattr(metrics, "_ROW_CHUNK", 7)
    assert cross_topk_neighbour_overlap(ref, queries, k=k) == pytest.approx(expected)
    with pytest.raises(ValueError):
        cross_topk_neighbour_overlap(ref, queries[:39])


def test_overlap_rejects_bad_input():
    with pytest.raises(ValueError):
        topk_neighbour_overlap(np.ones((3, 2)), np.ones((4, 2)))
    with pytest.raises(ValueError):
        topk_neighbour_overlap(np.ones((1, 2)), np.ones((1, 2)))


# --------------------------------------------------------------------------- cosine


def test_cosine_per_row_by_hand_and_zero_rows():
    a = np.array([[1.0, 0.0], [0.0, 0.0], [3.0, 4.0], [1.0, 1.0], [2.0, 0.0]])
    b = np.array([[2.0, 0.0], [1.0, 1.0], [-3.0, -4.0], [1.0, 0.0], [0.0, 0.0]])
    # row 0: same direction -> 1; row 1: zero row -> 0; row 2: opposite -> -1
    # row 3: (1*1 + 1*0) / (sqrt2 * 1) = 0.7071068; row 4: zero row in b -> 0
    got = cosine_per_row(a, b)
    assert got.dtype == np.float64
    assert not np.isnan(got).any()
    np.testing.assert_allclose(got, [1.0, 0.0, -1.0, 1 / math.sqrt(2), 0.0], atol=1e-12)


def test_cosine_per_row_float32_input_and_shape_check():
    a = np.array([[1.0, 2.0, 3.0]], dtype=np.float32)
    # (1*4 + 2*5 + 3*6) / (sqrt(14) * sqrt(77)) = 32 / sqrt(1078) = 0.9746319
    got = cosine_per_row(a, np.array([[4.0, 5.0, 6.0]], dtype=np.float32))
    assert got.dtype == np.float64
    assert got[0] == pytest.approx(32 / math.sqrt(1078), abs=1e-7)
    with pytest.raises(ValueError):
        cosine_per_row(np.ones((2, 3)), np.ones((3, 3)))


def test_summarize_cosine_by_hand():
    cos = np.array([0.9, 0.5, 1.0, 0.7, 0.8])
    s = summarize_cosine(cos, n_worst=3)
    assert isinstance(s, CosineSummary)
    # mean = (0.9 + 0.5 + 1.0 + 0.7 + 0.8) / 5 = 3.9 / 5 = 0.78
    assert s.mean == pytest.approx(0.78)
    assert s.min == pytest.approx(0.5)
    # sorted [0.5, 0.7, 0.8, 0.9, 1.0]; p1 position = 0.01 * (5 - 1) = 0.04
    # p1 = 0.5 + 0.04 * (0.7 - 0.5) = 0.508
    assert s.p1 == pytest.approx(0.508)
    # lowest three: 0.5 (idx 1), 0.7 (idx 3), 0.8 (idx 4)
    assert s.worst_indices == [1, 3, 4]
    assert summarize_cosine(cos, n_worst=10).worst_indices == [1, 3, 4, 0, 2]
    with pytest.raises(ValueError):
        summarize_cosine(np.array([]))


def test_summarize_cosine_p1_larger_sample():
    # 101 values 0.00, 0.01, ..., 1.00: p1 position = 0.01 * 100 = 1 -> exactly the 2nd smallest, 0.01
    cos = np.linspace(0.0, 1.0, 101)[::-1]
    s = summarize_cosine(cos)
    assert s.p1 == pytest.approx(0.01)
    assert s.min == 0.0
    assert s.mean == pytest.approx(0.5)
    # reversed order: value 0.00 at index 100, 0.01 at 99, ...
    assert s.worst_indices == [100, 99, 98, 97, 96]
