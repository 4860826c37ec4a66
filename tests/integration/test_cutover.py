"""Proven cutover and the post-promotion guard against real Milvus, on both backends.

A lost flip (DESIGN.md §6) is simulated by a gateway whose ``point_alias`` returns
without doing anything, as the real lost flips did: the call succeeds, readers keep
seeing the old collection. Probes through the alias must notice, and re-issuing the
flip must heal it; a flip that never takes effect must leave everything in place.
"""

from __future__ import annotations

import time
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pymilvus import MilvusClient

import controller.engine as engine_module
from controller.config import ControllerConfig
from controller.drivers.local import LocalController
from controller.milvus import MilvusGateway
from controller.ports import Advance
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

    def __init__(self, inner: MilvusGateway, owner: FlakyController) -> None:
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
    client = MilvusClient(uri=backend.uri)  # in-process: this process holds Milvus Lite
    try:
        return str(client.describe_alias(backend.alias)["collection_name"])
    finally:
        client.close()


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
    client = MilvusClient(uri=backend.uri)
    try:
        return {c for c in client.list_collections() if c.startswith(backend.alias)}
    finally:
        client.close()


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
    client = MilvusClient(uri=backend.uri)
    try:
        rows = [{"id": int(i), "vector": v} for i, v in zip(corpus.ids, other, strict=True)]
        client.upsert(f"{backend.alias}__v2", rows)
    finally:
        client.close()
    time.sleep(1.1)

    status = apply("v2", **guarded)  # the next pass measures, sees the breach, rolls back
    assert status.phase == Phase.ROLLED_BACK, status.message
    assert "post-promotion guard" in status.message and "same_id_cosine" in status.message
    assert alias_target(backend) == f"{backend.alias}__v1"
    assert Reason.DRIFT_DETECTED in events.reasons()
    assert Reason.AUTO_ROLLED_BACK in events.reasons()
