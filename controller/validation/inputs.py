"""The validation inputs a release names, read and checked before its build.

A golden set or query set with the wrong dimension would otherwise be found only by
the validate step, after the whole candidate was built and indexed; reading them
first turns that into an error before anything is written to Milvus.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from controller.errors import SourceError
from controller.sources.location import shown

if TYPE_CHECKING:
    from controller.ports import DataPort
    from controller.spec import EmbeddingRelease, QuerySetSpec


def check_validation_inputs(release: EmbeddingRelease, data: DataPort) -> None:
    """Read the golden set (vectors or labelled texts) and the query sets the spec names,
    before anything is built; SourceError for the first one that is unreadable, empty, or
    not of ``spec.collection.dimension``."""
    spec = release.spec
    dimension = spec.collection.dimension
    golden = spec.validation.golden_set
    if golden is not None and golden.texts is not None:
        data.read_labelled_queries(golden.texts)  # each side embeds them at validation
    if golden is not None and golden.uri is not None:
        golden_set = data.read_golden_set(golden.uri)
        _check_dimension(
            int(golden_set.queries.shape[1]),
            dimension,
            f"golden set {golden_set.origin} (validation.goldenSet.uri)",
        )
    query_sets = (
        ("validation.queries", spec.validation.queries, spec.validation.seed),
        ("monitoring.queries", spec.monitoring.queries, spec.validation.seed),
    )
    for field, queries, seed in query_sets:
        if queries is not None:
            _check_query_set(data, field, queries, seed, dimension)


def _check_query_set(
    data: DataPort, field: str, queries: QuerySetSpec, seed: int, dimension: int
) -> None:
    # One row is enough to know the dimension; the validate step draws its own sample.
    vectors = data.read_query_vectors(queries.uri, queries.vector_field, 1, seed)
    _check_dimension(
        int(vectors.shape[1]), dimension, f"query set {shown(queries.uri)} ({field}.uri)"
    )


def _check_dimension(actual: int, dimension: int, what: str) -> None:
    if actual != dimension:
        raise SourceError(
            f"{what} has {actual}-dim vectors, the spec says collection.dimension: "
            f"{dimension}; queries must come from the same embedding model as the collection"
        )
