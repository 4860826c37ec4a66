"""Validation gates: measure the candidate, alone and side by side with the live collection.

Each gate yields a ``Check`` (Passed / Failed / NotApplicable / Inconclusive /
Reported). Gates that compare with live are NotApplicable on a first release and
Inconclusive when live cannot be measured (it vanished, it is not loaded): a person
then decides. The metric arithmetic lives in ``metrics`` (pure numpy); this module
only gathers the vectors and answers through the ports.

The model boundary (``controller.validation.space``): no gate sends one space's
vectors to the other. ``same_space_as_live`` is asked once per run; across a model
change each side answers its own queries (latency), the same items' neighbourhoods
are compared (overlap), vector golden sets and same-id gates have no live side, and
golden sets of query texts are embedded by each side's own encoder.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from controller.errors import MilvusRejected, PermanentError, SourceError
from controller.ports import DataPort, EmbedderFactory, EmbedderPort, MilvusPort
from controller.sources.base import VectorBatch, sample_rows
from controller.sources.labelled_queries import LabelledQueries
from controller.sources.location import shown
from controller.spec import PRIMARY_VECTOR, EmbeddingRelease, GoldenSetSpec
from controller.validation import metrics as m
from controller.validation.inputs import check_query_dimension
from controller.validation.results import Check, Outcome, ValidationRun, judge, judge_drop
from controller.validation.space import (
    VectorSpace,
    boundary_reason,
    embedder_from_descriptor,
    in_same_space,
    release_space,
)

DEFAULT_QUERY_SAMPLE = 500
FETCH_CHUNK = 1000  # ids per get-by-id call
COSINE_FLOOR = 0.9  # "share of ids below 0.9"
MAX_DROP = "goldenSet.maxDropVsLive"
FIRST_RELEASE = "no live collection yet: this is the first release"


@dataclass
class GateContext:
    release: EmbeddingRelease
    candidate: str
    source_rows: int
    live: str | None  # the collection the alias points to, by its own name
    live_version: str | None
    live_model: str | None  # None when live was not created by embrel
    milvus: MilvusPort
    data: DataPort
    live_encoder: dict[str, Any] | None = None  # live's embrel.encoder descriptor, if any
    live_search_field: str = PRIMARY_VECTOR  # live's embrel.searchField
    embedders: EmbedderFactory | None = None  # golden sets of query texts embed with these


@dataclass(frozen=True)
class Boundary:
    """Whether live and candidate vectors share one space, and if not, why not."""

    same_space: bool
    why: str = ""


def live_space(ctx: GateContext) -> VectorSpace | None:
    """Live's space: its descriptor, model label and dimension (read through the port)."""
    if ctx.live is None:
        return None
    dimension = ctx.live_encoder.get("dimension") if ctx.live_encoder else None
    if not isinstance(dimension, int):
        try:
            schema = ctx.milvus.collection_schema(ctx.live)
            dimension = schema.dimension_of(ctx.live_search_field)
        except MilvusRejected:  # gone or unreadable: unknown, so never the same space
            dimension = None
    return VectorSpace(ctx.live_model, dimension, ctx.live_encoder, ctx.live_search_field)


def same_space_as_live(ctx: GateContext) -> bool:
    """The one rule every live-comparing gate obeys: may candidate vectors meet live's?"""
    live = live_space(ctx)
    return live is not None and in_same_space(release_space(ctx.release), live)


def model_boundary(ctx: GateContext) -> Boundary:
    live = live_space(ctx)
    if live is None:
        return Boundary(False, FIRST_RELEASE)
    candidate = release_space(ctx.release)
    if in_same_space(candidate, live):
        return Boundary(True)
    return Boundary(False, boundary_reason(candidate, live))


def search_params(release: EmbeddingRelease, k: int) -> dict[str, Any]:
    params: dict[str, Any] = dict(release.spec.validation.search_params)
    if release.spec.collection.searched.index.type == "HNSW":
        params.setdefault("ef", max(64, 2 * k))
    return params


def run_validation(ctx: GateContext) -> ValidationRun:
    """Run every gate the spec asks for; never promotes, never changes anything."""
    v = ctx.release.spec.validation
    gates = v.gates
    k = max([g.k for g in (gates.min_overlap_with_live, gates.min_ann_recall) if g] + [10])
    params = search_params(ctx.release, k)
    timer = _Stopwatch()
    with timer("sampling"):
        boundary = model_boundary(ctx)
        sample_ids, sample_vectors = _source_sample(ctx)
        queries, described = _query_set(ctx, sample_vectors)
    run = ValidationRun(
        ctx.release.track,
        ctx.release.spec.version,
        ctx.candidate,
        ctx.live,
        ctx.live_version,
        [],
        described,
        params,
    )
    with timer("rowCount"):
        run.checks += _row_checks(ctx)
    with timer("goldenSet"):
        run.checks += _golden_set(ctx, run, boundary)
    with timer("overlapWithLive"):
        run.checks += _overlap(ctx, queries, sample_ids, boundary)
    with timer("sameIdCosineAndDrift"):
        run.checks += _same_id_gates(ctx, run, sample_ids, boundary)
    with timer("annRecall"):
        run.checks += _ann_recall(ctx, queries)
    with timer("latency"):
        run.checks += _latency(ctx, run, queries, sample_ids, boundary)
    run.seconds = timer.seconds
    return run


class _Stopwatch:
    """Seconds spent per gate, for the report and the validation benchmark."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(time.perf_counter() - started, 4)


# -- inputs ----------------------------------------------------------------------


def _sample_size(ctx: GateContext) -> int:
    gates = ctx.release.spec.validation.gates
    sizes = [DEFAULT_QUERY_SAMPLE]
    sizes += [g.sample for g in (gates.min_mean_cosine_to_live, gates.distribution_drift) if g]
    return max(sizes)


def _source_sample(ctx: GateContext) -> tuple[np.ndarray, np.ndarray]:
    """A seeded sample of source rows: ids for same-id gates, vectors as default queries."""
    seed = ctx.release.spec.validation.seed
    return sample_rows(content_batches(ctx, 5000), ctx.source_rows, _sample_size(ctx), seed)


def content_batches(ctx: GateContext, batch_size: int) -> Iterator[VectorBatch]:
    """Every (id, vector) of the candidate's content, in bounded batches.

    A files source is read from its files. A delta or documents candidate has no
    single file holding its content, so its own rows are read back from Milvus
    (by id, Strong consistency).
    """
    files = ctx.release.spec.source.files
    field = ctx.release.spec.collection.search_field
    if files is None:  # only files releases have vector fields besides ``vector``
        return ctx.milvus.iterate_rows(ctx.candidate, batch_size)
    if field == PRIMARY_VECTOR:
        return ctx.data.open_vectors(files, ()).batches(batch_size)
    batches = ctx.data.open_vectors(files, (field,)).batches(batch_size)
    return (searched_column(b, field) for b in batches)


def searched_column(batch: VectorBatch, field: str) -> VectorBatch:
    """``batch`` with the vector field ``field`` as its vectors, the one searched."""
    vectors = np.asarray(batch.fields[field], dtype=np.float32).reshape(len(batch.ids), -1)
    return VectorBatch(batch.ids, vectors, {}, batch.origin, batch.first_row)


def _query_set(ctx: GateContext, sample_vectors: np.ndarray) -> tuple[np.ndarray, str]:
    v = ctx.release.spec.validation
    if v.queries is None:
        n = min(DEFAULT_QUERY_SAMPLE, len(sample_vectors))
        return sample_vectors[:n], f"{n} source vectors sampled with seed {v.seed}"
    queries = ctx.data.read_query_vectors(
        v.queries.uri, v.queries.vector_field, v.queries.sample, v.seed
    )
    check_query_dimension(queries, ctx.release.spec.collection, f"query set {shown(v.queries.uri)}")
    return queries, f"{len(queries)} queries from {shown(v.queries.uri)} (seed {v.seed})"


def _field(ctx: GateContext, target: str) -> str:
    """The vector field ``target`` is searched on: live's own, recorded with its release."""
    if target == ctx.live and target != ctx.candidate:
        return ctx.live_search_field
    return ctx.release.spec.collection.search_field


def _search(
    ctx: GateContext, target: str, queries: np.ndarray, k: int, consistency: str = "Strong"
) -> np.ndarray:
    params = search_params(ctx.release, k)
    return ctx.milvus.search_ids(target, queries, k, params, consistency, _field(ctx, target))


def _against_live(
    ctx: GateContext,
    names: list[tuple[str, float | None, str]],
    measure: Callable[[str], list[Check]],
) -> list[Check]:
    """Run a live-comparing gate: NotApplicable without live, Inconclusive if live fails."""
    if ctx.live is None:
        return _not_applicable(names, FIRST_RELEASE)
    try:
        return measure(ctx.live)
    except MilvusRejected as exc:
        why = f"could not measure against live {ctx.live}: {exc}"
        return [Check(n, None, t, Outcome.INCONCLUSIVE, why, c) for n, t, c in names]


def _not_applicable(names: list[tuple[str, float | None, str]], why: str) -> list[Check]:
    return [Check(n, None, t, Outcome.NOT_APPLICABLE, why, c) for n, t, c in names]


# -- gates -----------------------------------------------------------------------


def _row_checks(ctx: GateContext) -> list[Check]:
    rows = ctx.milvus.row_count(ctx.candidate)
    checks = [
        Check(
            "rowCount",
            rows,
            ctx.source_rows,
            Outcome.PASSED if rows == ctx.source_rows else Outcome.FAILED,
            "collection rows (after flush) vs source rows",
            "==",
        ),
        Check(
            "vectorSanity",
            ctx.source_rows,
            ctx.source_rows,
            Outcome.PASSED,
            "every row checked: dimension, NaN/inf, zero vectors (COSINE), duplicate ids",
            "==",
        ),
    ]
    limit = ctx.release.spec.validation.gates.max_row_count_change
    if limit is None:
        return checks

    def change(live: str) -> list[Check]:
        live_rows = ctx.milvus.row_count(live)
        value = abs(rows - live_rows) / max(live_rows, 1)
        detail = f"{rows} candidate rows vs {live_rows} live"
        return [judge("maxRowCountChange", value, limit, "<=", detail)]

    return checks + _against_live(ctx, [("maxRowCountChange", limit, "<=")], change)


def _golden_set(ctx: GateContext, run: ValidationRun, boundary: Boundary) -> list[Check]:
    golden = ctx.release.spec.validation.golden_set
    if golden is None:
        return []
    if golden.texts is not None:
        return _golden_texts(ctx, run, golden, boundary)
    assert golden.uri is not None  # the spec gives exactly one of uri and texts
    gs = ctx.data.read_golden_set(golden.uri)
    check_query_dimension(gs.queries, ctx.release.spec.collection, f"golden set {gs.origin}")
    k = golden.k
    cand = _Scores.of(_search(ctx, ctx.candidate, gs.queries, k), gs.relevant, None, k)
    live: _Scores | _Unmeasured
    if ctx.live is None or not boundary.same_space:
        live = _Unmeasured(
            Outcome.NOT_APPLICABLE,
            boundary.why + "; the golden set's query vectors belong to the candidate's model "
            "(goldenSet.texts judges a model change)"
            if ctx.live is not None
            else FIRST_RELEASE,
        )
    else:
        try:  # the baseline: the same labelled queries against what is live now
            live = _Scores.of(_search(ctx, ctx.live, gs.queries, k), gs.relevant, None, k)
        except MilvusRejected as exc:
            live = _Unmeasured(Outcome.INCONCLUSIVE, f"could not search live {ctx.live}: {exc}")
    detail = f"{len(gs.relevant)} labelled queries from {shown(golden.uri)}"
    return _golden_checks(ctx, run, golden, cand, live, detail)


def _golden_texts(
    ctx: GateContext, run: ValidationRun, golden: GoldenSetSpec, boundary: Boundary
) -> list[Check]:
    """Labelled query texts: each side embeds them with its own encoder."""
    assert golden.texts is not None
    queries = ctx.data.read_labelled_queries(golden.texts)
    embedder = ctx.release.spec.embedder
    assert embedder is not None  # the spec refuses texts without spec.embedder
    vectors = _factory(ctx)(embedder).embed_queries(queries.texts)
    what = f"what spec.embedder ({embedder.model}) produced"
    check_query_dimension(vectors, ctx.release.spec.collection, what)
    k = golden.k
    found = _search(ctx, ctx.candidate, vectors, k)
    cand = _Scores.of(found, queries.relevant, queries.grades, k)
    live = _live_text_scores(ctx, queries, vectors, boundary, k)
    detail = (
        f"{len(queries)} labelled query texts from {shown(golden.texts.uri)}, each side's encoder"
    )
    return _golden_checks(ctx, run, golden, cand, live, detail)


def _factory(ctx: GateContext) -> EmbedderFactory:
    if ctx.embedders is None:
        raise SourceError(
            "validation.goldenSet.texts needs an encoder, and this controller was started "
            "without one; use the local driver (embrel apply) with `pip install 'embrel[embed]'`"
        )
    return ctx.embedders


def _live_text_scores(
    ctx: GateContext,
    queries: LabelledQueries,
    candidate_vectors: np.ndarray,
    boundary: Boundary,
    k: int,
) -> _Scores | _Unmeasured:
    """Live's scores on the same texts, embedded with live's recorded encoder."""
    if ctx.live is None:
        return _Unmeasured(Outcome.NOT_APPLICABLE, FIRST_RELEASE)
    if ctx.live_encoder is None:
        return _Unmeasured(
            Outcome.NOT_APPLICABLE,
            f"live {ctx.live} records no embrel.encoder, so how its queries are embedded is "
            "unknown: no live baseline",
        )
    if boundary.same_space:  # one encoder: the candidate's query vectors serve both
        vectors = candidate_vectors
    else:
        try:
            vectors = _embed_for_live(ctx, ctx.live_encoder, queries.texts)
        except ValueError as exc:
            return _Unmeasured(Outcome.NOT_APPLICABLE, f"live {ctx.live}: {exc}")
        except PermanentError as exc:
            return _Unmeasured(
                Outcome.INCONCLUSIVE, f"could not embed the queries with live's encoder: {exc}"
            )
    try:
        found = _search(ctx, ctx.live, vectors, k)
    except MilvusRejected as exc:
        return _Unmeasured(Outcome.INCONCLUSIVE, f"could not search live {ctx.live}: {exc}")
    return _Scores.of(found, queries.relevant, queries.grades, k)


def _embed_for_live(ctx: GateContext, descriptor: dict[str, Any], texts: list[str]) -> np.ndarray:
    """Query vectors of live's space, from the encoder its descriptor names."""
    spec = embedder_from_descriptor(descriptor, ctx.release.spec.embedder)
    encoder: EmbedderPort = _factory(ctx)(spec)
    vectors = encoder.embed_queries(texts)
    expected = descriptor.get("dimension")
    if vectors.ndim != 2 or vectors.shape[1] != expected:
        raise ValueError(
            f"its recorded encoder {spec.model} now produces vectors of shape "
            f"{vectors.shape}, the descriptor says dimension {expected}"
        )
    return vectors


@dataclass(frozen=True)
class _Scores:
    """Per-query recall, nDCG and MRR at k of one side, and its recall curve."""

    recall: np.ndarray
    ndcg: np.ndarray
    mrr: np.ndarray
    curve: list[float]

    @classmethod
    def of(
        cls,
        found: np.ndarray,
        relevant: list[np.ndarray],
        grades: list[np.ndarray] | None,
        k: int,
    ) -> _Scores:
        return cls(
            m.recall_per_query(found, relevant, k),
            m.ndcg_per_query(found, relevant, k, grades),
            m.mrr_per_query(found, relevant, k),
            [m.recall_at_k(found, relevant, j) for j in range(1, k + 1)],
        )

    def per_query(self, metric: str) -> np.ndarray:
        return {"recall": self.recall, "ndcg": self.ndcg, "mrr": self.mrr}[metric]

    def means(self, prefix: str = "") -> dict[str, float]:
        names = {"recall": "Recall", "ndcg": "Ndcg", "mrr": "Mrr"}
        return {
            (f"{prefix}{names[n]}" if prefix else n): _nanmean(self.per_query(n)) for n in names
        }


@dataclass(frozen=True)
class _Unmeasured:
    """Why live has no scores: NotApplicable (by design) or Inconclusive (it failed)."""

    outcome: Outcome
    why: str


def _nanmean(values: np.ndarray) -> float:
    defined = values[~np.isnan(values)]
    return float(defined.mean()) if defined.size else float("nan")


def _golden_checks(
    ctx: GateContext,
    run: ValidationRun,
    golden: GoldenSetSpec,
    cand: _Scores,
    live: _Scores | _Unmeasured,
    detail: str,
) -> list[Check]:
    """recall@k on the candidate (``minRecall``), and the relative gate, if asked for."""
    k = golden.k
    run.recall_curve["candidate"] = cand.curve
    extra = {n: v for n, v in cand.means().items() if n != "recall"}
    if isinstance(live, _Scores):
        run.recall_curve["live"] = live.curve
        extra |= live.means("live")
    checks = [judge(f"recall@{k}", cand.curve[-1], golden.min_recall, ">=", detail, extra)]
    drop = golden.max_drop_vs_live
    if drop is None:
        return checks
    if isinstance(live, _Unmeasured):
        return [*checks, Check(MAX_DROP, None, -drop.max, live.outcome, live.why, ">=")]
    ours, theirs = cand.per_query(golden.metric), live.per_query(golden.metric)
    seed = ctx.release.spec.validation.seed
    diff = m.paired_bootstrap(ours, theirs, drop.resamples, drop.confidence, seed)
    check = judge_drop(MAX_DROP, diff, drop.max, _nanmean(ours), _nanmean(theirs))
    sides = {
        f"{side}{end}": round(value, 6)
        for side, scores in (("candidate", ours), ("live", theirs))
        for end, value in zip(
            ("Low", "High"), _interval(scores, drop.resamples, drop.confidence, seed), strict=True
        )
    }
    label = f"{golden.metric}@{k}"
    return [
        *checks,
        replace(check, detail=f"{label}: {check.detail}", metrics=check.metrics | sides),
    ]


def _interval(
    scores: np.ndarray, resamples: int, confidence: float, seed: int
) -> tuple[float, float]:
    """The bootstrap interval of one side's mean score (for the report)."""
    alone = m.paired_bootstrap(scores, np.zeros_like(scores), resamples, confidence, seed)
    return alone.low, alone.high


def _overlap(
    ctx: GateContext, queries: np.ndarray, sample_ids: np.ndarray, boundary: Boundary
) -> list[Check]:
    """Top-k overlap and RBO of live and candidate answers to the same questions.

    Same model: the query set runs against both. A model change puts the two
    collections in different spaces, where one query vector cannot ask both; then
    each sampled item asks each collection with its own vector there, and the two
    neighbourhoods of the same item are compared.
    """
    gate = ctx.release.spec.validation.gates.min_overlap_with_live
    if gate is None:
        return []
    names = [("minOverlapWithLive", gate.min, ">="), ("minRboWithLive", gate.min_rbo, ">=")]

    def measure(live: str) -> list[Check]:
        if boundary.same_space:
            ours_q, theirs_q, asked = queries, queries, f"{len(queries)} queries"
        else:
            n = len(queries)
            ours_q, theirs_q = _paired_vectors(ctx, live, sample_ids[:n])
            asked = f"{len(ours_q)} items' neighbourhoods (model changed)"
            if not len(ours_q):
                return _not_applicable(names, "no sampled id exists in both collections")
        ours = _search(ctx, ctx.candidate, ours_q, gate.k)
        theirs = _search(ctx, live, theirs_q, gate.k)
        overlap, rbo = m.topk_overlap(ours, theirs, gate.k), m.mean_rbo(ours, theirs, 0.9)
        detail = f"top-{gate.k} answers to {asked}, candidate vs live"
        return [
            judge("minOverlapWithLive", overlap, gate.min, ">=", detail, {"rbo": rbo}),
            judge(
                "minRboWithLive", rbo, gate.min_rbo, ">=", f"rank-biased overlap p=0.9; {detail}"
            ),
        ]

    return _against_live(ctx, names, measure)


def _same_id_gates(
    ctx: GateContext, run: ValidationRun, sample_ids: np.ndarray, boundary: Boundary
) -> list[Check]:
    """Same ids, two collections, one space: per-id cosine and distribution drift."""
    gates = ctx.release.spec.validation.gates
    cos_gate, drift = gates.min_mean_cosine_to_live, gates.distribution_drift
    names: list[tuple[str, float | None, str]] = []
    if cos_gate:
        names.append(("minMeanCosineToLive", cos_gate.min, ">="))
    if drift:
        names += [
            ("mmdToLive", drift.max_mmd, "<="),
            ("centroidDistanceToLive", drift.max_centroid_distance, "<="),
        ]
    if not names:
        return []

    def measure(live: str) -> list[Check]:
        if not boundary.same_space:  # no read at all: the numbers would mean nothing
            return _not_applicable(names, f"{boundary.why}, so the rank-based gates decide")
        n = max(g.sample for g in (cos_gate, drift) if g)
        ours, theirs = _paired_vectors(ctx, live, sample_ids[:n])
        checks: list[Check] = []
        if cos_gate:
            checks.append(
                _cosine_check(run, cos_gate.min, ours[: cos_gate.sample], theirs[: cos_gate.sample])
            )
        if drift:
            checks += _drift_checks(
                drift.max_mmd,
                drift.max_centroid_distance,
                ours[: drift.sample],
                theirs[: drift.sample],
            )
        return checks

    return _against_live(ctx, names, measure)


def _paired_vectors(ctx: GateContext, live: str, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vectors of the ids present in both collections, read back from Milvus, aligned."""
    ours: dict[int, np.ndarray] = {}
    theirs: dict[int, np.ndarray] = {}
    for start in range(0, len(ids), FETCH_CHUNK):
        chunk = [int(i) for i in ids[start : start + FETCH_CHUNK]]
        ours.update(_vectors_of(ctx, ctx.candidate, chunk))
        theirs.update(_vectors_of(ctx, live, chunk))
    common = [int(i) for i in ids if int(i) in ours and int(i) in theirs]
    if not common:
        return np.empty((0, 0), np.float32), np.empty((0, 0), np.float32)
    return np.stack([ours[i] for i in common]), np.stack([theirs[i] for i in common])


def _cosine_check(
    run: ValidationRun, threshold: float, ours: np.ndarray, theirs: np.ndarray
) -> Check:
    name = "minMeanCosineToLive"
    if len(ours) == 0:
        return Check(
            name,
            None,
            threshold,
            Outcome.NOT_APPLICABLE,
            "no sampled id exists in both collections",
        )
    cos = m.cosine_same_ids(ours, theirs)
    run.cosines = cos
    s = m.cosine_summary(cos, COSINE_FLOOR)
    detail = f"{int(s['n'])} ids in both; {s['share_below'] * 100:.1f}% below {COSINE_FLOOR}"
    metrics = {"p5": s["p5"], "min": s["min"], "shareBelow0.9": s["share_below"]}
    return judge(name, s["mean"], threshold, ">=", detail, metrics)


def _drift_checks(
    max_mmd: float | None, max_dist: float | None, ours: np.ndarray, theirs: np.ndarray
) -> list[Check]:
    if len(ours) < 2 or ours.shape[1] != theirs.shape[1]:
        why = "fewer than 2 common ids, or different dimensions"
        return [
            Check("mmdToLive", None, max_mmd, Outcome.NOT_APPLICABLE, why, "<="),
            Check("centroidDistanceToLive", None, max_dist, Outcome.NOT_APPLICABLE, why, "<="),
        ]
    mmd2, sigma = m.mmd_rbf(ours, theirs)
    detail = f"{len(ours)} vectors per side"
    return [
        judge(
            "mmdToLive",
            mmd2,
            max_mmd,
            "<=",
            f"RBF MMD², median bandwidth σ={sigma:.4g}; {detail}",
            {"sigma": sigma},
        ),
        judge("centroidDistanceToLive", m.centroid_distance(ours, theirs), max_dist, "<=", detail),
    ]


def _ann_recall(ctx: GateContext, queries: np.ndarray) -> list[Check]:
    gate = ctx.release.spec.validation.gates.min_ann_recall
    if gate is None:
        return []
    q = queries[: gate.sample]
    ann = _search(ctx, ctx.candidate, q, gate.k)
    exact = m.StreamingTopK(q, gate.k, ctx.release.spec.collection.searched.metric)
    for batch in content_batches(ctx, 20_000):
        exact.add(batch.vectors, batch.ids)
    value = m.ann_recall(ann, exact.result(), gate.k)
    detail = f"{len(q)} queries vs exact search over {ctx.source_rows} source vectors; params {search_params(ctx.release, gate.k)}"
    return [judge("minAnnRecall", value, gate.min, ">=", detail)]


def _latency(
    ctx: GateContext,
    run: ValidationRun,
    queries: np.ndarray,
    sample_ids: np.ndarray,
    boundary: Boundary,
) -> list[Check]:
    """p50/p99 of single-query searches after warm-up. Candidate and live answer the same
    queries in one space; across a model change live answers its own vectors."""
    v = ctx.release.spec.validation
    gates = v.gates
    q = queries[: v.latency_queries]
    samples = {"candidate": _timed_searches(ctx, ctx.candidate, q)}
    cand = m.latency_percentiles(samples["candidate"])
    detail = f"{len(q)} single-query searches after {v.warmup_queries} warm-up"
    checks = [
        judge(
            "p99LatencyMs",
            cand["p99"],
            gates.max_p99_latency_ms,
            "<=",
            detail,
            {"p50": cand["p50"]},
        )
    ]

    def versus_live(live: str) -> list[Check]:
        asked = "the same queries"
        theirs_q = q
        if not boundary.same_space:
            theirs_q = _own_queries(ctx, live, sample_ids, len(q))
            asked = f"{len(theirs_q)} of live's own vectors (model changed)"
        samples["live"] = _timed_searches(ctx, live, theirs_q)
        theirs = m.latency_percentiles(samples["live"])
        ratio = cand["p99"] / theirs["p99"] if theirs["p99"] > 0 else float("nan")
        why = f"candidate p99 {cand['p99']:.2f} ms vs live {theirs['p99']:.2f} ms on {asked}"
        extra = {"liveP50": theirs["p50"], "liveP99": theirs["p99"]}
        return [
            judge(
                "p99LatencyRatioToLive",
                ratio,
                gates.max_p99_latency_ratio_to_live,
                "<=",
                why,
                extra,
            )
        ]

    limit = gates.max_p99_latency_ratio_to_live
    ratio = _against_live(ctx, [("p99LatencyRatioToLive", limit, "<=")], versus_live)
    if limit is not None or ratio[0].outcome != Outcome.INCONCLUSIVE:
        checks += ratio  # without a gate, live being unmeasurable is not worth a pause
    run.latencies_ms = samples
    return checks


def _own_queries(ctx: GateContext, live: str, sample_ids: np.ndarray, n: int) -> np.ndarray:
    """``n`` query vectors of live's own space: the sampled items' vectors in live,
    topped up from a seeded sample of live's ids when few of them are there."""
    found = _vectors_of(ctx, live, [int(i) for i in sample_ids[:n]])
    if len(found) < n:
        more = ctx.milvus.sample_ids(live, n, ctx.release.spec.validation.seed)
        found |= _vectors_of(ctx, live, [int(i) for i in more if int(i) not in found])
    if not found:
        raise MilvusRejected(f"{live} returned no vectors to query it with")
    return np.stack([found[i] for i in sorted(found)][:n])


def _vectors_of(ctx: GateContext, name: str, ids: list[int]) -> dict[int, np.ndarray]:
    out: dict[int, np.ndarray] = {}
    for start in range(0, len(ids), FETCH_CHUNK):
        chunk = ids[start : start + FETCH_CHUNK]
        out.update(ctx.milvus.vectors_by_id(name, chunk, "Strong", _field(ctx, name)))
    return out


def warm_up(milvus: MilvusPort, data: DataPort, release: EmbeddingRelease, target: str) -> int:
    """Search ``target`` once per warm-up query, as applications do (Bounded), so the
    first production searches after a flip do not pay for cold caches.

    The queries are ``validation.warmupQueries`` of the validation query set, or, without
    one, of the collection's own first rows (validation's default queries are sampled
    source vectors: the same distribution, without reading the source again).
    """
    v, field = release.spec.validation, release.spec.collection.search_field
    if v.warmup_queries == 0:
        return 0
    if v.queries is not None:
        queries = data.read_query_vectors(
            v.queries.uri, v.queries.vector_field, v.warmup_queries, v.seed
        )
    else:
        others = [] if field == PRIMARY_VECTOR else [field]
        with closing(milvus.iterate_rows(target, v.warmup_queries, others, not others)) as rows:
            first = next(rows, None)
        if first is None:
            return 0
        queries = (searched_column(first, field) if others else first).vectors
        queries = queries[: v.warmup_queries]
    params = search_params(release, 10)
    for i in range(len(queries)):
        milvus.search_ids(target, queries[i : i + 1], 10, params, "Bounded", field)
    return len(queries)


def _timed_searches(ctx: GateContext, target: str, queries: np.ndarray, k: int = 10) -> list[float]:
    """Warm the target's caches, then time one search per query, in milliseconds."""
    # Bounded, as applications search: Strong would time the wait for a fresh timestamp.
    for i in range(min(ctx.release.spec.validation.warmup_queries, len(queries))):
        _search(ctx, target, queries[i : i + 1], k, "Bounded")
    samples = []
    for i in range(len(queries)):
        started = time.perf_counter()
        _search(ctx, target, queries[i : i + 1], k, "Bounded")
        samples.append((time.perf_counter() - started) * 1000)
    return samples
