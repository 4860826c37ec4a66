"""Judging a candidate: ``validate``, and a person's calls on it, ``accept`` and ``abort``.

``validate`` runs the gates (``controller.validation``) and records their checks
on the candidate, with the fingerprint that will prove its flip. ``accept``
records that a person promoted an Inconclusive validation; ``abort`` marks the
release so it never changes the alias (invariant 2).
"""

from __future__ import annotations

import json

from controller.cutover import Fingerprint
from controller.engine.state import (
    ACCEPTED,
    FAILED,
    INCONCLUSIVE,
    P_ABORTED_AT,
    P_ACCEPTED_AT,
    P_CHECKS,
    P_FINGERPRINT,
    P_MODEL,
    P_REPORT,
    P_SOURCE_ROWS,
    P_VALIDATED_HASH,
    P_VALIDATION,
    PASSED,
    UNSET,
    CollectionState,
    Observation,
    summarise,
)
from controller.engine.step import Step
from controller.engine.steps.build import create_collection
from controller.engine.steps.context import StepContext
from controller.engine.steps.flip import read_fingerprint
from controller.spec import EmbeddingRelease
from controller.status import Reason
from controller.validation.gates import GateContext, run_validation
from controller.validation.report import render_report
from controller.validation.results import Outcome, ValidationRun

VALIDATION_MARK = {
    Outcome.PASSED: PASSED,
    Outcome.FAILED: FAILED,
    Outcome.INCONCLUSIVE: INCONCLUSIVE,
}
GATED = (Outcome.PASSED, Outcome.FAILED, Outcome.INCONCLUSIVE)


def validate(ctx: StepContext, release: EmbeddingRelease, step: Step, obs: Observation) -> None:
    """Run the gates and record their checks (and the flip's fingerprint) on the candidate."""
    cand = obs.collections[step.target]
    run = run_validation(_gate_context(ctx, release, cand, obs))
    props = {
        P_CHECKS: json.dumps([c.to_dict() for c in run.checks]),
        P_VALIDATION: VALIDATION_MARK[run.outcome],
        P_VALIDATED_HASH: release.validation_hash(),
    }
    if obs.alias_target and run.outcome != Outcome.FAILED:
        fp = _flip_fingerprint(ctx, release, cand.name, obs.alias_target)
        props[P_FINGERPRINT] = fp.to_json() if fp else UNSET
    if ctx.reports is not None:
        files = render_report(run)
        props[P_REPORT] = ctx.reports.write_report(release.track, release.spec.version, files)
    ctx.milvus.set_properties(step.target, props)
    _report_outcome(ctx, run)
    if P_REPORT in props:
        ctx.reporter.event(Reason.VALIDATING, f"report: {props[P_REPORT]}")


def _gate_context(
    ctx: StepContext, release: EmbeddingRelease, cand: CollectionState, obs: Observation
) -> GateContext:
    live = obs.live
    return GateContext(
        release=release,
        candidate=cand.name,
        source_rows=int(cand.get(P_SOURCE_ROWS)),
        live=obs.alias_target,
        live_version=live.version or None if live else None,
        live_model=live.get(P_MODEL) or None if live else None,
        milvus=ctx.milvus,
        data=ctx.data,
    )


def _flip_fingerprint(
    ctx: StepContext, release: EmbeddingRelease, cand: str, live: str
) -> Fingerprint | None:
    """Probes that will prove the flip, recorded with the evidence."""
    probes = read_fingerprint(ctx, release, cand, live)
    fp = probes.fp if probes else None
    if fp is not None:
        ctx.reporter.event(
            Reason.VALIDATING,
            f"cutover fingerprint vs {live}: {len(fp.ids)} differing ids, "
            f"{len(fp.query_ids)} differing queries"
            if fp.distinguishable
            else f"{cand} and {live} hold identical probes: the flip "
            "will be confirmed by describe_alias only",
        )
    return fp


def _report_outcome(ctx: StepContext, run: ValidationRun) -> None:
    summary = ", ".join(summarise(c) for c in run.checks if c.outcome in GATED)
    ctx.reporter.event(
        Reason.VALIDATING if run.outcome == Outcome.PASSED else Reason.VALIDATION_FAILED,
        f"validation {run.outcome.lower()}: {summary}",
        warning=run.outcome != Outcome.PASSED,
    )


def accept(ctx: StepContext, release: EmbeddingRelease, step: Step, obs: Observation) -> None:
    """A person promoted an Inconclusive validation: record that it was their call."""
    ctx.milvus.set_properties(step.target, {P_VALIDATION: ACCEPTED, P_ACCEPTED_AT: ctx.clock()})


def abort(ctx: StepContext, release: EmbeddingRelease, step: Step, obs: Observation) -> None:
    """Mark the release aborted: it never changes the alias (invariant 2)."""
    mark = {P_ABORTED_AT: ctx.clock()}
    if step.target in obs.collections:
        ctx.milvus.set_properties(step.target, mark)
    else:  # aborted before the build began: an empty collection records the decision
        create_collection(ctx, release, step.target, mark)
    ctx.reporter.event(
        Reason.ABORTED,
        f"aborted {release.spec.version}; the live alias was not changed",
        warning=True,
    )
