"""Getting a candidate ready to serve: ``build``, ``discard_incomplete``, ``index``, ``load``.

``build`` picks one of the three builds of ``controller.incremental`` (files, delta,
documents), lets it check every input before Milvus is touched, creates the
collection, loads it, and ends the same way for all three (``_finish``): the row
count after flush must equal the rows written, and only then is ``sourceRows`` set,
which is what marks a candidate complete. A release with ``spec.embedder`` records
its encoder's descriptor (``embrel.encoder``): how queries are embedded for it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from controller.bulk_import import BulkImport, check_load, wants_import
from controller.embedding.descriptor import descriptor_json, encoder_descriptor
from controller.engine.decide import base_identity, delta_base
from controller.engine.state import (
    MMAP_PROPERTY,
    OWNER_VALUE,
    P_ALIAS,
    P_BASE,
    P_BUILD,
    P_BUILD_HASH,
    P_CREATED_AT,
    P_ENCODER,
    P_MODEL,
    P_OWNER,
    P_SEARCH_FIELD,
    P_SOURCE_ROWS,
    P_SPEC_HASH,
    P_TRACK,
    P_VERSION,
    UNSET,
    Observation,
)
from controller.engine.step import Step
from controller.engine.steps import webhooks
from controller.engine.steps.context import StepContext
from controller.errors import BuildIncomplete, SourceError, SpecError, WaitTimedOut
from controller.incremental import (
    HASH_FIELD,
    Build,
    BuildPorts,
    BuildResult,
    DeltaBuild,
    DocumentsBuild,
    FilesBuild,
    documents_base,
)
from controller.ports import EmbedderPort
from controller.schema import Schema, VectorIndex, breaking_changes, unsupported
from controller.spec import PRIMARY_VECTOR, EmbeddingRelease, FieldSpec
from controller.status import Reason
from controller.validation.inputs import check_validation_inputs


@dataclass(frozen=True)
class PlannedBuild:
    """A build and what its collection records beyond the identity (``create_collection``)."""

    build: Build
    props: Mapping[str, str]
    fields: Sequence[FieldSpec] = ()


def build(ctx: StepContext, release: EmbeddingRelease, step: Step, obs: Observation) -> None:
    """Ask the preBuild webhooks, check the whole source, then create the collection
    and insert every row."""
    check_load(release, ctx.milvus, ctx.staging)  # bulkImport where it cannot run
    webhooks.pre_build(ctx, release, obs, step.target)
    planned = plan_build(ctx, release, obs)
    planned.build.plan()  # reads and checks every input; Milvus untouched until here
    check_validation_inputs(release, ctx.data)  # golden and query sets, before hours of build
    check_schema(ctx, release, obs, planned.fields)
    create_collection(ctx, release, step.target, planned.props, planned.fields)
    ctx.reporter.event(Reason.BUILDING, f"created {step.target}; {planned.build.describe()}")
    try:
        result = planned.build.load(step.target)
    except SourceError:
        ctx.milvus.drop(step.target)  # ours, never aliased: leave Milvus as it was
        raise
    _finish(ctx, release, step.target, result)


def plan_build(ctx: StepContext, release: EmbeddingRelease, obs: Observation) -> PlannedBuild:
    """The build ``spec.source`` asks for, over the base it names (nothing read yet)."""
    ports = BuildPorts(
        release,
        ctx.milvus,
        ctx.data,
        ctx.progress(release.track),
        ctx.settings.batch_size,
        lambda: embedder(ctx, release),
        ctx.cache,
        lambda rows: bulk_import(ctx, release, rows),
    )
    source = release.spec.source
    if source.files is not None:
        return PlannedBuild(FilesBuild(ports), {})
    if source.delta is not None:
        base = delta_base(release, obs)
        identity = base_identity(base)
        props = {P_BASE: identity, P_BUILD_HASH: release.build_hash(identity)}
        return PlannedBuild(DeltaBuild(ports, base.name), props)
    documents = DocumentsBuild(ports, documents_base(ports, obs.alias_target))
    return PlannedBuild(documents, {P_BASE: documents.base or UNSET}, [HASH_FIELD])


def bulk_import(ctx: StepContext, release: EmbeddingRelease, rows: int) -> BulkImport | None:
    """The bulk import a files build of ``rows`` rows uses (``source.files.load``)."""
    if ctx.staging is None or not wants_import(release, ctx.milvus, ctx.staging, rows):
        return None
    return BulkImport(
        ctx.milvus,
        ctx.staging,
        ctx.progress(release.track),
        lambda done, failed: ctx.telemetry.bulk_import(release.track, done, failed),
        lambda message: ctx.reporter.event(Reason.BUILDING, message),
        ctx.settings.import_timeout,
        ctx.settings.poll_interval,
    )


def _finish(ctx: StepContext, release: EmbeddingRelease, target: str, result: BuildResult) -> None:
    """The one tail of every build: verify the flushed row count, then mark it complete."""
    counted = ctx.milvus.row_count(target)  # flushes first
    if counted != result.rows:
        # More: a batch was sent twice after its answer was lost. Upsert kept one copy
        # of each id, but the flushed count includes the replaced rows until Milvus
        # compacts, so it cannot prove the build; a rebuild can.
        why = "a batch was written twice" if counted > result.rows else "rows are missing"
        raise BuildIncomplete(
            f"{target} holds {counted} rows after flush, {result.rows} were inserted "
            f"({why}); the candidate will be rebuilt"
        )
    ctx.milvus.set_properties(
        target, {P_SOURCE_ROWS: str(result.rows), P_BUILD: json.dumps(result.counts)}
    )
    if result.cache_hits is not None and result.cache_misses is not None:
        ctx.telemetry.cache(release.track, result.cache_hits, result.cache_misses)
    ctx.reporter.event(Reason.BUILDING, result.summary)


def create_collection(
    ctx: StepContext,
    release: EmbeddingRelease,
    name: str,
    extra: Mapping[str, str] | None = None,
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
        P_CREATED_AT: ctx.clock(),
    }
    searched = spec.collection.searched
    if spec.embedder is not None:  # the encoder this collection's queries need
        descriptor = encoder_descriptor(spec.embedder, searched.dimension)
        identity[P_ENCODER] = descriptor_json(descriptor)
    if searched.name != PRIMARY_VECTOR:  # the field those queries search
        identity[P_SEARCH_FIELD] = searched.name
    if spec.collection.load.mmap is not None:
        identity[MMAP_PROPERTY] = str(spec.collection.load.mmap).lower()
    ctx.milvus.create_collection(
        name,
        Schema.of(spec.collection, extra_fields),
        identity | dict(extra or {}),
        spec.collection.num_partitions,
    )


def check_schema(
    ctx: StepContext, release: EmbeddingRelease, obs: Observation, extra: Sequence[FieldSpec]
) -> None:
    """Before anything is created: the backend can build the spec's collection, and the
    candidate keeps what readers of the live collection may use (unless the spec says
    ``allowSchemaChange``). SpecError naming the field otherwise."""
    collection = release.spec.collection
    problems = unsupported(collection, ctx.milvus.features())
    live = obs.live
    # An adopted collection is not embrel's: its schema is the application's business.
    if live is not None and live.owned_by_embrel and not collection.allow_schema_change:
        candidate = Schema.of(collection, extra)
        problems += [
            (
                "spec.collection.vectors"
                if why.startswith("vector field")
                else "spec.collection.fields",
                f"{why}, compared with the live collection {live.name}; queries may rely on "
                "it (set spec.collection.allowSchemaChange: true to release it anyway)",
            )
            for why in breaking_changes(ctx.milvus.collection_schema(live.name), candidate)
        ]
    if problems:
        raise SpecError(f"{release.track} version {release.spec.version}", problems)


def embedder(ctx: StepContext, release: EmbeddingRelease) -> EmbedderPort:
    if ctx.embedders is None or release.spec.embedder is None:
        raise SourceError(
            "source.documents needs an embedder, and this controller was started without "
            "one; use the local driver (embrel apply) with `pip install 'embrel[embed]'`"
        )
    return ctx.embedders(release.spec.embedder)


def discard_incomplete(
    ctx: StepContext, release: EmbeddingRelease, step: Step, obs: Observation
) -> None:
    """Drop what an interrupted build left: it is rebuilt from the source (invariant 1)."""
    ctx.milvus.drop(step.target)


def index(ctx: StepContext, release: EmbeddingRelease, step: Step, obs: Observation) -> None:
    """Build the spec's indexes and wait until every row is indexed in each vector index."""
    idx = release.spec.collection.index
    collection = release.spec.collection
    scalar = Schema.of(collection).scalar_indexes
    vectors = {
        v.name: VectorIndex(v.index.type, v.metric, v.index.build_params)
        for v in collection.vectors
    }
    ctx.milvus.ensure_index(
        step.target, idx.type, collection.metric, idx.build_params, scalar, vectors
    )
    timeout = ctx.settings.index_timeout
    deadline = time.monotonic() + timeout
    with ctx.reporter.progress(f"indexing {step.target}", None) as advance:
        seen = 0
        while True:
            indexed, total = ctx.milvus.index_progress(step.target) or (0, 1)
            advance(indexed - seen)
            seen = indexed
            if indexed >= total:
                return
            if time.monotonic() > deadline:
                raise WaitTimedOut(
                    f"index on {step.target} not finished after {timeout:.0f}s "
                    f"({indexed}/{total} rows indexed)"
                )
            time.sleep(ctx.settings.poll_interval)


def load(ctx: StepContext, release: EmbeddingRelease, step: Step, obs: Observation) -> None:
    """Load the target into memory and wait until Milvus says it is loaded."""
    load_collection(ctx, step.target, release.spec.collection.load.replicas)


def load_collection(ctx: StepContext, name: str, replicas: int = 1) -> None:
    ctx.milvus.load(name, replicas)
    deadline = time.monotonic() + ctx.settings.load_timeout
    while not ctx.milvus.is_loaded(name):
        if time.monotonic() > deadline:
            raise WaitTimedOut(f"{name} not loaded after {ctx.settings.load_timeout:.0f}s")
        time.sleep(ctx.settings.poll_interval)
