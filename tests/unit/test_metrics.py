"""Metrics against values computed by hand on small arrays."""

import math

import numpy as np
import pytest

from controller.validation.metrics import mrr_at_k, ndcg_at_k, recall_at_k

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
