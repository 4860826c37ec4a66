"""Webhook gates (``spec.promotion.webhooks``), called through the ``WebhookPort``.

``postPromotion`` hooks run once per live period after a proven promotion (the
``post_promotion`` step); their checks are recorded on the live collection, and a
failure makes ``decide`` roll back with the guard's verified flip.

``preBuild`` hooks run at the start of ``build``, before anything is created: a
failure stops the release with nothing written. ``prePromotion`` hooks are gates of
``validate``: they run once the metric gates passed, and their checks are recorded
with the others, so a failure fails the validation (the alias is untouched) and a
``pause`` makes it Inconclusive (it waits for `embrel promote` or `embrel abort`).
How an answer is judged is ``controller.hooks``' rule (``hook_check``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence

from controller.engine.state import P_POST_PROMOTION, P_PROMOTED_AT, Observation, epoch
from controller.engine.step import Step
from controller.engine.steps import analysis
from controller.engine.steps.context import StepContext
from controller.errors import PermanentError, WebhookFailed
from controller.hooks import CHECK_PREFIX, failure_text, hook_check, release_payload
from controller.spec import EmbeddingRelease, HookPhase
from controller.status import Reason
from controller.validation.results import Check, any_failed, not_run


def call_hooks(
    ctx: StepContext,
    release: EmbeddingRelease,
    phase: HookPhase,
    obs: Observation,
    candidate: str,
    checks: Sequence[Check] = (),
) -> list[Check]:
    """Call every hook of ``phase`` in spec order, each judged as a gate check."""
    hooks = release.spec.promotion.hooks(phase)
    if not hooks:
        return []
    if ctx.webhooks is None:
        raise PermanentError(
            "spec.promotion.webhooks is set, but this controller was started without a "
            "webhook client"
        )
    live = {
        "collection": obs.alias_target,
        "version": obs.live.version or None if obs.live else None,
    }
    cand = {"collection": candidate, "version": release.spec.version}
    payload = release_payload(release, phase, live, cand, checks)
    results = [hook_check(hook, ctx.webhooks.call(release.track, hook, payload)) for hook in hooks]
    for check in results:
        ctx.reporter.event(
            Reason.VALIDATING if check.passed else Reason.WEBHOOK_FAILED,
            f"webhook {check.name.split('/', 1)[1]} {check.outcome.lower()}: {check.detail}",
            warning=not check.passed,
        )
    return results


def pre_build(ctx: StepContext, release: EmbeddingRelease, obs: Observation, target: str) -> None:
    """The preBuild gates: any failure stops the release before Milvus is touched."""
    checks = call_hooks(ctx, release, "preBuild", obs, target)
    if any(not c.passed for c in checks):
        raise WebhookFailed(
            f"preBuild webhook failed, nothing was built and the alias was not changed: "
            f"{failure_text(checks)}"
        )


def pre_promotion(
    ctx: StepContext,
    release: EmbeddingRelease,
    obs: Observation,
    candidate: str,
    checks: Sequence[Check],
) -> list[Check]:
    """The prePromotion gates, after the metric gates; not called for a candidate
    that already failed (a receiver never approves what cannot go live)."""
    if any_failed(checks):
        hooks = release.spec.promotion.hooks("prePromotion")
        return not_run([CHECK_PREFIX + h.name for h in hooks], "not called: a gate failed")
    return call_hooks(ctx, release, "prePromotion", obs, candidate, checks)


def post_promotion(
    ctx: StepContext, release: EmbeddingRelease, step: Step, obs: Observation
) -> None:
    """Measure the postPromotion analysis (inside the watch window), then call the
    postPromotion hooks (told the analysis' checks), once per live period; record both."""
    live = obs.collections[step.target]
    watch = release.spec.promotion.post_promotion.watch_seconds
    left = (epoch(live.get(P_PROMOTED_AT)) or time.time()) + watch - time.time()
    checks = analysis.run_analysis(ctx, release, "postPromotion", obs, live.name, left)
    checks += call_hooks(ctx, release, "postPromotion", obs, live.name, checks)
    record = {"at": live.get(P_PROMOTED_AT), "checks": [c.to_dict() for c in checks]}
    ctx.milvus.set_properties(live.name, {P_POST_PROMOTION: json.dumps(record)})
