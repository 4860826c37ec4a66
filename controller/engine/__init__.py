"""The reconcile loop: desired spec + observed Milvus state -> the next step.

Level-triggered and idempotent. Each pass *observes* Milvus once (collections of
this track, their properties, load and index state, where the alias points),
*decides* the next step on that snapshot with a pure function, *executes* it
through the step registry, and computes the status. Everything the engine must
remember lives in Milvus collection properties, so a controller killed at any
instant resumes from Milvus alone.

    state.py        the observed state (CollectionState, Observation), property keys
    step.py         Intents, StepName, Step: what decide hands to the steps
    decide/         the pure decision: an ordered list of small named rules
    steps/          one function per step (build, validate, flip, retire, monitor)
    status_view.py  the status, from the snapshot and the decided step
    Engine (here)   the runner: observe -> decide -> execute -> status
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from controller.cutover import Fingerprint
from controller.engine.decide import (
    adopted_names,
    base_identity,
    build_conflict,
    decide,
    delta_base,
    retention_plan,
    rollback_targets,
)
from controller.engine.state import (
    ACCEPTED,
    FAILED,
    INCONCLUSIVE,
    OWNER_VALUE,
    P_ABORTED_AT,
    P_ACCEPTED_AT,
    P_ALIAS,
    P_BASE,
    P_BUILD,
    P_BUILD_HASH,
    P_CHECKS,
    P_CREATED_AT,
    P_CUTOVER,
    P_DRIFT,
    P_DRIFT_AT,
    P_FINGERPRINT,
    P_FLIP_UNVERIFIED,
    P_MODEL,
    P_OWNER,
    P_PROMOTED_AT,
    P_REFERENCE_AT,
    P_REPORT,
    P_RETIRED_AT,
    P_ROLLBACK_REASON,
    P_ROLLED_BACK_AT,
    P_SOURCE_ROWS,
    P_SPEC_HASH,
    P_TRACK,
    P_VALIDATED_HASH,
    P_VALIDATION,
    P_VERSION,
    PASSED,
    PROMOTABLE,
    REVERIFY_SECONDS,
    UNSET,
    CollectionState,
    Observation,
    utc_now,
)
from controller.engine.status_view import observed_live, status_of
from controller.engine.step import Intents, Step, StepName
from controller.engine.steps import REGISTRY, Settings, StepContext
from controller.engine.steps.flip import assert_promotable
from controller.engine.steps.flip import flip_alias as _flip_alias
from controller.errors import (
    EmbrelError,
    NotSettled,
    PermanentError,
    SourceError,
    SourceUnavailable,
    TemporaryError,
)
from controller.hooks import notify_phase, phase_event, render
from controller.ports import (
    DataPort,
    EmbedderFactory,
    EmbeddingCachePort,
    Fence,
    ImportStagingPort,
    MetricQueryPort,
    MilvusPort,
    NotifierPort,
    NullCache,
    NullTelemetry,
    ReferenceStore,
    Reporter,
    ReportSink,
    Telemetry,
    Unfenced,
    WebhookPort,
)
from controller.spec import EmbeddingRelease
from controller.status import Phase, ReleaseStatus, temporarily_failed, with_phase

MAX_STEPS_PER_PASS = 50
# Steps that run once the alias serves a proven collection: their failure is a warning.
AFTER_THE_FLIP = frozenset(
    {
        StepName.CAPTURE_REFERENCE,
        StepName.MONITOR,
        StepName.RETAIN,
        StepName.RELEASE,
        StepName.CLEAR_ROLLBACK,
        StepName.POST_PROMOTION,
    }
)
NO_REQUESTS = Intents()
# Seconds between probes of a Degraded (unproven) flip; read at every observe, so a
# test can shorten it on this module.
_REVERIFY = REVERIFY_SECONDS


@dataclass
class ReconcileResult:
    status: ReleaseStatus
    done: bool  # nothing more to do for this spec until something changes
    error: EmbrelError | None = None
    requeue_after: float | None = None
    applied: frozenset[str] = frozenset()  # intents the engine carried out
    refused: str = ""  # a request that could not be carried out (the status says why)
    kept: ReleaseStatus | None = None  # with a refusal: the status as it was, to keep


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
        webhooks: WebhookPort | None = None,
        notifier: NotifierPort | None = None,
        metric_query: MetricQueryPort | None = None,
        fence: Fence | None = None,
        staging: ImportStagingPort | None = None,
    ) -> None:
        # Told the status of every step decided, before it runs: the Kubernetes driver
        # writes it, so a long pass shows Building -> Indexing -> Validating as it goes.
        self.on_status = on_status
        self.context = StepContext(
            milvus=milvus,
            data=data,
            reporter=reporter,
            clock=clock,
            settings=settings or Settings(),
            telemetry=telemetry or NullTelemetry(),
            reports=reports,
            references=references,
            embedders=embedders,
            cache=cache or NullCache(),
            webhooks=webhooks,
            notifier=notifier,
            metric_query=metric_query,
            fence=fence or Unfenced(),
            staging=staging,
        )

    @property
    def milvus(self) -> MilvusPort:
        return self.context.milvus

    @property
    def reporter(self) -> Reporter:
        return self.context.reporter

    @property
    def settings(self) -> Settings:
        return self.context.settings

    def clock(self) -> str:
        return self.context.clock()

    # -- observe -------------------------------------------------------------

    def observe(
        self,
        release: EmbeddingRelease,
        steps_done: frozenset[str] = frozenset(),
        failed_steps: Mapping[tuple[str, str], str] | None = None,
    ) -> Observation:
        target = self.milvus.alias_target(release.spec.alias)
        prefix = f"{release.spec.alias}__"
        names = self.milvus.list_collections()
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
            states[name] = self._state(name, props)
        # Adopted collections are rollback targets whatever their name (never ours).
        for name in adopted_names(release, states.values()) & set(names) - set(states):
            states[name] = self._state(name, self.milvus.properties(name))
        return Observation(
            alias_target=target,
            collections=states,
            steps_done=steps_done,
            can_monitor=self.context.references is not None,
            reverify_after=_REVERIFY,
            failed_steps=dict(failed_steps or {}),
            alias_is_collection=release.spec.alias in names,
        )

    def _state(self, name: str, props: dict[str, str]) -> CollectionState:
        return CollectionState(
            name=name,
            props=props,
            loaded=self.milvus.is_loaded(name),
            index=self.milvus.index_progress(name),
            aliases=tuple(self.milvus.aliases_of(name)),
        )

    # -- reconcile -----------------------------------------------------------

    def reconcile(
        self,
        release: EmbeddingRelease,
        intents: Intents | Callable[[], Intents] = NO_REQUESTS,
        previous: ReleaseStatus | None = None,
        generation: int = 0,
    ) -> ReconcileResult:
        """Run steps until the release is settled, or an error stops the pass.

        ``intents`` may be a callable, read again before every step, so that an abort
        requested while a long step runs stops the release before its flip.
        """
        previous = previous or ReleaseStatus()
        status = replace(previous, observed_generation=generation, unavailable_since=None)
        status.spec_hash = release.spec_hash()
        run = _Pass(self, self.identified(release), intents, status)
        try:
            return run.until_settled()
        except TemporaryError as exc:
            status = temporarily_failed(
                run.status, exc.reason, str(exc), self.clock(), previous.unavailable_since
            )
            status = self._as_observed(release, status)
            return ReconcileResult(status, False, exc, exc.delay, frozenset(run.applied))
        except PermanentError as exc:
            status = with_phase(run.status, Phase.FAILED, exc.reason, str(exc), self.clock())
            status = self._as_observed(release, status)
            self.reporter.event(exc.reason, str(exc), warning=True)
            run.announce(status)
            return ReconcileResult(status, True, exc, None, frozenset(run.applied))

    def identified(self, release: EmbeddingRelease) -> EmbeddingRelease:
        """The release with the identity of its source files, for ``build_hash``.

        Unknown (None) when the files cannot be read, e.g. removed after a build, or their
        store is unreachable for now: the collections built from them stand on what they
        were built from (a build reads the source again, and fails or retries then).
        """
        try:
            identity = self.context.data.source_identity(release.spec.source)
        except (SourceError, SourceUnavailable, OSError):
            identity = None
        return release.with_source_identity(identity)

    def _as_observed(self, release: EmbeddingRelease, status: ReleaseStatus) -> ReleaseStatus:
        """A pass stopped by an error still names what the alias serves now: a step may
        have moved it after the status was computed."""
        try:
            obs = self.observe(release)
        except EmbrelError:
            return status  # Milvus is unreachable: keep what the pass last saw
        return observed_live(release, obs, status)

    def execute(self, release: EmbeddingRelease, step: Step, obs: Observation) -> None:
        """Run one decided step through the registry, timed into telemetry."""
        self.reporter.event(step.reason, step.message)
        action = REGISTRY[step.name]
        started, ok = time.monotonic(), False
        try:
            action(self.context, release, step, obs)
            ok = True
        finally:
            seconds = time.monotonic() - started
            self.context.telemetry.step_finished(release.track, step.name, seconds, ok)

    def flip_alias(
        self,
        release: EmbeddingRelease,
        target: str,
        previous: str | None,
        hint: Fingerprint | None = None,
    ) -> dict[str, Any]:
        """Point the alias at ``target`` and prove that readers see it.

        Returns the proof (``FlipProof.to_dict()``): verified, method, probes,
        attempts, seconds, issuedAt.
        """
        return _flip_alias(self.context, release, target, previous, hint).to_dict()


class _Pass:
    """One reconcile pass: what it has run and applied so far, and its status."""

    def __init__(
        self,
        engine: Engine,
        release: EmbeddingRelease,
        intents: Intents | Callable[[], Intents],
        status: ReleaseStatus,
    ) -> None:
        self.engine, self.release, self.intents, self.status = engine, release, intents, status
        self.applied: set[str] = set()
        self.done: set[str] = set()
        self.failed: dict[tuple[str, str], str] = {}  # post-flip steps that failed
        self.announced = status.phase  # the phase last notified (or found at the start)

    def until_settled(self) -> ReconcileResult:
        previous_step: tuple[str, str] | None = None
        before = self.status
        for _ in range(MAX_STEPS_PER_PASS):
            wanted = _without(self._intents(), self.applied)
            obs = self.engine.observe(self.release, frozenset(self.done), self.failed)
            step = decide(self.release, obs, wanted)
            self.status = status_of(self.release, obs, step, self.status, self.engine.clock())
            self.announce(self.status)
            if step.terminal and step.refused:
                return self._refused(step, before)
            if step.terminal:
                applied = frozenset(self.applied)
                return ReconcileResult(self.status, True, None, step.requeue_after, applied)
            if self.engine.on_status is not None:
                self.engine.on_status(self.status)
            if (step.name, step.target) == previous_step:  # no hot loops
                raise NotSettled(f"{step.name} on {step.target} did not take effect")
            previous_step = (step.name, step.target)
            self._execute(step, obs)
            self.done.add(step.name)
            self.applied |= _applied_by(step, wanted)
        raise NotSettled("reconcile did not settle; will retry", delay=5.0)

    def _execute(self, step: Step, obs: Observation) -> None:
        """Run a step; one after a proven flip that fails is a warning, never an error:
        the alias already serves, and what failed is retried on the next pass."""
        try:
            self.engine.execute(self.release, step, obs)
        except Exception as exc:  # any failure: the release is live whatever went wrong
            if step.name not in AFTER_THE_FLIP:
                raise
            text = f"{step.name} {step.target} failed: {exc}"
            self.failed[(step.name, step.target)] = text
            self.engine.reporter.event(step.reason, f"{text}; {step.message} is skipped", True)

    def _refused(self, step: Step, before: ReleaseStatus) -> ReconcileResult:
        """A request that cannot be carried out: reported, and nothing is changed; the
        status shown says why, the status kept (``ReconcileResult.kept``) is as before."""
        self.engine.reporter.event(step.reason, step.message, warning=True)
        shown = with_phase(before, before.phase, step.reason, step.message, self.engine.clock())
        applied = frozenset(self.applied)
        return ReconcileResult(shown, True, None, None, applied, refused=step.refused, kept=before)

    def _intents(self) -> Intents:
        return self.intents() if callable(self.intents) else self.intents

    def announce(self, status: ReleaseStatus) -> None:
        """Post a phase change to ``spec.notifications`` (queued: never waits on them)."""
        before, self.announced = self.announced, status.phase
        notifier = self.engine.context.notifier
        if notifier is None:
            return
        for notification in self.release.spec.notifications:
            if notify_phase(before, status.phase, notification.phases):
                event = phase_event(
                    self.release,
                    status.phase,
                    before,
                    status.message,
                    status.live,
                    self.engine.clock(),
                )
                notifier.notify(self.release.track, notification, render(notification, event))


def _without(intents: Intents, applied: set[str]) -> Intents:
    """Each request acts once: drop those already carried out in this pass."""
    return replace(
        intents,
        promote=intents.promote and "promote" not in applied,
        abort=intents.abort and "abort" not in applied,
        rollback=intents.rollback and "rollback" not in applied,
    )


def _applied_by(step: Step, intents: Intents) -> set[str]:
    """The requests a step carried out (each acts once)."""
    if step.name == StepName.FLIP and step.rollback:
        return {"rollback"}
    if step.name == StepName.FLIP and intents.promote:
        return {"promote"}
    if step.name == StepName.ABORT:
        return {"abort"}
    return set()


__all__ = [
    "ACCEPTED",
    "FAILED",
    "INCONCLUSIVE",
    "MAX_STEPS_PER_PASS",
    "OWNER_VALUE",
    "PASSED",
    "PROMOTABLE",
    "P_ABORTED_AT",
    "P_ACCEPTED_AT",
    "P_ALIAS",
    "P_BASE",
    "P_BUILD",
    "P_BUILD_HASH",
    "P_CHECKS",
    "P_CREATED_AT",
    "P_CUTOVER",
    "P_DRIFT",
    "P_DRIFT_AT",
    "P_FINGERPRINT",
    "P_FLIP_UNVERIFIED",
    "P_MODEL",
    "P_OWNER",
    "P_PROMOTED_AT",
    "P_REFERENCE_AT",
    "P_REPORT",
    "P_RETIRED_AT",
    "P_ROLLBACK_REASON",
    "P_ROLLED_BACK_AT",
    "P_SOURCE_ROWS",
    "P_SPEC_HASH",
    "P_TRACK",
    "P_VALIDATED_HASH",
    "P_VALIDATION",
    "P_VERSION",
    "UNSET",
    "CollectionState",
    "Engine",
    "Intents",
    "Observation",
    "ReconcileResult",
    "Settings",
    "Step",
    "StepContext",
    "StepName",
    "assert_promotable",
    "base_identity",
    "build_conflict",
    "decide",
    "delta_base",
    "retention_plan",
    "rollback_targets",
    "utc_now",
]
