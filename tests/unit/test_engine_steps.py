"""The engine package's shape: every step is registered, every rule is asked and
fires on its own snapshot, a flip's record keeps its JSON keys, and every build
ends the same way."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from controller.cutover import FlipProof
from controller.engine import (
    P_ABORTED_AT,
    P_BUILD,
    P_BUILD_HASH,
    P_FLIP_UNVERIFIED,
    P_ROLLED_BACK_AT,
    P_SOURCE_ROWS,
    P_TRACK,
    Intents,
    Observation,
    StepContext,
    StepName,
    utc_now,
)
from controller.engine.decide import RULES, Rule, Situation, rules
from controller.engine.steps import REGISTRY
from controller.engine.steps import build as build_steps
from controller.engine.steps.flip import Cutover
from controller.errors import BuildIncomplete, SourceError
from controller.ports import Advance
from controller.schema import Features, Schema
from controller.sources.base import VectorBatch
from controller.spec import EmbeddingRelease
from controller.status import Phase, Reason
from tests.unit.test_decide import coll, release, snapshot

LONG_AGO = "2020-01-01T00:00:00Z"


def test_every_step_name_has_one_step_function_and_every_function_a_name() -> None:
    assert set(REGISTRY) == set(StepName) - {StepName.DONE}
    assert all(callable(fn) for fn in REGISTRY.values())
    assert len(set(REGISTRY.values())) == len(REGISTRY), "one function per step"


def test_step_names_keep_the_labels_events_and_metrics_use() -> None:
    assert {s.value for s in StepName} == {
        "build",
        "discard_incomplete",
        "index",
        "load",
        "validate",
        "accept",
        "abort",
        "flip",
        "verify_flip",
        "release",
        "retain",
        "clear_rollback",
        "capture_reference",
        "monitor",
        "post_promotion",
        "done",
    }


# -- each rule, on a snapshot where it has something to say ------------------------


@dataclass(frozen=True)
class Case:
    rule: Rule
    obs: Observation
    expected: tuple[str, str]  # (step name, reason)
    intents: Intents = field(default_factory=Intents)
    spec: EmbeddingRelease = field(default_factory=lambda: release("v2"))


def live_v1(**props: str) -> Any:
    return coll("v1", promoted=LONG_AGO, **props)


CASES = [
    Case(
        rules.alias_names_a_collection,
        Observation(None, {}, alias_is_collection=True),
        ("done", Reason.ALIAS_CONFLICT),
    ),
    Case(
        rules.alias_owned_by_another_track,
        snapshot("products__v1", live_v1(**{P_TRACK: "search/other"})),
        ("done", Reason.ALIAS_CONFLICT),
    ),
    Case(
        rules.alias_held_by_a_foreign_collection,
        snapshot("products__v0", coll("v0", owned=False)),
        ("done", Reason.ALIAS_CONFLICT),
    ),
    Case(
        rules.version_built_differently,
        snapshot(None, coll("v2", **{P_BUILD_HASH: "other content"})),
        ("done", Reason.VERSION_CONFLICT),
    ),
    Case(
        rules.collection_not_ours,
        snapshot(None, coll("v2", owned=False)),
        ("done", Reason.VERSION_CONFLICT),
    ),
    Case(
        rules.suspended,
        snapshot("products__v1", coll("v1", promoted=LONG_AGO)),
        ("done", Reason.SUSPENDED),
        spec=release("v2").model_copy(
            update={"spec": release("v2").spec.model_copy(update={"suspend": True})}
        ),
    ),
    Case(
        rules.reload_live,
        snapshot("products__v1", coll("v1", promoted=LONG_AGO, loaded=False)),
        ("load", Reason.LOADING),
    ),
    Case(
        rules.rollback_request,
        snapshot(
            "products__v2",
            coll("v1", promoted=LONG_AGO, retired=LONG_AGO),
            coll("v2", promoted=LONG_AGO),
        ),
        ("flip", Reason.ROLLED_BACK),
        Intents(rollback=True),
    ),
    Case(
        rules.unproven_flip,
        snapshot("products__v2", coll("v2", promoted=LONG_AGO, **{P_FLIP_UNVERIFIED: LONG_AGO})),
        ("verify_flip", Reason.FLIP_UNVERIFIED),
    ),
    Case(
        rules.interrupted_flip,
        snapshot("products__v2", coll("v1", promoted=LONG_AGO), coll("v2")),
        ("verify_flip", Reason.FLIP_UNVERIFIED),
    ),
    Case(
        rules.desired_is_live,
        snapshot("products__v2", coll("v2", promoted=LONG_AGO)),
        ("done", Reason.LIVE),
    ),
    Case(
        rules.already_aborted,
        snapshot(None, coll("v2", loaded=False, **{P_ABORTED_AT: LONG_AGO})),
        ("done", Reason.ABORTED),
    ),
    Case(rules.abort_request, snapshot(None), ("abort", Reason.ABORTED), Intents(abort=True)),
    Case(rules.build, snapshot(None), ("build", Reason.BUILDING)),
    Case(
        rules.discard_incomplete,
        snapshot(None, coll("v2", complete=False)),
        ("discard_incomplete", Reason.BUILDING),
    ),
    Case(
        rules.validation_failed,
        snapshot(None, coll("v2", validation="failed")),
        ("release", Reason.VALIDATION_FAILED),
    ),
    Case(rules.index, snapshot(None, coll("v2", indexed=False)), ("index", Reason.INDEXING)),
    Case(rules.load, snapshot(None, coll("v2", loaded=False)), ("load", Reason.LOADING)),
    Case(
        rules.validate, snapshot(None, coll("v2", validation="")), ("validate", Reason.VALIDATING)
    ),
    Case(
        rules.inconclusive,
        snapshot(None, coll("v2", validation="inconclusive")),
        ("done", Reason.INCONCLUSIVE),
    ),
    Case(
        rules.rolled_back,
        snapshot("products__v1", live_v1(), coll("v2", **{P_ROLLED_BACK_AT: LONG_AGO})),
        ("done", Reason.ROLLED_BACK),
    ),
    Case(
        rules.revert_to_kept,
        snapshot("products__v1", live_v1(), coll("v2", promoted=LONG_AGO, retired=LONG_AGO)),
        ("flip", Reason.PROMOTING),
    ),
    Case(
        rules.hold,
        snapshot("products__v1", live_v1(), coll("v2")),
        ("done", Reason.VALIDATED),
        Intents(hold=True),
    ),
    Case(
        rules.manual_promotion,
        snapshot("products__v1", live_v1(), coll("v2")),
        ("done", Reason.AWAITING_PROMOTION),
        spec=release("v2", "manual"),
    ),
]


def test_every_rule_decide_asks_has_a_case() -> None:
    assert [c.rule for c in CASES] == list(RULES), "one case per rule, in decide's order"


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.rule.__name__)
def test_each_rule_fires_on_its_own_snapshot(case: Case) -> None:
    step = case.rule(Situation.of(case.spec, case.obs, case.intents))
    assert step is not None
    assert (step.name, step.reason) == case.expected, step.message
    assert case.rule.__doc__, "each rule says what it serves"


def test_a_ready_candidate_passes_every_rule_and_is_promoted() -> None:
    s = Situation.of(release("v2"), snapshot("products__v1", live_v1(), coll("v2")), Intents())
    assert [r.__name__ for r in RULES if r(s) is not None] == []
    step = rules.promote(s)
    assert (step.name, step.target, step.phase) == ("flip", "products__v2", Phase.PROMOTING)
    assert not step.rollback and step.auto == ""


def test_rules_name_an_invariant_where_one_applies() -> None:
    guarded = [rules.collection_not_ours, rules.abort_request, rules.index, rules.revert_to_kept]
    assert all("nvariant" in (r.__doc__ or "") for r in guarded)


# -- the cutover record ------------------------------------------------------------


def test_cutover_json_keeps_its_keys_in_order_and_round_trips() -> None:
    proof = FlipProof(True, "probes", 12, 2, 0.412, 1790000000.123)
    cutover = Cutover(
        "products__v1", True, "same_id_cosine 0.8 < 0.9", proof, "2026-12-01T00:00:00Z"
    )
    raw = cutover.to_json()
    assert list(json.loads(raw)) == [
        "from",
        "rollback",
        "auto",
        "verified",
        "method",
        "probes",
        "attempts",
        "seconds",
        "issuedAt",
        "at",
    ]
    assert raw.startswith('{"from": "products__v1", "rollback": true, "auto": "same_id')
    assert Cutover.from_json(raw) == cutover
    assert cutover.kind == "auto_rollback"
    assert Cutover.from_json("").proof.verified is False  # nothing recorded: unproven


# -- one tail for every build --------------------------------------------------------


class Rows:
    """A files source of ``n`` unit vectors in batches."""

    def __init__(self, n: int, dim: int = 8) -> None:
        self.n, self.dim = n, dim

    def describe(self) -> str:
        return "rows.parquet"

    def count_rows(self) -> int:
        return self.n

    def batches(self, batch_size: int) -> Iterator[VectorBatch]:
        for start in range(0, self.n, batch_size):
            ids = np.arange(start, min(self.n, start + batch_size), dtype=np.int64)
            vectors = np.zeros((len(ids), self.dim), np.float32)
            vectors[:, 0] = 1.0
            yield VectorBatch(ids, vectors, {}, "rows.parquet", start)


@dataclass
class Data:
    source: Rows

    def open_vectors(self, files: Any, extra_fields: Any) -> Rows:
        return self.source


@dataclass
class Milvus:
    """Just what a build touches; ``lose`` rows vanish at flush."""

    lose: int = 0
    fail_insert: bool = False
    rows: dict[str, int] = field(default_factory=dict)
    props: dict[str, dict[str, str]] = field(default_factory=dict)

    def features(self) -> Features:
        return Features("a stub Milvus")

    def create_collection(
        self, name: str, schema: Schema, props: dict[str, str], num_partitions: Any = None
    ) -> None:
        self.rows[name], self.props[name] = 0, dict(props)

    def insert(self, name: str, batch: VectorBatch) -> None:
        if self.fail_insert:
            raise SourceError("rows.parquet: row 3 is NaN")
        self.rows[name] += len(batch)

    def row_count(self, name: str, flush: bool = True) -> int:
        return self.rows[name] - self.lose

    def set_properties(self, name: str, props: dict[str, str]) -> None:
        self.props[name] |= props

    def drop(self, name: str) -> None:
        del self.rows[name], self.props[name]


@dataclass
class Events:
    seen: list[str] = field(default_factory=list)

    def event(self, reason: str, message: str, warning: bool = False) -> None:
        self.seen.append(message)

    def progress(self, stage: str, total: int | None) -> AbstractContextManager[Advance]:
        return nullcontext(lambda n: None)


def run_build(milvus: Milvus, rows: int = 12) -> Events:
    events = Events()
    ctx = StepContext(milvus, Data(Rows(rows)), events, utc_now)  # type: ignore[arg-type]
    r = release("v2")
    step = rules.build(Situation.of(r, snapshot(None), Intents()))
    assert step is not None
    REGISTRY[step.name](ctx, r, step, snapshot(None))
    return events


def test_a_files_build_ends_complete_with_its_counts() -> None:
    milvus = Milvus()
    events = run_build(milvus)
    props = milvus.props["products__v2"]
    assert props[P_SOURCE_ROWS] == "12"
    assert json.loads(props[P_BUILD]) == {"source": "files", "rows": 12, "load": "insert"}
    assert events.seen == [
        "created products__v2; inserting 12 rows",
        "loaded 12 rows into products__v2 (insert)",
    ]


def test_a_build_short_of_rows_after_flush_is_never_marked_complete() -> None:
    milvus = Milvus(lose=1)
    with pytest.raises(BuildIncomplete, match="holds 11 rows after flush, 12 were inserted"):
        run_build(milvus)
    assert P_SOURCE_ROWS not in milvus.props["products__v2"]


def test_bad_rows_while_loading_leave_milvus_as_it_was() -> None:
    milvus = Milvus(fail_insert=True)
    with pytest.raises(SourceError, match="row 3"):
        run_build(milvus)
    assert milvus.rows == {}


def test_planned_builds_follow_the_source() -> None:
    ctx = StepContext(Milvus(), Data(Rows(1)), Events(), utc_now)  # type: ignore[arg-type]
    planned = build_steps.plan_build(ctx, release("v2"), snapshot(None))
    assert type(planned.build).__name__ == "FilesBuild" and dict(planned.props) == {}
