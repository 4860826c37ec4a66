"""Metrics against values computed by hand on small arrays."""

import itertools
import math
import tracemalloc
from collections.abc import Callable

import numpy as np
import pytest

from controller.validation.metrics import (
    ann_recall,
    centroid_distance,
    cosine_centroid_distance,
    cosine_same_ids,
    cosine_summary,
    exact_topk,
    exact_topk_naive,
    latency_percentiles,
    mean_rbo,
    median_bandwidth,
    mmd_rbf,
    mrr_at_k,
    ndcg_at_k,
    rank_biased_overlap,
    recall_at_k,
    topk_overlap,
)

RETRIEVED = np.array([[1, 2, 3], [4, 5, -1]])
RELEVANT = [np.array([2, 9]), np.array([6])]


def test_recall_counts_hits_over_capped_relevant() -> None:
    # query 0: {2} of {2, 9} -> 1/2; query 1: none of {6} -> 0  => mean 0.25
    assert recall_at_k(RETRIEVED, RELEVANT, 3) == pytest.approx(0.25)


def test_recall_caps_denominator_at_k() -> None:
    # 5 relevant ids, k=2, both retrieved are relevant: 2 / min(2, 5) = 1.0
    assert recall_at_k(np.array([[1, 2]]), [np.array([1, 2, 3, 4, 5])], 2) == 1.0


def test_recall_ignores_padding_and_skips_queries_without_relevant() -> None:
    got = recall_at_k(np.array([[-1, -1], [7, -1]]), [np.array([-1]), np.array([])], 2)
    # query 0's relevant id -1 must not match padding; query 1 has no relevant ids.
    assert got == 0.0
    assert math.isnan(recall_at_k(np.array([[1]]), [np.array([])], 1))


def test_ndcg_by_hand() -> None:
    # query 0: hit at rank 2 -> DCG = 1/log2(3); IDCG (2 relevant) = 1 + 1/log2(3)
    q0 = (1 / math.log2(3)) / (1 + 1 / math.log2(3))
    assert ndcg_at_k(RETRIEVED, RELEVANT, 3) == pytest.approx((q0 + 0.0) / 2)


def test_mrr_by_hand() -> None:
    # query 0: first hit at rank 2 -> 1/2; query 1: no hit -> 0
    assert mrr_at_k(RETRIEVED, RELEVANT, 3) == pytest.approx(0.25)
    assert mrr_at_k(np.array([[5, 6, 7]]), [np.array([5])], 3) == 1.0


# --- topk_overlap / ann_recall ------------------------------------------------------------


def test_topk_overlap_by_hand() -> None:
    a = np.array([[1, 2, 3], [4, 5, -1]])
    b = np.array([[3, 2, 9], [5, -1, -1]])
    # k=3: q0 {1,2,3} ∩ {3,2,9} = {2,3} -> 2/3; q1 {4,5} ∩ {5} = {5} -> 1/3 (divide by k,
    # not by the 2 real results) => mean (2/3 + 1/3) / 2 = 0.5
    assert topk_overlap(a, b, 3) == pytest.approx(0.5)
    # k=1: q0 {1} vs {3} -> 0; q1 {4} vs {5} -> 0
    assert topk_overlap(a, b, 1) == 0.0
    # k=2: q0 {1,2} ∩ {3,2} = {2} -> 1/2; q1 {4,5} ∩ {5} -> 1/2 => 0.5
    assert topk_overlap(a, b, 2) == pytest.approx(0.5)


def test_topk_overlap_padding_never_matches_and_order_is_ignored() -> None:
    # Both rows all padding: nothing is a result, so nothing overlaps.
    assert topk_overlap(np.array([[-1, -1]]), np.array([[-1, -1]]), 2) == 0.0
    # Same set in another order: full overlap.
    assert topk_overlap(np.array([[7, 8, 9]]), np.array([[9, 7, 8]]), 3) == 1.0
    with pytest.raises(ValueError):
        topk_overlap(np.array([[1]]), np.array([[1]]), 0)
    assert math.isnan(topk_overlap(np.empty((0, 3)), np.empty((0, 3)), 3))


def test_ann_recall_by_hand() -> None:
    ann = np.array([[1, 2, 3], [7, 8, 9]])
    exact = np.array([[3, 2, 1], [7, 0, -1]])
    # q0: {1,2,3} ∩ {3,2,1} = 3 -> 3/3 = 1; q1: exact found only {7,0} (fewer rows
    # than k), {7,8,9} ∩ {7,0} = {7} -> 1/2  => mean (1 + 1/2) / 2 = 3/4
    assert ann_recall(ann, exact, 3) == pytest.approx(3 / 4)


def test_ann_recall_when_k_exceeds_the_rows() -> None:
    """A 3-row collection searched with k = 10: exact search finds 3 ids; an index that
    returns the same 3 has recall 1 (it was 0.3, failing every minAnnRecall gate)."""
    exact = np.array([[2, 0, 1, *[-1] * 7], [1, 2, 0, *[-1] * 7]])
    ann = np.array([[0, 1, 2, *[-1] * 7], [1, 2, -1, *[-1] * 7]])
    assert ann_recall(ann, exact, 10) == pytest.approx((1 + 2 / 3) / 2)
    nothing = np.full((2, 10), -1)
    assert np.isnan(ann_recall(ann, nothing, 10))


# --- rank-biased overlap --------------------------------------------------------------------


def test_rbo_by_hand_swap_at_depth_two() -> None:
    # a = [1,2,3], b = [1,3,2], p = 0.9; X_d = overlap of the depth-d prefixes:
    #   d=1: {1} ∩ {1}         -> X_1 = 1, X_1/1 = 1,   p^1 = 0.9   -> 0.9
    #   d=2: {1,2} ∩ {1,3}     -> X_2 = 1, X_2/2 = 0.5, p^2 = 0.81  -> 0.405
    #   d=3: {1,2,3} ∩ {1,3,2} -> X_3 = 3, X_3/3 = 1,   p^3 = 0.729 -> 0.729
    #   Σ = 2.034;  (1-p)/p · Σ = 2.034 / 9 = 0.226
    #   extrapolation (X_3/3) · p^3 = 0.729
    #   RBO_ext = 0.226 + 0.729 = 0.955
    assert rank_biased_overlap([1, 2, 3], [1, 3, 2], p=0.9) == pytest.approx(0.955)


def test_rbo_by_hand_swap_at_the_top() -> None:
    # a = [1,2,3], b = [2,1,3], p = 0.9:
    #   d=1: {1} ∩ {2} -> 0 -> 0;  d=2: {1,2} ∩ {2,1} -> 2/2 = 1 -> 0.81;  d=3: 1 -> 0.729
    #   Σ = 1.539; /9 = 0.171; + (3/3)·0.729 => 0.900
    assert rank_biased_overlap([1, 2, 3], [2, 1, 3], p=0.9) == pytest.approx(0.9)


def test_rbo_uneven_lists_by_hand() -> None:
    # Eq. 32, short S = [1,3] (s=2), long L = [1,2,3] (l=3), p = 0.9:
    #   X_1 = |{1}∩{1}| = 1, X_2 = |{1,3}∩{1,2}| = 1, X_3 = |{1,3}∩{1,2,3}| = 2; X_s = X_2 = 1
    #   Σ_{d=1..3} X_d/d·p^d = 0.9 + 0.5·0.81 + (2/3)·0.729 = 0.9 + 0.405 + 0.486 = 1.791
    #   Σ_{d=3..3} X_s·(d-s)/(s·d)·p^d = 1·1/(2·3)·0.729 = 0.1215
    #   (1-p)/p · (1.791 + 0.1215) = 1.9125 / 9 = 0.2125
    #   ((X_l - X_s)/l + X_s/s)·p^l = (1/3 + 1/2)·0.729 = 0.6075
    #   => 0.2125 + 0.6075 = 0.82
    assert rank_biased_overlap([1, 3], [1, 2, 3], p=0.9) == pytest.approx(0.82)
    assert rank_biased_overlap([1, 2, 3], [1, 3], p=0.9) == pytest.approx(0.82)
    # A list that is a prefix of the other extrapolates to full agreement:
    #   X = 1, 2, 2; Σ = 0.9 + 0.81 + (2/3)·0.729 = 2.196; tail = 2·1/(2·3)·0.729 = 0.243
    #   (2.196 + 0.243)/9 = 0.271; + (0/3 + 2/2)·0.729 = 0.729 => 1.0
    assert rank_biased_overlap([1, 2], [1, 2, 3], p=0.9) == pytest.approx(1.0)


def test_rbo_identical_is_one_and_disjoint_is_zero() -> None:
    for p in (0.5, 0.9, 0.98):
        for n in (1, 5, 50):
            items = list(range(n))
            assert rank_biased_overlap(items, items, p) == pytest.approx(1.0)
            assert rank_biased_overlap(items, [x + n for x in items], p) == 0.0
    assert rank_biased_overlap([], [1, 2], 0.9) == 0.0
    assert math.isnan(rank_biased_overlap([], [], 0.9))


def test_rbo_is_symmetric_and_bounded() -> None:
    rng = np.random.default_rng(7)
    for _ in range(50):
        a = rng.permutation(30)[:10].tolist()
        b = rng.permutation(30)[: int(rng.integers(1, 15))].tolist()
        p = float(rng.uniform(0.05, 0.99))
        ab, ba = rank_biased_overlap(a, b, p), rank_biased_overlap(b, a, p)
        assert ab == pytest.approx(ba)
        assert 0.0 <= ab <= 1.0


def test_rbo_is_higher_when_the_disagreement_is_deeper() -> None:
    base = list(range(10))
    values = []
    for i in range(9):  # swap ranks i and i+1
        swapped = base.copy()
        swapped[i], swapped[i + 1] = swapped[i + 1], swapped[i]
        values.append(rank_biased_overlap(base, swapped, 0.9))
    assert all(lo < hi for lo, hi in itertools.pairwise(values))
    assert values[-1] < 1.0


def test_rbo_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        rank_biased_overlap([1, 2], [1, 2], p=1.0)
    with pytest.raises(ValueError):
        rank_biased_overlap([1, 1], [1, 2], p=0.9)


def test_mean_rbo_truncates_padding_and_skips_empty_rows() -> None:
    a = np.array([[1, 2, 3], [1, 2, -1], [-1, -1, -1]])
    b = np.array([[1, 3, 2], [1, 2, 3], [-1, -1, -1]])
    # row 0: 0.955 (by hand above); row 1: [1,2] is a prefix of [1,2,3] -> 1.0;
    # row 2: both empty -> skipped.  => (0.955 + 1.0) / 2 = 0.9775
    assert mean_rbo(a, b, 0.9) == pytest.approx(0.9775)
    assert math.isnan(mean_rbo(np.array([[-1]]), np.array([[-1]])))
    # One side empty counts as no agreement: (1.0 + 0.0) / 2
    assert mean_rbo(np.array([[4, 5], [4, 5]]), np.array([[4, 5], [-1, -1]])) == pytest.approx(0.5)


# --- cosine drift -------------------------------------------------------------------------


def test_cosine_same_ids_by_hand() -> None:
    a = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0], [3.0, 4.0], [1.0, 0.0]])
    b = np.array([[0.0, 1.0], [2.0, 2.0], [1.0, 0.0], [-3.0, -4.0], [1.0, 1.0]])
    got = cosine_same_ids(a, b)
    # orthogonal -> 0; parallel -> 1; zero row -> NaN; opposite -> -1;
    # [1,0]·[1,1] = 1, norms 1·√2 -> 1/√2
    assert got[[0, 1, 3, 4]] == pytest.approx([0.0, 1.0, -1.0, 1 / math.sqrt(2)])
    assert math.isnan(got[2])
    with pytest.raises(ValueError):
        cosine_same_ids(a, b[:2])


def test_cosine_summary_by_hand() -> None:
    cos = np.array([1.0, 0.8, 0.95, np.nan, 0.5, 0.9])
    got = cosine_summary(cos, below=0.9)
    # kept (NaN dropped), sorted: [0.5, 0.8, 0.9, 0.95, 1.0], n = 5, nan_count = 1
    # mean = 4.15 / 5 = 0.83; min = 0.5
    # p5: position 0.05·(5-1) = 0.2 -> 0.5 + 0.2·(0.8 - 0.5) = 0.56
    # share_below 0.9: {0.5, 0.8} (0.9 itself is not below) -> 2/5 = 0.4
    assert got == pytest.approx(
        {"mean": 0.83, "p5": 0.56, "min": 0.5, "share_below": 0.4, "n": 5.0, "nan_count": 1.0}
    )


def test_cosine_summary_all_nan() -> None:
    got = cosine_summary(np.array([np.nan, np.nan]))
    assert got["n"] == 0.0 and got["nan_count"] == 2.0
    assert all(math.isnan(got[key]) for key in ("mean", "p5", "min", "share_below"))


# --- centroids -----------------------------------------------------------------------------


def test_centroid_distances_by_hand() -> None:
    a = np.array([[0.0, 0.0], [2.0, 0.0]])  # mean [1, 0]
    b = np.array([[1.0, 3.0], [1.0, 5.0]])  # mean [1, 4]
    # ‖[1,0] - [1,4]‖ = 4
    assert centroid_distance(a, b) == pytest.approx(4.0)
    # cos([1,0], [1,4]) = 1 / (1·√17)  => 1 - 1/√17
    assert cosine_centroid_distance(a, b) == pytest.approx(1 - 1 / math.sqrt(17))
    assert cosine_centroid_distance(a, 3 * a) == pytest.approx(0.0)
    assert cosine_centroid_distance(a, -a) == pytest.approx(2.0)
    assert math.isnan(cosine_centroid_distance(np.array([[1.0, 0.0], [-1.0, 0.0]]), b))


# --- MMD ---------------------------------------------------------------------------------------


def test_mmd_two_points_each_by_hand() -> None:
    x = np.array([[0.0], [1.0]])
    y = np.array([[3.0], [4.0]])
    # σ = 1, k = exp(-d²/2).  m = n = 2.
    #   xx, i≠j: d=1 twice -> Σ = 2e^{-1/2}; / (2·1) = e^{-1/2}
    #   yy, i≠j: d=1 twice -> e^{-1/2}
    #   xy: d = 3, 4, 2, 3 -> Σ = 2e^{-9/2} + e^{-8} + e^{-2}; · 2/(2·2) = Σ / 2
    expected = 2 * math.exp(-0.5) - (2 * math.exp(-4.5) + math.exp(-8) + math.exp(-2)) / 2
    mmd2, sigma = mmd_rbf(x, y, bandwidth=1.0)
    assert sigma == 1.0
    assert mmd2 == pytest.approx(expected)  # ≈ 1.13412
    assert mmd2 == pytest.approx(1.134116, abs=1e-6)


def test_mmd_median_heuristic_by_hand() -> None:
    x = np.array([[0.0], [1.0]])
    y = np.array([[3.0], [4.0]])
    # pooled {0, 1, 3, 4}; distances of the 6 distinct pairs: 1, 3, 4, 2, 3, 1
    # sorted 1, 1, 2, 3, 3, 4 -> median (2 + 3)/2 = 2.5;  2σ² = 12.5
    #   xx, yy: e^{-1/12.5} each;  xy: d² = 9, 16, 4, 9 -> (2e^{-9/12.5} + e^{-16/12.5} + e^{-4/12.5})/2
    expected = (
        2 * math.exp(-1 / 12.5)
        - (2 * math.exp(-9 / 12.5) + math.exp(-16 / 12.5) + math.exp(-4 / 12.5)) / 2
    )
    mmd2, sigma = mmd_rbf(x, y)
    assert sigma == pytest.approx(2.5)
    assert mmd2 == pytest.approx(expected)


def test_mmd_same_distribution_is_near_zero_and_shift_is_clearly_positive() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(200, 5))
    y = rng.normal(size=(200, 5))
    shifted = rng.normal(size=(200, 5)) + 1.0
    same, _ = mmd_rbf(x, y)
    itself, _ = mmd_rbf(x, x)
    moved, _ = mmd_rbf(x, shifted)
    # Unbiased: ≈ 0, and clamped at 0 where the U-statistic dips below (x against itself
    # would be < 0: the cross term includes the k(x_i, x_i) = 1 diagonal).
    assert 0.0 <= same < 0.01
    assert itself == 0.0
    assert moved > 0.1
    assert moved > 10 * abs(same)
    assert mmd_rbf(shifted, x)[0] == pytest.approx(moved)  # symmetric


def test_mmd_rejects_degenerate_input() -> None:
    with pytest.raises(ValueError):
        mmd_rbf(np.zeros((1, 2)), np.zeros((3, 2)))
    with pytest.raises(ValueError):
        mmd_rbf(np.zeros((3, 2)), np.ones((3, 2)), bandwidth=0.0)
    with pytest.raises(ValueError):
        mmd_rbf(np.zeros((3, 2)), np.ones((3, 2)), bandwidth=float("nan"))


def test_mmd_of_degenerate_samples_is_a_number_not_an_error() -> None:
    """All-zero or identical vectors (a median distance of 0) once crashed the drift
    reference right after a flip; they have a bandwidth and an MMD like any sample."""
    zeros = np.zeros((500, 16))
    mmd2, sigma = mmd_rbf(zeros, zeros)
    assert (mmd2, sigma) == (0.0, 1.0)
    # Mostly coinciding points: the median of the positive distances.
    x = np.zeros((10, 2))
    y = np.zeros((10, 2))
    y[0] = [3.0, 4.0]
    mmd2, sigma = mmd_rbf(x, y)
    assert sigma == pytest.approx(5.0) and mmd2 > 0
    same, _ = mmd_rbf(np.ones((50, 4)), np.ones((50, 4)))
    moved, _ = mmd_rbf(np.ones((50, 4)), np.full((50, 4), 2.0))
    assert same == 0.0 and moved > 0.5


def test_median_bandwidth() -> None:
    points = np.array([[0.0], [1.0], [3.0]])
    sq = (points - points.T) ** 2
    assert median_bandwidth(sq) == pytest.approx(2.0)  # distances 1, 3, 2
    assert median_bandwidth(np.zeros((4, 4))) == 1.0


# --- exact top-k -------------------------------------------------------------------------------

CORPUS = np.array([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0], [-1.0, 0.0]])
QUERIES = np.array([[1.0, 0.0], [0.0, 3.0]])


@pytest.mark.parametrize("search", [exact_topk, exact_topk_naive])
def test_exact_topk_ip_by_hand(search: Callable[..., np.ndarray]) -> None:
    # q0 = [1,0]: q·c = 1, 0, 2, -1 -> rows 2, 0, 1, 3
    # q1 = [0,3]: q·c = 0, 3, 6, 0  -> rows 2, 1, then the tie 0 = 0 by lower row: 0, 3
    assert search(CORPUS, QUERIES, 4, "IP").tolist() == [[2, 0, 1, 3], [2, 1, 0, 3]]


@pytest.mark.parametrize("search", [exact_topk, exact_topk_naive])
def test_exact_topk_cosine_by_hand(search: Callable[..., np.ndarray]) -> None:
    # unit corpus: [1,0], [0,1], [1,1]/√2, [-1,0]
    # q0 = [1,0]: cos = 1, 0, 0.707, -1 -> rows 0, 2, 1, 3
    # q1 = [0,1]: cos = 0, 1, 0.707, 0  -> rows 1, 2, then tie 0 = 0: 0, 3
    assert search(CORPUS, QUERIES, 4, "COSINE").tolist() == [[0, 2, 1, 3], [1, 2, 0, 3]]


@pytest.mark.parametrize("search", [exact_topk, exact_topk_naive])
def test_exact_topk_l2_by_hand(search: Callable[..., np.ndarray]) -> None:
    # q0 = [1,0]: ‖q-c‖² = 0, 1+1=2, 1+4=5, 4 -> rows 0, 1, 3, 2
    # q1 = [0,3]: ‖q-c‖² = 1+9=10, 4, 4+1=5, 1+9=10 -> rows 1, 2, then tie 10 = 10: 0, 3
    assert search(CORPUS, QUERIES, 4, "L2").tolist() == [[0, 1, 3, 2], [1, 2, 0, 3]]
    # k < N keeps the best prefix
    assert search(CORPUS, QUERIES, 2, "L2").tolist() == [[0, 1], [1, 2]]


def test_exact_topk_maps_ids_pads_and_validates() -> None:
    ids = np.array([10, 11, 12, 13])
    # IP order from above (q0: 2, 0) mapped through ids
    assert exact_topk(CORPUS, QUERIES[:1], 2, "ip", ids=ids).tolist() == [[12, 10]]
    # k > N: all 4 rows, then -1 padding; same for the reference
    padded = [[2, 0, 1, 3, -1, -1]]
    assert exact_topk(CORPUS, QUERIES[:1], 6, "IP", block=3).tolist() == padded
    assert exact_topk_naive(CORPUS, QUERIES[:1], 6, "IP").tolist() == padded
    assert exact_topk(CORPUS, QUERIES, 0, "IP").shape == (2, 0)
    with pytest.raises(ValueError):
        exact_topk(CORPUS, QUERIES, 2, "HAMMING")
    with pytest.raises(ValueError):
        exact_topk(CORPUS, QUERIES, 2, "IP", block=0)
    with pytest.raises(ValueError):
        exact_topk(CORPUS, QUERIES[:, :1], 2, "IP")


def test_exact_topk_zero_vectors_rank_last_under_cosine() -> None:
    corpus = np.array([[0.0, 0.0], [-1.0, 0.0], [1.0, 1.0]])
    # row 0 has no direction (NaN cosine) and ranks after even the opposite vector
    assert exact_topk(corpus, np.array([[1.0, 0.0]]), 3, "COSINE", block=1).tolist() == [[2, 1, 0]]


@pytest.mark.parametrize("metric", ["COSINE", "IP", "L2"])
def test_exact_topk_matches_naive_on_random_data(metric: str) -> None:
    rng = np.random.default_rng(11)
    corpus = rng.normal(size=(1000, 16)).astype(np.float32)
    queries = rng.normal(size=(25, 16)).astype(np.float32)
    ids = rng.permutation(10_000)[:1000]
    k = 10
    want = exact_topk_naive(corpus, queries, k, metric, ids=ids)
    # block < k, block not dividing N, block = N, block > N
    for block in (1, 3, 7, 64, 333, 1000, 5000):
        got = exact_topk(corpus, queries, k, metric, block=block, ids=ids)
        assert got.shape == (25, k)
        assert np.array_equal(got, want), (metric, block)


@pytest.mark.parametrize("metric", ["COSINE", "IP", "L2"])
def test_exact_topk_breaks_ties_by_lower_row_like_naive(metric: str) -> None:
    # Small integer vectors: many exact duplicates, so many ties straddle block edges.
    rng = np.random.default_rng(5)
    corpus = rng.integers(0, 3, size=(300, 4)).astype(np.float64)
    queries = rng.integers(0, 3, size=(20, 4)).astype(np.float64)
    want = exact_topk_naive(corpus, queries, 15, metric)
    for block in (1, 4, 16, 17, 299, 300):
        assert np.array_equal(exact_topk(corpus, queries, 15, metric, block=block), want)


def test_exact_topk_memory_is_bounded_by_block_not_corpus() -> None:
    rng = np.random.default_rng(2)
    corpus = rng.normal(size=(50_000, 8))
    queries = rng.normal(size=(40, 8))
    full_matrix = 40 * 50_000 * 8  # bytes of one (nq, N) float64 score matrix: 16 MB
    tracemalloc.start()
    try:
        exact_topk(corpus, queries, 10, "L2", block=512)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < full_matrix / 8


# --- latency -----------------------------------------------------------------------------------


def test_latency_percentiles_by_hand() -> None:
    got = latency_percentiles([1.0, 2.0, 3.0, 4.0, 100.0])
    # sorted [1, 2, 3, 4, 100], linear interpolation at position q·(n-1) = q·4:
    #   p50 -> 2.0 -> 3;  p95 -> 3.8 -> 4 + 0.8·96 = 80.8;  p99 -> 3.96 -> 4 + 0.96·96 = 96.16
    #   mean = 110 / 5 = 22; max = 100
    assert got == pytest.approx({"p50": 3.0, "p95": 80.8, "p99": 96.16, "mean": 22.0, "max": 100.0})
    empty = latency_percentiles([])
    assert set(empty) == {"p50", "p95", "p99", "mean", "max"}
    assert all(math.isnan(v) for v in empty.values())


def test_streaming_topk_equals_exact_topk_over_batches() -> None:
    from controller.validation.metrics import StreamingTopK, exact_topk

    rng = np.random.default_rng(5)
    corpus, queries = rng.normal(size=(500, 8)), rng.normal(size=(7, 8))
    ids = np.arange(500, dtype=np.int64) + 1000
    for metric in ("COSINE", "IP", "L2"):
        top = StreamingTopK(queries, 10, metric)
        for start in range(0, 500, 64):
            top.add(corpus[start : start + 64], ids[start : start + 64])
        assert np.array_equal(top.result(), exact_topk(corpus, queries, 10, metric, ids=ids))
