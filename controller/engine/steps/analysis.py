"""Measuring ``spec.analysis`` metrics through the ``MetricQueryPort``.

prePromotion metrics are gates of ``validate`` (after the metric gates passed, before
the prePromotion webhooks, which see their checks); postPromotion metrics run in the
``post_promotion`` step and stop measuring when ``postPromotion.watchSeconds`` ends.
Each metric is measured on its own schedule (``count`` times, ``interval`` apart),
all of them in one loop, and stops early once its outcome is decided. How
measurements are judged is ``controller.analysis``'.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from controller import analysis as rules
from controller.analysis import Limits, Measured, Measurement, QueryFailed
from controller.engine.state import Observation
from controller.engine.steps.context import StepContext
from controller.errors import PermanentError
from controller.spec import (
    AnalysisMetric,
    AnalysisPhase,
    AnalysisSpec,
    EmbeddingRelease,
    duration_seconds,
)
from controller.status import Reason
from controller.validation.results import Check, Outcome, any_failed, not_run


@dataclass
class _Schedule:
    metric: AnalysisMetric
    query: str
    due: float  # monotonic seconds of the next measurement
    taken: list[Measurement] = field(default_factory=list)

    @property
    def limits(self) -> Limits:
        m = self.metric
        return Limits(m.failure_limit, m.inconclusive_limit, m.consecutive_error_limit)

    @property
    def finished(self) -> bool:
        decided = rules.verdict(self.taken, self.limits) is not None
        return decided or len(self.taken) >= self.metric.count


def pre_promotion(
    ctx: StepContext,
    release: EmbeddingRelease,
    obs: Observation,
    candidate: str,
    checks: Sequence[Check],
) -> list[Check]:
    """The prePromotion metrics as gate checks; not measured for a failed candidate."""
    if any_failed(checks):
        metrics = release.spec.analysis.of("prePromotion") if release.spec.analysis else []
        return not_run(
            [rules.CHECK_PREFIX + m.name for m in metrics], "not measured: a gate failed"
        )
    return run_analysis(ctx, release, "prePromotion", obs, candidate)


def run_analysis(
    ctx: StepContext,
    release: EmbeddingRelease,
    phase: AnalysisPhase,
    obs: Observation,
    candidate: str,
    seconds_left: float = math.inf,
) -> list[Check]:
    """Measure every metric of ``phase`` until each is decided, has its ``count``, or
    ``seconds_left`` ran out; one check per metric."""
    spec = release.spec.analysis
    metrics = spec.of(phase) if spec else []
    if not metrics or spec is None:
        return []
    if ctx.metric_query is None:
        raise PermanentError(
            "spec.analysis is set, but this controller was started without a Prometheus client"
        )
    values = variables(release, obs, candidate)
    start = time.monotonic()
    plan = [_Schedule(m, rules.render_query(m.query, values), start) for m in metrics]
    while waiting := [s for s in plan if not s.finished]:
        nxt = min(waiting, key=lambda s: s.due)
        if nxt.due - start > seconds_left:
            break  # the watch window is over
        ctx.sleep(max(0.0, nxt.due - time.monotonic()))
        nxt.taken.append(_measure(ctx, spec, release.metadata.namespace, nxt))
        nxt.due += duration_seconds(nxt.metric.interval)
    checks = [_check(s) for s in plan]
    for c in checks:
        ctx.reporter.event(
            Reason.VALIDATING if c.passed else Reason.VALIDATION_FAILED,
            f"analysis {c.name.split('/', 1)[1]} {c.outcome.lower()}: {c.detail}",
            warning=not c.passed,
        )
    return checks


def variables(release: EmbeddingRelease, obs: Observation, candidate: str) -> dict[str, str]:
    """What ``{{variable}}`` in a query template stands for in this release."""
    live = obs.live
    return {
        "alias": release.spec.alias,
        "version": release.spec.version,
        "track": release.track,
        "namespace": release.metadata.namespace,
        "name": release.metadata.name,
        "candidate": candidate,
        "live": obs.alias_target or "",
        "liveVersion": live.version if live else "",
    }


def _measure(ctx: StepContext, spec: AnalysisSpec, namespace: str, s: _Schedule) -> Measurement:
    assert ctx.metric_query is not None
    try:
        value = ctx.metric_query.query(spec, namespace, s.query)
    except QueryFailed as exc:
        return Measurement(None, Measured.ERROR, str(exc))
    m = s.metric
    return Measurement(value, rules.judge_value(value, m.success_condition, m.failure_condition))


def _check(s: _Schedule) -> Check:
    if not s.taken:
        return Check(
            rules.CHECK_PREFIX + s.metric.name,
            None,
            None,
            Outcome.REPORTED if s.metric.dry_run else Outcome.INCONCLUSIVE,
            "no measurement: the watch window ended first",
            "",
        )
    return rules.summarise(s.metric.name, s.taken, s.limits, s.metric.dry_run)
