"""Decisions that keep a track safe from its own users: adoption of a foreign alias,
`embrel validate` and refused requests changing nothing, warnings after the flip, the
build identity and the history."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from controller.engine import (
    P_ABORTED_AT,
    P_BUILD_HASH,
    P_CREATED_AT,
    P_CUTOVER,
    P_ROLLED_BACK_AT,
    CollectionState,
    Intents,
    Observation,
    decide,
    retention_plan,
    rollback_targets,
)
from controller.engine.state import P_ADOPTED
from controller.engine.status_view import history
from controller.sources.local import source_identity
from controller.spec import EmbeddingRelease, parse_release
from controller.status import HistoryEntry, Phase, Reason
from tests.conftest import write_vectors
from tests.unit.test_decide import SPEC, coll, release, snapshot

T1, T2, T3, T4 = (f"2026-01-0{d}T00:00:00Z" for d in (1, 2, 3, 4))


def adopting(version: str, adopt: str = "prod_hnsw_2024") -> EmbeddingRelease:
    return parse_release(SPEC.format(version=version, mode="auto") + f"  adopt: {adopt}\n")


def foreign(name: str = "prod_hnsw_2024") -> CollectionState:
    return replace(coll("v0", owned=False, validation=""), name=name, props={})


# -- foreign aliases, adoption -------------------------------------------------------


def test_a_foreign_alias_is_refused_unless_the_spec_adopts_it() -> None:
    theirs = foreign()
    obs = snapshot("prod_hnsw_2024", theirs)
    step = decide(release("v1"), obs, Intents())
    assert step.terminal and step.phase == Phase.FAILED and step.reason == Reason.ALIAS_CONFLICT
    assert "spec.adopt: prod_hnsw_2024" in step.message
    assert decide(adopting("v1"), obs, Intents()).name == "build"


def test_an_alias_named_like_a_collection_is_refused_before_building() -> None:
    obs = Observation(None, {}, alias_is_collection=True)
    step = decide(release("v1"), obs, Intents())
    assert step.terminal and step.reason == Reason.ALIAS_CONFLICT
    assert "name of an existing collection" in step.message


def test_an_adopted_collection_is_a_rollback_target_retention_never_touches() -> None:
    cutover = json.dumps({"from": "prod_hnsw_2024", "at": T2})
    v1 = coll("v1", promoted=T2, **{P_ADOPTED: "prod_hnsw_2024", P_CUTOVER: cutover})
    obs = snapshot("products__v1", v1, foreign())
    spec = release("v1")  # adopt dropped from the spec since: v1's mark still counts
    assert [c.name for c in rollback_targets(spec, obs)] == ["prod_hnsw_2024"]
    assert retention_plan(spec, obs, "products__v1") == []
    step = decide(spec, obs, Intents(rollback=True))
    assert (step.name, step.target, step.rollback) == ("flip", "prod_hnsw_2024", True)


# -- refused requests and `embrel validate` ------------------------------------------


def test_a_rollback_without_a_target_is_refused_not_failed() -> None:
    obs = snapshot("products__v4", coll("v4", promoted=T4))
    step = decide(release("v4"), obs, Intents(rollback=True, rollback_to="v1"))
    assert step.terminal and step.refused == "rollback"
    assert step.reason == Reason.NO_ROLLBACK_TARGET and "nothing was changed" in step.message


def test_aborting_a_failed_version_is_refused() -> None:
    obs = snapshot(
        "products__v1", coll("v1", promoted=T1), coll("v2", validation="failed", loaded=False)
    )
    step = decide(release("v2"), obs, Intents(abort=True))
    assert step.terminal and step.refused == "abort"


def test_validate_never_changes_what_serves() -> None:
    rolled_back = snapshot(
        "products__v1",
        coll("v1", promoted=T3, retired=T2),
        coll("v2", promoted=T2, retired=T3, **{P_ROLLED_BACK_AT: T3}),
    )
    assert decide(release("v1"), rolled_back, Intents()).name == "clear_rollback"
    step = decide(release("v1"), rolled_back, Intents(hold=True))
    assert step.terminal and step.phase == Phase.LIVE and step.reason == Reason.VALIDATED
    kept = snapshot("products__v2", coll("v1", promoted=T1, retired=T2), coll("v2", promoted=T2))
    assert decide(release("v1"), kept, Intents()).name == "flip"
    step = decide(release("v1"), kept, Intents(hold=True))
    assert step.terminal and step.phase == Phase.AWAITING_PROMOTION


# -- after the flip ------------------------------------------------------------------


def test_a_failed_step_after_the_flip_is_a_warning_and_not_tried_again() -> None:
    live = coll("v2", promoted=T2)
    obs = snapshot("products__v2", coll("v1", promoted=T1, retired=T2, loaded=False), live)
    assert decide(release("v2"), obs, Intents()).name == "retain"
    failed = replace(obs, failed_steps={("retain", "products__v1"): "retain failed: disk full"})
    step = decide(release("v2"), failed, Intents())
    assert step.terminal and step.phase == Phase.LIVE
    assert "warning: retain failed: disk full" in step.message


# -- build identity ------------------------------------------------------------------


def test_build_identity_is_the_files_content_and_old_collections_still_match(
    tmp_path: Path,
) -> None:
    (tmp_path / "emb").mkdir()
    (tmp_path / "spec").mkdir()
    write_vectors(tmp_path / "emb/a.parquet", np.arange(3), np.ones((3, 4), np.float32))
    here = parse_release(SPEC.format(version="v2", mode="auto").replace("data.parquet", "emb/*"))
    moved = parse_release(
        SPEC.format(version="v2", mode="auto").replace("data.parquet", "../emb/*")
    )
    one = source_identity(here.spec.source, tmp_path)
    assert one == source_identity(moved.spec.source, tmp_path / "spec")
    a, b = here.with_source_identity(one), moved.with_source_identity(one)
    assert a.build_hash() == b.build_hash() != a.legacy_build_hash()
    assert a.spec_hash() == here.spec_hash(), "the identity is no part of the spec"

    built = coll("v2", promoted=T2, **{P_BUILD_HASH: a.build_hash()})
    assert decide(b, snapshot("products__v2", built), Intents()).phase == Phase.LIVE
    old = coll("v2", promoted=T2, **{P_BUILD_HASH: here.legacy_build_hash()})
    assert decide(a, snapshot("products__v2", old), Intents()).phase == Phase.LIVE

    write_vectors(tmp_path / "emb/a.parquet", np.arange(3), np.zeros((3, 4), np.float32))
    other = here.with_source_identity(source_identity(here.spec.source, tmp_path))
    step = decide(other, snapshot(None, replace(built, props=built.props)), Intents())
    assert step.reason == Reason.VERSION_CONFLICT
    gone = here.with_source_identity(None)  # files removed after the build
    assert decide(gone, snapshot("products__v2", built), Intents()).phase == Phase.LIVE


# -- history -------------------------------------------------------------------------


def test_history_has_one_entry_per_version_with_its_latest_outcome_in_time_order() -> None:
    before = [
        HistoryEntry("v1", "products__v1", "Failed"),  # failed first, then judged again
        HistoryEntry("v0", "products__v0", "Aborted"),  # dropped since: keeps its place
    ]
    obs = snapshot(
        "products__v1",
        coll("v2", promoted=T2, retired=T4, **{P_ROLLED_BACK_AT: T4, P_CREATED_AT: T1}),
        coll("v3", validation="failed", **{P_CREATED_AT: T3}),
        coll("v4", validation="", **{P_ABORTED_AT: T4, P_CREATED_AT: T3}),
        coll("v1", promoted=T4, retired=T3, **{P_CREATED_AT: T1}),
    )
    got = [(h.version, h.outcome) for h in history(release("v1"), obs, before)]
    assert got == [
        ("v0", "Aborted"),
        ("v2", "RolledBack"),
        ("v3", "Failed"),
        ("v4", "Aborted"),
        ("v1", "Live"),
    ]


@pytest.mark.parametrize("v2_promoted", [T1, T2])
def test_history_puts_a_live_period_begun_in_this_pass_after_those_recorded(
    v2_promoted: str,
) -> None:
    """v3 failed, then a rollback made v1 live again, within one second of the stamps."""
    before = [
        HistoryEntry("v1", "products__v1", "Retired", T1),
        HistoryEntry("v2", "products__v2", "Live", v2_promoted),
        HistoryEntry("v3", "products__v3", "Failed"),
    ]
    obs = snapshot(
        "products__v1",
        coll("v1", promoted=T2, retired=T2, **{P_CREATED_AT: T1}),
        coll("v2", promoted=v2_promoted, retired=T2, **{P_ROLLED_BACK_AT: T2, P_CREATED_AT: T1}),
        coll("v3", validation="failed", **{P_CREATED_AT: T2}),
    )
    got = [(h.version, h.outcome) for h in history(release("v1"), obs, before)]
    assert got == [("v2", "RolledBack"), ("v3", "Failed"), ("v1", "Live")]


def test_history_keeps_history_limit_entries_but_never_drops_the_live_one() -> None:
    entries = [HistoryEntry(f"v{i}", f"products__v{i}", "Retired", f"t{i}") for i in range(5)]
    newest3 = history_of(entries, 3, live=None)
    assert [h.version for h in newest3] == ["v2", "v3", "v4"], "the oldest go first"
    entries[1] = replace(entries[1], outcome="Live")  # rolled back to v1: it serves
    assert [h.version for h in history_of(entries, 3, "products__v1")] == ["v1", "v3", "v4"]
    assert [h.version for h in history_of(entries, 1, "products__v1")] == ["v1"]
    assert history_of(entries, 5, "products__v1") == entries


def history_of(entries: list[HistoryEntry], limit: int, live: str | None) -> list[HistoryEntry]:
    from controller.engine.status_view import bounded_history

    return bounded_history(entries, limit, live)


def test_history_limit_bounds_the_status_history() -> None:
    limited = parse_release(SPEC.format(version="v3", mode="auto") + "  historyLimit: 2\n")
    obs = snapshot(
        "products__v3",
        coll("v1", promoted=T1, retired=T2),
        coll("v2", promoted=T2, retired=T3),
        coll("v3", promoted=T3),
    )
    assert [h.version for h in history(limited, obs, [])] == ["v2", "v3"]
    assert [h.version for h in history(release("v3"), obs, [])] == ["v1", "v2", "v3"]
