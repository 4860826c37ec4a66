"""The drift rules have one owner (controller.monitoring); the gauges judge by them."""

from __future__ import annotations

import math

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from controller import monitoring
from controller.metrics import PrometheusTelemetry
from controller.spec import DriftThresholds, parse_release
from controller.status import Phase, ReleaseStatus, with_phase

# A threshold for every drift value, and a value on either side of each.
LIMITS = {
    "min_same_id_cosine": 0.9,
    "max_centroid_distance": 0.1,
    "max_mmd": 0.05,
    "min_canary_overlap": 0.8,
    "max_row_count_change": 0.1,
    "max_query_distance": 0.3,
}
WITHIN = {
    "same_id_cosine": 0.95,
    "centroid_distance": 0.05,
    "mmd": 0.01,
    "canary_overlap": 0.9,
    "row_count_change": 0.05,
    "query_distance": 0.2,
}
BEYOND = {
    "same_id_cosine": 0.5,
    "centroid_distance": 0.5,
    "mmd": 0.5,
    "canary_overlap": 0.5,
    "row_count_change": 0.5,
    "query_distance": 0.5,
}
UNTRUSTED = [math.nan, math.inf, -math.inf]
SPEC = """
apiVersion: embrel.dev/v1alpha1
kind: EmbeddingRelease
metadata: {name: products, namespace: search}
spec:
  alias: products
  version: v1
  model: {name: m}
  milvus: {uri: ./milvus.db}
  collection: {dimension: 8}
  source: {files: {uri: data.parquet}}
  monitoring:
    thresholds:
      minSameIdCosine: 0.9
      maxCentroidDistance: 0.1
      maxMmd: 0.05
      minCanaryOverlap: 0.8
      maxRowCountChange: 0.1
      maxQueryDistance: 0.3
"""
TRACK = "search/products"


def gauge_breached(values: dict[str, float]) -> dict[str, float | None]:
    """What ``embrel_drift_breached`` says for each value, after a status and a drift pass."""
    tel = PrometheusTelemetry(CollectorRegistry())
    release = parse_release(SPEC)
    live = {"version": "v1", "collection": "products__v1", "model": "m"}
    status = with_phase(ReleaseStatus(), Phase.LIVE, "Live", "", "2030-01-01T00:00:00Z")
    status.live = live
    tel.observe_status(release, status)
    tel.drift(TRACK, values)
    labels = {"namespace": "search", "release": "products"}
    return {
        key: tel.registry.get_sample_value("embrel_drift_breached", {**labels, "metric": key})
        for key in values
    }


def test_the_spec_example_sets_every_threshold() -> None:
    assert parse_release(SPEC).spec.monitoring.thresholds == DriftThresholds(**LIMITS)


def test_every_threshold_has_a_rule_and_every_measured_value_a_threshold() -> None:
    assert {limit.field for limit in monitoring.LIMITS} == set(DriftThresholds.model_fields)
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(40, 8)).astype(np.float32)
    answers = np.tile(np.arange(5), (3, 1))
    ref = monitoring.reference(np.arange(40), vectors, vectors[:3], answers, row_count=40)
    current = dict(enumerate(vectors))
    measured = monitoring.measure(ref, current, vectors, answers, 40, queries=vectors[:5])
    assert set(measured) == set(monitoring.DRIFT_KEYS)


@pytest.mark.parametrize("value", UNTRUSTED, ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("key", monitoring.DRIFT_KEYS)
def test_a_value_that_is_not_a_finite_number_is_a_breach(key: str, value: float) -> None:
    found = monitoring.breaches({key: value}, DriftThresholds(**LIMITS))
    assert len(found) == 1 and found[0].startswith(f"{key} ")
    assert "not a finite number" in found[0]
    assert gauge_breached({key: value}) == {key: 1.0}


@pytest.mark.parametrize("key", monitoring.DRIFT_KEYS)
def test_the_gauge_and_the_rollback_rule_agree(key: str) -> None:
    limits = DriftThresholds(**LIMITS)
    assert monitoring.breaches({key: WITHIN[key]}, limits) == []
    assert gauge_breached({key: WITHIN[key]}) == {key: 0.0}
    assert len(monitoring.breaches({key: BEYOND[key]}, limits)) == 1
    assert gauge_breached({key: BEYOND[key]}) == {key: 1.0}


def test_a_shrinking_collection_breaches_like_a_growing_one() -> None:
    assert monitoring.breached("row_count_change", -0.5, 0.1)
    assert not monitoring.breached("row_count_change", -0.05, 0.1)


def test_a_value_without_a_threshold_is_not_judged() -> None:
    assert monitoring.breaches({"mmd": math.nan}, DriftThresholds()) == []


def test_an_unknown_drift_value_is_named() -> None:
    with pytest.raises(ValueError, match="unknown drift value 'cosine'"):
        monitoring.breached("cosine", 0.5, 0.9)
