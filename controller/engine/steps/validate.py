"""Judging a candidate: ``validate``, and a person's calls on it, ``accept`` and ``abort``.

``validate`` runs the gates (``controller.validation``) and records their checks
on the candidate, with the fingerprint that will prove its flip. ``accept``
records that a person promoted an Inconclusive validation; ``abort`` marks the
release so it never changes the alias (invariant 2).

From the start of ``validate`` until the flip, the live collection announces the
candidate (``embrel.next``: its version, collection and encoder descriptor), so
applications can load the next encoder before the alias moves. A failed validation
and ``abort`` withdraw the announcement; the flip clears it.
"""

from __future__ import annotations

import json
from typing import Any

from controller.cutover import Fingerprint
from controller.embedding.descriptor import parse_descriptor
from controller.engine.state import (
    ACCEPTED,
    FAILED,
    INCONCLUSIVE,
    P_ABORTED_AT,
    P_ACCEPTED_AT,
    P_CHECKS,
    P_ENCODER,
    P_FINGERPRINT,
    P_MODEL,
    P_NEXT,
    P_REPORT,
    P_SEARCH_FIELD,
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
from controller.engine.steps import analysis, webhooks
from controller.engine.steps.build import create_collection
from controller.engine.steps.context import StepContext
from controller.engine.steps.flip import read_fingerprint
from controller.errors import PermanentError
from controller.spec import PRIMARY_VECTOR, EmbeddingRelease
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
    _announce(ctx, release, cand, obs)
    try:
        run = run_validation(_gate_context(ctx, release, cand, obs))
        run.checks += analysis.pre_promotion(ctx, release, obs, cand.name, run.checks)
        run.checks += webhooks.pre_promotion(ctx, release, obs, cand.name, run.checks)
    except PermanentError:  # this candidate will not be promoted as it is
        _withdraw(ctx, cand.name, obs)
        raise
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
    if run.outcome == Outcome.FAILED:
        _withdraw(ctx, cand.name, obs)
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
        live_encoder=parse_descriptor(live.get(P_ENCODER)) if live else None,
        live_search_field=(live.get(P_SEARCH_FIELD) if live else "") or PRIMARY_VECTOR,
        embedders=ctx.embedders,
    )


def next_announcement(release: EmbeddingRelease, cand: CollectionState) -> dict[str, Any]:
    """What ``embrel.next`` on the live collection says about the candidate."""
    return {
        "version": release.spec.version,
        "collection": cand.name,
        "encoder": parse_descriptor(cand.get(P_ENCODER)),
    }


def _announce(
    ctx: StepContext, release: EmbeddingRelease, cand: CollectionState, obs: Observation
) -> None:
    """Tell readers of the live collection which candidate (and encoder) comes next.
    Only on a live collection embrel owns: another's collection is never written."""
    live = obs.live
    if live is None or not live.owned_by_embrel or live.name == cand.name:
        return
    text = json.dumps(next_announcement(release, cand), sort_keys=True, separators=(",", ":"))
    if live.get(P_NEXT) != text:
        ctx.milvus.set_properties(live.name, {P_NEXT: text})


def _withdraw(ctx: StepContext, candidate: str, obs: Observation) -> None:
    """Clear live's ``embrel.next`` if it announces ``candidate`` (and nothing newer)."""
    live = obs.live
    if live is None or not live.owned_by_embrel or live.name == candidate:
        return
    try:
        announced = json.loads(ctx.milvus.properties(live.name).get(P_NEXT) or "{}")
    except ValueError:
        announced = {}
    if isinstance(announced, dict) and announced.get("collection") == candidate:
        ctx.milvus.set_properties(live.name, {P_NEXT: UNSET})


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
    _withdraw(ctx, step.target, obs)
    if step.target in obs.collections:
        ctx.milvus.set_properties(step.target, mark)
    else:  # aborted before the build began: an empty collection records the decision
        create_collection(ctx, release, step.target, mark)
    ctx.reporter.event(
        Reason.ABORTED,
        f"aborted {release.spec.version}; the live alias was not changed",
        warning=True,
    )
