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
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import numpy as np

from controller import monitoring
from controller.cutover import Fingerprint, Probes, Seen, proof_text, read_probes, verified_flip
from controller.errors import (
    BuildIncomplete,
    ConflictError,
    EmbrelError,
    MilvusRejected,
    NotSettled,
    PermanentError,
    SourceError,
    TemporaryError,
    WaitTimedOut,
)
from controller.incremental import (
    HASH_FIELD,
    BuildPorts,
    DeltaBuild,
    DocumentsBuild,
    documents_base,
)
from controller.ports import (
    Advance,
    DataPort,
    EmbedderFactory,
    EmbedderPort,
    EmbeddingCachePort,
    MilvusPort,
    NullCache,
    NullTelemetry,
    ReferenceStore,
    Reporter,
    ReportSink,
    Telemetry,
)
from controller.spec import EmbeddingRelease, FieldSpec, duration_seconds
from controller.status import (
    HistoryEntry,
    Phase,
    Reason,
    ReleaseStatus,
    with_phase,
)
from controller.validation.gates import GateContext, run_validation, search_params, warm_up
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
P_ROLLBACK_REASON = "embrel.rollbackReason"  # why the post-promotion guard rolled back
# Issue 7, proven cutover.
P_FINGERPRINT = "embrel.fingerprint"  # probes telling this collection from the one it replaces
P_CUTOVER = "embrel.cutover"  # JSON: how the last flip to this collection was proven
P_FLIP_UNVERIFIED = "embrel.flipUnverified"  # when a flip to it could not be proven
# Issue 5, drift monitoring.
P_REFERENCE_AT = "embrel.referenceAt"  # when the drift reference was captured
P_DRIFT = "embrel.drift"  # JSON: last drift values and breaches
P_DRIFT_AT = "embrel.driftAt"
# Issue 6, incremental builds.
P_BASE = "embrel.base"  # the collection a delta or documents build started from
P_BUILD = "embrel.build"  # JSON: status.build, the counts of how it was built
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
_REVERIFY = 30.0  # seconds between probes of a Degraded (unproven) flip


@dataclass(frozen=True)
class Settings:
    batch_size: int = 5000
    index_timeout: float = 3600.0
    load_timeout: float = 600.0
    poll_interval: float = 0.5
    # Verified flip: probe through the alias this long before re-issuing alter_alias,
    # at most this many times, then the release is Degraded.
    verify_window: float = 0.4
    flip_attempts: int = 3


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
    now: float = field(default_factory=time.time)  # epoch seconds of the snapshot
    steps_done: frozenset[str] = frozenset()  # steps already run in this pass
    can_monitor: bool = True  # a drift reference store is configured

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
    if cand and cand.complete and (conflict := build_conflict(release, obs, cand)):
        return _done(Phase.FAILED, Reason.VERSION_CONFLICT, conflict)
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
    if unproven := _unproven(release, obs):  # a flip probes could not confirm: hold still
        return _decide_unverified(release, obs, unproven)
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
        why = cand.get(P_ROLLBACK_REASON)
        return _done(
            Phase.ROLLED_BACK,
            Reason.AUTO_ROLLED_BACK if why else Reason.ROLLED_BACK,
            f"{spec.version} was rolled back{f' by the post-promotion guard ({why})' if why else ''}; "
            f"the alias points to {live}. "
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
    actions = retention_plan(release, obs, live.name)
    draining = [(n, v) for n, v in actions if v != "load" and _drain_left(release, obs, n) > 0]
    if ready := [a for a in actions if a not in draining]:
        name, verb = ready[0]
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
    monitor = _decide_monitoring(release, obs, live)
    if monitor.name != "done":
        return monitor
    waits = [monitor.extra.get("requeue_after")]
    message = monitor.message or f"{release.spec.version} is live as {live.name}"
    if draining:
        left = max(_drain_left(release, obs, n) for n, _ in draining)
        waits.append(left)
        message += f"; {', '.join(n for n, _ in draining)} draining for {left:.0f}s more"
    return replace(monitor, message=message, extra={"requeue_after": _soonest(waits)})


def _soonest(waits: list[float | None]) -> float | None:
    known = [w for w in waits if w is not None]
    return min(known) if known else None


def _drain_left(release: EmbeddingRelease, obs: Observation, name: str) -> float:
    """Seconds until a retired collection may be released or dropped (drainSeconds)."""
    retired = _epoch(obs.collections[name].get(P_RETIRED_AT))
    if retired is None:
        return 0.0
    return max(0.0, retired + release.spec.promotion.drain_seconds - obs.now)


def _unproven(release: EmbeddingRelease, obs: Observation) -> CollectionState | None:
    return next((c for c in obs.owned(release.track) if c.get(P_FLIP_UNVERIFIED) != UNSET), None)


def _decide_unverified(
    release: EmbeddingRelease, obs: Observation, target: CollectionState
) -> Step:
    """A flip that could not be proven: nothing is released or dropped; probe again later."""
    since = _epoch(target.get(P_FLIP_UNVERIFIED)) or 0.0
    wait = since + _REVERIFY - obs.now
    if wait <= 0 and "verify_flip" not in obs.steps_done:
        return Step(
            "verify_flip", target.name, Phase.DEGRADED, Reason.FLIP_UNVERIFIED, "probing the alias"
        )
    return Step(
        "done",
        phase=Phase.DEGRADED,
        reason=Reason.FLIP_UNVERIFIED,
        message=(
            f"alias {release.spec.alias} was switched to {target.name}, but probes through the "
            "alias do not see it; the previous collection stays loaded and nothing is "
            f"dropped. Probing again in {max(wait, 0):.0f}s; `embrel rollback` to go back"
        ),
        terminal=True,
        extra={"requeue_after": max(wait, 1.0)},
    )


def _decide_monitoring(release: EmbeddingRelease, obs: Observation, live: CollectionState) -> Step:
    """Capture the drift reference, measure when due, and guard a fresh cutover."""
    spec = release.spec
    mon, guard = spec.monitoring, spec.promotion.post_promotion
    drift = json.loads(live.get(P_DRIFT) or "{}")
    breaches: list[str] = drift.get("breaches", [])
    version = f"{spec.version} is live as {live.name}"
    if breaches:
        version += f"; drift beyond thresholds: {'; '.join(breaches)}"
    if not (mon.enabled and obs.can_monitor):
        return _done(Phase.LIVE, Reason.LIVE, version)
    if live.get(P_REFERENCE_AT) == UNSET:
        return Step(
            "capture_reference",
            live.name,
            Phase.LIVE,
            Reason.MONITORING,
            "capturing drift reference",
        )
    promoted = _epoch(live.get(P_PROMOTED_AT)) or 0.0
    guarding = obs.now - promoted < guard.watch_seconds
    if breaches and guarding and guard.rollback_on_failure:
        targets = [c for c in rollback_targets(release, obs) if c.loaded]
        if targets:
            return Step(
                "flip",
                targets[0].name,
                Phase.PROMOTING,
                Reason.AUTO_ROLLED_BACK,
                f"post-promotion guard: {'; '.join(breaches)}; rolling back to "
                f"{targets[0].version}",
                extra={"rollback": True, "auto": "; ".join(breaches)},
            )
    interval = duration_seconds(guard.interval if guarding else mon.interval)
    last = _epoch(live.get(P_DRIFT_AT)) or _epoch(live.get(P_REFERENCE_AT)) or 0.0
    wait = last + interval - obs.now
    if wait <= 0 and "monitor" not in obs.steps_done:
        return Step("monitor", live.name, Phase.LIVE, Reason.MONITORING, "measuring drift")
    reason = Reason.DRIFT_DETECTED if breaches else Reason.LIVE
    return replace(_done(Phase.LIVE, reason, version), extra={"requeue_after": max(wait, 1.0)})


def _epoch(stamp: str) -> float | None:
    """Seconds since the epoch of a ``utc_now()`` stamp; None when unset."""
    try:
        return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
    except ValueError:  # unset, or edited by hand: treat as unknown
        return None


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


# -- incremental builds (controller.incremental) ---------------------------------


def delta_base(release: EmbeddingRelease, obs: Observation) -> CollectionState:
    """The collection a delta applies to: where the alias points now, or a kept version."""
    delta = release.spec.source.delta
    assert delta is not None
    if delta.base == "live":
        live = obs.collections.get(obs.alias_target or "")
        if live is None or live.name == release.collection_name():
            raise SourceError(
                f"source.delta.base is live, but alias {release.spec.alias} points to no "
                "collection yet; the first release needs source.files or source.documents"
            )
        return live
    found = [c for c in obs.owned(release.track) if c.version == delta.base and c.complete]
    if not found:
        kept = sorted(c.version for c in obs.owned(release.track) if c.complete)
        raise SourceError(
            f"source.delta.base: version {delta.base!r} of track {release.track} is not in "
            f"Milvus (versions kept: {', '.join(kept) or 'none'}); name a kept version or live"
        )
    return found[0]


def base_identity(base: CollectionState) -> str:
    """What a delta's build hash records of its base: its name and its content's hash."""
    return f"{base.name}#{base.get(P_BUILD_HASH)}"


def build_conflict(release: EmbeddingRelease, obs: Observation, cand: CollectionState) -> str:
    """Why this version's complete collection is not what the spec builds ("" when it is).

    A delta's identity includes its base (``P_BASE``). Until the candidate has served,
    the base the spec names now must still be the one it was built on; once it has
    served, the recorded base is part of what it is (a revert flips, invariant 5).
    """
    spec = release.spec
    built_on = cand.get(P_BASE)
    delta = spec.source.delta
    expected = release.build_hash(built_on) if delta is not None else release.build_hash()
    if cand.get(P_BUILD_HASH) != expected:
        return (
            f"version {spec.version} was already built as {cand.name} from a different "
            "model, collection or source; give the new content a new spec.version"
        )
    if delta is None or cand.was_live or cand.name == obs.alias_target:
        return ""
    try:
        now = base_identity(delta_base(release, obs))
    except SourceError:
        return ""  # the base is gone: the candidate stands on what it was built from
    if now == built_on:
        return ""
    return (
        f"version {spec.version} was built as {cand.name} on {built_on.split('#')[0]}, but "
        f"source.delta.base ({delta.base}) is now {now.split('#')[0]}; give a delta on "
        "another base a new spec.version"
    )


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
        references: ReferenceStore | None = None,
        embedders: EmbedderFactory | None = None,
        cache: EmbeddingCachePort | None = None,
        on_status: Callable[[ReleaseStatus], None] | None = None,
    ) -> None:
        # Told the status of every step decided, before it runs: the Kubernetes driver
        # writes it, so a long pass shows Building -> Indexing -> Validating as it goes.
        self.on_status = on_status
        self.embedders = embedders  # source.documents: one embedder per spec.embedder
        self.cache: EmbeddingCachePort = cache or NullCache()
        self.reports = reports
        self.references = references
        self.telemetry = telemetry or NullTelemetry()
        self.milvus = milvus
        self.data = data
        self.reporter = reporter
        self.settings = settings or Settings()
        self.clock = clock

    # -- observe -------------------------------------------------------------

    def observe(
        self, release: EmbeddingRelease, steps_done: frozenset[str] = frozenset()
    ) -> Observation:
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
        return Observation(
            alias_target=target,
            collections=states,
            steps_done=steps_done,
            can_monitor=self.references is not None,
        )

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
        done: set[str] = set()
        self._track = release.track
        try:
            previous_step: tuple[str, str] | None = None
            for _ in range(MAX_STEPS_PER_PASS):
                wanted = _without(intents() if callable(intents) else intents, applied)
                obs = self.observe(release, frozenset(done))
                step = decide(release, obs, wanted)
                status = self._status(release, obs, step, status)
                if self.on_status is not None and not step.terminal:
                    self.on_status(status)
                if step.terminal:
                    return ReconcileResult(
                        status,
                        done=True,
                        applied=frozenset(applied),
                        requeue_after=step.extra.get("requeue_after"),
                    )
                if (step.name, step.target) == previous_step:  # no hot loops
                    raise NotSettled(f"{step.name} on {step.target} did not take effect")
                previous_step = (step.name, step.target)
                self._execute(release, step, obs)
                done.add(step.name)
                applied |= self._applied_by(step, wanted)
            raise NotSettled("reconcile did not settle; will retry", delay=5.0)
        except TemporaryError as exc:
            status = with_phase(status, status.phase, exc.reason, str(exc), self.clock())
            return ReconcileResult(status, False, exc, exc.delay, frozenset(applied))
        except PermanentError as exc:
            status = with_phase(status, Phase.FAILED, exc.reason, str(exc), self.clock())
            self.reporter.event(exc.reason, str(exc), warning=True)
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
        started, ok = time.monotonic(), False
        try:
            action(release, step, obs)
            ok = True
        finally:
            seconds = time.monotonic() - started
            self.telemetry.step_finished(release.track, step.name, seconds, ok)

    @contextmanager
    def _progress(self, stage: str, total: int | None) -> Iterator[Advance]:
        """The reporter's progress bar, mirrored into telemetry (build progress gauges)."""
        count = 0
        with self.reporter.progress(stage, total) as advance:

            def both(n: int) -> None:
                nonlocal count
                count += n
                advance(n)
                self.telemetry.progress(self._track, stage, count, total)

            yield both

    # -- steps ---------------------------------------------------------------

    def _step_build(self, release: EmbeddingRelease, step: Step, obs: Observation) -> None:
        """Check the whole source, then create the collection and insert every row."""
        spec = release.spec
        if spec.source.files is None:
            return self._build_incremental(release, step, obs)
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
            raise BuildIncomplete(
                f"{step.target} holds {counted} rows after flush, {loaded} were inserted; "
                "the incomplete candidate will be rebuilt"
            )
        counts = {"source": "files", "rows": loaded}
        self.milvus.set_properties(
            step.target, {P_SOURCE_ROWS: str(loaded), P_BUILD: json.dumps(counts)}
        )
        self.reporter.event(Reason.BUILDING, f"loaded {loaded} rows into {step.target}")

    def _create(
        self,
        release: EmbeddingRelease,
        name: str,
        extra: dict[str, str] | None = None,
        extra_fields: Sequence[FieldSpec] = (),
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
        dims, fields = spec.collection.dimension, [*spec.collection.fields, *extra_fields]
        self.milvus.create_collection(name, dims, fields, identity | (extra or {}))

    def _build_incremental(self, release: EmbeddingRelease, step: Step, obs: Observation) -> None:
        """A delta over a base collection, or documents embedded here (controller.incremental)."""
        ports = BuildPorts(
            release,
            self.milvus,
            self.data,
            self._progress,
            self.settings.batch_size,
            lambda: self._embedder(release),
            self.cache,
        )
        build: DeltaBuild | DocumentsBuild
        if release.spec.source.delta is not None:
            base = delta_base(release, obs)
            build = DeltaBuild(ports, base.name)
            identity = base_identity(base)
            props = {P_BASE: identity, P_BUILD_HASH: release.build_hash(identity)}
            fields: list[FieldSpec] = []
        else:
            build = DocumentsBuild(ports, documents_base(ports, obs.alias_target))
            props, fields = {P_BASE: build.base or UNSET}, [HASH_FIELD]
        build.plan()  # reads and checks every input; Milvus untouched until here
        self._create(release, step.target, props, fields)
        self.reporter.event(Reason.BUILDING, f"created {step.target}; {build.describe()}")
        try:
            result = build.load(step.target)
        except SourceError:
            self.milvus.drop(step.target)  # ours, never aliased: leave Milvus as it was
            raise
        counted = self.milvus.row_count(step.target)  # flushes first
        if counted != result.rows:
            raise BuildIncomplete(
                f"{step.target} holds {counted} rows after flush, {result.rows} were inserted; "
                "the incomplete candidate will be rebuilt"
            )
        self.milvus.set_properties(
            step.target, {P_SOURCE_ROWS: str(result.rows), P_BUILD: json.dumps(result.counts)}
        )
        if isinstance(build, DocumentsBuild):
            self.telemetry.cache(release.track, result.cache_hits, result.cache_misses)
        self.reporter.event(Reason.BUILDING, result.summary)

    def _warm_up(self, release: EmbeddingRelease, target: str) -> None:
        """Right before the flip: validation may have run long ago (manual promotion)."""
        started = time.monotonic()
        n = warm_up(self.milvus, self.data, release, target)
        if n:
            self.reporter.event(
                Reason.PROMOTING,
                f"warmed {target} with {n} searches in {(time.monotonic() - started) * 1000:.0f} ms",
            )

    def _embedder(self, release: EmbeddingRelease) -> EmbedderPort:
        if self.embedders is None or release.spec.embedder is None:
            raise SourceError(
                "source.documents needs an embedder, and this controller was started without "
                "one; use the local driver (embrel apply) with `pip install 'embrel[embed]'`"
            )
        return self.embedders(release.spec.embedder)

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
                    raise WaitTimedOut(
                        f"index on {step.target} not finished after {self.settings.index_timeout:.0f}s "
                        f"({indexed}/{total} rows indexed)"
                    )
                time.sleep(self.settings.poll_interval)

    def _step_load(self, release: EmbeddingRelease, step: Step, obs: Observation) -> None:
        self.milvus.load(step.target)
        deadline = time.monotonic() + self.settings.load_timeout
        while not self.milvus.is_loaded(step.target):
            if time.monotonic() > deadline:
                raise WaitTimedOut(
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
        fp: Fingerprint | None = None
        props = {
            P_CHECKS: json.dumps([c.to_dict() for c in run.checks]),
            P_VALIDATION: _VALIDATION_MARK[outcome],
            P_VALIDATED_HASH: release.validation_hash(),
        }
        if obs.alias_target and outcome != Outcome.FAILED:
            # Probes that will prove the flip (issue 7), recorded with the evidence.
            probes = self._fingerprint(release, cand.name, obs.alias_target)
            fp = probes.fp if probes else None
            props[P_FINGERPRINT] = fp.to_json() if fp else UNSET
        if obs.alias_target and outcome != Outcome.FAILED and fp is not None:
            self.reporter.event(
                Reason.VALIDATING,
                f"cutover fingerprint vs {obs.alias_target}: {len(fp.ids)} differing ids, "
                f"{len(fp.query_ids)} differing queries"
                if fp.distinguishable
                else f"{cand.name} and {obs.alias_target} hold identical probes: the flip "
                "will be confirmed by describe_alias only",
            )
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
        rollback, auto = bool(step.extra.get("rollback")), str(step.extra.get("auto", ""))
        if not rollback:  # a rollback must be instant; its target served until recently
            self._warm_up(release, target.name)
        hint = self._stored_fingerprint(target, previous, obs)
        proof = self.flip_alias(release, target.name, previous, hint)
        flip = {"from": previous, "rollback": rollback, "auto": auto}
        self._settle_flip(release, target.name, obs, flip | proof)

    def _step_verify_flip(self, release: EmbeddingRelease, step: Step, obs: Observation) -> None:
        """Probe an unproven flip again; re-issuing alter_alias heals a lost flip."""
        target = obs.collections[step.target]
        flip = json.loads(target.get(P_CUTOVER) or "{}")
        previous = flip.get("from")
        hint = self._stored_fingerprint(target, previous, obs)
        proof = self.flip_alias(release, target.name, previous, hint)
        self._settle_flip(release, target.name, obs, flip | proof)

    def _settle_flip(
        self, release: EmbeddingRelease, target: str, obs: Observation, flip: dict[str, Any]
    ) -> None:
        """Record a flip: live-period marks once proven, else the unproven mark (Degraded)."""
        now, previous = self.clock(), flip["from"]
        rollback, auto, verified = flip["rollback"], flip["auto"], flip["verified"]
        cutover = json.dumps(flip | {"at": now})
        kind = "auto_rollback" if auto else "rollback" if rollback else "promote"
        self.telemetry.cutover(release.track, kind, flip["seconds"], flip["attempts"], verified)
        if not verified:  # nothing is marked retired: nothing may be released or dropped
            self.milvus.set_properties(target, {P_CUTOVER: cutover, P_FLIP_UNVERIFIED: now})
            self.reporter.event(Reason.FLIP_UNVERIFIED, proof_text(flip), warning=True)
            return
        self.milvus.set_properties(
            target,
            {
                P_PROMOTED_AT: now,
                P_ROLLED_BACK_AT: UNSET,
                P_ROLLBACK_REASON: UNSET,
                P_CUTOVER: cutover,
                P_FLIP_UNVERIFIED: UNSET,
                # A new live period measures drift against a new reference.
                P_REFERENCE_AT: UNSET,
                P_DRIFT: UNSET,
                P_DRIFT_AT: UNSET,
            },
        )
        for c in obs.owned(release.track):  # the alias is proven elsewhere now
            if c.name != target and c.get(P_FLIP_UNVERIFIED) != UNSET:
                self.milvus.set_properties(c.name, {P_FLIP_UNVERIFIED: UNSET})
        prev = obs.collections.get(previous or "")
        if prev is not None and prev.get(P_OWNER) == OWNER_VALUE:
            marks = {P_RETIRED_AT: now}
            if rollback:
                marks |= {P_ROLLED_BACK_AT: now, P_ROLLBACK_REASON: auto}
            self.milvus.set_properties(prev.name, marks)
        verb = "rolled back" if rollback else "switched"
        reason = (
            Reason.AUTO_ROLLED_BACK if auto else Reason.ROLLED_BACK if rollback else Reason.PROMOTED
        )
        self.reporter.event(
            reason,
            f"{verb} alias {release.spec.alias}: {previous or '(none)'} -> {target}; "
            f"{proof_text(flip)}",
            warning=bool(auto),
        )

    def flip_alias(
        self,
        release: EmbeddingRelease,
        target: str,
        previous: str | None,
        hint: Fingerprint | None = None,
    ) -> dict[str, Any]:
        """Point the alias at ``target`` and prove that readers see it (issue 7).

        Returns the proof: verified, method, probes, attempts, seconds.
        """
        probes = None
        if previous and previous != target:
            probes = self._fingerprint(release, target, previous, hint)
        s = self.settings

        def reissuing(attempt: int, seen: Seen) -> None:
            self.reporter.event(
                Reason.FLIP_UNVERIFIED,
                f"flip {attempt}/{s.flip_attempts} of alias {release.spec.alias} to {target} "
                f"not seen through the alias ({seen}); re-issuing alter_alias",
                warning=True,
            )

        return verified_flip(
            self.milvus, release, target, probes, s.verify_window, s.flip_attempts, reissuing
        )

    @staticmethod
    def _stored_fingerprint(
        target: CollectionState, previous: str | None, obs: Observation
    ) -> Fingerprint | None:
        """The fingerprint recorded at validation for this pair, either way round."""
        if previous is None:
            return None
        stored = [c.get(P_FINGERPRINT) for c in (target, obs.collections.get(previous)) if c]
        hints = (Fingerprint.from_json(raw).between(target.name, previous) for raw in stored if raw)
        return next(filter(None, hints), None)

    def _fingerprint(
        self, release: EmbeddingRelease, new: str, old: str, hint: Fingerprint | None = None
    ) -> Probes | None:
        """Probes that tell ``new`` from ``old``; None when ``old`` cannot be read."""
        try:
            return read_probes(self.milvus, release, new, old, hint)
        except MilvusRejected as exc:  # e.g. a live collection we do not own, not loaded
            self.reporter.event(
                Reason.VALIDATING, f"no cutover probes: {exc}; describe_alias confirms the flip"
            )
            return None

    # -- drift monitoring (DESIGN.md §8) ---------------------------------------

    def _step_capture_reference(
        self, release: EmbeddingRelease, step: Step, obs: Observation
    ) -> None:
        """Remember how the new live collection looks, to measure drift against."""
        assert self.references is not None
        mon, live = release.spec.monitoring, step.target
        ids = self.milvus.sample_ids(live, mon.sample, release.spec.validation.seed)
        vectors = self.milvus.vectors_by_id(live, ids.tolist())
        ids = np.asarray([i for i in ids.tolist() if i in vectors], dtype=np.int64)
        dim = release.spec.collection.dimension
        sample = np.stack([vectors[int(i)] for i in ids]) if len(ids) else np.empty((0, dim))
        canaries = self._canary_queries(release, sample)
        answers = self._canary_answers(release, live, canaries)
        ref = monitoring.reference(
            ids, sample, canaries, answers, self.milvus.row_count(live, flush=False)
        )
        self.references.save_reference(release.track, live, ref.arrays())
        self.milvus.set_properties(live, {P_REFERENCE_AT: self.clock()})
        self.reporter.event(
            Reason.MONITORING,
            f"drift reference for {live}: {len(ids)} sampled vectors, {len(canaries)} canary "
            f"queries, {ref.row_count} rows",
        )

    def _canary_queries(self, release: EmbeddingRelease, sample: np.ndarray) -> np.ndarray:
        """Real queries when the spec names them, else vectors of the reference sample."""
        mon, queries = release.spec.monitoring, release.spec.validation.queries
        if queries is not None:
            real = self.data.read_query_vectors(
                queries.uri, queries.vector_field, mon.canary_queries, release.spec.validation.seed
            )
            if real.shape[1] == sample.shape[1]:
                return real
        return sample[: mon.canary_queries]

    def _step_monitor(self, release: EmbeddingRelease, step: Step, obs: Observation) -> None:
        live, mon = step.target, release.spec.monitoring
        raw = self.references.load_reference(release.track, live) if self.references else None
        if raw is None:  # the state folder was lost: start again from what is live now
            self.reporter.event(
                Reason.MONITORING, f"no drift reference for {live}; capturing a new one", True
            )
            self._step_capture_reference(release, step, obs)
            return
        ref = monitoring.Reference.from_arrays(raw)
        values = monitoring.measure(
            ref,
            current=self.milvus.vectors_by_id(live, ref.ids.tolist()),
            fresh_sample=self._fresh_sample(release, live),
            canary_answers=self._canary_answers(release, live, ref.canary_queries),
            row_count=self.milvus.row_count(live, flush=False),
            queries=self._production_queries(release),
        )
        breaches = monitoring.breaches(values, mon.thresholds)
        drift = {
            "values": {k: round(v, 6) for k, v in values.items()},
            "thresholds": monitoring.thresholds(mon.thresholds),
            "breaches": breaches,
        }
        self.milvus.set_properties(live, {P_DRIFT: json.dumps(drift), P_DRIFT_AT: self.clock()})
        self.telemetry.drift(release.track, values)
        if breaches:
            self.reporter.event(
                Reason.DRIFT_DETECTED, f"drift on {live}: {'; '.join(breaches)}", warning=True
            )

    def _canary_answers(
        self, release: EmbeddingRelease, live: str, queries: np.ndarray
    ) -> np.ndarray:
        k = release.spec.monitoring.canary_k
        if not len(queries):  # an empty live collection has no sample to ask with
            return np.empty((0, k), dtype=np.int64)
        return self.milvus.search_ids(live, queries, k, search_params(release, k))

    def _fresh_sample(self, release: EmbeddingRelease, live: str) -> np.ndarray:
        """A new sample each time (seeded by the clock), so rows added since the reference
        are seen too (among the first 1M ids in key order: ``sample_ids``' scan bound)."""
        ids = self.milvus.sample_ids(live, release.spec.monitoring.sample, int(time.time()))
        vectors = self.milvus.vectors_by_id(live, ids.tolist())
        dim = release.spec.collection.dimension
        return np.stack(list(vectors.values())) if vectors else np.empty((0, dim), np.float32)

    def _production_queries(self, release: EmbeddingRelease) -> np.ndarray | None:
        q = release.spec.monitoring.queries
        if q is None:
            return None
        seed = release.spec.validation.seed
        return self.data.read_query_vectors(q.uri, q.vector_field, q.sample, seed)

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
            cutover=_json_prop(_unproven(release, obs) or live, P_CUTOVER),
            drift=_drift(live),
            build=_json_prop(cand, P_BUILD),
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


def _json_prop(c: CollectionState | None, key: str) -> dict[str, Any] | None:
    raw = c.get(key) if c else UNSET
    return dict(json.loads(raw)) if raw else None


def _drift(live: CollectionState | None) -> dict[str, Any] | None:
    drift = _json_prop(live, P_DRIFT)
    if live is None or live.get(P_REFERENCE_AT) == UNSET:
        return drift
    return (drift or {}) | {
        "referenceAt": live.get(P_REFERENCE_AT),
        "measuredAt": live.get(P_DRIFT_AT) or None,
    }


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
