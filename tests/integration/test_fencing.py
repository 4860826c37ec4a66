"""Split-brain fencing: every flip is a compare-and-set on the alias, and asks the fence.

A flip is refused when the alias no longer points where the decision saw it (another
writer moved it between observation and flip) or when the fence says this controller
may not act (not the leader, its Lease may have expired). A refusal changes nothing,
says why (status reason, Event, ``embrel_flips_refused_total``), and the next pass
observes again and decides on what it sees.

The other writer is injected with the fake's ``before`` hook, right before a call the
flip step makes after the decision: the fake only, as on a real Milvus the moment
cannot be hit on purpose (tests/integration/test_fencing_server.py races two real
controllers instead).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

import controller.engine as engine_module
from controller.config import ControllerConfig
from controller.drivers.local import LocalController
from controller.engine import Engine
from controller.metrics import PrometheusTelemetry
from controller.ports import Fence, Verdict
from controller.schema import Schema
from controller.spec import EmbeddingRelease, parse_release
from controller.status import Phase, Reason, ReleaseStatus
from tests.conftest import Backend, Corpus, release_yaml, write_release
from tests.integration.test_cutover import Events
from tests.support.fake_milvus import FakeMilvus

pytestmark = pytest.mark.parametrize("backend", ["fake"], indirect=True)
TRACK = "test/products"
MANUAL = {"promotion": {"mode": "manual"}}


class Switch:
    """A fence a test opens and closes."""

    def __init__(self) -> None:
        self.open = True

    def may_act(self) -> Verdict:
        return Verdict(True) if self.open else Verdict(False, "the test's fence is closed")


class FencedController(LocalController):
    """The local driver with a fence of the test's choosing (its own is always open)."""

    fence: Fence = Switch()

    def engine(self, release: EmbeddingRelease, base_dir: Path) -> Engine:
        milvus = self.gateway(release, base_dir)
        return self.engines.engine(milvus, base_dir, self.reporter, fence=self.fence)


class Track:
    def __init__(self, tmp_path: Path, backend: Backend, corpus: Corpus) -> None:
        self.tmp_path, self.backend, self.corpus = tmp_path, backend, corpus
        self.events = Events()
        self.telemetry = PrometheusTelemetry(CollectorRegistry())
        config = ControllerConfig(state_dir=tmp_path / "state")
        self.controller = FencedController(config, self.events, self.telemetry)
        self.fence = Switch()
        self.controller.fence = self.fence
        assert backend.fake is not None
        self.fake = backend.fake
        self.milvus = FakeMilvus(backend.fake)  # the other writer's connection

    def record(self, version: str, **spec: Any) -> None:
        doc = release_yaml(self.backend, version, self.corpus.path(version), **spec)
        path = write_release(self.tmp_path / f"{version}.yaml", doc)
        text = path.read_text()
        self.controller.record_spec(path, text, parse_release(text))

    def one_pass(self) -> Any:
        return self.controller.reconcile_track(TRACK, wait=False)

    def request(self, name: str, value: Any = True) -> None:
        self.controller.store.update_intents(TRACK, lambda intents: intents.update({name: value}))

    def name(self, version: str) -> str:
        return f"{self.backend.alias}__{version}"

    def alias(self) -> str | None:
        return self.milvus.alias_target(self.backend.alias)

    def refused(self, reason: str) -> float:
        labels = {"namespace": "test", "release": "products", "reason": reason}
        value = self.telemetry.registry.get_sample_value("embrel_flips_refused_total", labels)
        return value or 0.0

    def warnings(self, reason: str) -> list[str]:
        return [m for r, m in self.events.seen if r == reason]


@pytest.fixture
def track(tmp_path: Path, backend: Backend, corpus: Corpus) -> Any:
    t = Track(tmp_path, backend, corpus)
    yield t
    t.controller.close()


def reason(status: ReleaseStatus) -> str:
    """The reason every condition of a status carries."""
    ready = status.condition("Ready")
    return ready.reason if ready else ""


def moves_alias(t: Track, to: str) -> Callable[[], None]:
    return lambda: t.milvus.point_alias(t.backend.alias, to)


def awaiting_v2(t: Track) -> None:
    """v1 live, v2 validated and waiting for `embrel promote`."""
    t.record("v1")
    assert t.one_pass().status.phase == Phase.LIVE
    t.record("v2", **MANUAL)
    status = t.one_pass().status
    assert status.phase == Phase.AWAITING_PROMOTION, status.message


def test_a_flip_is_refused_when_another_writer_moved_the_alias_since_the_decision(
    track: Track,
) -> None:
    t = track
    awaiting_v2(t)
    # Another controller promotes v2 while this one decides to: it moves the alias after
    # this pass observed it on v1, right before the flip step counts v2's rows.
    t.fake.before("row_count", moves_alias(t, t.name("v2")))
    t.request("promote")
    result = t.one_pass()
    assert result.error is not None and not result.done
    assert reason(result.status) == Reason.ALIAS_MOVED, result.status.message
    expected = (
        f"alias {t.backend.alias} points at {t.name('v2')}, the decision was made for "
        f"{t.name('v1')}; not flipping it to {t.name('v2')}, observing again"
    )
    assert result.status.message == expected
    assert t.warnings(Reason.ALIAS_MOVED) == [expected]
    assert t.refused("alias_moved") == 1.0
    # Refused, so this controller recorded nothing: no live period, no retired v1.
    assert t.milvus.properties(t.name("v2")).get("embrel.promotedAt", "") == ""
    assert t.milvus.properties(t.name("v1")).get("embrel.retiredAt", "") == ""

    # The next pass observes the alias on v2 and decides on that: v2 is live.
    status = t.one_pass().status
    assert status.phase == Phase.LIVE, status.message
    assert status.live["collection"] == t.name("v2")
    assert t.alias() == t.name("v2")


def test_a_flip_to_a_stale_target_is_never_made(track: Track) -> None:
    """Another writer rolls the alias to a collection this track does not own: the flip
    decided on v1 is refused, and the next pass sees a conflict instead of flipping."""
    t = track
    awaiting_v2(t)
    other = f"{t.backend.alias}_other"
    t.milvus.create_collection(other, Schema(32), {})
    t.milvus.ensure_index(other, "FLAT", "COSINE", {})
    t.milvus.load(other)
    t.fake.before("row_count", moves_alias(t, other))
    t.request("promote")
    assert reason(t.one_pass().status) == Reason.ALIAS_MOVED
    assert t.alias() == other
    status = t.one_pass().status
    assert t.alias() == other, "the alias stays where the other writer put it"
    assert status.phase == Phase.FAILED and reason(status) == Reason.ALIAS_CONFLICT, status
    assert f"points to {other}, which embrel did not create" in status.message


def test_a_closed_fence_refuses_promotion_and_rollback_until_it_opens(track: Track) -> None:
    t = track
    awaiting_v2(t)
    t.fence.open = False
    t.request("promote")
    result = t.one_pass()
    assert reason(result.status) == Reason.FLIP_FENCED, result.status.message
    assert "the test's fence is closed; observing again" in result.status.message
    assert t.alias() == t.name("v1")
    assert t.refused("fenced") == 1.0 and t.warnings(Reason.FLIP_FENCED)

    t.fence.open = True  # the next pass decides again, on what it observes
    status = t.one_pass().status
    assert status.phase == Phase.LIVE and t.alias() == t.name("v2"), status.message

    t.fence.open = False  # a manual rollback is a flip too
    t.request("rollback", {})
    assert reason(t.one_pass().status) == Reason.FLIP_FENCED
    assert t.alias() == t.name("v2")
    assert t.refused("fenced") == 2.0
    t.fence.open = True
    status = t.one_pass().status
    assert status.phase == Phase.ROLLED_BACK and t.alias() == t.name("v1"), status.message


def test_a_closed_fence_refuses_the_drift_guards_automatic_rollback(
    track: Track, corpus: Corpus
) -> None:
    t = track
    guarded: dict[str, Any] = {
        "monitoring": {
            "enabled": True,
            "interval": "1s",
            "sample": 500,
            "thresholds": {"minSameIdCosine": 0.9},
        },
        "promotion": {
            "postPromotion": {"watchSeconds": 600, "interval": "1s", "rollbackOnFailure": True}
        },
    }
    t.record("v1", **guarded)
    assert t.one_pass().status.phase == Phase.LIVE
    t.record("v2", **guarded)
    status = t.one_pass().status
    assert status.phase == Phase.LIVE and status.drift and status.drift["referenceAt"], status
    # Someone writes vectors of another model into the live collection.
    other = np.random.default_rng(5).normal(size=corpus.vectors["v2"].shape)
    t.backend.upsert(t.name("v2"), corpus.ids, other.astype(np.float32))
    time.sleep(1.1)

    t.fence.open = False
    status = t.one_pass().status  # measures, sees the breach, decides to roll back: fenced
    assert reason(status) == Reason.FLIP_FENCED, status.message
    assert t.alias() == t.name("v2"), "no automatic rollback while fenced"
    t.fence.open = True
    status = t.one_pass().status
    assert status.phase == Phase.ROLLED_BACK, status.message
    assert "post-promotion guard" in status.message and t.alias() == t.name("v1")
    assert t.warnings(Reason.AUTO_ROLLED_BACK)


def test_probing_an_unproven_flip_again_is_refused_when_the_alias_moved(
    track: Track, monkeypatch: pytest.MonkeyPatch
) -> None:
    t = track
    t.record("v1")
    assert t.one_pass().status.phase == Phase.LIVE
    t.fake.lose_flips(99)  # describe_alias moves to v2, reads stay on v1
    t.record("v2")
    assert t.one_pass().status.phase == Phase.DEGRADED
    t.fake.lose_flips(0)
    monkeypatch.setattr(engine_module, "_REVERIFY", 0.0)
    # Someone rolls the alias back to v1 while this pass reads the cutover probes.
    t.fake.before("vectors_by_id", moves_alias(t, t.name("v1")))
    result = t.one_pass()
    assert reason(result.status) == Reason.ALIAS_MOVED, result.status.message
    assert f"points at {t.name('v1')}, the decision was made for {t.name('v2')}" in (
        result.status.message
    )
    assert t.alias() == t.name("v1"), "verify_flip did not re-issue the flip to v2"
