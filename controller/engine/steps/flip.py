"""Pointing the alias at a new collection, proven: ``flip`` and ``verify_flip``.

``flip`` re-checks invariant 1 at the last moment (``assert_promotable``), warms
the target (not on a rollback: that must be instant), switches the alias and
proves through it that readers see the target (``controller.cutover``). A proven
flip starts a live period (``settle``); an unproven one leaves the release
Degraded with nothing released or dropped, and ``verify_flip`` probes it again.

Every ``alter_alias`` is fenced (``_fenced``): a compare-and-set on where the alias
points, and the ``Fence`` (leadership) asked right before the call. A refusal changes
nothing and ends the pass; the next pass observes and decides again.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from controller.cutover import (
    Fingerprint,
    FlipProof,
    Probes,
    Seen,
    proof_text,
    read_probes,
    verified_flip,
)
from controller.engine.decide import serving_before
from controller.engine.state import (
    OWNER_VALUE,
    P_ADOPTED,
    P_CUTOVER,
    P_DRIFT,
    P_DRIFT_AT,
    P_FINGERPRINT,
    P_FLIP_UNVERIFIED,
    P_NEXT,
    P_OWNER,
    P_PROMOTED_AT,
    P_REFERENCE_AT,
    P_RETIRED_AT,
    P_ROLLBACK_REASON,
    P_ROLLED_BACK_AT,
    P_SOURCE_ROWS,
    P_VALIDATION,
    PROMOTABLE,
    UNSET,
    CollectionState,
    Observation,
)
from controller.engine.step import Step
from controller.engine.steps.context import StepContext
from controller.errors import AliasMoved, ConflictError, FlipFenced, MilvusRejected
from controller.spec import EmbeddingRelease
from controller.status import Reason
from controller.validation.gates import warm_up


@dataclass(frozen=True)
class Cutover:
    """A flip and its proof: the ``embrel.cutover`` property and ``status.cutover``."""

    previous: str | None  # where the alias pointed before ("from")
    rollback: bool
    auto: str  # the guard's breaches when it rolled back on its own, else ""
    proof: FlipProof
    at: str = ""  # when the flip was recorded

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    def to_dict(self) -> dict[str, Any]:
        head = {"from": self.previous, "rollback": self.rollback, "auto": self.auto}
        return head | self.proof.to_dict() | {"at": self.at}

    @classmethod
    def from_json(cls, text: str) -> Cutover:
        d = json.loads(text or "{}")
        return cls(
            previous=d.get("from"),
            rollback=bool(d.get("rollback", False)),
            auto=str(d.get("auto", "")),
            proof=FlipProof.from_dict(d),
            at=str(d.get("at", "")),
        )

    @property
    def kind(self) -> str:
        """The ``embrel_cutovers_total{kind}`` label."""
        return "auto_rollback" if self.auto else "rollback" if self.rollback else "promote"


def flip(ctx: StepContext, release: EmbeddingRelease, step: Step, obs: Observation) -> None:
    """Point the alias at the target, prove it, and record the new live period."""
    target = obs.collections[step.target]
    if target.owned_by_embrel:
        # Flushed when it was built and counted again at validation; no flush on the hot path.
        assert_promotable(target, ctx.milvus.row_count(target.name, flush=False))
    else:  # a rollback to an adopted collection: it served before embrel, as it is
        assert_serves(target)
    previous = obs.alias_target
    if not step.rollback:  # a rollback must be instant; its target served until recently
        _warm_up(ctx, release, target.name)
    hint = stored_fingerprint(target, previous, obs)
    proof = flip_alias(ctx, release, target.name, previous, hint, observed=obs.alias_target)
    settle(ctx, release, target.name, obs, Cutover(previous, step.rollback, step.auto, proof))


def verify_flip(ctx: StepContext, release: EmbeddingRelease, step: Step, obs: Observation) -> None:
    """Probe an unproven flip again; re-issuing alter_alias heals a lost flip. A flip
    interrupted before its proof left no record: where the alias pointed before is the
    collection whose live period is still open."""
    target = obs.collections[step.target]
    if target.get(P_FLIP_UNVERIFIED) != UNSET:
        recorded = Cutover.from_json(target.get(P_CUTOVER))
        previous, rollback, auto = recorded.previous, recorded.rollback, recorded.auto
    else:
        previous, rollback, auto = serving_before(release, obs, target.name), step.rollback, ""
    hint = stored_fingerprint(target, previous, obs)
    # Re-issued from where the alias was observed (the target), not from ``previous``.
    proof = flip_alias(ctx, release, target.name, previous, hint, observed=obs.alias_target)
    settle(ctx, release, target.name, obs, Cutover(previous, rollback, auto, proof))


def settle(
    ctx: StepContext, release: EmbeddingRelease, target: str, obs: Observation, cutover: Cutover
) -> None:
    """Record a flip: live-period marks once proven, else the unproven mark (Degraded)."""
    now = ctx.clock()
    cutover = replace(cutover, at=now)
    proof = cutover.proof
    ctx.telemetry.cutover(
        release.track, cutover.kind, proof.seconds, proof.attempts, proof.verified
    )
    if not proof.verified:  # nothing is marked retired: nothing may be released or dropped
        if obs.collections[target].owned_by_embrel:  # never written to if not ours
            marks = {P_CUTOVER: cutover.to_json(), P_FLIP_UNVERIFIED: now}
            ctx.milvus.set_properties(target, marks)
        ctx.reporter.event(Reason.FLIP_UNVERIFIED, proof_text(proof), warning=True)
        return
    try:
        _start_live_period(ctx, release, target, obs, cutover)
        _retire_previous(ctx, obs, cutover)
    except Exception as exc:  # the alias serves the target, proven: that stands
        ctx.reporter.event(
            Reason.MILVUS_REJECTED,
            f"alias {release.spec.alias} serves {target}, but recording the cutover failed: "
            f"{exc}; rollback targets and retention may not see it until it is recorded",
            warning=True,
        )
    verb = "rolled back" if cutover.rollback else "switched"
    reason = (
        Reason.AUTO_ROLLED_BACK
        if cutover.auto
        else Reason.ROLLED_BACK
        if cutover.rollback
        else Reason.PROMOTED
    )
    ctx.reporter.event(
        reason,
        f"{verb} alias {release.spec.alias}: {cutover.previous or '(none)'} -> {target}; "
        f"{proof_text(proof)}",
        warning=bool(cutover.auto),
    )


def _start_live_period(
    ctx: StepContext, release: EmbeddingRelease, target: str, obs: Observation, cutover: Cutover
) -> None:
    if not obs.collections[target].owned_by_embrel:
        return  # back on an adopted collection: embrel never writes to it
    prev = obs.collections.get(cutover.previous or "")
    # Taking the alias over from an adopted collection: remembered here, not on it.
    adoption = {P_ADOPTED: prev.name} if prev and not prev.owned_by_embrel else {}
    ctx.milvus.set_properties(
        target,
        adoption
        | {
            P_PROMOTED_AT: cutover.at,
            P_ROLLED_BACK_AT: UNSET,
            P_ROLLBACK_REASON: UNSET,
            P_CUTOVER: cutover.to_json(),
            P_FLIP_UNVERIFIED: UNSET,
            P_NEXT: UNSET,  # announced nothing yet in its new live period
            # A new live period measures drift against a new reference.
            P_REFERENCE_AT: UNSET,
            P_DRIFT: UNSET,
            P_DRIFT_AT: UNSET,
        },
    )
    for c in obs.owned(release.track):  # the alias is proven elsewhere now
        if c.name != target and c.get(P_FLIP_UNVERIFIED) != UNSET:
            ctx.milvus.set_properties(c.name, {P_FLIP_UNVERIFIED: UNSET})


def _retire_previous(ctx: StepContext, obs: Observation, cutover: Cutover) -> None:
    """Mark where the alias pointed as retired (and rolled back), if embrel owns it."""
    prev = obs.collections.get(cutover.previous or "")
    if prev is None or prev.get(P_OWNER) != OWNER_VALUE:
        return
    marks = {P_RETIRED_AT: cutover.at, P_NEXT: UNSET}  # what it announced is live now
    if cutover.rollback:
        marks |= {P_ROLLED_BACK_AT: cutover.at, P_ROLLBACK_REASON: cutover.auto}
    ctx.milvus.set_properties(prev.name, marks)


def flip_alias(
    ctx: StepContext,
    release: EmbeddingRelease,
    target: str,
    previous: str | None,
    hint: Fingerprint | None = None,
    observed: str | None = None,
) -> FlipProof:
    """Point the alias at ``target`` and prove that readers see it.

    ``observed`` is where the alias pointed when the flip was decided (the decision's
    observation; ``previous`` when not given): every ``alter_alias`` is refused unless
    the alias is still there (``AliasMoved``) and the fence lets this controller act
    (``FlipFenced``).
    """
    expected = previous if observed is None else observed
    probes = None
    if previous and previous != target:
        probes = read_fingerprint(ctx, release, target, previous, hint)
    s = ctx.settings

    def reissuing(attempt: int, seen: Seen) -> None:
        ctx.reporter.event(
            Reason.FLIP_UNVERIFIED,
            f"flip {attempt}/{s.flip_attempts} of alias {release.spec.alias} to {target} "
            f"not seen through the alias ({seen}); re-issuing alter_alias",
            warning=True,
        )

    guard = _fenced(ctx, release, target, expected)
    return verified_flip(
        ctx.milvus, release, target, probes, s.verify_window, s.flip_attempts, reissuing, guard
    )


def _fenced(
    ctx: StepContext, release: EmbeddingRelease, target: str, observed: str | None
) -> Callable[[int], None]:
    """The check before each ``alter_alias``: compare where the alias points, then ask
    the fence last, so that nothing but the call itself comes between it and the flip.

    Milvus has no conditional alter_alias, so a writer may still slip in between the
    read and the call; the window is one describe_alias round trip, not a whole pass.
    """
    alias = release.spec.alias

    def guard(attempt: int) -> None:
        # The first call moves the alias from where the decision saw it. A re-issue (a
        # lost flip) finds it on the target (2.3.5: describe_alias moved, reads did not)
        # or still where it was (a call that did nothing); anywhere else, someone moved it.
        expected = {observed} if attempt == 1 else {observed, target}
        current = ctx.milvus.alias_target(alias)
        if current not in expected:
            _refuse(
                ctx,
                release,
                AliasMoved(
                    f"alias {alias} points at {current or '(none)'}, the decision was made "
                    f"for {observed or '(none)'}; not flipping it to {target}, observing again"
                ),
                "alias_moved",
            )
        verdict = ctx.fence.may_act()
        if not verdict:
            _refuse(
                ctx,
                release,
                FlipFenced(
                    f"not flipping alias {alias} to {target}: {verdict.why}; observing again"
                ),
                "fenced",
            )

    return guard


def _refuse(ctx: StepContext, release: EmbeddingRelease, exc: FlipFenced, kind: str) -> None:
    """Say why (an Event, the metric), then end the pass with ``exc``: nothing changed."""
    ctx.telemetry.flip_refused(release.track, kind)
    ctx.reporter.event(exc.reason, str(exc), warning=True)
    raise exc


def stored_fingerprint(
    target: CollectionState, previous: str | None, obs: Observation
) -> Fingerprint | None:
    """The fingerprint recorded at validation for this pair, either way round."""
    if previous is None:
        return None
    stored = [c.get(P_FINGERPRINT) for c in (target, obs.collections.get(previous)) if c]
    hints = (Fingerprint.from_json(raw).between(target.name, previous) for raw in stored if raw)
    return next(filter(None, hints), None)


def read_fingerprint(
    ctx: StepContext, release: EmbeddingRelease, new: str, old: str, hint: Fingerprint | None = None
) -> Probes | None:
    """Probes that tell ``new`` from ``old``; None when ``old`` cannot be read."""
    try:
        return read_probes(ctx.milvus, release, new, old, hint)
    except MilvusRejected as exc:  # e.g. a live collection we do not own, not loaded
        ctx.reporter.event(
            Reason.VALIDATING, f"no cutover probes: {exc}; describe_alias confirms the flip"
        )
        return None


def _warm_up(ctx: StepContext, release: EmbeddingRelease, target: str) -> None:
    """Right before the flip: validation may have run long ago (manual promotion)."""
    started = time.monotonic()
    n = warm_up(ctx.milvus, ctx.data, release, target)
    if n:
        ctx.reporter.event(
            Reason.PROMOTING,
            f"warmed {target} with {n} searches in {(time.monotonic() - started) * 1000:.0f} ms",
        )


def assert_serves(c: CollectionState) -> None:
    """An adopted collection is flipped back to as it is: loaded and indexed."""
    if not c.loaded or not c.indexed:
        state = "not loaded" if not c.loaded else f"index incomplete ({c.index})"
        raise ConflictError(f"refusing to point the alias back at {c.name}: {state}")


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
