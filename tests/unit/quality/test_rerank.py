"""The reranker check's order measure: Kendall tau over the candidate pairs the reference orders."""

from __future__ import annotations

import numpy as np

from bge_export.quality.floors import RERANK_FLOORS, rerank_floors_for
from bge_export.quality.rerank import calibration_pairs, check_scores, kendall_tau


def test_kendall_tau_is_one_for_the_same_order_and_minus_one_reversed():
    reference = np.array([0.9, 0.5, 0.1, 0.3])
    assert kendall_tau(reference, reference * 2 + 1) == 1.0
    assert kendall_tau(reference, -reference) == -1.0


def test_one_swap_counts_against_the_pairs_the_reference_orders():
    reference = np.array([0.9, 0.5, 0.3, 0.1])
    swapped = np.array([0.9, 0.3, 0.5, 0.1])  # one of six pairs discordant
    assert abs(kendall_tau(reference, swapped) - (5 - 1) / 6) < 1e-12


def test_candidates_closer_than_the_tie_width_may_swap():
    reference = np.array([0.900, 0.504, 0.500, 0.1])
    swapped = np.array([0.900, 0.500, 0.504, 0.1])
    assert kendall_tau(reference, swapped) < 1.0
    assert kendall_tau(reference, swapped, tie=0.01) == 1.0  # the only swapped pair is 0.004 apart
    assert kendall_tau(np.full(5, 0.5), np.arange(5.0), tie=0.01) == 1.0  # the reference orders nothing


def test_check_scores_applies_each_precisions_floors():
    rng = np.random.default_rng(0)
    baseline = rng.uniform(0, 1, 60)
    groups = [q for q in range(3) for _ in range(20)]
    moved = baseline + rng.uniform(-0.003, 0.003, 60)  # within fp16's score floor
    assert not check_scores(baseline, moved, groups, RERANK_FLOORS["fp32"]).passed
    result = check_scores(baseline, moved, groups, rerank_floors_for("fp16"))
    assert result.passed and result.queries == 3 and result.top10_overlap is not None
    assert rerank_floors_for("int8-dynamic") is RERANK_FLOORS["int8"]
    broken = check_scores(baseline, baseline[::-1].copy(), groups, rerank_floors_for("int8"))
    assert not broken.passed and "Kendall tau" in broken.reason


def test_calibration_pairs_pair_consecutive_texts():
    assert calibration_pairs(["a", "b", "c"]) == [("a", "b"), ("b", "c"), ("c", "a")]
    assert calibration_pairs(["a"]) == []
