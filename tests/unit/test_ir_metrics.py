"""Per-query retrieval metrics and the paired bootstrap that judges a model change.

Hand-computed cases pin the conventions; a cross-check against ir-measures (which
runs trec_eval through pytrec_eval) on random runs shows they are the field's.
"""

from __future__ import annotations

import math

import ir_measures
import numpy as np
import pytest
from ir_measures import RR, R, nDCG

from controller.validation.metrics import (
    PairedDifference,
    mrr_per_query,
    ndcg_at_k,
    ndcg_per_query,
    paired_bootstrap,
    recall_at_k,
    recall_per_query,
)
from controller.validation.results import Outcome, judge_drop

RETRIEVED = np.array([[5, 3, 9, -1], [1, 2, 3, 4], [7, 8, 9, 10]])
RELEVANT = [np.array([3, 4]), np.array([9]), np.array([], dtype=np.int64)]


def test_per_query_by_hand() -> None:
    # q0: top-2 {5,3} ∩ {3,4} = 1 of min(2, 2); q1: nothing; q2: no relevant ids
    recall = recall_per_query(RETRIEVED, RELEVANT, 2)
    assert recall[:2].tolist() == [0.5, 0.0] and math.isnan(recall[2])
    # q0: first relevant (3) at rank 2 -> 1/2
    mrr = mrr_per_query(RETRIEVED, RELEVANT, 4)
    assert mrr[:2].tolist() == [0.5, 0.0] and math.isnan(mrr[2])
    # q0 nDCG@4: DCG = 1/log2(3); ideal = 1 + 1/log2(3)
    ndcg = ndcg_per_query(RETRIEVED, RELEVANT, 4)
    expected = (1 / math.log2(3)) / (1 + 1 / math.log2(3))
    assert ndcg[0] == pytest.approx(expected) and ndcg[1] == 0.0 and math.isnan(ndcg[2])
    assert recall_at_k(RETRIEVED, RELEVANT, 2) == pytest.approx(0.25)  # NaN query left out


def test_graded_ndcg_by_hand() -> None:
    retrieved = np.array([[1, 2, 3]])
    relevant = [np.array([2, 3, 4])]
    grades = [np.array([1.0, 2.0, 3.0])]
    # DCG = 0 + 1/log2(3) + 2/log2(4); ideal = 3 + 2/log2(3) + 1/log2(4)
    dcg = 1 / math.log2(3) + 2 / 2
    ideal = 3 + 2 / math.log2(3) + 1 / 2
    assert ndcg_at_k(retrieved, relevant, 3, grades) == pytest.approx(dcg / ideal)
    # A grade of 0 is "judged, not relevant" (as in qrels files).
    zero = [np.array([1.0, 0.0, 0.0])]
    only_two = 1 / math.log2(3)  # id 2 (the one relevant id) at rank 2; ideal DCG 1
    assert ndcg_at_k(np.array([[3, 2, 1]]), relevant, 3, zero) == pytest.approx(only_two)


def test_all_queries_without_relevant_ids_give_nan() -> None:
    empty = [np.array([], dtype=np.int64)] * 3
    assert math.isnan(recall_at_k(RETRIEVED, empty, 4))


def _random_run(
    rng: np.random.Generator, queries: int, k: int
) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
    retrieved = np.array([rng.choice(60, size=k, replace=False) for _ in range(queries)])
    relevant = [rng.choice(60, size=rng.integers(1, 6), replace=False) for _ in range(queries)]
    grades = [rng.integers(1, 4, size=len(r)).astype(np.float64) for r in relevant]
    return retrieved, relevant, grades


def test_agrees_with_trec_eval_through_ir_measures() -> None:
    rng = np.random.default_rng(11)
    k = 10
    retrieved, relevant, grades = _random_run(rng, 200, k)
    qrels = [
        ir_measures.Qrel(str(q), str(int(d)), int(g))
        for q, (rel, gr) in enumerate(zip(relevant, grades, strict=True))
        for d, g in zip(rel, gr, strict=True)
    ]
    run = [
        ir_measures.ScoredDoc(str(q), str(int(d)), float(k - rank))
        for q, row in enumerate(retrieved)
        for rank, d in enumerate(row)
    ]
    theirs: dict[str, dict[str, float]] = {}
    for m in ir_measures.iter_calc([nDCG @ k, RR @ k, R @ k], qrels, run):
        theirs.setdefault(str(m.measure), {})[m.query_id] = m.value
    order = [str(q) for q in range(len(relevant))]
    ndcg = ndcg_per_query(retrieved, relevant, k, grades)
    np.testing.assert_allclose(ndcg, [theirs[str(nDCG @ k)][q] for q in order], atol=1e-4)
    mrr = mrr_per_query(retrieved, relevant, k)
    np.testing.assert_allclose(mrr, [theirs[str(RR @ k)][q] for q in order], atol=1e-4)
    # |relevant| <= k here, so capped recall equals trec_eval's recall.
    recall = recall_per_query(retrieved, relevant, k)
    np.testing.assert_allclose(recall, [theirs[str(R @ k)][q] for q in order], atol=1e-4)


def test_paired_bootstrap_of_equal_systems_straddles_zero() -> None:
    rng = np.random.default_rng(1)
    live = rng.random(500)
    noise = rng.normal(0, 0.05, size=500)
    result = paired_bootstrap(live + noise, live, resamples=2000)
    assert result.low < 0 < result.high
    assert result.high - result.low < 0.02
    assert result.queries == 500 and result.wins + result.losses == 500


def test_paired_bootstrap_sees_a_clear_drop_and_is_reproducible() -> None:
    rng = np.random.default_rng(2)
    live = rng.random(300)
    worse = live - 0.1 + rng.normal(0, 0.02, size=300)
    result = paired_bootstrap(worse, live, resamples=2000, seed=5)
    assert result.high < -0.05 and result.mean == pytest.approx(-0.1, abs=0.01)
    assert result == paired_bootstrap(worse, live, resamples=2000, seed=5)


def test_paired_bootstrap_leaves_out_unscored_queries() -> None:
    result = paired_bootstrap(np.array([1.0, np.nan, 0.0]), np.array([0.0, 1.0, 0.0]))
    assert result.queries == 2 and result.wins == 1 and result.losses == 0
    nothing = paired_bootstrap(np.array([np.nan]), np.array([1.0]))
    assert nothing.queries == 0 and math.isnan(nothing.mean)
    with pytest.raises(ValueError):
        paired_bootstrap(np.zeros(3), np.zeros(4))


@pytest.mark.parametrize(
    ("low", "high", "expected"),
    [
        (-0.08, -0.06, Outcome.FAILED),  # worse than the allowed drop, surely
        (-0.01, 0.02, Outcome.PASSED),  # at worst 0.01 below live, within 0.05
        (-0.07, -0.01, Outcome.INCONCLUSIVE),  # may or may not exceed the drop
        (0.01, 0.05, Outcome.PASSED),  # better than live
    ],
)
def test_judge_drop_uses_the_whole_interval(low: float, high: float, expected: Outcome) -> None:
    diff = PairedDifference((low + high) / 2, low, high, 100, 40, 60, 0.95)
    check = judge_drop("goldenSet.maxDropVsLive", diff, 0.05, candidate=0.8, live=0.83)
    assert check.outcome == expected
    assert check.threshold == -0.05 and check.metrics["queries"] == 100
    assert "95% interval" in check.detail and "40 better, 60 worse" in check.detail


def test_judge_drop_without_scored_queries_fails() -> None:
    nan = float("nan")
    diff = PairedDifference(nan, nan, nan, 0, 0, 0, 0.95)
    check = judge_drop("goldenSet.maxDropVsLive", diff, 0.05, candidate=nan, live=0.8)
    assert check.outcome == Outcome.FAILED
