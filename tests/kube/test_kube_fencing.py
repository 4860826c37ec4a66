"""Split-brain fencing on Kubernetes: a leader whose Lease may have expired never flips.

Two controllers in this process against the API mock and one in-memory Milvus. The
first leads; while it is inside the flip step, its renew thread is stuck (its Lease
calls block), so its ``leader`` flag stays true, the Lease expires and the second takes
over. The first must refuse the flip (its fence: renewed longer ago than the renew
deadline); the second flips.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from prometheus_client import CollectorRegistry

from controller.config import ControllerConfig
from controller.drivers.kube import ANNOTATIONS, KubeController, KubeOptions
from controller.drivers.leader import LeaderElector
from controller.kube import KubeGateway
from controller.metrics import PrometheusTelemetry
from tests.conftest import Corpus, fake_backend, release_yaml
from tests.support.fake_milvus import FakeMilvus

G, V, P = "embrel.dev", "v1alpha1", "embeddingreleases"
LEASE_SECONDS = 2
LEASE = "fencing"


class Counted(PrometheusTelemetry):
    """Its own registry; ``gate``: every Milvus call waits for it (a controller held
    back); ``refused`` is set on the first refused flip."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        super().__init__(CollectorRegistry())
        self.gate = gate
        self.refused = threading.Event()

    def milvus_call(self, operation: str, seconds: float, error: str | None) -> None:
        if self.gate is not None:
            self.gate.wait(30)
        super().milvus_call(operation, seconds, error)

    def flip_refused(self, track: str, reason: str) -> None:
        super().flip_refused(track, reason)
        self.refused.set()

    def count(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0

    def flips(self) -> float:
        return self.count("embrel_milvus_request_duration_seconds_count", operation="alter_alias")


class StuckLease:
    """The elector's gateway: Lease calls block while ``stuck`` (a paused renew thread)."""

    def __init__(self, inner: KubeGateway) -> None:
        self.inner = inner
        self.stuck = threading.Event()
        self.resume = threading.Event()

    def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        if self.stuck.is_set():
            self.resume.wait(60)
        return self.inner.get_lease(namespace, name)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout}s")


def test_a_leader_whose_lease_expired_inside_a_step_never_flips(
    api: client.ApiClient,
    kube: KubeGateway,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    corpus: Corpus,
) -> None:
    backend = fake_backend(monkeypatch, "products")
    assert backend.fake is not None
    doc = release_yaml(backend, "v1", corpus.path("v1"), promotion={"mode": "manual"})
    body = {**doc, "metadata": {"name": "products", "namespace": "test"}}
    objects = client.CustomObjectsApi(api)
    config = ControllerConfig(state_dir=tmp_path / "state")
    lost: list[str] = []

    def controller(name: str, telemetry: Counted) -> KubeController:
        options = KubeOptions(
            base_dir=tmp_path,
            workers=1,
            identity=name,
            lease_name=LEASE,
            lease_namespace="test",
            lease_duration=LEASE_SECONDS,
        )
        return KubeController(kube, config, options, telemetry, lambda: lost.append(name))

    def holder() -> str:
        return str(((kube.get_lease("test", LEASE) or {}).get("spec") or {}).get("holderIdentity"))

    def status() -> dict[str, Any]:
        return kube.get_release("test", "products").get("status") or {}

    released = threading.Event()  # the second acts only once the first has refused
    first_tel, second_tel = Counted(), Counted(gate=released)
    first, second = controller("first", first_tel), controller("second", second_tel)
    assert isinstance(first.elector, LeaderElector)
    stuck = StuckLease(kube)
    first.elector.kube = stuck  # type: ignore[assignment]
    first.start()
    try:
        wait_for(lambda: holder() == "first")
        second.start()
        objects.create_namespaced_custom_object(G, V, "test", P, body)
        wait_for(lambda: status().get("phase") == "AwaitingPromotion")

        def inside_the_flip_step() -> None:
            """Right after the first decided to flip: its renewals stop, the Lease expires
            and the second takes it over, while the first's step still runs."""
            stuck.stuck.set()
            wait_for(lambda: holder() == "second", timeout=LEASE_SECONDS * 5)

        # The flip step's first Milvus call (nothing since the validation counted rows).
        backend.fake.before("row_count", inside_the_flip_step)
        patch = {"metadata": {"annotations": {ANNOTATIONS["promote"]: "true"}}}
        objects.patch_namespaced_custom_object(G, V, "test", P, "products", patch)
        assert first_tel.refused.wait(LEASE_SECONDS * 10), "the first never refused"
        released.set()
        wait_for(lambda: status().get("phase") == "Live")
    finally:
        released.set()
        stuck.resume.set()
        first.shutdown()
        second.shutdown()

    assert first.elector.leader is False and lost == ["first"]  # it knows, once unstuck
    assert first_tel.flips() == 0, "the first flipped after its Lease may have expired"
    assert (
        first_tel.count(
            "embrel_flips_refused_total", namespace="test", release="products", reason="fenced"
        )
        >= 1
    )
    assert second_tel.flips() >= 1
    assert FakeMilvus(backend.fake).alias_target("products") == "products__v1"
    events = kube.list_events("test")
    fenced = [e for e in events if e["reason"] == "FlipFenced"]
    assert fenced and {e["reportingInstance"] for e in fenced} == {"first"}, fenced
    assert "may have expired and another replica lead" in fenced[0]["message"]
    promoted = [e["reportingInstance"] for e in events if e["reason"] == "Promoted"]
    assert promoted == ["second"], promoted
