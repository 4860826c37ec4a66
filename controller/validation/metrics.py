"""Retrieval-quality metrics as pure numpy functions.

Conventions: ``retrieved`` is an (nq, k) int64 array of result ids in rank order,
padded with -1 where fewer than k results came back; ``relevant`` is a list of nq
int64 arrays of relevant ids. Queries without relevant ids are skipped (their
recall is undefined), and an all-empty set yields NaN, which no gate passes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def recall_at_k(retrieved: np.ndarray, relevant: Sequence[np.ndarray], k: int) -> float:
    """Mean over queries of |top-k ∩ relevant| / min(k, |relevant|).

    Dividing by min(k, |relevant|) keeps a perfect engine at 1.0 when a query has
    more relevant ids than k (the convention of BEIR's recall@k "capped").
    """
    scores = [
        len(np.intersect1d(row[:k][row[:k] >= 0], rel)) / min(k, len(rel))
        for row, rel in zip(retrieved, relevant, strict=True)
        if len(rel)
    ]
    return float(np.mean(scores)) if scores else float("nan")


def ndcg_at_k(retrieved: np.ndarray, relevant: Sequence[np.ndarray], k: int) -> float:
    """Mean binary-relevance nDCG@k: DCG = Σ rel_i / log2(i + 1), i from 1."""
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    scores = []
    for row, rel in zip(retrieved, relevant, strict=True):
        if not len(rel):
            continue
        gains = np.isin(row[:k], rel).astype(float)
        ideal = discounts[: min(k, len(rel))].sum()
        scores.append(float((gains * discounts[: len(gains)]).sum() / ideal))
    return float(np.mean(scores)) if scores else float("nan")


def mrr_at_k(retrieved: np.ndarray, relevant: Sequence[np.ndarray], k: int) -> float:
    """Mean reciprocal rank of the first relevant id within the top k (0 when none)."""
    scores = []
    for row, rel in zip(retrieved, relevant, strict=True):
        if not len(rel):
            continue
        hits = np.flatnonzero(np.isin(row[:k], rel))
        scores.append(1.0 / (hits[0] + 1) if len(hits) else 0.0)
    return float(np.mean(scores)) if scores else float("nan")
