"""A collection's schema as embrel describes it, what each Milvus backend supports of
it, and which changes would break the application's queries.

Pure: the gateway reads schemas and the server version; the build step asks this
module, before anything is created, whether the spec's collection can be built on the
backend at hand and whether it keeps what the live collection's readers rely on.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from controller.spec import CONTENT_HASH_FIELD, PRIMARY_VECTOR, CollectionSpec, FieldSpec


@dataclass(frozen=True)
class VectorField:
    """A vector field besides ``vector``: its name, type and dimension."""

    name: str
    dimension: int
    type: str = "FLOAT_VECTOR"


@dataclass(frozen=True)
class VectorIndex:
    """The index of a vector field besides ``vector``."""

    type: str
    metric: str
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Schema:
    """The vector's dimension, the scalar fields (with partition key, nullability,
    default and scalar index each), the other vector fields and whether rows may carry
    dynamic keys."""

    dimension: int
    fields: tuple[FieldSpec, ...] = ()
    dynamic_field: bool = False
    vectors: tuple[VectorField, ...] = ()

    @classmethod
    def of(cls, collection: CollectionSpec, extra_fields: Sequence[FieldSpec] = ()) -> Schema:
        """The schema the spec's ``collection`` asks for (plus embrel's own fields)."""
        fields = (*collection.fields, *extra_fields)
        vectors = tuple(VectorField(v.name, v.dimension, v.type) for v in collection.vectors)
        return cls(collection.dimension, fields, collection.dynamic_field, vectors)

    def field(self, name: str) -> FieldSpec | None:
        return next((f for f in self.fields if f.name == name), None)

    def vector(self, name: str) -> VectorField | None:
        return next((v for v in self.vectors if v.name == name), None)

    def dimension_of(self, name: str) -> int | None:
        """The dimension of the vector field ``name`` (``vector`` too); None if absent."""
        if name == PRIMARY_VECTOR:
            return self.dimension
        found = self.vector(name)
        return found.dimension if found else None

    @property
    def scalar_indexes(self) -> dict[str, str]:
        """Field name -> scalar index type, for the fields that have one."""
        return {f.name: f.index for f in self.fields if f.index is not None}


@dataclass(frozen=True)
class Features:
    """What one Milvus backend can build: checked before anything is created, so that a
    spec it cannot serve fails with the backend named instead of half way through."""

    backend: str  # "Milvus Lite 3.2.2", "Milvus 2.3.5"
    partition_key: bool = True
    dynamic_field: bool = True
    nullable: bool = True  # nullable fields and default values came together (2.5)
    mmap: bool = True
    max_replicas: int | None = None  # None: as many as the cluster has query nodes
    # Vector fields per collection, ``vector`` included; None: no limit known.
    max_vector_fields: int | None = 4
    scalar_indexes: frozenset[str] = field(
        default_factory=lambda: frozenset({"INVERTED", "STL_SORT", "TRIE"})
    )


_VERSION = re.compile(r"(\d+)\.(\d+)(?:\.(\d+))?")


def features_of(version: str, lite: bool) -> Features:
    """What a backend supports, from the version it reports (``get_server_version``)."""
    if lite:  # Lite is one process: no replicas; it implements INVERTED scalar indexes only
        return Features(
            f"Milvus Lite {_numbers(version)}",
            mmap=False,
            max_replicas=1,
            max_vector_fields=None,  # 3.2.2 builds and searches 5 and more
            scalar_indexes=frozenset({"INVERTED"}),
        )
    found = _VERSION.search(version)
    # A version it does not report is taken as recent: Milvus refuses what it lacks.
    current = (int(found[1]), int(found[2])) if found else (99, 0)

    def at_least(release: tuple[int, int]) -> bool:
        return current >= release

    indexes = {"STL_SORT", "TRIE"} | ({"INVERTED"} if at_least((2, 4)) else set())
    return Features(
        f"Milvus {_numbers(version)}",
        nullable=at_least((2, 5)),
        mmap=at_least((2, 4)),
        # Several vector fields came with 2.4, at most 4 (the proxy's maxVectorFieldNum).
        max_vector_fields=4 if at_least((2, 4)) else 1,
        scalar_indexes=frozenset(indexes),
    )


def _numbers(version: str) -> str:
    found = _VERSION.search(version)
    return found[0] if found else version or "(unknown version)"


def unsupported(collection: CollectionSpec, features: Features) -> list[tuple[str, str]]:
    """(field path, problem) for each part of ``spec.collection`` the backend cannot build."""
    problems = []
    lacks = f"{features.backend} does not support"
    for i, f in enumerate(collection.fields):
        where = f"spec.collection.fields[{i}]"
        if f.partition_key and not features.partition_key:
            problems.append((f"{where}.partitionKey", f"{lacks} partition keys"))
        if (f.nullable or f.default is not None) and not features.nullable:
            problems.append((where, f"{f.name}: {lacks} nullable fields or default values"))
        if f.index is not None and f.index not in features.scalar_indexes:
            known = ", ".join(sorted(features.scalar_indexes)) or "none"
            problems.append((f"{where}.index", f"{lacks} {f.index} indexes (it has: {known})"))
    vectors = 1 + len(collection.vectors)
    most = features.max_vector_fields
    if most is not None and vectors > most:
        why = (
            f"{lacks} several vector fields"
            if most == 1
            else f"{features.backend} has at most {most} vector fields per collection, not "
            f"{vectors} (vector and {len(collection.vectors)} in vectors)"
        )
        problems.append(("spec.collection.vectors", why))
    if collection.dynamic_field and not features.dynamic_field:
        problems.append(("spec.collection.dynamicField", f"{lacks} dynamic fields"))
    if collection.load.mmap and not features.mmap:
        problems.append(("spec.collection.load.mmap", f"{lacks} memory-mapped collections"))
    limit = features.max_replicas
    if limit is not None and collection.load.replicas > limit:
        problems.append(
            (
                "spec.collection.load.replicas",
                f"{features.backend} serves at most {limit} replica(s), not "
                f"{collection.load.replicas}",
            )
        )
    return problems


def breaking_changes(live: Schema, candidate: Schema) -> list[str]:
    """What the candidate drops or changes that queries against the live collection
    may use: a missing or retyped field, a shorter VARCHAR, nulls where there were none,
    no dynamic field, a vector field (besides ``vector``) missing, retyped or of another
    dimension. A new field, another dimension of ``vector`` (a model change) or another
    index is not breaking."""
    problems = []
    for old in live.fields:
        if old.name == CONTENT_HASH_FIELD:
            continue  # embrel's own, for documents releases
        new = candidate.field(old.name)
        if new is None:
            problems.append(f"field {old.name!r} ({old.type}) is missing")
        elif new.type != old.type:
            problems.append(f"field {old.name!r} changes type from {old.type} to {new.type}")
        elif (new.max_length or 0) < (old.max_length or 0):
            problems.append(
                f"field {old.name!r} shrinks from maxLength {old.max_length} to {new.max_length}"
            )
        elif new.nullable and not old.nullable and new.default is None:
            problems.append(f"field {old.name!r} becomes nullable: readers may get nulls")
    problems += _vector_breaks(live, candidate)
    if live.dynamic_field and not candidate.dynamic_field:
        problems.append(
            "the dynamic field is dropped (keys written beyond the schema would be lost)"
        )
    return problems


def _vector_breaks(live: Schema, candidate: Schema) -> list[str]:
    """A vector field besides ``vector`` that the candidate drops, retypes or reshapes."""
    problems = []
    for old_vector in live.vectors:
        found = candidate.vector(old_vector.name)
        what = f"vector field {old_vector.name!r}"
        if found is None:
            problems.append(f"{what} ({old_vector.type}, dim {old_vector.dimension}) is missing")
        elif found.type != old_vector.type:
            problems.append(f"{what} changes type from {old_vector.type} to {found.type}")
        elif found.dimension != old_vector.dimension:
            problems.append(
                f"{what} changes dimension from {old_vector.dimension} to {found.dimension}"
            )
    return problems
