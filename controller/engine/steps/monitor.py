"""Watching what is live: ``capture_reference`` and ``monitor`` (drift).

``capture_reference`` samples the new live collection once per live period and
stores the sample, canary queries and their answers (``ReferenceStore``);
``monitor`` measures the live collection against it (``controller.monitoring``)
and records the values and any breach on the collection. The decision to roll
back on a breach is ``decide``'s (the post-promotion guard), not this module's.
"""

from __future__ import annotations

import json
import math
import time
import warnings

import numpy as np

from controller import monitoring
from controller.engine.state import P_DRIFT, P_DRIFT_AT, P_REFERENCE_AT, Observation
from controller.engine.step import Step
from controller.engine.steps.context import StepContext
from controller.spec import EmbeddingRelease
from controller.status import Reason
from controller.validation.gates import search_params


def capture_reference(
    ctx: StepContext, release: EmbeddingRelease, step: Step, obs: Observation
) -> None:
    """Remember how the new live collection looks, to measure drift against."""
    assert ctx.references is not None
    mon, live, milvus = release.spec.monitoring, step.target, ctx.milvus
    ids = milvus.sample_ids(live, mon.sample, release.spec.validation.seed)
    vectors = _searched_vectors(ctx, release, live, ids.tolist())
    ids = np.asarray([i for i in ids.tolist() if i in vectors], dtype=np.int64)
    dim = release.spec.collection.searched.dimension
    sample = np.stack([vectors[int(i)] for i in ids]) if len(ids) else np.empty((0, dim))
    canaries = _canary_queries(ctx, release, sample)
    answers = _canary_answers(ctx, release, live, canaries)
    ref = monitoring.reference(ids, sample, canaries, answers, milvus.row_count(live, flush=False))
    ctx.references.save_reference(release.track, live, ref.arrays())
    milvus.set_properties(live, {P_REFERENCE_AT: ctx.clock()})
    ctx.reporter.event(
        Reason.MONITORING,
        f"drift reference for {live}: {len(ids)} sampled vectors, {len(canaries)} canary "
        f"queries, {ref.row_count} rows",
    )


def monitor(ctx: StepContext, release: EmbeddingRelease, step: Step, obs: Observation) -> None:
    """Measure drift against the reference and record values and breaches."""
    live, mon = step.target, release.spec.monitoring
    raw = ctx.references.load_reference(release.track, live) if ctx.references else None
    if raw is None:  # the state folder was lost: start again from what is live now
        ctx.reporter.event(
            Reason.MONITORING, f"no drift reference for {live}; capturing a new one", True
        )
        capture_reference(ctx, release, step, obs)
        return
    ref = monitoring.Reference.from_arrays(raw)
    with warnings.catch_warnings():  # degenerate vectors: reported below, not on stderr
        warnings.simplefilter("ignore", RuntimeWarning)
        values = monitoring.measure(
            ref,
            current=_searched_vectors(ctx, release, live, ref.ids.tolist()),
            fresh_sample=_fresh_sample(ctx, release, live),
            canary_answers=_canary_answers(ctx, release, live, ref.canary_queries),
            row_count=ctx.milvus.row_count(live, flush=False),
            queries=_production_queries(ctx, release),
        )
    breaches = monitoring.breaches(values, mon.thresholds)
    undefined = sorted(k for k, v in values.items() if not math.isfinite(v))
    drift = {
        # JSON has no NaN: an undefined value is null, and named under "undefined".
        "values": {k: round(v, 6) if math.isfinite(v) else None for k, v in values.items()},
        "thresholds": monitoring.thresholds(mon.thresholds),
        "breaches": breaches,
    } | ({"undefined": undefined} if undefined else {})
    ctx.milvus.set_properties(live, {P_DRIFT: json.dumps(drift), P_DRIFT_AT: ctx.clock()})
    ctx.telemetry.drift(release.track, {k: v for k, v in values.items() if k not in undefined})
    if undefined:
        ctx.reporter.event(
            Reason.MONITORING,
            f"drift on {live}: {', '.join(undefined)} undefined: the vectors are degenerate "
            "(all zero, or all alike), so these statistics cannot be measured",
            warning=True,
        )
    if breaches:
        ctx.reporter.event(
            Reason.DRIFT_DETECTED, f"drift on {live}: {'; '.join(breaches)}", warning=True
        )


def _canary_queries(ctx: StepContext, release: EmbeddingRelease, sample: np.ndarray) -> np.ndarray:
    """Real queries when the spec names them, else vectors of the reference sample."""
    mon, queries = release.spec.monitoring, release.spec.validation.queries
    if queries is not None:
        real = ctx.data.read_query_vectors(
            queries.uri, queries.vector_field, mon.canary_queries, release.spec.validation.seed
        )
        if real.shape[1] == sample.shape[1]:
            return real
    return sample[: mon.canary_queries]


def _canary_answers(
    ctx: StepContext, release: EmbeddingRelease, live: str, queries: np.ndarray
) -> np.ndarray:
    k = release.spec.monitoring.canary_k
    if not len(queries):  # an empty live collection has no sample to ask with
        return np.empty((0, k), dtype=np.int64)
    field = release.spec.collection.search_field
    return ctx.milvus.search_ids(live, queries, k, search_params(release, k), field=field)


def _searched_vectors(
    ctx: StepContext, release: EmbeddingRelease, live: str, ids: list[int]
) -> dict[int, np.ndarray]:
    """Drift is measured on the field that is searched: the vectors queries meet."""
    field = release.spec.collection.search_field
    return ctx.milvus.vectors_by_id(live, ids, "Strong", field)


def _fresh_sample(ctx: StepContext, release: EmbeddingRelease, live: str) -> np.ndarray:
    """A new sample each time (seeded by the clock), so rows added since the reference
    are seen too (among the first 1M ids in key order: ``sample_ids``' scan bound)."""
    ids = ctx.milvus.sample_ids(live, release.spec.monitoring.sample, int(time.time()))
    vectors = _searched_vectors(ctx, release, live, ids.tolist())
    dim = release.spec.collection.searched.dimension
    return np.stack(list(vectors.values())) if vectors else np.empty((0, dim), np.float32)


def _production_queries(ctx: StepContext, release: EmbeddingRelease) -> np.ndarray | None:
    q = release.spec.monitoring.queries
    if q is None:
        return None
    return ctx.data.read_query_vectors(
        q.uri, q.vector_field, q.sample, release.spec.validation.seed
    )
