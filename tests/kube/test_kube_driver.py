"""The Kubernetes driver's parts, against the API mock (no Milvus needed).

End-to-end runs of the controller process are in test_kube_e2e.py (heavy).
"""

from __future__ import annotations

import base64
import json
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from prometheus_client import CollectorRegistry

from controller.config import ControllerConfig
from controller.drivers.informer import Informer, needs_reconcile
from controller.drivers.kube import (
    ANNOTATIONS,
    FINALIZER,
    EventRecorder,
    KubeController,
    KubeOptions,
    KubeReporter,
    Redactor,
    StatusWriter,
    camel_reason,
    deletion_plan,
    intents_of,
)
from controller.drivers.leader import LeaderElector
from controller.drivers.workqueue import WorkQueue
from controller.engine import OWNER_VALUE, P_OWNER, P_TRACK, CollectionState, Observation
from controller.errors import KubeRejected, KubeUnavailable
from controller.kube import KubeGateway, load_api_client
from controller.metrics import PrometheusTelemetry
from controller.ports import NullTelemetry
from controller.spec import release_from_dict
from controller.status import Phase, ReleaseStatus
from tests.conftest import Corpus, fake_backend, release_yaml
from tests.support.kube_api import EMBREL, EVENTS, KubeApiServer
from tests.support.s3_server import S3Bucket

G, V, P = "embrel.dev", "v1alpha1", "embeddingreleases"


def spec(**extra: Any) -> dict[str, Any]:
    return {
        "alias": "products",
        "version": "v1",
        "model": {"name": "m"},
        "milvus": {"uri": "milvus.db"},
        "collection": {"dimension": 8},
        "source": {"files": {"uri": "v1.parquet"}},
        **extra,
    }


def create(api: client.ApiClient, name: str = "products", **extra: Any) -> dict[str, Any]:
    body = {
        "apiVersion": f"{G}/{V}",
        "kind": "EmbeddingRelease",
        "metadata": {"name": name, "namespace": "test"},
        "spec": spec(**extra),
    }
    out: dict[str, Any] = client.CustomObjectsApi(api).create_namespaced_custom_object(
        G, V, "test", P, body
    )
    return out


def wait_for(predicate: Any, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout}s")


# -- the work queue ------------------------------------------------------------------


def test_queue_hands_a_key_to_one_worker_at_a_time() -> None:
    q = WorkQueue()
    q.add("ns/a")
    q.add("ns/a")  # deduplicated
    assert q.get(timeout=0) == "ns/a"
    q.add("ns/a")  # changed while being processed: not handed out again yet
    assert q.get(timeout=0.05) is None
    q.done("ns/a")
    assert q.get(timeout=0) == "ns/a"
    q.done("ns/a")
    assert q.get(timeout=0.05) is None


def test_queue_backs_off_exponentially_per_key_until_forgotten() -> None:
    now = [0.0]
    q = WorkQueue(base_delay=1.0, max_delay=5.0, clock=lambda: now[0])
    assert [q.add_rate_limited("ns/a") for _ in range(4)] == [1.0, 2.0, 4.0, 5.0]
    assert q.add_rate_limited("ns/b", at_least=3.0) == 3.0  # the engine's requeue_after wins
    q.forget("ns/a")
    assert q.add_rate_limited("ns/a") == 1.0
    assert q.get(timeout=0) is None  # nothing is due yet
    now[0] = 1.5
    assert q.get(timeout=0) == "ns/a"


def test_queue_add_after_delays_a_key() -> None:
    q = WorkQueue()
    q.add_after("ns/a", 0.2)
    started = time.monotonic()
    assert q.get(timeout=2) == "ns/a"
    assert time.monotonic() - started >= 0.15


# -- list + watch ------------------------------------------------------------------------


def test_informer_relists_after_an_expired_watch(
    api: client.ApiClient, kube: KubeGateway, kube_api: KubeApiServer
) -> None:
    create(api, "first")
    seen: list[tuple[str, bool]] = []
    stop = threading.Event()
    informer = Informer(kube, "test", lambda k, o, n: seen.append((k, n is None)), stop, 5)
    thread = threading.Thread(target=informer.run, daemon=True)
    thread.start()
    try:
        wait_for(informer.synced.is_set)
        assert informer.known_keys() == ["test/first"]
        create(api, "second")
        wait_for(lambda: "test/second" in informer.known_keys())
        assert informer.lists == 1  # a watch, not a list, brought it
        kube_api.expire_watches()  # the watch ends; its resourceVersion is compacted
        wait_for(lambda: informer.lists == 2)
        create(api, "third")
        wait_for(lambda: "test/third" in informer.known_keys())
        assert sorted(informer.known_keys()) == ["test/first", "test/second", "test/third"]
    finally:
        stop.set()
    assert ("test/second", False) in seen


def test_reconcile_ignores_our_own_status_writes() -> None:
    base = {"metadata": {"generation": 1, "annotations": {}}, "status": {"phase": "Building"}}
    status_only = {**base, "status": {"phase": "Live"}}
    assert not needs_reconcile(base, status_only)
    assert needs_reconcile(base, {**base, "metadata": {"generation": 2, "annotations": {}}})
    promoted = {"metadata": {"generation": 1, "annotations": {ANNOTATIONS["promote"]: "true"}}}
    assert needs_reconcile(base, promoted)
    assert needs_reconcile(None, base) and needs_reconcile(base, None)


# -- leader election ---------------------------------------------------------------------


def test_one_leader_then_takeover_after_the_lease_expires(kube: KubeGateway) -> None:
    now = [0.0]
    clock = lambda: now[0]  # noqa: E731
    lost: list[str] = []
    a = LeaderElector(kube, "test", "lease", "a", 3, on_stopped=lambda: lost.append("a"))
    b = LeaderElector(kube, "test", "lease", "b", 3, clock=clock)
    a.clock = clock
    assert a.step() and a.leader
    assert b.step() and not b.leader and b.healthy  # a standby in good health
    now[0] = 2.0
    assert a.step() and a.leader  # renewed
    now[0] = 4.5  # b saw the renewal at 2.0: not expired for b yet
    b.step()
    assert not b.leader
    now[0] = 8.0  # a stopped renewing (died) at 2.0
    b.step()
    assert b.leader
    lease = kube.get_lease("test", "lease")
    assert lease is not None
    assert lease["spec"]["holderIdentity"] == "b"
    assert lease["spec"]["leaseTransitions"] == 1
    assert not a.step()  # a comes back: it cannot renew, and knows it lost
    assert lost == ["a"] and not a.leader


def test_a_released_lease_is_taken_at_once(kube: KubeGateway) -> None:
    a = LeaderElector(kube, "test", "lease", "a", 15)
    b = LeaderElector(kube, "test", "lease", "b", 15)
    a.step()
    b.step()
    assert a.leader and not b.leader
    a.release()
    b.step()
    assert b.leader  # no 15 s wait: a gave it up on shutdown


def test_the_fence_closes_once_the_last_renewal_is_older_than_the_renew_deadline(
    kube: KubeGateway,
) -> None:
    now = [0.0]
    a = LeaderElector(kube, "test", "lease", "a", 3, clock=lambda: now[0])
    verdict = a.may_act()
    assert not verdict and verdict.why == "a does not hold Lease test/lease"
    assert a.step() and a.may_act()
    now[0] = 1.9  # the renew deadline of a 3 s Lease is 2 s
    assert a.may_act()
    now[0] = 2.0  # the renew thread is stuck: no step ran, and `leader` is still true
    verdict = a.may_act()
    assert a.leader and not verdict
    assert "last renewed Lease test/lease 2.0s ago (renew deadline 2.0s)" in verdict.why
    assert a.step() and a.may_act()  # renewed: it may act again


def test_a_renewal_counts_from_before_its_request(
    kube: KubeGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A standby measures the lease from when it saw the renewal, never before the
    request went out: a slow renew call must not extend the leader's own view."""
    now = [0.0]
    a = LeaderElector(kube, "test", "lease", "a", 3, clock=lambda: now[0])
    renew = a._try

    def slow() -> bool:
        ok = renew()
        now[0] += 1.5  # the answer came back 1.5 s later
        return ok

    monkeypatch.setattr(a, "_try", slow)
    assert a.step() and a.leader
    now[0] = 2.0  # 2 s since the request (0.5 s since the answer)
    assert not a.may_act()


# -- status, events, intents ------------------------------------------------------------------


def test_status_conflict_is_retried_on_the_fresh_object(
    api: client.ApiClient, kube: KubeGateway
) -> None:
    obj = create(api)
    client.CustomObjectsApi(api).patch_namespaced_custom_object(
        G,
        V,
        "test",
        P,
        "products",
        {"metadata": {"annotations": {"by": "a person"}}},
        _content_type="application/merge-patch+json",
    )
    writer = StatusWriter(kube, obj, Redactor())  # holds the older resourceVersion
    writer.final(ReleaseStatus(phase=Phase.BUILDING, message="building", observed_generation=1))
    assert writer.conflicts == 1 and writer.writes == 1
    fresh = kube.get_release("test", "products")
    assert fresh["status"]["phase"] == "Building"
    assert fresh["status"]["observedGeneration"] == 1
    assert fresh["metadata"]["annotations"] == {"by": "a person"}


def test_progress_is_written_at_a_bounded_rate(api: client.ApiClient, kube: KubeGateway) -> None:
    now = [0.0]
    writer = StatusWriter(kube, create(api), Redactor(), interval=2.0, clock=lambda: now[0])
    building = ReleaseStatus(phase=Phase.BUILDING, message="building", observed_generation=1)
    writer.status(building)  # a step starts: written at once
    reporter = KubeReporter(EventRecorder(kube, "me", Redactor()), lambda: writer.obj, writer)
    with reporter.progress("loading products__v1", 1000) as advance:
        assert kube.get_release("test", "products")["status"]["progress"]["done"] == 0
        advance(100)  # within the interval: not written
        assert kube.get_release("test", "products")["status"]["progress"]["done"] == 0
        now[0] = 2.5
        advance(400)
        status = kube.get_release("test", "products")["status"]
    assert status["phase"] == "Building"
    assert status["progress"] == {**status["progress"], "done": 500, "total": 1000}
    writer.final(replace(building, phase=Phase.INDEXING))
    assert "progress" not in kube.get_release("test", "products")["status"]
    assert writer.writes == 4


def test_events_count_repeats(
    api: client.ApiClient, kube: KubeGateway, kube_api: KubeApiServer
) -> None:
    obj = create(api)
    recorder = EventRecorder(kube, "me", Redactor())
    recorder.record(obj, "Promoted", "switched")
    recorder.record(obj, "Promoted", "switched")
    recorder.record(obj, "validation failed", "recall too low", warning=True)
    events = {e["reason"]: e for e in kube_api.objects(EVENTS, "test")}
    assert events["Promoted"]["count"] == 2
    assert events["Promoted"]["involvedObject"]["uid"] == obj["metadata"]["uid"]
    assert events["Promoted"]["type"] == "Normal"
    assert events["ValidationFailed"]["type"] == "Warning"


def test_intents_from_annotations() -> None:
    def obj(**annotations: str) -> dict[str, Any]:
        return {"metadata": {"annotations": {f"embrel.dev/{k}": v for k, v in annotations.items()}}}

    assert intents_of(obj(promote="true")).promote
    assert not intents_of(obj(promote="false")).promote
    assert intents_of(obj(abort="True")).abort
    rollback = intents_of(obj(rollback="true"))
    assert rollback.rollback and rollback.rollback_to is None
    to = intents_of(obj(rollback="v1"))
    assert to.rollback and to.rollback_to == "v1"
    assert intents_of({"metadata": {}}) == intents_of(None)


def test_reasons_are_camel_case_and_secrets_redacted() -> None:
    assert camel_reason("Promoted") == "Promoted"
    assert camel_reason("index build") == "IndexBuild"
    redact = Redactor()
    redact.add(["s3cr3t-token"])
    assert redact("token s3cr3t-token refused") == "token <redacted> refused"
    # The status is redacted as JSON text, where a quote or backslash is escaped.
    redact.add(['pa"ss\\w0rd'])
    status = json.loads(redact(json.dumps({"message": 'login pa"ss\\w0rd refused'})))
    assert status == {"message": "login <redacted> refused"}


# -- deletion ------------------------------------------------------------------------------


def _state(name: str, track: str | None, aliases: tuple[str, ...] = ()) -> CollectionState:
    props = {P_OWNER: OWNER_VALUE, P_TRACK: track} if track else {}
    return CollectionState(name, props, True, (10, 10), aliases)


def test_delete_policy_drops_only_owned_collections_alias_last() -> None:
    release = release_from_dict(
        {
            "apiVersion": f"{G}/{V}",
            "kind": "EmbeddingRelease",
            "metadata": {"name": "products", "namespace": "test"},
            "spec": spec(version="v2"),
        }
    )
    obs = Observation(
        alias_target="products__v2",
        collections={
            "products__v1": _state("products__v1", "test/products"),
            "products__v2": _state("products__v2", "test/products", ("products",)),
            "products__pinned": _state("products__pinned", "test/products", ("pinned",)),
            "products__theirs": _state("products__theirs", "other/products"),
            "products__foreign": _state("products__foreign", None),
        },
    )
    assert deletion_plan(release, obs) == [
        ("drop", "products__v1"),
        ("drop_alias", "products"),
        ("drop", "products__v2"),
    ]
    foreign_live = Observation(
        "products__foreign", {"products__foreign": obs.collections["products__foreign"]}
    )
    assert deletion_plan(release, foreign_live) == []  # not ours: the alias stays too
    pinned_live = Observation(
        "products__v2", {"products__v2": _state("products__v2", "test/products", ("products", "x"))}
    )
    assert deletion_plan(release, pinned_live) == [("drop_alias", "products")]


# -- the gateway ------------------------------------------------------------------------------


def test_api_errors_say_what_to_do(kube: KubeGateway, kube_api: KubeApiServer) -> None:
    kube_api.emulator["list", EMBREL] << 403
    with pytest.raises(KubeRejected, match="ServiceAccount"):
        kube.list_releases("test")
    kube_api.emulator["get", EMBREL] << 503
    with pytest.raises(KubeUnavailable):
        kube.get_release("test", "products")


def test_unreachable_api_is_temporary(tmp_path: Path) -> None:
    config = tmp_path / "kubeconfig"
    KubeApiServer().write_kubeconfig(config)  # port 0: nothing listens there
    config.write_text(config.read_text().replace("127.0.0.1:0", "127.0.0.1:9"))
    gateway = KubeGateway(load_api_client(config))
    with pytest.raises(KubeUnavailable, match="cannot reach"):
        gateway.get_release("test", "products")


def test_secret_credentials_are_decoded_never_shown(
    api: client.ApiClient, kube: KubeGateway
) -> None:
    core = client.CoreV1Api(api)
    token = base64.b64encode(b"s3cr3t-token").decode()
    core.create_namespaced_secret("test", {"metadata": {"name": "auth"}, "data": {"token": token}})
    core.create_namespaced_secret("test", {"metadata": {"name": "bad"}, "data": {"pass": token}})
    creds = kube.read_credentials("test", "auth")
    assert creds.token == "s3cr3t-token"
    assert "s3cr3t" not in repr(creds)
    with pytest.raises(KubeRejected) as exc:
        kube.read_credentials("test", "bad")
    assert "s3cr3t" not in str(exc.value) and "token" in str(exc.value)


# -- the controller, without Milvus -------------------------------------------------------------


def controller(kube: KubeGateway, tmp_path: Path) -> KubeController:
    config = ControllerConfig(state_dir=tmp_path / "state")
    return KubeController(
        kube, config, KubeOptions(leader_elect=False, base_dir=tmp_path, workers=1)
    )


def test_webhook_secret_ref_is_read_from_the_release_namespace_and_redacted(
    api: client.ApiClient, kube: KubeGateway, tmp_path: Path
) -> None:
    from controller.spec import WebhookSpec
    from controller.webhooks import MissingSecret

    core = client.CoreV1Api(api)
    value = base64.b64encode(b"hmac-hook-s3cr3t").decode()
    core.create_namespaced_secret(
        "test", {"metadata": {"name": "hooks"}, "data": {"secret": value}}
    )
    core.create_namespaced_secret("test", {"metadata": {"name": "other"}, "data": {"key": value}})
    ctl = controller(kube, tmp_path)
    hook = WebhookSpec(name="approve", url="http://h.test/", secretRef="hooks")
    assert ctl._hook_secret(hook, "test") == "hmac-hook-s3cr3t"
    assert ctl.redact("said hmac-hook-s3cr3t") == "said <redacted>"
    for name, namespace in (("other", "test"), ("hooks", "elsewhere")):
        with pytest.raises(MissingSecret) as exc:
            ctl._hook_secret(hook.model_copy(update={"secret_ref": name}), namespace)
        assert "s3cr3t" not in str(exc.value) and "secret" in str(exc.value)


def test_invalid_spec_fails_with_field_paths_and_a_warning(
    api: client.ApiClient, kube: KubeGateway, kube_api: KubeApiServer, tmp_path: Path
) -> None:
    create(api, collection={"dimension": 1})  # below the minimum of 2
    ctl = controller(kube, tmp_path)
    ctl.start()
    try:
        obj = wait_for(lambda: kube.get_release("test", "products").get("status"))
    finally:
        ctl.shutdown()
    assert obj["phase"] == "Failed"
    assert "spec.collection.dimension" in obj["message"]
    stalled = next(c for c in obj["conditions"] if c["type"] == "Stalled")
    assert stalled["status"] == "True" and stalled["reason"] == "InvalidSpec"
    warnings = [e for e in kube_api.objects(EVENTS, "test") if e["type"] == "Warning"]
    assert [e["reason"] for e in warnings] == ["InvalidSpec"]
    assert kube.get_release("test", "products")["metadata"]["finalizers"] == [FINALIZER]
    assert not (tmp_path / "milvus.db").exists()  # Milvus was never touched


def test_environment_credentials_are_redacted_too(
    kube: KubeGateway, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EMBREL_MILVUS_TOKEN", "env-t0ken-value")
    obj = {"apiVersion": f"{G}/{V}", "kind": "EmbeddingRelease", "spec": spec()}
    obj["metadata"] = {"name": "products", "namespace": "test"}
    ctl = controller(kube, tmp_path)
    try:
        ctl.gateway(release_from_dict(obj), obj)
        assert ctl.redact("refused env-t0ken-value") == "refused <redacted>"
    finally:
        ctl.shutdown()


def test_a_missing_secret_is_reported_and_retried(
    api: client.ApiClient, kube: KubeGateway, tmp_path: Path
) -> None:
    create(api, milvus={"uri": "milvus.db", "secretRef": "absent"})
    ctl = controller(kube, tmp_path)
    ctl.informers[0]._replace(kube.list_releases("test")[0])  # the cache, without a watch
    result = ctl.reconcile("test/products")
    assert result is not None and not result.done
    assert result.requeue_after == 30.0
    status = kube.get_release("test", "products")["status"]
    assert status["conditions"][0]["reason"] == "SecretUnavailable"
    assert "test/absent" in status["message"]


def test_a_secret_without_credentials_fails_the_release_once_with_telemetry(
    api: client.ApiClient, kube: KubeGateway, kube_api: KubeApiServer, tmp_path: Path
) -> None:
    core = client.CoreV1Api(api)
    core.create_namespaced_secret("test", {"metadata": {"name": "bad"}, "data": {"x": "eA=="}})
    create(api, milvus={"uri": "milvus.db", "secretRef": "bad"})
    telemetry = PrometheusTelemetry(CollectorRegistry())
    ctl = KubeController(
        kube,
        ControllerConfig(state_dir=tmp_path / "state"),
        KubeOptions(leader_elect=False, base_dir=tmp_path, workers=1),
        telemetry,
    )
    ctl.informers[0]._replace(kube.list_releases("test")[0])  # the cache, without a watch
    result = ctl.reconcile("test/products")
    assert result is not None and result.done and result.requeue_after is None
    status = kube.get_release("test", "products")["status"]
    assert status["phase"] == "Failed"
    stalled = next(c for c in status["conditions"] if c["type"] == "Stalled")
    assert stalled["status"] == "True" and stalled["reason"] == "SecretUnavailable"
    warnings = [e for e in kube_api.objects(EVENTS, "test") if e["type"] == "Warning"]
    assert [e["reason"] for e in warnings] == ["SecretUnavailable"]
    labels = {"namespace": "test", "release": "products", "reason": "SecretInvalid"}
    assert telemetry.registry.get_sample_value("embrel_reconcile_errors_total", labels) == 1.0
    assert not (tmp_path / "milvus.db").exists()


def test_without_a_metrics_port_the_controller_holds_null_telemetry(
    kube: KubeGateway, tmp_path: Path
) -> None:
    assert isinstance(controller(kube, tmp_path).telemetry, NullTelemetry)


def test_retain_deletion_leaves_milvus_and_removes_the_finalizer(
    api: client.ApiClient, kube: KubeGateway, kube_api: KubeApiServer, tmp_path: Path
) -> None:
    create(api, collection={"dimension": 1})  # never reaches Milvus
    ctl = controller(kube, tmp_path)
    ctl.start()
    try:
        wait_for(lambda: kube.get_release("test", "products").get("status"))
        client.CustomObjectsApi(api).delete_namespaced_custom_object(G, V, "test", P, "products")
        wait_for(lambda: not kube_api.objects(EMBREL, "test"))
    finally:
        ctl.shutdown()
    reasons = [e["reason"] for e in kube_api.objects(EVENTS, "test")]
    assert "Deleting" in reasons


# -- the state folder across restarts ---------------------------------------------------


def _run_until(controller: KubeController, done: Any, timeout: float = 60.0) -> Any:
    controller.start()
    try:
        return wait_for(done, timeout)
    finally:
        controller.shutdown()


def _warnings(kube: KubeGateway) -> list[str]:
    return [e["message"] for e in kube.list_events("test") if e["type"] == "Warning"]


def test_a_restarted_controller_keeps_its_drift_reference_and_serves_reports(
    api: client.ApiClient,
    kube: KubeGateway,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    corpus: Corpus,
) -> None:
    """Same state folder (a PersistentVolumeClaim): the reference is there, no Warning.
    An empty one (an emptyDir after a restart): captured again, with a Warning Event."""
    backend = fake_backend(monkeypatch, "products")
    doc = release_yaml(
        backend, "v1", corpus.path("v1"), monitoring={"enabled": True, "interval": "1s"}
    )
    spec_ = doc["spec"]
    assert isinstance(spec_, dict)
    body = {**doc, "metadata": {"name": "products", "namespace": "test"}, "spec": spec_}
    client.CustomObjectsApi(api).create_namespaced_custom_object(G, V, "test", P, body)
    config = ControllerConfig.model_validate({"stateDir": str(tmp_path / "state")})
    options = KubeOptions(leader_elect=False, base_dir=tmp_path, workers=1)

    def status() -> dict[str, Any]:
        return kube.get_release("test", "products").get("status") or {}

    def drift_measured() -> bool:
        return bool((status().get("drift") or {}).get("values"))

    first = KubeController(kube, config, options, telemetry=NullTelemetry())
    _run_until(first, lambda: status().get("phase") == "Live" and status().get("drift"))
    report = status()["validation"]["report"]
    assert report == "/reports/test/products/v1.html"
    document = first.engines.reports.document(report)
    assert document is not None and document.content_type.startswith("text/html")
    references = list((tmp_path / "state" / "references").rglob("*.npz"))
    assert len(references) == 1
    time.sleep(1.1)  # the drift measurement is due

    kept = KubeController(kube, config, options, telemetry=NullTelemetry())
    _run_until(kept, drift_measured)
    assert not any("no drift reference" in w for w in _warnings(kube)), _warnings(kube)

    references[0].unlink()  # the state folder is new: an emptyDir after a restart
    time.sleep(1.1)
    fresh = KubeController(kube, config, options, telemetry=NullTelemetry())
    _run_until(fresh, lambda: any("no drift reference" in w for w in _warnings(kube)))
    assert references[0].exists(), "captured again from what is live"


# -- object storage credentials from a Secret ---------------------------------------------


def test_storage_secret_ref_reads_s3_with_the_secret_keys_never_shown(
    api: client.ApiClient,
    kube: KubeGateway,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    corpus: Corpus,
    s3: S3Bucket,
) -> None:
    """The controller's environment holds keys that may read nothing; the release's
    Secret (spec.storage.secretRef) holds keys that may: the release goes live from
    s3://, and the Secret's values appear in nothing the driver writes."""
    writer = s3.server.writer
    for name, value in s3.server.env(s3.server.nobody).items():
        monkeypatch.setenv(name, value)
    keys = {"AWS_ACCESS_KEY_ID": writer.access_key, "AWS_SECRET_ACCESS_KEY": writer.secret_key}
    data = {k: base64.b64encode(v.encode()).decode() for k, v in keys.items()}
    client.CoreV1Api(api).create_namespaced_secret(
        "test", {"metadata": {"name": "s3-reader"}, "data": data}
    )
    backend = fake_backend(monkeypatch, "products")
    doc = release_yaml(backend, "v1", Path("unused"), storage={"secretRef": "s3-reader"})
    spec_ = doc["spec"]
    assert isinstance(spec_, dict)
    spec_["source"]["files"]["uri"] = s3.put("emb/v1.parquet", corpus.path("v1"))
    body = {**doc, "metadata": {"name": "products", "namespace": "test"}, "spec": spec_}
    client.CustomObjectsApi(api).create_namespaced_custom_object(G, V, "test", P, body)
    ctl = controller(kube, tmp_path)
    ctl.informers[0]._replace(kube.list_releases("test")[0])  # the cache, without a watch
    result = ctl.reconcile("test/products")
    assert result is not None and result.error is None, result
    status = kube.get_release("test", "products")["status"]
    assert status["phase"] == "Live" and status["live"]["version"] == "v1"
    assert ctl.redact(f"key {writer.secret_key}") == "key <redacted>"
    written = json.dumps([status, kube.list_events("test")])
    assert writer.secret_key not in written
