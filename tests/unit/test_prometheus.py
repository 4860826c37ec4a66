"""controller.metrics: series from engine callbacks and statuses, bounded labels, HTTP."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest
from prometheus_client import CollectorRegistry

from controller.errors import MilvusUnavailable, SpecError
from controller.metrics import PrometheusTelemetry, error_reason, serve_http
from controller.spec import EmbeddingRelease, parse_release
from controller.status import Phase, ReleaseStatus, with_phase
from controller.validation.results import judge

SPEC = """
apiVersion: embrel.dev/v1alpha1
kind: EmbeddingRelease
metadata: {{name: products, namespace: search}}
spec:
  alias: products
  version: {version}
  model: {{name: m}}
  milvus: {{uri: ./milvus.db}}
  collection: {{dimension: 8}}
  source: {{files: {{uri: data.parquet}}}}
  monitoring:
    thresholds: {{minSameIdCosine: 0.9, maxMmd: 0.05, maxRowCountChange: 0.1}}
"""
TRACK = "search/products"
KEY = {"namespace": "search", "release": "products"}
# Every label name an embrel_ series may carry: the enums and the release's identity.
ALLOWED_LABELS = {
    "namespace", "release", "alias", "version", "collection", "model", "role",
    "phase", "stage", "step", "gate", "kind", "metric", "reason", "operation", "le",
}  # fmt: skip


def release(version: str = "v2") -> EmbeddingRelease:
    return parse_release(SPEC.format(version=version))


def status(phase: Phase, **parts: object) -> ReleaseStatus:
    s = with_phase(ReleaseStatus(), phase, "r", "m", "2030-01-01T00:00:00Z")
    for name, value in parts.items():
        setattr(s, name, value)
    return s


@pytest.fixture
def tel() -> PrometheusTelemetry:
    return PrometheusTelemetry(CollectorRegistry())


def value(t: PrometheusTelemetry, name: str, **labels: str) -> float | None:
    return t.registry.get_sample_value(name, labels)


def series(t: PrometheusTelemetry, name: str) -> list[dict[str, str]]:
    return [s.labels for m in t.registry.collect() for s in m.samples if s.name == name]


def test_phase_is_one_hot_over_every_phase_and_follows_the_version(
    tel: PrometheusTelemetry,
) -> None:
    tel.observe_status(release("v2"), status(Phase.BUILDING))
    phases = {
        s["phase"]: value(tel, "embrel_release_phase", **s)
        for s in series(tel, "embrel_release_phase")
    }
    assert set(phases) == {str(p) for p in Phase}
    assert [p for p, v in phases.items() if v == 1.0] == ["Building"]

    tel.observe_status(release("v3"), status(Phase.LIVE))
    rows = series(tel, "embrel_release_phase")
    assert {r["version"] for r in rows} == {"v3"}, "the old version's series are removed"
    assert value(tel, "embrel_release_phase", **KEY, version="v3", phase="Live") == 1.0
    assert value(tel, "embrel_release_phase", **KEY, version="v3", phase="Building") == 0.0


def test_last_transition_moves_only_on_a_phase_change(tel: PrometheusTelemetry) -> None:
    tel.observe_status(release(), status(Phase.BUILDING))
    first = value(tel, "embrel_last_transition_timestamp_seconds", **KEY)
    # First sight: the conditions' lastTransitionTime (2030-01-01), not the time of the scrape.
    assert first == pytest.approx(1893456000.0)
    tel.observe_status(release(), status(Phase.BUILDING))
    assert value(tel, "embrel_last_transition_timestamp_seconds", **KEY) == first
    tel.observe_status(release(), status(Phase.INDEXING))
    moved = value(tel, "embrel_last_transition_timestamp_seconds", **KEY)
    assert moved is not None and moved != first


def test_info_names_live_and_candidate(tel: PrometheusTelemetry) -> None:
    live = {"version": "v1", "collection": "products__v1", "model": "m"}
    cand = {"version": "v2", "collection": "products__v2", "model": "m"}
    tel.observe_status(release(), status(Phase.VALIDATING, live=live, candidate=cand))
    rows = sorted(series(tel, "embrel_release_info"), key=lambda r: r["role"])
    assert [(r["role"], r["version"], r["collection"]) for r in rows] == [
        ("candidate", "v2", "products__v2"),
        ("live", "v1", "products__v1"),
    ]
    promoted = {"version": "v2", "collection": "products__v2", "model": "m"}
    tel.observe_status(release(), status(Phase.LIVE, live=promoted))
    assert [(r["role"], r["version"]) for r in series(tel, "embrel_release_info")] == [
        ("live", "v2")
    ]


def test_validation_gauges_come_from_the_status_checks(tel: PrometheusTelemetry) -> None:
    checks = [
        judge("recall@10", 0.93, 0.9),
        judge("minSameIdCosine", 0.5, 0.8),
        judge("p99LatencyMs", 12.0, None),
    ]
    validation = {"outcome": "failed", "checks": [c.to_dict() for c in checks]}
    tel.observe_status(release("v2"), status(Phase.FAILED, validation=validation))
    labels = {**KEY, "version": "v2"}
    assert value(tel, "embrel_validation_value", **labels, gate="recall@10") == 0.93
    assert value(tel, "embrel_validation_threshold", **labels, gate="recall@10") == 0.9
    assert value(tel, "embrel_validation_passed", **labels, gate="recall@10") == 1.0
    assert value(tel, "embrel_validation_passed", **labels, gate="minSameIdCosine") == 0.0
    assert value(tel, "embrel_validation_value", **labels, gate="p99LatencyMs") == 12.0
    assert value(tel, "embrel_validation_threshold", **labels, gate="p99LatencyMs") is None

    tel.observe_status(release("v3"), status(Phase.BUILDING))
    assert series(tel, "embrel_validation_value") == [], "a new version starts without gates"


def test_drift_gauges_thresholds_and_breaches(tel: PrometheusTelemetry) -> None:
    tel.observe_status(release(), status(Phase.LIVE))
    tel.drift(TRACK, {"same_id_cosine": 0.99, "mmd": 0.2, "row_count_change": -0.5, "x": 1.0})
    assert value(tel, "embrel_drift_same_id_cosine", **KEY) == 0.99
    assert value(tel, "embrel_drift_mmd", **KEY) == 0.2
    assert value(tel, "embrel_drift_threshold", **KEY, metric="same_id_cosine") == 0.9
    assert value(tel, "embrel_drift_threshold", **KEY, metric="centroid_distance") is None
    breached = {
        s["metric"]: value(tel, "embrel_drift_breached", **s)
        for s in series(tel, "embrel_drift_breached")
    }
    # cosine above its minimum; MMD above its maximum; rows shrank by half (|-0.5| > 0.1).
    assert breached == {"same_id_cosine": 0.0, "mmd": 1.0, "row_count_change": 1.0}
    assert value(tel, "embrel_drift_last_measured_timestamp_seconds", **KEY) is not None

    tel.drift(TRACK, {"same_id_cosine": 0.1})
    assert value(tel, "embrel_drift_breached", **KEY, metric="same_id_cosine") == 1.0


def test_drift_is_cleared_when_another_collection_goes_live(tel: PrometheusTelemetry) -> None:
    v1 = {"version": "v1", "collection": "products__v1", "model": "m"}
    v2 = {"version": "v2", "collection": "products__v2", "model": "m"}
    tel.observe_status(release(), status(Phase.LIVE, live=v1))
    tel.drift(TRACK, {"same_id_cosine": 0.2})
    # The pass's status still carries v1's previous measurement: the callback wins.
    old = {"values": {"same_id_cosine": 0.99}}
    tel.observe_status(release(), status(Phase.LIVE, live=v1, drift=old))
    assert value(tel, "embrel_drift_same_id_cosine", **KEY) == 0.2
    tel.observe_status(release(), status(Phase.LIVE, live=v2))
    assert value(tel, "embrel_drift_same_id_cosine", **KEY) is None
    assert series(tel, "embrel_drift_breached") == []


def test_drift_from_the_status_after_a_restart(tel: PrometheusTelemetry) -> None:
    v1 = {"version": "v1", "collection": "products__v1", "model": "m"}
    drift = {"values": {"same_id_cosine": 0.5, "mmd": 0.01}, "breaches": ["..."]}
    tel.observe_status(release(), status(Phase.LIVE, live=v1, drift=drift))
    assert value(tel, "embrel_drift_mmd", **KEY) == 0.01
    assert value(tel, "embrel_drift_breached", **KEY, metric="same_id_cosine") == 1.0


def test_series_names_cover_what_is_exported(tel: PrometheusTelemetry) -> None:
    tel.observe_status(release(), status(Phase.LIVE))
    tel.drift(TRACK, dict.fromkeys(("same_id_cosine", "mmd", "canary_overlap"), 0.5))
    tel.step_finished(TRACK, "build", 1.0, False)
    tel.cutover(TRACK, "rollback", 0.1, 1, True)
    tel.progress(TRACK, "loading", 1, 2)
    tel.milvus_call("search", 0.1, "rejected")
    tel.reconcile_error(TRACK, "SpecError")
    tel.cache(TRACK, 1, 1)
    tel.set_leader(True)
    names = tel.series_names()
    for metric in tel.registry.collect():
        for sample in metric.samples:
            if not sample.name.endswith("_created"):
                assert sample.name in names, sample.name
                assert set(sample.labels) <= names[sample.name], sample


def test_drift_before_the_first_status_is_judged_once_thresholds_are_known(
    tel: PrometheusTelemetry,
) -> None:
    tel.drift(TRACK, {"same_id_cosine": 0.5})
    assert value(tel, "embrel_drift_same_id_cosine", **KEY) == 0.5
    assert series(tel, "embrel_drift_breached") == []
    v1 = {"version": "v1", "collection": "products__v1", "model": "m"}
    tel.observe_status(release(), status(Phase.LIVE, live=v1))
    assert value(tel, "embrel_drift_breached", **KEY, metric="same_id_cosine") == 1.0


def test_cutovers_and_rollbacks(tel: PrometheusTelemetry) -> None:
    tel.observe_status(release(), status(Phase.LIVE))
    # Counters start at 0 so that increase() sees the first rollback.
    assert value(tel, "embrel_rollbacks_total", **KEY, kind="auto") == 0.0
    tel.cutover(TRACK, "promote", 0.02, 1, True)
    tel.cutover(TRACK, "auto_rollback", 0.03, 2, False)
    assert value(tel, "embrel_cutovers_total", kind="promote") == 1.0
    assert value(tel, "embrel_cutovers_total", kind="auto_rollback") == 1.0
    assert value(tel, "embrel_rollbacks_total", **KEY, kind="auto") == 1.0
    assert value(tel, "embrel_rollbacks_total", **KEY, kind="manual") == 0.0
    assert value(tel, "embrel_cutover_verified", **KEY) == 0.0
    assert value(tel, "embrel_cutover_attempts", **KEY) == 2.0
    assert value(tel, "embrel_cutover_duration_seconds_count", kind="auto_rollback") == 1.0


def test_build_progress_and_throughput() -> None:
    clock = iter([100.0, 102.0, 103.0])
    tel = PrometheusTelemetry(CollectorRegistry(), monotonic=lambda: next(clock))
    tel.progress(TRACK, "loading products__v2", 0, 1000)
    tel.progress(TRACK, "loading products__v2", 400, 1000)
    labels = {**KEY, "stage": "loading"}
    assert value(tel, "embrel_build_rows_loaded", **labels) == 400.0
    assert value(tel, "embrel_build_rows_total", **labels) == 1000.0
    assert value(tel, "embrel_build_rows_per_second", **labels) == 200.0
    tel.progress(TRACK, "loading products__v2", 100, 1000)  # started over
    assert value(tel, "embrel_build_rows_loaded", **labels) == 100.0


def test_labels_stay_bounded(tel: PrometheusTelemetry) -> None:
    """Free text and ids never become label values; only the known label names exist."""
    tel.observe_status(release(), status(Phase.LIVE))
    tel.progress(TRACK, "loading products__v2 (id 12345)", 5, None)
    tel.step_finished(TRACK, "copy rows 1..500", 0.5, False)
    tel.reconcile_error(TRACK, "cannot reach Milvus at http://10.0.0.1:19530")
    tel.reconcile_error(release(), error_reason(MilvusUnavailable("x")))
    tel.milvus_call("search", 0.01, "unavailable")
    tel.milvus_call("reading ids of products__v2", 0.01, None)
    tel.cutover(TRACK, "sideways", 0.1, 1, True)
    tel.cache(TRACK, 3, 1)
    names = set()
    for metric in tel.registry.collect():
        for sample in metric.samples:
            if sample.name.startswith("embrel_"):
                names |= set(sample.labels)
    assert names <= ALLOWED_LABELS
    assert {s["stage"] for s in series(tel, "embrel_build_rows_loaded")} == {"loading"}
    assert value(tel, "embrel_step_failures_total", step="other") == 1.0
    reasons = {s["reason"] for s in series(tel, "embrel_reconcile_errors_total")}
    assert reasons == {"Other", "MilvusUnavailable"}
    ops = {s["operation"] for s in series(tel, "embrel_milvus_request_duration_seconds_count")}
    assert ops == {"search", "other"}
    assert (
        value(tel, "embrel_milvus_request_errors_total", operation="search", kind="unavailable")
        == 1.0
    )
    assert value(tel, "embrel_cutovers_total", kind="other") == 1.0
    assert value(tel, "embrel_embedding_cache_hits_total", **KEY) == 3.0


def test_error_reason_is_the_error_class() -> None:
    assert error_reason(SpecError("f", [("a", "b")])) == "SpecError"
    assert error_reason(ValueError("boom")) == "Unexpected"


def test_forget_removes_a_release(tel: PrometheusTelemetry) -> None:
    tel.observe_status(release(), status(Phase.LIVE))
    tel.drift(TRACK, {"mmd": 0.3})
    tel.forget(TRACK)
    left = [
        s
        for m in tel.registry.collect()
        for s in m.samples
        if s.labels.get("release") == "products"
    ]
    assert left == []


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_http_endpoints(tel: PrometheusTelemetry) -> None:
    server = serve_http(0, tel.is_leader, host="127.0.0.1", registry=tel.registry)
    try:
        base = f"http://127.0.0.1:{server.port}"
        assert get(f"{base}/healthz")[0] == 200
        assert get(f"{base}/readyz")[0] == 503
        tel.set_leader(True)
        tel.observe_status(release(), status(Phase.LIVE))
        assert get(f"{base}/readyz")[0] == 200
        code, body = get(f"{base}/metrics")
        assert code == 200
        assert "embrel_leader 1.0" in body
        assert (
            'embrel_release_phase{namespace="search",phase="Live",release="products",version="v2"} 1.0'
            in body
        )
        assert get(f"{base}/nothing")[0] == 404
    finally:
        server.close()


def test_a_raising_readiness_check_means_not_ready() -> None:
    def broken() -> bool:
        raise RuntimeError("no")

    server = serve_http(0, broken, host="127.0.0.1", registry=CollectorRegistry())
    try:
        assert get(f"http://127.0.0.1:{server.port}/readyz")[0] == 503
    finally:
        server.close()
