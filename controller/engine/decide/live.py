"""Rules for a release whose version serves: retention, drift monitoring, the guard,
and a flip that probes could not confirm."""

from __future__ import annotations

import json
from dataclasses import replace

from controller.engine.decide.targets import drain_left, retention_plan, rollback_targets
from controller.engine.state import (
    P_CUTOVER,
    P_DRIFT,
    P_DRIFT_AT,
    P_FLIP_UNVERIFIED,
    P_PROMOTED_AT,
    P_REFERENCE_AT,
    P_ROLLED_BACK_AT,
    UNSET,
    CollectionState,
    Observation,
    epoch,
)
from controller.engine.step import Step, StepName, done
from controller.hooks import failure_text
from controller.spec import EmbeddingRelease, duration_seconds
from controller.status import Phase, Reason
from controller.validation.results import Outcome


def settle_live(release: EmbeddingRelease, obs: Observation, live: CollectionState) -> Step:
    """The postPromotion webhooks first (while the previous version is surely kept), then
    invariant 3 and 4: retention after the drain, then monitoring; else settle Live."""
    if hooks := post_promotion(release, obs, live):
        return hooks
    tried = obs.failed_steps  # failed in this pass: warned about, tried again next pass
    actions = [
        (n, v)
        for n, v in retention_plan(release, obs, live.name)
        if (StepName.RETAIN, n) not in tried
    ]
    draining = [(n, v) for n, v in actions if v != "load" and drain_left(release, obs, n) > 0]
    if ready := [a for a in actions if a not in draining]:
        name, verb = ready[0]
        return Step(
            StepName.RETAIN,
            name,
            Phase.LIVE,
            Reason.RETENTION,
            f"retention: {verb} {name}",
            verb=verb,
        )
    stale = [
        c.name
        for c in obs.owned(release.track)
        if c.get(P_ROLLED_BACK_AT) != UNSET and (StepName.CLEAR_ROLLBACK, c.name) not in tried
    ]
    if stale:  # the spec came back to the live version: forget old rollback marks
        return Step(
            StepName.CLEAR_ROLLBACK, stale[0], Phase.LIVE, Reason.LIVE, "clearing rollback mark"
        )
    monitor = monitoring(release, obs, live)
    if monitor.name != StepName.DONE:
        return monitor
    waits = [monitor.requeue_after]
    message = monitor.message or f"{release.spec.version} is live as {live.name}"
    if draining:
        left = max(drain_left(release, obs, n) for n, _ in draining)
        waits.append(left)
        message += f"; {', '.join(n for n, _ in draining)} draining for {left:.0f}s more"
    return replace(monitor, message=message, requeue_after=_soonest(waits))


def _soonest(waits: list[float | None]) -> float | None:
    known = [w for w in waits if w is not None]
    return min(known) if known else None


def unverified(release: EmbeddingRelease, obs: Observation, target: CollectionState) -> Step:
    """A flip that could not be proven: nothing is released or dropped; probe again later."""
    since = epoch(target.get(P_FLIP_UNVERIFIED)) or 0.0
    wait = since + obs.reverify_after - obs.now
    if wait <= 0 and StepName.VERIFY_FLIP not in obs.steps_done:
        return Step(
            StepName.VERIFY_FLIP,
            target.name,
            Phase.DEGRADED,
            Reason.FLIP_UNVERIFIED,
            "probing the alias",
        )
    return done(
        Phase.DEGRADED,
        Reason.FLIP_UNVERIFIED,
        f"alias {release.spec.alias} was switched to {target.name}, but probes through the "
        "alias do not see it; the previous collection stays loaded and nothing is "
        f"dropped. Probing again in {max(wait, 0):.0f}s; `embrel rollback` to go back",
        requeue_after=max(wait, 1.0),
    )


def monitoring(release: EmbeddingRelease, obs: Observation, live: CollectionState) -> Step:
    """Capture the drift reference, measure when due, and guard a fresh cutover."""
    breaches: list[str] = json.loads(live.get(P_DRIFT) or "{}").get("breaches", [])
    version = f"{release.spec.version} is live as {live.name}"
    if breaches:
        version += f"; drift beyond thresholds: {'; '.join(breaches)}"
    if not (release.spec.monitoring.enabled and obs.can_monitor):
        return done(Phase.LIVE, Reason.LIVE, version)
    if live.get(P_REFERENCE_AT) == UNSET:
        if (StepName.CAPTURE_REFERENCE, live.name) in obs.failed_steps:
            return done(Phase.LIVE, Reason.MONITORING, f"{version}; drift is not monitored")
        return Step(
            StepName.CAPTURE_REFERENCE,
            live.name,
            Phase.LIVE,
            Reason.MONITORING,
            "capturing drift reference",
        )
    guarding = _guarding(release, obs, live)
    if breaches and guarding and (rollback := _guard_rollback(release, obs, breaches)):
        return rollback
    return _measure_when_due(release, obs, live, guarding, breaches, version)


def _guarding(release: EmbeddingRelease, obs: Observation, live: CollectionState) -> bool:
    """Still inside the post-promotion watch window of the current live period."""
    promoted = epoch(live.get(P_PROMOTED_AT)) or 0.0
    return obs.now - promoted < release.spec.promotion.post_promotion.watch_seconds


def post_promotion(
    release: EmbeddingRelease, obs: Observation, live: CollectionState
) -> Step | None:
    """After a proven promotion: the postPromotion analysis and webhooks, once per live
    period. A failed check rolls back with the guard's verified flip (with nothing to
    roll back to, the release stays Live and says so); an inconclusive one does not.
    None when there is nothing to do or say."""
    measured = release.spec.analysis.of("postPromotion") if release.spec.analysis else []
    if not (release.spec.promotion.hooks("postPromotion") or measured) or not _promoted(live):
        return None
    checks = live.post_promotion_checks()
    if checks is None:
        if (StepName.POST_PROMOTION, live.name) in obs.failed_steps:
            return None  # warned about; tried again on the next pass
        return Step(
            StepName.POST_PROMOTION,
            live.name,
            Phase.LIVE,
            Reason.PROMOTED,
            "post-promotion analysis and webhooks",
        )
    failed = failure_text([c for c in checks if c.outcome == Outcome.FAILED])
    if not failed:  # inconclusive ones are shown in status.validation.checks only
        return None
    why = f"post-promotion check failed: {failed}"
    return rollback_flip(release, obs, why) or done(
        Phase.LIVE,
        Reason.WEBHOOK_FAILED,
        f"{release.spec.version} is live as {live.name}; {why}; no retained, loaded "
        "version to roll back to",
    )


def _promoted(live: CollectionState) -> bool:
    """The live period began with a proven flip that was not a rollback."""
    raw = live.get(P_CUTOVER)
    cutover = json.loads(raw) if raw else {}
    return live.was_live and isinstance(cutover, dict) and not cutover.get("rollback", False)


def _guard_rollback(
    release: EmbeddingRelease, obs: Observation, breaches: list[str]
) -> Step | None:
    """Invariant 4: the guard rolls back with one flip, to a version still loaded."""
    if not release.spec.promotion.post_promotion.rollback_on_failure:
        return None
    return rollback_flip(release, obs, "; ".join(breaches))


def rollback_flip(release: EmbeddingRelease, obs: Observation, why: str) -> Step | None:
    """One verified flip back to the most recent retained, loaded version, recorded as
    the guard's (``AutoRolledBack`` with ``why``); None when there is none."""
    targets = [c for c in rollback_targets(release, obs) if c.loaded]
    if not targets:
        return None
    return Step(
        StepName.FLIP,
        targets[0].name,
        Phase.PROMOTING,
        Reason.AUTO_ROLLED_BACK,
        f"post-promotion guard: {why}; rolling back to {targets[0].version}",
        rollback=True,
        auto=why,
    )


def _measure_when_due(
    release: EmbeddingRelease,
    obs: Observation,
    live: CollectionState,
    guarding: bool,
    breaches: list[str],
    message: str,
) -> Step:
    """Measure drift once the interval (the guard's, while guarding) has passed."""
    mon, guard = release.spec.monitoring, release.spec.promotion.post_promotion
    interval = duration_seconds(guard.interval if guarding else mon.interval)
    last = epoch(live.get(P_DRIFT_AT)) or epoch(live.get(P_REFERENCE_AT)) or 0.0
    wait = last + interval - obs.now
    if wait <= 0 and StepName.MONITOR not in obs.steps_done:
        return Step(StepName.MONITOR, live.name, Phase.LIVE, Reason.MONITORING, "measuring drift")
    reason = Reason.DRIFT_DETECTED if breaches else Reason.LIVE
    return done(Phase.LIVE, reason, message, requeue_after=max(wait, 1.0))
