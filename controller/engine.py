"""The reconcile loop: desired spec + observed Milvus state -> the next step.

Level-triggered and idempotent (DESIGN.md §6). Each pass *observes* Milvus once
(collections of this track, their properties, load and index state, where the
alias points), *decides* the next step on that snapshot with a pure function,
and *executes* it. Everything the engine must remember lives in Milvus collection
properties, so a controller killed at any instant resumes from Milvus alone.

    decide():  conflicts -> re-load live -> rollback request -> live? (retention)
               -> aborted / abort request -> build -> index -> load -> validate
               (gates in controller.validation) -> inconclusive? -> rolled back?
               -> hold (validate only) / manual promotion -> flip
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from controller.errors import (
    ConflictError,
    EmbrelError,
    MilvusRejected,
    PermanentError,
    SourceError,
    TemporaryError,
)
from controller.ports import DataPort, MilvusPort, NullTelemetry, Reporter, ReportSink, Telemetry
from controller.spec import EmbeddingRelease
from controller.status import (
    HistoryEntry,
    Phase,
    Reason,
    ReleaseStatus,
    with_phase,
)
from controller.validation.gates import GateContext, run_validation
from controller.validation.report import render_report
from controller.validation.results import Check, Outcome
from controller.validation.sanity import DuplicateIdTracker, check_batch

# -- what embrel records on each collection (Milvus Lite drops descriptions) ------
OWNER_VALUE = "embrel"
P_OWNER = "embrel.owner"
P_TRACK = "embrel.track"
P_ALIAS = "embrel.alias"
P_VERSION = "embrel.version"
P_BUILD_HASH = "embrel.buildHash"
P_SPEC_HASH = "embrel.specHash"
P_MODEL = "embrel.model"
P_CREATED_AT = "embrel.createdAt"
P_SOURCE_ROWS = "embrel.sourceRows"  # set only once every row is in and flushed
P_VALIDATION = "embrel.validation"  # "passed" | "failed" | "inconclusive" | "accepted"
P_CHECKS = "embrel.checks"  # JSON list of Check
P_VALIDATED_HASH = "embrel.validatedHash"  # spec.validation the checks were run against
P_REPORT = "embrel.report"  # where the validation report was written
P_ACCEPTED_AT = "embrel.acceptedAt"  # a person promoted an Inconclusive validation
P_PROMOTED_AT = "embrel.promotedAt"
P_RETIRED_AT = "embrel.retiredAt"
P_ROLLED_BACK_AT = "embrel.rolledBackAt"
P_ABORTED_AT = "embrel.abortedAt"
# Properties cannot be deleted portably (2.3.5), so "unset" is the empty string.
UNSET = ""
PASSED, FAILED, INCONCLUSIVE, ACCEPTED = "passed", "failed", "inconclusive", "accepted"
PROMOTABLE = (PASSED, ACCEPTED)  # invariant 1: validated, or a person's explicit call
_VALIDATION_MARK = {
    Outcome.PASSED: PASSED,
    Outcome.FAILED: FAILED,
    Outcome.INCONCLUSIVE: INCONCLUSIVE,
}

MAX_STEPS_PER_PASS = 50


@dataclass(frozen=True)
class Settings:
    batch_size: int = 5000
    index_timeout: float = 3600.0
    load_timeout: float = 600.0
    poll_interval: float = 0.5


@dataclass(frozen=True)
class Intents:
    """Requests from a person, applied by the engine exactly once."""

    promote: bool = False
    abort: bool = False
    rollback: bool = False
    rollback_to: str | None = None  # a version; None means "the previous one"
    hold: bool = False  # validate but do not promote (`embrel validate`)


@dataclass(frozen=True)
class CollectionState:
    name: str
    props: dict[str, str]
    loaded: bool
    index: tuple[int, int] | None
    aliases: tuple[str, ...] = ()

    def get(self, key: str) -> str:
        return self.props.get(key, UNSET)

    @property
    def version(self) -> str:
        return self.get(P_VERSION)

    @property
    def complete(self) -> bool:
        return self.get(P_SOURCE_ROWS) != UNSET

    @property
    def indexed(self) -> bool:
        return self.index is not None and self.index[0] >= self.index[1]

    @property
    def was_live(self) -> bool:
        return self.get(P_PROMOTED_AT) != UNSET


@dataclass(frozen=True)
class Observation:
    """One snapshot of Milvus as it concerns a track."""

    alias_target: str | None
    # Collections owned by this track, plus the alias target whoever owns it.
    collections: dict[str, CollectionState]

    def owned(self, track: str) -> list[CollectionState]:
        return [
            c
            for c in self.collections.values()
            if c.get(P_OWNER) == OWNER_VALUE and c.get(P_TRACK) == track
        ]


# -- steps ---------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    name: str
    target: str = ""
    phase: Phase = Phase.PENDING
    reason: str = ""
    message: str = ""
    terminal: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def _without(intents: Intents, applied: set[str]) -> Intents:
    """Each request acts once: drop those already carried out in this pass."""
    return replace(
        intents,
        promote=intents.promote and "promote" not in applied,
        abort=intents.abort and "abort" not in applied,
        rollback=intents.rollback and "rollback" not in applied,
    )


def _done(phase: Phase, reason: Reason, message: str) -> Step:
    return Step("done", phase=phase, reason=reason, message=message, terminal=True)


def decide(release: EmbeddingRelease, obs: Observation, intents: Intents) -> Step:
    """The next step for this snapshot. Pure: reads nothing, changes nothing."""
    spec = release.spec
    desired = release.collection_name()
    cand = obs.collections.get(desired)
    live = obs.alias_target
    live_state = obs.collections.get(live) if live else None

    if (
        live_state
        and live_state.get(P_OWNER) == OWNER_VALUE
        and live_state.get(P_TRACK) != release.track
    ):
        return _done(
            Phase.FAILED,
            Reason.ALIAS_CONFLICT,
            f"alias {spec.alias} points to {live}, which belongs to release track "
            f"{live_state.get(P_TRACK)}; one alias can only be managed by one track",
        )
    if cand and cand.complete and cand.get(P_BUILD_HASH) != release.build_hash():
        return _done(
            Phase.FAILED,
            Reason.VERSION_CONFLICT,
            f"version {spec.version} was already built as {desired} from a different "
            "model, collection or source; give the new content a new spec.version",
        )
    if cand and cand.get(P_OWNER) != OWNER_VALUE:
        return _done(
            Phase.FAILED,
            Reason.VERSION_CONFLICT,
            f"collection {desired} exists but was not created by embrel; "
            "embrel never modifies collections it does not own",
        )

    if live_state and live_state.get(P_OWNER) == OWNER_VALUE and not live_state.loaded:
        # Milvus Lite forgets load state on restart: applications need live loaded, always.
        phase = Phase.LIVE if live == desired else Phase.PENDING
        return Step(
            "load", live_state.name, phase, Reason.LOADING, "re-loading the live collection"
        )
    if intents.rollback and (rollback := _decide_rollback(release, obs, intents)):
        return rollback
    if live == desired and cand is not None:
        return _decide_live(release, obs, cand)
    if cand and cand.get(P_ABORTED_AT) != UNSET:
        return _finish_stopped(cand, Reason.ABORTED, f"release of {spec.version} was aborted")
    if intents.abort:
        return Step("abort", desired, Phase.FAILED, Reason.ABORTED, "aborting")
    if cand is None:
        return Step("build", desired, Phase.BUILDING, Reason.BUILDING, "building the candidate")
    if not cand.complete:
        return Step(
            "discard_incomplete",
            desired,
            Phase.BUILDING,
            Reason.BUILDING,
            "discarding an incomplete candidate left by an interrupted build",
        )
    # Thresholds changed since the checks ran: judge again (never a kept, once-live version).
    stale = cand.get(P_VALIDATED_HASH) != release.validation_hash() and not cand.was_live
    if cand.get(P_VALIDATION) == FAILED and not stale:
        return _finish_stopped(cand, Reason.VALIDATION_FAILED, _failed_message(cand))
    if not cand.indexed:
        return Step("index", desired, Phase.INDEXING, Reason.INDEXING, "building the index")
    if not cand.loaded:
        return Step("load", desired, Phase.INDEXING, Reason.LOADING, "loading the candidate")
    if cand.get(P_VALIDATION) not in (*PROMOTABLE, INCONCLUSIVE) or stale:
        return Step("validate", desired, Phase.VALIDATING, Reason.VALIDATING, "validating")
    if cand.get(P_VALIDATION) == INCONCLUSIVE:
        if intents.promote:
            return Step(
                "accept", desired, Phase.PROMOTING, Reason.PROMOTING, "promoted by a person"
            )
        return _done(
            Phase.AWAITING_PROMOTION,
            Reason.INCONCLUSIVE,
            f"validation of {spec.version} was inconclusive ({_inconclusive(cand)}); "
            f"run `embrel promote {release.metadata.name}` or `embrel abort {release.metadata.name}`",
        )
    if cand.get(P_ROLLED_BACK_AT) != UNSET and not intents.promote:
        return _done(
            Phase.ROLLED_BACK,
            Reason.ROLLED_BACK,
            f"{spec.version} was rolled back; the alias points to {live}. "
            "Run `embrel promote` to go forward again, or apply another version",
        )
    if cand.was_live:  # a revert to a retained version: instant, no rebuild (invariant 5)
        return Step(
            "flip", desired, Phase.PROMOTING, Reason.PROMOTING, "returning to a kept version"
        )
    if intents.hold:
        return _done(
            Phase.AWAITING_PROMOTION,
            Reason.VALIDATED,
            f"{spec.version} passed validation; not promoted (embrel validate)",
        )
    if spec.promotion.mode == "manual" and not intents.promote:
        return _done(
            Phase.AWAITING_PROMOTION,
            Reason.AWAITING_PROMOTION,
            f"{spec.version} passed validation; run `embrel promote {release.metadata.name}`",
        )
    return Step("flip", desired, Phase.PROMOTING, Reason.PROMOTING, "promoting")


def _finish_stopped(cand: CollectionState, reason: Reason, message: str) -> Step:
    # Free the memory of a candidate that will never serve. Milvus Lite reports a
    # collection without an index as loaded, though nothing was ever loaded.
    if cand.loaded and cand.index is not None:
        return Step(
            "release", cand.name, Phase.FAILED, reason, f"releasing {cand.name}: it will not serve"
        )
    return _done(Phase.FAILED, reason, message)


def _inconclusive(cand: CollectionState) -> str:
    return "; ".join(
        f"{c.name}: {c.detail}" for c in _checks(cand) if c.outcome == Outcome.INCONCLUSIVE
    )


def _summarise(c: Check) -> str:
    value = "—" if c.value is None else f"{c.value:.4g}"
    if c.threshold is None or c.value is None:
        return f"{c.name}={value} ({c.outcome})"
    return f"{c.name}={value} ({c.comparison} {c.threshold:.4g}: {c.outcome})"


def _failed_message(cand: CollectionState) -> str:
    failed = [c for c in _checks(cand) if not c.passed]
    parts = [f"{_summarise(c)} {c.detail}".strip() for c in failed]
    return f"validation failed: {'; '.join(parts) or 'see checks'}; the live alias was not changed"


def _decide_live(release: EmbeddingRelease, obs: Observation, live: CollectionState) -> Step:
    if action := retention_plan(release, obs, live.name):
        name, verb = action[0]
        return Step(
            "retain",
            name,
            Phase.LIVE,
            Reason.RETENTION,
            f"retention: {verb} {name}",
            extra={"verb": verb},
        )
    stale = [c.name for c in obs.owned(release.track) if c.get(P_ROLLED_BACK_AT) != UNSET]
    if stale:  # the spec came back to the live version: forget old rollback marks
        return Step("clear_rollback", stale[0], Phase.LIVE, Reason.LIVE, "clearing rollback mark")
    return _done(Phase.LIVE, Reason.LIVE, f"{release.spec.version} is live as {live.name}")


def _decide_rollback(release: EmbeddingRelease, obs: Observation, intents: Intents) -> Step | None:
    """The flip a rollback request needs; None when the requested version is already live."""
    live = obs.alias_target
    kept = rollback_targets(release, obs)
    if intents.rollback_to is not None:
        kept = [c for c in kept if c.version == intents.rollback_to]
    live_state = obs.collections.get(live or "")
    if intents.rollback_to is not None and live_state and live_state.version == intents.rollback_to:
        return None
    if not kept:
        wanted = f"version {intents.rollback_to}" if intents.rollback_to else "a previous version"
        return _done(
            Phase.FAILED,
            Reason.NO_ROLLBACK_TARGET,
            f"cannot roll back to {wanted}: no retained, validated collection of this track "
            f"(kept: {[c.version for c in rollback_targets(release, obs)] or 'none'})",
        )
    target = kept[0]
    if not target.loaded:  # keepLoaded was exceeded, or Milvus Lite restarted
        return Step(
            "load",
            target.name,
            Phase.PROMOTING,
            Reason.LOADING,
            f"loading {target.version} to roll back",
        )
    return Step(
        "flip",
        target.name,
        Phase.PROMOTING,
        Reason.ROLLED_BACK,
        f"rolling back to {target.version}",
        extra={"rollback": True},
    )


def rollback_targets(release: EmbeddingRelease, obs: Observation) -> list[CollectionState]:
    """Retained collections that were live before, most recently retired first."""
    kept = [
        c
        for c in obs.owned(release.track)
        if c.was_live and c.name != obs.alias_target and c.get(P_VALIDATION) in PROMOTABLE
    ]
    return sorted(kept, key=lambda c: c.get(P_RETIRED_AT), reverse=True)


def retention_plan(release: EmbeddingRelease, obs: Observation, live: str) -> list[tuple[str, str]]:
    """(collection, "release" | "drop" | "load") actions that retention still needs.

    Keeps ``keepPrevious`` formerly-live collections (``keepLoaded`` of them loaded),
    drops other owned collections that are neither live nor desired, and never
    touches a collection an alias points to or one embrel does not own (invariant 3).
    """
    keep = release.spec.retention
    desired = release.collection_name()
    actions: list[tuple[str, str]] = []
    previous = rollback_targets(release, obs)
    for rank, c in enumerate(previous):
        if rank < keep.keep_loaded and not c.loaded:
            actions.append((c.name, "load"))
        elif keep.keep_loaded <= rank < keep.keep_previous and c.loaded:
            actions.append((c.name, "release"))
        elif rank >= keep.keep_previous:
            actions.append((c.name, "drop"))
    kept = {c.name for c in previous}
    for c in obs.owned(release.track):
        if c.name not in kept and c.name not in (live, desired):
            actions.append((c.name, "drop"))
    return [(n, v) for n, v in actions if not (v == "drop" and obs.collections[n].aliases)]


def _checks(c: CollectionState) -> list[Check]:
    raw = c.get(P_CHECKS)
    return [Check.from_dict(d) for d in json.loads(raw)] if raw else []


# -- the engine ----------------------------------------------------------------


@dataclass
class ReconcileResult:
    status: ReleaseStatus
    done: bool  # nothing more to do for this spec until something changes
    error: EmbrelError | None = None
    requeue_after: float | None = None
    applied: frozenset[str] = frozenset()  # intents the engine carried out


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Engine:
    """Runs reconcile passes for one release against the ports it is given."""

    def __init__(
        self,
        milvus: MilvusPort,
        data: DataPort,
        reporter: Reporter,
        settings: Settings | None = None,
        clock: Callable[[], str] = utc_now,
        reports: ReportSink | None = None,
        telemetry: Telemetry | None = None,
        on_status: Callable[[ReleaseStatus], None] | None = None,
    ) -> None:
        # Told the status of every step decided, before it runs: the Kubernetes driver
        # writes it, so a long pass shows Building -> Indexing -> Validating as it goes.
        self.on_status = on_status
        self.reports = reports
        self.telemetry = telemetry or NullTelemetry()
        self.milvus = milvus
        self.data = data
        self.reporter = reporter
        self.settings = settings or Settings()
        self.clock = clock

    # -- observe -------------------------------------------------------------

    def observe(self, release: EmbeddingRelease) -> Observation:
        target = self.milvus.alias_target(release.spec.alias)
        names = self.milvus.list_collections()
        prefix = f"{release.spec.alias}__"
        states: dict[str, CollectionState] = {}
        for name in names:
            if not name.startswith(prefix) and name != target:
                continue  # cheap filter; ownership is checked on properties below
            props = self.milvus.properties(name)
            if (
                name not in (target, release.collection_name())
                and props.get(P_TRACK) != release.track
            ):
                continue
            states[name] = CollectionState(
                name=name,
                props=props,
                loaded=self.milvus.is_loaded(name),
                index=self.milvus.index_progress(name),
                aliases=tuple(self.milvus.aliases_of(name)),
            )
        return Observation(alias_target=target, collections=states)

    # -- reconcile -----------------------------------------------------------

    def reconcile(
        self,
        release: EmbeddingRelease,
        intents: Intents | Callable[[], Intents] = Intents(),
        previous: ReleaseStatus | None = None,
        generation: int = 0,
    ) -> ReconcileResult:
        """Run steps until the release is settled, or an error stops the pass.

        ``intents`` may be a callable, read again before every step, so that an abort
        requested while a long step runs stops the release before its flip.
        """
        status = replace(previous or ReleaseStatus(), observed_generation=generation)
        status.spec_hash = release.spec_hash()
        applied: set[str] = set()
        try:
            previous_step: tuple[str, str] | None = None
            for _ in range(MAX_STEPS_PER_PASS):
                wanted = _without(intents() if callable(intents) else intents, applied)
                obs = self.observe(release)
                step = decide(release, obs, wanted)
                status = self._status(release, obs, step, status)
                if self.on_status is not None and not step.terminal:
                    self.on_status(status)
                if step.terminal:
                    return ReconcileResult(status, done=True, applied=frozenset(applied))
                if (step.name, step.target) == previous_step:  # no hot loops
                    raise TemporaryError(f"{step.name} on {step.target} did not take effect")
                previous_step = (step.name, step.target)
                self._execute(release, step, obs)
                applied |= self._applied_by(step, wanted)
            raise TemporaryError("reconcile did not settle; will retry", delay=5.0)
        except TemporaryError as exc:
            status = with_phase(
                status, status.phase, Reason.MILVUS_UNAVAILABLE, str(exc), self.clock()
            )
            return ReconcileResult(status, False, exc, exc.delay, frozenset(applied))
        except PermanentError as exc:
            reason = _reason_for(exc)
            status = with_phase(status, Phase.FAILED, reason, str(exc), self.clock())
            self.reporter.event(reason, str(exc), warning=True)
            return ReconcileResult(status, True, exc, None, frozenset(applied))

    @staticmethod
    def _applied_by(step: Step, intents: Intents) -> set[str]:
        if step.name == "flip" and step.extra.get("rollback"):
            return {"rollback"}
        if step.name == "flip" and intents.promote:
            return {"promote"}
        if step.name == "abort":
            return {"abort"}
        return set()

    def _execute(self, release: EmbeddingRelease, step: Step, obs: Observation) -> None:
        self.reporter.event(step.reason, step.message)
        action = getattr(self, f"_step_{step.name}")
        action(release, step, obs)

    # -- steps ---------------------------------------------------------------

    def _step_build(self, release: EmbeddingRelease, step: Step, obs: Observation) -> None:
        """Check the whole source, then create the collection and insert every row."""
        spec = release.spec
        extra = [f.name for f in spec.collection.fields]
        source = self.data.open_vectors(spec.source.files, extra)
        rows = self._check_source(release, source)
        self._create(release, step.target)
        self.reporter.event(Reason.BUILDING, f"created {step.target}; inserting {rows} rows")
        try:
            loaded = self._insert_all(release, source, step.target, rows)
        except SourceError:
            self.milvus.drop(step.target)  # ours, never aliased: leave Milvus as it was
            raise
        counted = self.milvus.row_count(step.target)  # flushes first
        if counted != loaded:
            raise TemporaryError(
                f"{step.target} holds {counted} rows after flush, {loaded} were inserted; "
                "the incomplete candidate will be rebuilt"
            )
        self.milvus.set_properties(step.target, {P_SOURCE_ROWS: str(loaded)})
        self.reporter.event(Reason.BUILDING, f"loaded {loaded} rows into {step.target}")

    def _create(
        self, release: EmbeddingRelease, name: str, extra: dict[str, str] | None = None
    ) -> None:
        """Create a collection recording what it is and that embrel owns it."""
        spec = release.spec
        identity = {
            P_OWNER: OWNER_VALUE,
            P_TRACK: release.track,
            P_ALIAS: spec.alias,
            P_VERSION: spec.version,
            P_BUILD_HASH: release.build_hash(),
            P_SPEC_HASH: release.spec_hash(),
            P_MODEL: spec.model.label(),
            P_CREATED_AT: self.clock(),
        }
        dims, fields = spec.collection.dimension, spec.collection.fields
        self.milvus.create_collection(name, dims, fields, identity | (extra or {}))

    def _check_source(self, release: EmbeddingRelease, source: Any) -> int:
        spec = release.spec
        dupes = DuplicateIdTracker()
        rows = 0
        with self.reporter.progress(f"checking {source.describe()}", source.count_rows()) as adv:
            for batch in source.batches(self.settings.batch_size):
                check_batch(batch, spec.collection.dimension, spec.collection.metric)
                dupes.add(batch)
                rows += len(batch.ids)
                adv(len(batch.ids))
        dupes.check()
        if rows == 0:
            raise SourceError(
                f"{source.describe()} holds no rows; refusing to release an empty collection"
            )
        return rows

    def _insert_all(self, release: EmbeddingRelease, source: Any, target: str, rows: int) -> int:
        spec = release.spec
        loaded = 0
        with self.reporter.progress(f"loading {target}", rows) as advance:
            for batch in source.batches(self.settings.batch_size):
                check_batch(batch, spec.collection.dimension, spec.collection.metric)
                self.milvus.insert(target, batch)
                loaded += len(batch.ids)
                advance(len(batch.ids))
        if loaded != rows:
            raise SourceError(
                f"{source.describe()} changed while loading: {rows} rows checked, {loaded} read"
            )
        return loaded

    def _step_discard_incomplete(
        self, release: EmbeddingRelease, step: Step, obs: Observation
    ) -> None:
        self.milvus.drop(step.target)

    def _step_index(self, release: EmbeddingRelease, step: Step, obs: Observation) -> None:
        idx = release.spec.collection.index
        self.milvus.ensure_index(step.target, idx.type, release.spec.collection.metric, idx.params)
        deadline = time.monotonic() + self.settings.index_timeout
        with self.reporter.progress(f"indexing {step.target}", None) as advance:
            seen = 0
            while True:
                progress = self.milvus.index_progress(step.target)
                indexed, total = progress or (0, 1)
                advance(indexed - seen)
                seen = indexed
                if indexed >= total:
                    return
                if time.monotonic() > deadline:
                    raise TemporaryError(
                        f"index on {step.target} not finished after {self.settings.index_timeout:.0f}s "
                        f"({indexed}/{total} rows indexed)"
                    )
                time.sleep(self.settings.poll_interval)

    def _step_load(self, release: EmbeddingRelease, step: Step, obs: Observation) -> None:
        self.milvus.load(step.target)
        deadline = time.monotonic() + self.settings.load_timeout
        while not self.milvus.is_loaded(step.target):
            if time.monotonic() > deadline:
                raise TemporaryError(
                    f"{step.target} not loaded after {self.settings.load_timeout:.0f}s"
                )
            time.sleep(self.settings.poll_interval)

    def _step_release(self, release: EmbeddingRelease, step: Step, obs: Observation) -> None:
        if obs.alias_target != step.target:
            self.milvus.release(step.target)

    def _step_validate(self, release: EmbeddingRelease, step: Step, obs: Observation) -> None:
        cand = obs.collections[step.target]
        live = obs.collections.get(obs.alias_target or "")
        run = run_validation(
            GateContext(
                release=release,
                candidate=cand.name,
                source_rows=int(cand.get(P_SOURCE_ROWS)),
                live=obs.alias_target,
                live_version=live.version or None if live else None,
                live_model=live.get(P_MODEL) or None if live else None,
                milvus=self.milvus,
                data=self.data,
            )
        )
        outcome = run.outcome
        props = {
            P_CHECKS: json.dumps([c.to_dict() for c in run.checks]),
            P_VALIDATION: _VALIDATION_MARK[outcome],
            P_VALIDATED_HASH: release.validation_hash(),
        }
        if self.reports is not None:
            files = render_report(run)
            props[P_REPORT] = self.reports.write_report(release.track, release.spec.version, files)
        self.milvus.set_properties(step.target, props)
        gated = (Outcome.PASSED, Outcome.FAILED, Outcome.INCONCLUSIVE)
        summary = ", ".join(_summarise(c) for c in run.checks if c.outcome in gated)
        self.reporter.event(
            Reason.VALIDATING if outcome == Outcome.PASSED else Reason.VALIDATION_FAILED,
            f"validation {outcome.lower()}: {summary}",
            warning=outcome != Outcome.PASSED,
        )
        if P_REPORT in props:
            self.reporter.event(Reason.VALIDATING, f"report: {props[P_REPORT]}")

    def _step_accept(self, release: EmbeddingRelease, step: Step, obs: Observation) -> None:
        """A person promoted an Inconclusive validation: record that it was their call."""
        self.milvus.set_properties(
            step.target, {P_VALIDATION: ACCEPTED, P_ACCEPTED_AT: self.clock()}
        )

    def _step_abort(self, release: EmbeddingRelease, step: Step, obs: Observation) -> None:
        mark = {P_ABORTED_AT: self.clock()}
        if step.target in obs.collections:
            self.milvus.set_properties(step.target, mark)
        else:  # aborted before the build began: an empty collection records the decision
            self._create(release, step.target, mark)
        self.reporter.event(
            Reason.ABORTED,
            f"aborted {release.spec.version}; the live alias was not changed",
            warning=True,
        )

    def _step_flip(self, release: EmbeddingRelease, step: Step, obs: Observation) -> None:
        target = obs.collections[step.target]
        # Flushed when it was built and counted again at validation; no flush on the hot path.
        assert_promotable(target, self.milvus.row_count(target.name, flush=False))
        previous = obs.alias_target
        started = time.monotonic()
        self.milvus.point_alias(release.spec.alias, target.name)
        if self.milvus.alias_target(release.spec.alias) != target.name:
            # A lost flip (DESIGN.md §6): re-issuing the same alter_alias heals it.
            self.milvus.point_alias(release.spec.alias, target.name)
        now = self.clock()
        self.milvus.set_properties(target.name, {P_PROMOTED_AT: now, P_ROLLED_BACK_AT: UNSET})
        if (
            previous
            and previous in obs.collections
            and obs.collections[previous].get(P_OWNER) == OWNER_VALUE
        ):
            marks = {P_RETIRED_AT: now}
            if step.extra.get("rollback"):
                marks[P_ROLLED_BACK_AT] = now
            self.milvus.set_properties(previous, marks)
        verb = "rolled back" if step.extra.get("rollback") else "switched"
        self.reporter.event(
            Reason.ROLLED_BACK if step.extra.get("rollback") else Reason.PROMOTED,
            f"{verb} alias {release.spec.alias}: {previous or '(none)'} -> {target.name} "
            f"in {(time.monotonic() - started) * 1000:.0f} ms",
        )

    def _step_retain(self, release: EmbeddingRelease, step: Step, obs: Observation) -> None:
        verb = step.extra["verb"]
        if verb == "drop":
            self.milvus.drop(step.target)
        elif verb == "release":
            self.milvus.release(step.target)
        else:
            self._step_load(release, step, obs)

    def _step_clear_rollback(self, release: EmbeddingRelease, step: Step, obs: Observation) -> None:
        self.milvus.set_properties(step.target, {P_ROLLED_BACK_AT: UNSET})

    # -- status --------------------------------------------------------------

    def _status(
        self, release: EmbeddingRelease, obs: Observation, step: Step, previous: ReleaseStatus
    ) -> ReleaseStatus:
        """Status from the snapshot and the decision, in one place (STYLE.md §4)."""
        live = obs.collections.get(obs.alias_target or "")
        cand = obs.collections.get(release.collection_name())
        status = replace(
            previous,
            live=_describe(live, obs.alias_target),
            candidate=_describe(cand, release.collection_name())
            if cand and cand.name != obs.alias_target
            else None,
            validation=_validation(cand),
            history=_history(release, obs, previous.history),
        )
        return with_phase(status, step.phase, step.reason, step.message, self.clock())


def assert_promotable(c: CollectionState, rows: int) -> None:
    """Invariant 1: the alias only ever points to a complete, indexed, loaded, validated collection."""
    problems = []
    if not c.complete or str(rows) != c.get(P_SOURCE_ROWS):
        problems.append(
            f"row count {rows} does not match the source ({c.get(P_SOURCE_ROWS) or 'unknown'})"
        )
    if not c.indexed:
        problems.append(f"index incomplete ({c.index})")
    if not c.loaded:
        problems.append("not loaded")
    if c.get(P_VALIDATION) not in PROMOTABLE:
        problems.append("not validated")
    if problems:
        raise ConflictError(f"refusing to point the alias at {c.name}: {', '.join(problems)}")


def _describe(c: CollectionState | None, name: str | None) -> dict[str, Any] | None:
    if name is None:
        return None
    if c is None:
        return {"collection": name}
    out: dict[str, Any] = {
        "version": c.version or None,
        "collection": c.name,
        "model": c.get(P_MODEL) or None,
    }
    if c.complete:
        out["rows"] = int(c.get(P_SOURCE_ROWS))
    if c.index is not None:
        out["indexed_rows"], out["total_rows"] = c.index
    return out


def _validation(c: CollectionState | None) -> dict[str, Any] | None:
    if c is None or c.get(P_VALIDATION) == UNSET:
        return None
    checks = _checks(c)
    recall = next((x.value for x in checks if x.name.startswith("recall@")), None)
    if recall is None:
        recall = next((x.value for x in checks if x.name == "minAnnRecall"), None)
    return {
        "outcome": c.get(P_VALIDATION),
        "passed": c.get(P_VALIDATION) in PROMOTABLE,
        # Golden-set recall (else ANN recall): `kubectl get er` shows it as RECALL.
        "recall": recall,
        "checks": [check.to_dict() for check in checks],
        "report": c.get(P_REPORT) or None,
    }


def _history(
    release: EmbeddingRelease, obs: Observation, before: list[HistoryEntry]
) -> list[HistoryEntry]:
    """One entry per time a version went live (plus failed and aborted attempts).

    Milvus keeps only the latest promotedAt/retiredAt per collection, so earlier live
    periods, and versions retention has dropped, come from the previous status.
    """
    entries = {(h.collection, h.promoted_at): h for h in before}
    for c in obs.owned(release.track):
        if c.get(P_ABORTED_AT) or c.get(P_VALIDATION) == FAILED:
            outcome = "Aborted" if c.get(P_ABORTED_AT) else "Failed"
            entries[(c.name, None)] = HistoryEntry(c.version, c.name, outcome)
        elif c.was_live:
            key = (c.name, c.get(P_PROMOTED_AT))
            entries.setdefault(key, HistoryEntry(c.version, c.name, "Live", key[1]))
    return sorted(
        (_settle(h, obs) for h in entries.values()),
        key=lambda h: (h.promoted_at or "~", h.collection),
    )


def _settle(h: HistoryEntry, obs: Observation) -> HistoryEntry:
    """Bring a live period's end and outcome up to date with the snapshot."""
    if h.promoted_at is None or h.outcome not in ("Live",):
        return h
    c = obs.collections.get(h.collection)
    if c is None:
        return replace(h, outcome="Dropped")
    if c.name == obs.alias_target and c.get(P_PROMOTED_AT) == h.promoted_at:
        return h
    retired = c.get(P_RETIRED_AT)
    if retired < h.promoted_at:
        return h  # retirement not recorded yet
    outcome = "RolledBack" if c.get(P_ROLLED_BACK_AT) == retired else "Retired"
    return replace(h, retired_at=retired, outcome=outcome)


def _reason_for(exc: EmbrelError) -> Reason:
    if isinstance(exc, SourceError):
        return Reason.INVALID_SOURCE
    if isinstance(exc, ConflictError):
        return Reason.VERSION_CONFLICT
    if isinstance(exc, MilvusRejected):
        return Reason.MILVUS_REJECTED
    return Reason.VALIDATION_FAILED
