"""Drift of the live collection from the reference taken when it went live.

Pure: the engine reads vectors and answers from Milvus and hands them here. At
promotion a *reference* is captured: a seeded, bounded sample of ids and their
vectors, canary queries and their top-k answers, the row count and the RBF bandwidth.
Every ``spec.monitoring.interval`` the live collection is measured against it:

* ``same_id_cosine``  mean cosine of the sampled ids' vectors now vs then (catches
  in-place writes made with another model);
* ``centroid_distance`` and ``mmd``  a fresh sample vs the reference sample (the
  corpus distribution moved: bulk inserts of different content);
* ``canary_overlap``  mean top-k overlap of the canary queries' answers now vs then;
* ``row_count_change``  |rows now - rows then| / rows then;
* ``query_distance``  cosine distance between the centroid of recent production
  queries (``spec.monitoring.queries``) and the corpus centroid.

This module owns the drift rules: which values there are, which threshold bounds
each, and when a value is a breach. ``controller.metrics`` reads them from here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from controller.spec import DriftThresholds
from controller.validation import metrics as m
from controller.validation.results import format_number

# The MMD kernel matrix is (2n)^2: cap each side so a 2,000-vector sample stays cheap.
MMD_SAMPLE = 1000


@dataclass(frozen=True)
class Reference:
    ids: np.ndarray  # (n,) int64
    vectors: np.ndarray  # (n, d) float32, row i is ids[i]
    canary_queries: np.ndarray  # (c, d) float32
    canary_answers: np.ndarray  # (c, k) int64, -1 padded
    row_count: int
    bandwidth: float  # RBF sigma fixed at capture, so MMD values compare over time

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            "ids": self.ids,
            "vectors": self.vectors,
            "canary_queries": self.canary_queries,
            "canary_answers": self.canary_answers,
            "row_count": np.asarray([self.row_count]),
            "bandwidth": np.asarray([self.bandwidth]),
        }

    @classmethod
    def from_arrays(cls, a: dict[str, np.ndarray]) -> Reference:
        return cls(
            ids=a["ids"],
            vectors=a["vectors"],
            canary_queries=a["canary_queries"],
            canary_answers=a["canary_answers"],
            row_count=int(a["row_count"][0]),
            bandwidth=float(a["bandwidth"][0]),
        )


def reference(
    ids: np.ndarray,
    vectors: np.ndarray,
    canary_queries: np.ndarray,
    canary_answers: np.ndarray,
    row_count: int,
) -> Reference:
    half = vectors[:MMD_SAMPLE]
    # Median heuristic on the reference itself (mmd of a sample against its halves).
    split = max(2, len(half) // 2)
    _, sigma = m.mmd_rbf(half[:split], half[split:]) if len(half) >= 4 else (0.0, 1.0)
    return Reference(
        ids=np.asarray(ids, dtype=np.int64),
        vectors=np.asarray(vectors, dtype=np.float32),
        canary_queries=np.asarray(canary_queries, dtype=np.float32),
        canary_answers=np.asarray(canary_answers, dtype=np.int64),
        row_count=row_count,
        bandwidth=sigma,
    )


def measure(
    ref: Reference,
    current: dict[int, np.ndarray],
    fresh_sample: np.ndarray,
    canary_answers: np.ndarray,
    row_count: int,
    queries: np.ndarray | None = None,
) -> dict[str, float]:
    """Drift values; ``current`` maps reference ids to their vectors now (absent = deleted)."""
    values: dict[str, float] = {}
    kept = [i for i, id_ in enumerate(ref.ids.tolist()) if id_ in current]
    if kept:
        now = np.stack([current[int(ref.ids[i])] for i in kept])
        values["same_id_cosine"] = float(np.nanmean(m.cosine_same_ids(ref.vectors[kept], now)))
    if len(fresh_sample) >= 2 and fresh_sample.shape[1] == ref.vectors.shape[1]:
        values["centroid_distance"] = m.centroid_distance(ref.vectors, fresh_sample)
        values["mmd"], _ = m.mmd_rbf(
            ref.vectors[:MMD_SAMPLE], fresh_sample[:MMD_SAMPLE], bandwidth=ref.bandwidth
        )
    if len(ref.canary_answers):
        k = ref.canary_answers.shape[1]
        values["canary_overlap"] = m.topk_overlap(canary_answers, ref.canary_answers, k)
    values["row_count_change"] = abs(row_count - ref.row_count) / max(ref.row_count, 1)
    if queries is not None and len(queries) and len(fresh_sample):
        values["query_distance"] = m.cosine_centroid_distance(queries, fresh_sample)
    return values


@dataclass(frozen=True)
class DriftLimit:
    """How one drift value is judged against its threshold."""

    key: str  # the value's name in what ``measure`` returns
    field: str  # its threshold in ``spec.monitoring.thresholds`` (DriftThresholds)
    larger_is_worse: bool  # a maximum (True) or a minimum (False)


LIMITS = (
    DriftLimit("same_id_cosine", "min_same_id_cosine", larger_is_worse=False),
    DriftLimit("centroid_distance", "max_centroid_distance", larger_is_worse=True),
    DriftLimit("mmd", "max_mmd", larger_is_worse=True),
    DriftLimit("canary_overlap", "min_canary_overlap", larger_is_worse=False),
    DriftLimit("row_count_change", "max_row_count_change", larger_is_worse=True),
    DriftLimit("query_distance", "max_query_distance", larger_is_worse=True),
)
DRIFT_KEYS = tuple(limit.key for limit in LIMITS)
_BY_KEY = {limit.key: limit for limit in LIMITS}


def thresholds(limits: DriftThresholds) -> dict[str, float]:
    """Configured thresholds by value key (for status and the threshold gauges)."""
    out = {}
    for limit in LIMITS:
        value = getattr(limits, limit.field)
        if value is not None:
            out[limit.key] = float(value)
    return out


def breached(key: str, value: float, threshold: float) -> bool:
    """Whether drift value ``key`` is beyond ``threshold``.

    NaN and +/-inf always are: a measurement that cannot be trusted must not pass.
    """
    if key not in _BY_KEY:
        raise ValueError(f"unknown drift value {key!r} (known: {', '.join(DRIFT_KEYS)})")
    if not math.isfinite(value):
        return True
    if key == "row_count_change":  # shrinking is as suspicious as growing
        value = abs(value)
    return value > threshold if _BY_KEY[key].larger_is_worse else value < threshold


def breaches(values: dict[str, float], limits: DriftThresholds) -> list[str]:
    """Human-readable breaches, e.g. ``same_id_cosine 0.12 < 0.9``."""
    out = []
    for key, threshold in thresholds(limits).items():
        value = values.get(key)
        if value is None or not breached(key, value, threshold):
            continue
        if not math.isfinite(value):
            out.append(f"{key} {value} is not a finite number (threshold {threshold:g})")
        else:
            out.append(
                f"{key} {format_number(value)} {'>' if _BY_KEY[key].larger_is_worse else '<'} "
                f"{format_number(threshold)}"
            )
    return out
