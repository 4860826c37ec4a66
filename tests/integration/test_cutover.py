"""Proven cutover and the post-promotion guard, on every backend.

A lost flip is simulated by a gateway whose ``point_alias`` returns without doing
anything: the call succeeds, readers keep seeing the old collection. Probes through
the alias must notice, and re-issuing the flip must heal it; a flip that never takes
effect must leave everything in place. On the fake, the flip is also lost as on
Milvus 2.3.5: describe_alias reports the new target while reads reach the old one.
"""

from __future__ import annotations

import time
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import controller.engine as engine_module
from controller.config import ControllerConfig
from controller.drivers.local import LocalController
from controller.ports import Advance, MilvusPort
from controller.spec import EmbeddingRelease, parse_release
from controller.status import Phase, Reason
from tests.conftest import Backend, Corpus, release_yaml, write_release


class Events:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def event(self, reason: str, message: str, warning: bool = False) -> None:
        self.seen.append((reason, message))

    def progress(self, stage: str, total: int | None) -> AbstractContextManager[Advance]:
        return nullcontext(lambda n: None)

    def reasons(self) -> list[str]:
        return [r for r, _ in self.seen]


class LosingGateway:
    """The real gateway, except that the next ``lose`` flips silently do nothing."""

    def __init__(self, inner: MilvusPort, owner: FlakyController) -> None:
        self.inner, self.owner = inner, owner

    def point_alias(self, alias: str, collection: str) -> None:
        if self.owner.lose > 0:
            self.owner.lose -= 1
            return
        self.inner.point_alias(alias, collection)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class FlakyController(LocalController):
    lose = 0

    def gateway(self, release: EmbeddingRelease, base_dir: Path) -> Any:
        return LosingGateway(super().gateway(release, base_dir), self)


@pytest.fixture
def track(tmp_path: Path, backend: Backend, corpus: Corpus):  # type: ignore[no-untyped-def]
    events = Events()
    controller = FlakyController(ControllerConfig(state_dir=tmp_path / "state"), events)

    def apply(version: str, **spec: object) -> Any:
        doc = release_yaml(backend, version, corpus.path(version), **spec)
        path = write_release(tmp_path / f"{version}.yaml", doc)
        text = path.read_text()
        controller.record_spec(path, text, parse_release(text))
        return controller.reconcile_track("test/products").status

    yield controller, events, apply
    controller.close()


def alias_target(backend: Backend) -> str:
    with backend.port() as port:  # in-process: this process holds Milvus Lite
        return str(port.alias_target(backend.alias))


def test_flip_is_proven_and_a_lost_flip_is_detected_and_healed(track, backend: Backend) -> None:  # type: ignore[no-untyped-def]
    controller, events, apply = track
    assert apply("v1").phase == Phase.LIVE
    controller.lose = 1  # the first alter_alias of the next flip is lost
    status = apply("v2")
    assert status.phase == Phase.LIVE, status.message
    assert alias_target(backend) == f"{backend.alias}__v2"
    cutover = status.cutover
    assert cutover["verified"] and cutover["method"] == "probes", cutover
    assert cutover["attempts"] == 2 and cutover["probes"] > 0
    assert cutover["seconds"] < 2.0  # detected and healed within the 2 s
    assert Reason.FLIP_UNVERIFIED in events.reasons()  # the re-issue was reported


def test_a_flip_that_is_never_seen_ends_degraded_with_everything_kept(  # type: ignore[no-untyped-def]
    track, backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    controller, _, apply = track
    retention = {"keepPrevious": 0, "keepLoaded": 0}
    assert apply("v1", retention=retention).phase == Phase.LIVE
    controller.lose = 99  # no flip takes effect
    status = apply("v2", retention=retention)
    assert status.phase == Phase.DEGRADED, status.message
    assert not status.cutover["verified"] and status.cutover["attempts"] == 3
    assert alias_target(backend) == f"{backend.alias}__v1"  # left where it was
    kept = backend_collections(backend)
    assert {f"{backend.alias}__v1", f"{backend.alias}__v2"} <= kept  # nothing dropped

    # Once Milvus takes flips again, the next probe heals it and retention resumes.
    controller.lose = 0
    monkeypatch.setattr(engine_module, "_REVERIFY", 0.0)
    status = controller.reconcile_track("test/products").status
    assert status.phase == Phase.LIVE and status.cutover["verified"], status.message
    assert alias_target(backend) == f"{backend.alias}__v2"
    assert f"{backend.alias}__v1" not in backend_collections(backend)  # keepPrevious 0


def backend_collections(backend: Backend) -> set[str]:
    with backend.port() as port:
        return {c for c in port.list_collections() if c.startswith(backend.alias)}


FAKE_ONLY = pytest.mark.parametrize("backend", ["fake"], indirect=True)


@FAKE_ONLY  # a lost flip as 2.3.5 loses it cannot be caused on a real Milvus on purpose
def test_a_flip_lost_as_on_2_3_5_is_detected_and_healed(track, backend: Backend) -> None:  # type: ignore[no-untyped-def]
    _, events, apply = track
    assert apply("v1").phase == Phase.LIVE
    assert backend.fake is not None
    backend.fake.lose_flips(1)  # describe_alias moves, reads through the alias do not
    status = apply("v2")
    assert status.phase == Phase.LIVE, status.message
    assert status.cutover["verified"] and status.cutover["attempts"] == 2, status.cutover
    assert Reason.FLIP_UNVERIFIED in events.reasons()
    with backend.port() as port:  # the re-issued flip took effect for readers
        v2 = port.vectors_by_id(f"{backend.alias}__v2", [0])[0]
        assert np.array_equal(port.vectors_by_id(backend.alias, [0])[0], v2)


@FAKE_ONLY
def test_flips_lost_every_time_end_degraded_on_the_fake(track, backend: Backend) -> None:  # type: ignore[no-untyped-def]
    _, _, apply = track
    assert apply("v1").phase == Phase.LIVE
    assert backend.fake is not None
    backend.fake.lose_flips(99)
    status = apply("v2")
    assert status.phase == Phase.DEGRADED, status.message
    assert not status.cutover["verified"] and status.cutover["attempts"] == 3
    # describe_alias says v2 (the flip was lost, not refused); reads still reach v1
    assert alias_target(backend) == f"{backend.alias}__v2"
    with backend.port() as port:
        v1 = port.vectors_by_id(f"{backend.alias}__v1", [0])[0]
        assert np.array_equal(port.vectors_by_id(backend.alias, [0])[0], v1)


def test_post_promotion_guard_rolls_back_when_live_vectors_drift(  # type: ignore[no-untyped-def]
    track, backend: Backend, corpus: Corpus
) -> None:
    _, events, apply = track
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
    assert apply("v1", **guarded).phase == Phase.LIVE
    status = apply("v2", **guarded)
    assert status.phase == Phase.LIVE and status.drift and status.drift["referenceAt"], events.seen[
        -6:
    ]

    # Someone writes vectors of another model into the live collection.
    rng = np.random.default_rng(5)
    other = rng.normal(size=corpus.vectors["v2"].shape).astype(np.float32)
    backend.upsert(f"{backend.alias}__v2", corpus.ids, other)
    time.sleep(1.1)

    status = apply("v2", **guarded)  # the next pass measures, sees the breach, rolls back
    assert status.phase == Phase.ROLLED_BACK, status.message
    assert "post-promotion guard" in status.message and "same_id_cosine" in status.message
    assert alias_target(backend) == f"{backend.alias}__v1"
    assert Reason.DRIFT_DETECTED in events.reasons()
    assert Reason.AUTO_ROLLED_BACK in events.reasons()
