"""The engine's decisions on hand-made snapshots: pure, no Milvus.

Each safety invariant that can be seen in a decision (listed in
controller.engine.decide.rules) is pinned here; the integration tests check the
same invariants against real Milvus.
"""

from __future__ import annotations

import pytest

from controller.engine import (
    OWNER_VALUE,
    P_ABORTED_AT,
    P_BUILD_HASH,
    P_OWNER,
    P_PROMOTED_AT,
    P_RETIRED_AT,
    P_ROLLED_BACK_AT,
    P_SOURCE_ROWS,
    P_TRACK,
    P_VALIDATED_HASH,
    P_VALIDATION,
    P_VERSION,
    CollectionState,
    Intents,
    Observation,
    assert_promotable,
    decide,
    retention_plan,
)
from controller.errors import ConflictError
from controller.spec import EmbeddingRelease, parse_release
from controller.status import Phase, Reason

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
  promotion: {{mode: {mode}}}
  retention: {{keepPrevious: 2, keepLoaded: 1}}
  monitoring: {{enabled: false}}  # drift decisions: test_decide_cutover.py
"""


def release(version: str = "v2", mode: str = "auto") -> EmbeddingRelease:
    return parse_release(SPEC.format(version=version, mode=mode))


def coll(
    version: str,
    *,
    complete: bool = True,
    indexed: bool = True,
    loaded: bool = True,
    validation: str = "passed",
    promoted: str = "",
    retired: str = "",
    owned: bool = True,
    aliases: tuple[str, ...] = (),
    **extra: str,
) -> CollectionState:
    r = release(version)
    props = {P_VERSION: version, P_BUILD_HASH: r.build_hash()}
    if owned:
        props |= {P_OWNER: OWNER_VALUE, P_TRACK: r.track}
    if complete:
        props[P_SOURCE_ROWS] = "100"
    if validation:
        props[P_VALIDATION] = validation
        props[P_VALIDATED_HASH] = r.validation_hash()
    if promoted:
        props[P_PROMOTED_AT] = promoted
    if retired:
        props[P_RETIRED_AT] = retired
    props |= extra
    index = (100, 100) if indexed else (40, 100)
    return CollectionState(f"products__{version}", props, loaded, index, aliases)


def snapshot(live: str | None, *colls: CollectionState) -> Observation:
    return Observation(live, {c.name: c for c in colls})


def test_first_release_builds_then_indexes_loads_validates_flips() -> None:
    r = release("v1")
    assert decide(r, snapshot(None), Intents()).name == "build"
    steps = [
        (coll("v1", complete=False, validation=""), "discard_incomplete"),
        (coll("v1", indexed=False, loaded=False, validation=""), "index"),
        (coll("v1", loaded=False, validation=""), "load"),
        (coll("v1", validation=""), "validate"),
        (coll("v1"), "flip"),
    ]
    for state, expected in steps:
        assert decide(r, snapshot(None, state), Intents()).name == expected


def test_failed_validation_never_flips() -> None:
    """Invariant 2: a failed release never changes what the alias points to."""
    live = coll("v1", promoted="t1")
    step = decide(
        release("v2"),
        snapshot("products__v1", live, coll("v2", validation="failed", loaded=False)),
        Intents(),
    )
    assert step.terminal and step.phase == Phase.FAILED
    assert step.reason == Reason.VALIDATION_FAILED
    # even when a person asks for promotion
    step = decide(
        release("v2"),
        snapshot("products__v1", live, coll("v2", validation="failed")),
        Intents(promote=True),
    )
    assert step.name == "release"


def test_aborted_release_stays_aborted() -> None:
    live = coll("v1", promoted="t1")
    cand = coll("v2", validation="", **{P_ABORTED_AT: "t2"})
    step = decide(release("v2"), snapshot("products__v1", live, cand), Intents(promote=True))
    assert step.reason == Reason.ABORTED and step.name != "flip"
    step = decide(
        release("v2"),
        snapshot("products__v1", live, coll("v2", validation="")),
        Intents(abort=True),
    )
    assert step.name == "abort"


def test_abort_before_or_during_a_build_stops_it() -> None:
    live = coll("v1", promoted="t1")
    assert (
        decide(release("v2"), snapshot("products__v1", live), Intents(abort=True)).name == "abort"
    )
    partial = coll("v2", complete=False, validation="")
    step = decide(release("v2"), snapshot("products__v1", live, partial), Intents(abort=True))
    assert step.name == "abort"
    marked = coll("v2", complete=False, validation="", loaded=False, **{P_ABORTED_AT: "t2"})
    step = decide(release("v2"), snapshot("products__v1", live, marked), Intents())
    assert step.terminal and step.reason == Reason.ABORTED, "an aborted build is not restarted"
    # nothing to abort when the desired version is already live
    assert (
        decide(release("v1"), snapshot("products__v1", live), Intents(abort=True)).phase
        == Phase.LIVE
    )


def test_manual_mode_waits_for_promote() -> None:
    obs = snapshot("products__v1", coll("v1", promoted="t1"), coll("v2"))
    wait = decide(release("v2", "manual"), obs, Intents())
    assert wait.terminal and wait.phase == Phase.AWAITING_PROMOTION
    assert decide(release("v2", "manual"), obs, Intents(promote=True)).name == "flip"


def test_revert_to_retained_version_is_an_instant_flip() -> None:
    """Invariant 5: no build, index or validation for a retained version."""
    obs = snapshot(
        "products__v2", coll("v1", promoted="t1", retired="t2"), coll("v2", promoted="t2")
    )
    step = decide(release("v1"), obs, Intents())
    assert (step.name, step.target) == ("flip", "products__v1")
    # released by retention (keepLoaded): load first, still no rebuild
    obs = snapshot(
        "products__v2",
        coll("v1", promoted="t1", retired="t2", loaded=False),
        coll("v2", promoted="t2"),
    )
    assert decide(release("v1"), obs, Intents()).name == "load"


def test_rollback_picks_most_recently_retired_and_marks_it() -> None:
    obs = snapshot(
        "products__v3",
        coll("v1", promoted="t1", retired="t2"),
        coll("v2", promoted="t2", retired="t3"),
        coll("v3", promoted="t3"),
    )
    step = decide(release("v3"), obs, Intents(rollback=True))
    assert (step.name, step.target, step.rollback) == ("flip", "products__v2", True)
    step = decide(release("v3"), obs, Intents(rollback=True, rollback_to="v1"))
    assert step.target == "products__v1"
    obs.collections["products__v2"] = coll("v2", promoted="t2", retired="t3", loaded=False)
    assert decide(release("v3"), obs, Intents(rollback=True)).name == "load"
    step = decide(release("v3"), obs, Intents(rollback=True, rollback_to="v9"))
    assert step.reason == Reason.NO_ROLLBACK_TARGET and step.terminal


def test_rolled_back_version_is_not_promoted_again_by_itself() -> None:
    obs = snapshot(
        "products__v1",
        coll("v1", promoted="t3", retired="t2"),
        coll("v2", promoted="t2", retired="t3", **{P_ROLLED_BACK_AT: "t3"}),
    )
    assert decide(release("v2"), obs, Intents()).phase == Phase.ROLLED_BACK
    assert decide(release("v2"), obs, Intents(promote=True)).name == "flip"


def test_reused_version_with_other_content_is_a_conflict() -> None:
    other = coll("v2")
    other.props[P_BUILD_HASH] = "something-else"
    step = decide(release("v2"), snapshot(None, other), Intents())
    assert step.reason == Reason.VERSION_CONFLICT and step.terminal


def test_collection_not_created_by_embrel_is_never_touched() -> None:
    foreign = coll("v2", owned=False)
    step = decide(release("v2"), snapshot(None, foreign), Intents())
    assert step.terminal and step.reason == Reason.VERSION_CONFLICT


def test_alias_of_another_track_is_refused() -> None:
    theirs = coll("v1", promoted="t1")
    theirs.props[P_TRACK] = "other/track"
    step = decide(release("v2"), snapshot("products__v1", theirs), Intents())
    assert step.reason == Reason.ALIAS_CONFLICT


def test_retention_keeps_loads_releases_and_drops() -> None:
    """Invariant 3 and 4: previous versions kept and loaded; never drop aliased or foreign."""
    obs = snapshot(
        "products__v5",
        coll("v1", promoted="t1", retired="t2"),
        coll("v2", promoted="t2", retired="t3", aliases=("pinned",)),
        coll("v3", promoted="t3", retired="t4"),
        coll("v4", promoted="t4", retired="t5", loaded=False),
        coll("v5", promoted="t5"),
        coll("vx", validation="failed", loaded=False),
        coll("vforeign", owned=False, promoted="t0", retired="t1"),
    )
    plan = dict(retention_plan(release("v5"), obs, "products__v5"))
    assert plan == {
        "products__v4": "load",  # most recent previous: kept loaded for instant rollback
        "products__v3": "release",  # kept, not loaded
        "products__v1": "drop",
        "products__vx": "drop",
    }  # v2 has an alias; vforeign is not ours; v5 is live


def test_live_release_with_nothing_to_do_is_settled() -> None:
    obs = snapshot(
        "products__v2", coll("v1", promoted="t1", retired="t2"), coll("v2", promoted="t2")
    )
    step = decide(release("v2"), obs, Intents())
    assert step.terminal and step.phase == Phase.LIVE


@pytest.mark.parametrize(
    ("state", "problem"),
    [
        (coll("v1", complete=False), "row count"),
        (coll("v1", indexed=False), "index incomplete"),
        (coll("v1", loaded=False), "not loaded"),
        (coll("v1", validation=""), "not validated"),
        (coll("v1", validation="failed"), "not validated"),
    ],
)
def test_flip_guard_refuses_incomplete_collections(state: CollectionState, problem: str) -> None:
    """Invariant 1, checked again at the moment of the flip."""
    with pytest.raises(ConflictError, match=problem):
        assert_promotable(state, 100)


def test_flip_guard_checks_rows_against_source() -> None:
    with pytest.raises(ConflictError, match="row count 99"):
        assert_promotable(coll("v1"), 99)
    assert_promotable(coll("v1"), 100)


def test_inconclusive_waits_for_a_person_then_promote_accepts() -> None:
    obs = snapshot("products__v1", coll("v1", promoted="t1"), coll("v2", validation="inconclusive"))
    wait = decide(release("v2"), obs, Intents())
    assert (
        wait.terminal
        and wait.phase == Phase.AWAITING_PROMOTION
        and wait.reason == Reason.INCONCLUSIVE
    )
    assert decide(release("v2"), obs, Intents(promote=True)).name == "accept"
    assert decide(release("v2"), obs, Intents(abort=True)).name == "abort"
    accepted = snapshot(
        "products__v1", coll("v1", promoted="t1"), coll("v2", validation="accepted")
    )
    assert decide(release("v2"), accepted, Intents()).name == "flip"
    with pytest.raises(ConflictError):
        assert_promotable(coll("v2", validation="inconclusive"), 100)


def test_changed_thresholds_validate_again_but_never_a_kept_version() -> None:
    stale = coll("v2", validation="failed")
    stale.props[P_VALIDATED_HASH] = "thresholds-of-yesterday"
    obs = snapshot("products__v1", coll("v1", promoted="t1"), stale)
    assert decide(release("v2"), obs, Intents()).name == "validate"
    kept = coll("v1", promoted="t1", retired="t2")
    kept.props[P_VALIDATED_HASH] = "thresholds-of-yesterday"
    obs = snapshot("products__v2", kept, coll("v2", promoted="t2"))
    assert decide(release("v1"), obs, Intents()).name == "flip", "a revert is never re-validated"


def test_validate_only_holds_before_the_flip() -> None:
    obs = snapshot("products__v1", coll("v1", promoted="t1"), coll("v2"))
    step = decide(release("v2"), obs, Intents(hold=True))
    assert step.terminal and step.reason == Reason.VALIDATED


def suspended(version: str = "v2", mode: str = "auto") -> EmbeddingRelease:
    r = release(version, mode)
    return r.model_copy(update={"spec": r.spec.model_copy(update={"suspend": True})})


def test_a_suspended_release_builds_validates_and_flips_nothing() -> None:
    live = coll("v1", promoted="t1")
    for obs in (
        snapshot("products__v1", live),  # would build
        snapshot("products__v1", live, coll("v2", validation="")),  # would validate
        snapshot("products__v1", live, coll("v2")),  # would flip
        snapshot("products__v1", coll("v1", promoted="t1", loaded=False)),  # would re-load
    ):
        step = decide(suspended(), obs, Intents())
        assert (step.name, step.phase, step.reason) == ("done", Phase.SUSPENDED, Reason.SUSPENDED)
        assert step.terminal and "v1 serves" in step.message
    assert decide(release("v2"), snapshot("products__v1", live, coll("v2")), Intents()).name == (
        "flip"
    ), "the same snapshot without spec.suspend flips"


def test_a_suspended_release_still_rolls_back_and_aborts_but_refuses_promote() -> None:
    obs = snapshot(
        "products__v2", coll("v1", promoted="t1", retired="t2"), coll("v2", promoted="t2")
    )
    step = decide(suspended("v2"), obs, Intents(rollback=True))
    assert (step.name, step.target, step.rollback) == ("flip", "products__v1", True)
    building = snapshot("products__v1", coll("v1", promoted="t1"), coll("v2", complete=False))
    assert decide(suspended("v2"), building, Intents(abort=True)).name == "abort"
    waiting = snapshot("products__v1", coll("v1", promoted="t1"), coll("v2"))
    step = decide(suspended("v2", "manual"), waiting, Intents(promote=True))
    assert step.refused == "promote" and "spec.suspend" in step.message
