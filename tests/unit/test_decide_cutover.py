"""Decisions after a flip: proven cutover, drain, drift monitoring and the guard.

Pure, on hand-made snapshots; the clock is the snapshot's ``now``.
"""

from __future__ import annotations

import json
from dataclasses import replace

from controller.engine import (
    P_DRIFT,
    P_DRIFT_AT,
    P_FLIP_UNVERIFIED,
    P_REFERENCE_AT,
    Intents,
    Observation,
    decide,
)
from controller.engine.decide import serving_before
from controller.spec import EmbeddingRelease, release_from_dict
from controller.status import Phase, Reason
from tests.unit.test_decide import coll, release

T0 = 1_790_000_000.0  # an arbitrary instant


def stamp(offset: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(T0 + offset, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def tuned(**spec: object) -> EmbeddingRelease:
    doc = release("v2").model_dump(mode="json", by_alias=True, exclude_none=True)
    doc["spec"] |= {"monitoring": {"enabled": True}} | spec
    return release_from_dict(doc)


def at(offset: float, live: str, *colls: object, done: frozenset[str] = frozenset()) -> Observation:
    return Observation(
        live,
        {c.name: c for c in colls},  # type: ignore[attr-defined]
        now=T0 + offset,
        steps_done=done,
    )


def live_v2(**props: str) -> object:
    return coll("v2", promoted=stamp(0), **{P_REFERENCE_AT: stamp(0)} | props)


def test_unproven_flip_is_degraded_and_nothing_is_released_or_dropped() -> None:
    r = tuned(retention={"keepPrevious": 0, "keepLoaded": 0}, promotion={"drainSeconds": 0})
    old = coll("v1", promoted=stamp(-100), retired=stamp(0))
    new = live_v2(**{P_FLIP_UNVERIFIED: stamp(0)})
    step = decide(r, at(5, "products__v2", old, new), Intents())
    assert step.terminal and step.phase == Phase.DEGRADED
    assert step.reason == Reason.FLIP_UNVERIFIED
    assert 20 < step.requeue_after <= 30
    # Later passes probe again, once per pass; still never retention.
    later = decide(r, at(31, "products__v2", old, new), Intents())
    assert later.name == "verify_flip" and later.target == "products__v2"
    again = decide(r, at(31, "products__v2", old, new, done=frozenset({"verify_flip"})), Intents())
    assert again.terminal and again.phase == Phase.DEGRADED


def test_a_flip_never_recorded_is_proven_before_anything_else() -> None:
    """Milvus went away between alter_alias and its proof: the alias is on a collection
    whose live period was never recorded. Nothing is dropped; the flip is proven."""
    r = tuned(retention={"keepPrevious": 0, "keepLoaded": 0}, promotion={"drainSeconds": 0})
    v1 = coll("v1", promoted=stamp(-100))
    step = decide(r, at(5, "products__v2", v1, coll("v2")), Intents())
    assert (step.name, step.target, step.rollback) == ("verify_flip", "products__v2", False)
    assert serving_before(r, at(5, "products__v2", v1, coll("v2")), "products__v2") == (
        "products__v1"
    )
    # On another version of the track, unrecorded: maybe another controller's flip in
    # progress (it records its own), never this release's to prove.
    v1_retired = coll("v1", promoted=stamp(-100), retired=stamp(-50))
    v2 = coll("v2", promoted=stamp(-50))
    assert decide(r, at(5, "products__v1", v1_retired, v2), Intents()).name != "verify_flip"
    assert serving_before(r, at(5, "products__v1", v1_retired, v2), "products__v1") == (
        "products__v2"
    )
    # Its validation record lost in the crash as well: judged again before anything else.
    unjudged = decide(r, at(5, "products__v2", v1, coll("v2", validation="")), Intents())
    assert (unjudged.name, unjudged.target) == ("validate", "products__v2")
    failed = decide(r, at(5, "products__v2", v1, coll("v2", validation="failed")), Intents())
    assert failed.terminal and failed.phase == Phase.DEGRADED
    assert failed.reason == Reason.VALIDATION_FAILED
    # Once per pass: a flip that could not be proven in this pass is not retried in it.
    done = at(5, "products__v2", v1, coll("v2"), done=frozenset({"verify_flip"}))
    settled = decide(r, done, Intents())
    assert settled.terminal and settled.phase == Phase.DEGRADED, "and never retention"


def test_previous_collection_drains_before_retention_acts() -> None:
    r = tuned(retention={"keepPrevious": 0, "keepLoaded": 0}, promotion={"drainSeconds": 30})
    old = coll("v1", promoted=stamp(-100), retired=stamp(0))
    step = decide(r, at(10, "products__v2", old, live_v2()), Intents())
    assert step.terminal and step.phase == Phase.LIVE
    assert "draining" in step.message and 19 <= step.requeue_after <= 20
    after = decide(r, at(31, "products__v2", old, live_v2()), Intents())
    assert (after.name, after.target, after.verb) == ("retain", "products__v1", "drop")


def test_monitoring_captures_a_reference_then_measures_when_due() -> None:
    r = tuned(monitoring={"interval": "60s"})
    old = coll("v1", promoted=stamp(-100), retired=stamp(0))
    fresh = coll("v2", promoted=stamp(0))
    assert decide(r, at(1, "products__v2", old, fresh), Intents()).name == "capture_reference"
    waiting = decide(r, at(20, "products__v2", old, live_v2()), Intents())
    assert waiting.terminal and 39 <= waiting.requeue_after <= 40
    assert decide(r, at(61, "products__v2", old, live_v2()), Intents()).name == "monitor"
    once = at(61, "products__v2", old, live_v2(), done=frozenset({"monitor"}))
    assert decide(r, once, Intents()).terminal  # never twice in one pass


def _breached() -> dict[str, str]:
    drift = {"values": {"same_id_cosine": 0.1}, "breaches": ["same_id_cosine 0.1 < 0.9"]}
    return {P_DRIFT: json.dumps(drift), P_DRIFT_AT: stamp(20)}


def test_post_promotion_guard_rolls_back_on_a_breach_inside_its_window() -> None:
    r = tuned(
        monitoring={"thresholds": {"minSameIdCosine": 0.9}},
        promotion={"postPromotion": {"watchSeconds": 300, "rollbackOnFailure": True}},
    )
    old = coll("v1", promoted=stamp(-100), retired=stamp(0))
    step = decide(r, at(25, "products__v2", old, live_v2(**_breached())), Intents())
    assert (step.name, step.target) == ("flip", "products__v1")
    assert step.rollback is True and "same_id_cosine" in step.auto
    assert step.reason == Reason.AUTO_ROLLED_BACK


def test_breach_after_the_window_or_without_rollback_only_reports() -> None:
    guard = {"watchSeconds": 60, "rollbackOnFailure": True}
    r = tuned(promotion={"postPromotion": guard})
    old = coll("v1", promoted=stamp(-100), retired=stamp(0))
    late = decide(r, at(400, "products__v2", old, live_v2(**_breached())), Intents())
    assert late.name in ("done", "monitor") and late.name != "flip"
    settled = decide(
        r,
        at(400, "products__v2", old, live_v2(**_breached()), done=frozenset({"monitor"})),
        Intents(),
    )
    assert settled.reason == Reason.DRIFT_DETECTED and "same_id_cosine" in settled.message
    no_rollback = tuned(promotion={"postPromotion": replace_guard(guard)})
    inside = decide(no_rollback, at(25, "products__v2", old, live_v2(**_breached())), Intents())
    assert inside.name != "flip"


def replace_guard(guard: dict[str, object]) -> dict[str, object]:
    return guard | {"rollbackOnFailure": False}


def test_guard_needs_a_loaded_previous_collection() -> None:
    r = tuned(promotion={"postPromotion": {"watchSeconds": 300, "rollbackOnFailure": True}})
    old = replace(coll("v1", promoted=stamp(-100), retired=stamp(0)), loaded=False)
    step = decide(r, at(25, "products__v2", old, live_v2(**_breached())), Intents())
    assert step.name != "flip"
