"""The validation inputs a release names, read and checked before its build.

A golden set or query set with the wrong dimension would otherwise be found only by
the validate step, after the whole candidate was built and indexed; reading them
first turns that into an error before anything is written to Milvus.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from controller.errors import SourceError
from controller.sources.location import shown

if TYPE_CHECKING:
    from controller.ports import DataPort
    from controller.spec import CollectionSpec, EmbeddingRelease, QuerySetSpec


def check_validation_inputs(release: EmbeddingRelease, data: DataPort) -> None:
    """Read the golden set (vectors or labelled texts) and the query sets the spec names,
    before anything is built; SourceError for the first one that is unreadable, empty, or
    not of the search field's dimension (``spec.collection.searchField``)."""
    spec = release.spec
    collection = spec.collection
    golden = spec.validation.golden_set
    if golden is not None and golden.texts is not None:
        data.read_labelled_queries(golden.texts)  # each side embeds them at validation
    if golden is not None and golden.uri is not None:
        golden_set = data.read_golden_set(golden.uri)
        check_query_dimension(
            golden_set.queries,
            collection,
            f"golden set {golden_set.origin} (validation.goldenSet.uri)",
        )
    query_sets = (
        ("validation.queries", spec.validation.queries, spec.validation.seed),
        ("monitoring.queries", spec.monitoring.queries, spec.validation.seed),
    )
    for field, queries, seed in query_sets:
        if queries is not None:
            _check_query_set(data, field, queries, seed, collection)


def _check_query_set(
    data: DataPort, field: str, queries: QuerySetSpec, seed: int, collection: CollectionSpec
) -> None:
    # One row is enough to know the dimension; the validate step draws its own sample.
    vectors = data.read_query_vectors(queries.uri, queries.vector_field, 1, seed)
    check_query_dimension(vectors, collection, f"query set {shown(queries.uri)} ({field}.uri)")


def check_query_dimension(queries: np.ndarray, collection: CollectionSpec, what: str) -> None:
    """SourceError unless ``queries`` are vectors of the search field's dimension."""
    if queries.ndim == 2 and queries.shape[1] == collection.searched.dimension:
        return
    got = f"{queries.shape[1]}-dim" if queries.ndim == 2 else f"shape {queries.shape}"
    raise SourceError(
        f"{what} has {got} vectors, the spec says {collection.search_dimension_text()}; "
        "queries must come from the same embedding model as the collection"
    )
