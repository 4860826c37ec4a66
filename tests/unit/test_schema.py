"""spec.collection's schema fields, what each backend supports, breaking changes, and
that the fields added to the spec never change the hashes of specs that do not use them
(an upgraded controller must not rebuild every live release)."""

from __future__ import annotations

import numpy as np
import pytest

from controller.errors import SourceError, SpecError
from controller.schema import (
    Features,
    Schema,
    VectorField,
    breaking_changes,
    features_of,
    unsupported,
)
from controller.sources.base import VectorBatch
from controller.spec import CollectionSpec, FieldSpec, VectorFieldSpec, parse_release
from controller.validation.sanity import check_batch

SPEC = """apiVersion: embrel.dev/v1alpha1
kind: EmbeddingRelease
metadata: {name: products, namespace: shop}
spec:
  alias: products
  version: v7
  model: {name: m, revision: "1"}
  milvus: {uri: "http://milvus:19530"}
  collection:
    dimension: 64
    fields: [{name: title, type: VARCHAR, maxLength: 64%s}]%s
  source: {files: {uri: "data/*.parquet"}}
"""
# Recorded by the controller before the schema fields existed, for SPEC % ("", "").
HASHES = ("c4731654bf29e2ee", "85125ce19d72674d", "a87c47ae2b06ad99", "e17730d6a4e64584")


def _hashes(field: str = "", collection: str = "") -> tuple[str, ...]:
    r = parse_release((SPEC % (field, collection)).encode(), "test")
    return r.spec_hash(), r.build_hash(), r.build_hash("base1"), r.validation_hash()


def test_hashes_of_existing_specs_are_unchanged() -> None:
    assert _hashes() == HASHES
    # As the Kubernetes API server defaults a CR: every new field spelled at its default.
    spelled = ", partitionKey: false, nullable: false, default: null, index: null"
    more = (
        "\n    dynamicField: false\n    load: {replicas: 1}\n    allowSchemaChange: false"
        "\n    vectors: []\n    searchField: vector"
    )
    assert _hashes(spelled, more) == HASHES


def test_a_schema_field_in_use_is_another_build() -> None:
    assert _hashes(", index: TRIE")[1] != HASHES[1]
    assert _hashes("", "\n    dynamicField: true")[1] != HASHES[1]
    assert _hashes("", "\n    vectors: [{name: image, dimension: 8}]")[1] != HASHES[1]


@pytest.mark.parametrize(
    ("field", "problem"),
    [
        ({"type": "DOUBLE", "partitionKey": True}, "partition key must be INT64 or VARCHAR"),
        ({"type": "INT64", "partitionKey": True, "nullable": True}, "cannot be nullable"),
        ({"type": "INT64", "default": "x"}, "default 'x' is not a INT64"),
        ({"type": "INT64", "default": True}, "default True is not a INT64"),
        ({"type": "BOOL", "default": 1}, "default 1 is not a BOOL"),
        ({"type": "INT32", "index": "TRIE"}, "TRIE index is for VARCHAR"),
        ({"type": "VARCHAR", "maxLength": 8, "index": "STL_SORT"}, "STL_SORT index is for"),
        ({"type": "JSON", "index": "INVERTED"}, "JSON fields take no scalar index"),
    ],
)
def test_incoherent_fields_are_refused_with_the_field_named(
    field: dict[str, object], problem: str
) -> None:
    with pytest.raises(ValueError, match=problem) as caught:
        FieldSpec.model_validate({"name": "f"} | field)
    assert "'f'" in str(caught.value)


def test_one_partition_key_and_partitions_only_with_one() -> None:
    key = {"name": "a", "type": "INT64", "partitionKey": True}
    with pytest.raises(ValueError, match="at most one partition key"):
        CollectionSpec.model_validate({"dimension": 8, "fields": [key, key | {"name": "b"}]})
    with pytest.raises(ValueError, match="numPartitions needs a field with partitionKey"):
        CollectionSpec.model_validate({"dimension": 8, "numPartitions": 4})
    spec = CollectionSpec.model_validate({"dimension": 8, "fields": [key], "numPartitions": 4})
    assert spec.partition_key is not None and spec.partition_key.name == "a"


def test_a_bad_schema_field_is_a_spec_error_with_its_path() -> None:
    with pytest.raises(SpecError) as caught:
        parse_release((SPEC % (", index: STL_SORT", "")).encode(), "release.yaml")
    assert "spec.collection.fields" in str(caught.value) and "STL_SORT" in str(caught.value)


@pytest.mark.parametrize(
    ("version", "lite", "nullable", "inverted", "mmap"),
    [
        ("v2.3.5", False, False, False, False),
        ("v2.4.13", False, False, True, True),
        ("2.5.4", False, True, True, True),
        ("milvus_lite-3.2.2", True, True, True, False),
        ("", False, True, True, True),  # unknown: taken as recent, Milvus has the last word
    ],
)
def test_features_follow_the_version(
    version: str, lite: bool, nullable: bool, inverted: bool, mmap: bool
) -> None:
    features = features_of(version, lite)
    assert features.nullable is nullable and features.mmap is mmap
    assert ("INVERTED" in features.scalar_indexes) is inverted
    assert features.max_replicas == (1 if lite else None)


def test_unsupported_names_each_path_and_the_backend() -> None:
    collection = CollectionSpec.model_validate(
        {
            "dimension": 8,
            "fields": [
                {"name": "a", "type": "INT64", "index": "INVERTED"},
                {"name": "b", "type": "FLOAT", "nullable": True},
            ],
            "load": {"replicas": 2, "mmap": True},
        }
    )
    problems = dict(unsupported(collection, features_of("v2.3.5", lite=False)))
    assert set(problems) == {
        "spec.collection.fields[0].index",
        "spec.collection.fields[1]",
        "spec.collection.load.mmap",
    }
    assert all("Milvus 2.3.5" in why for why in problems.values())
    lite = dict(unsupported(collection, features_of("milvus_lite-3.2.2", lite=True)))
    assert "at most 1 replica" in lite["spec.collection.load.replicas"]
    assert unsupported(collection, Features("everything")) == []


def _field(name: str, kind: str = "INT64", **more: object) -> FieldSpec:
    return FieldSpec.model_validate({"name": name, "type": kind} | more)


def test_breaking_changes_are_what_readers_may_rely_on() -> None:
    live = Schema(
        8,
        (_field("a"), _field("s", "VARCHAR", maxLength=32), _field("n"), _field("gone")),
        dynamic_field=True,
    )
    candidate = Schema(
        16,  # another dimension is a model change, not a schema break
        (
            _field("a", "INT32"),
            _field("s", "VARCHAR", maxLength=16),
            _field("n", nullable=True),
            _field("new"),
        ),
    )
    assert breaking_changes(live, candidate) == [
        "field 'a' changes type from INT64 to INT32",
        "field 's' shrinks from maxLength 32 to 16",
        "field 'n' becomes nullable: readers may get nulls",
        "field 'gone' (INT64) is missing",
        "the dynamic field is dropped (keys written beyond the schema would be lost)",
    ]
    kept = Schema(8, (*live.fields, _field("extra", index="STL_SORT")), dynamic_field=True)
    assert breaking_changes(live, kept) == []


IMAGE = {"name": "image", "dimension": 4}


def test_a_second_vector_field_is_parsed_with_its_own_index() -> None:
    spec = CollectionSpec.model_validate(
        {"dimension": 8, "vectors": [IMAGE | {"metric": "L2", "index": {"type": "IVF_FLAT"}}]}
    )
    (image,) = spec.vectors
    assert (image.name, image.type, image.dimension, image.metric) == (
        "image",
        "FLOAT_VECTOR",
        4,
        "L2",
    )
    assert image.index.build_params == {"nlist": 128}
    assert Schema.of(spec).vectors == (VectorField("image", 4),)


@pytest.mark.parametrize(
    ("collection", "problem"),
    [
        ({"vectors": [IMAGE | {"dimension": 1}]}, "greater than or equal to 2"),
        ({"vectors": [IMAGE | {"dimension": 40000}]}, "less than or equal to 32768"),
        ({"vectors": [IMAGE, IMAGE]}, "vectors names must be unique"),
        ({"vectors": [IMAGE | {"name": "vector"}]}, "reserved"),
        ({"vectors": [IMAGE | {"name": "bad-name"}]}, "should match pattern"),
        (
            {"vectors": [IMAGE], "fields": [{"name": "image", "type": "INT64"}]},
            "have the names of scalar fields",
        ),
        (
            {"vectors": [IMAGE | {"index": {"type": "IVF_PQ", "params": {"m": 3}}}]},
            "must divide its dimension",
        ),
        ({"vectors": [IMAGE | {"index": {"type": "INVERTED"}}]}, "'HNSW'"),  # a scalar index
        ({"vectors": [IMAGE | {"type": "BINARY_VECTOR"}]}, "'FLOAT_VECTOR'"),
        (
            {"fields": [{"name": "image", "type": "FLOAT_VECTOR", "dim": 4}]},
            "field 'image' is a vector: declare it in collection.vectors",
        ),
    ],
)
def test_a_bad_vector_field_is_refused(collection: dict[str, object], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        CollectionSpec.model_validate({"dimension": 8} | collection)


SEARCHING = "\n    vectors: [{name: image, dimension: 4, metric: L2}]\n    searchField: %s"


def test_the_search_field_is_vector_unless_the_spec_names_another() -> None:
    plain = parse_release((SPEC % ("", "")).encode(), "r.yaml").spec.collection
    assert plain.search_field == "vector"
    assert (plain.searched.name, plain.searched.dimension, plain.searched.metric) == (
        "vector",
        64,
        "COSINE",
    )
    image = parse_release((SPEC % ("", SEARCHING % "image")).encode(), "r.yaml")
    searched = image.spec.collection.searched
    assert (searched.name, searched.dimension, searched.metric) == ("image", 4, "L2")
    assert "collection.searchField: image, a 4-dim field" in (
        image.spec.collection.search_dimension_text()
    )
    # Another search field is another build: the same rows, searched elsewhere.
    r = parse_release((SPEC % ("", SEARCHING % "vector")).encode(), "r.yaml")
    assert r.build_hash() != image.build_hash() and r.spec_hash() != image.spec_hash()


@pytest.mark.parametrize("name", ["audio", "id", "title"])
def test_a_search_field_that_is_no_vector_field_is_a_spec_error(name: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_release((SPEC % ("", SEARCHING % name)).encode(), "r.yaml")
    problems = dict(caught.value.problems)
    assert problems.keys() == {"spec.collection.searchField"}, problems
    assert f"'{name}' is not a vector field" in problems["spec.collection.searchField"]
    assert "['vector', 'image']" in problems["spec.collection.searchField"]


@pytest.mark.parametrize(
    ("source", "problem"),
    [
        ('{files: {uri: "d/*.parquet"}}', ""),
        ('{files: {uri: "d/*.parquet", load: bulkImport}}', "inserted, not bulk imported"),
        ('{delta: {upserts: {uri: "u.parquet"}}}', "read from the columns of source.files"),
    ],
)
def test_vectors_come_from_the_columns_of_source_files(source: str, problem: str) -> None:
    text = (SPEC % ("", "\n    vectors: [{name: image, dimension: 4}]")).replace(
        '{files: {uri: "data/*.parquet"}}', source
    )
    if not problem:
        assert parse_release(text.encode(), "r.yaml").spec.collection.vectors[0].name == "image"
        return
    with pytest.raises(SpecError, match=problem) as caught:
        parse_release(text.encode(), "r.yaml")
    assert "spec" in str(caught.value)


@pytest.mark.parametrize(
    ("version", "lite", "most"),
    [("v2.3.5", False, 1), ("v2.4.13", False, 4), ("2.5.4", False, 4), ("3.2.2", True, None)],
)
def test_vector_fields_per_collection_follow_the_version(
    version: str, lite: bool, most: int | None
) -> None:
    assert features_of(version, lite).max_vector_fields == most


def test_several_vector_fields_are_unsupported_on_2_3_with_the_backend_named() -> None:
    one = CollectionSpec.model_validate({"dimension": 8, "vectors": [IMAGE]})
    problems = unsupported(one, features_of("v2.3.5", lite=False))
    assert problems == [
        ("spec.collection.vectors", "Milvus 2.3.5 does not support several vector fields")
    ]
    assert unsupported(one, features_of("v2.4.13", lite=False)) == []
    assert unsupported(one, features_of("milvus_lite-3.2.2", lite=True)) == []
    four = [IMAGE | {"name": f"v{i}"} for i in range(4)]
    many = CollectionSpec.model_validate({"dimension": 8, "vectors": four})
    (path, why), *_ = unsupported(many, features_of("v2.4.13", lite=False))
    assert path == "spec.collection.vectors"
    assert (
        why
        == "Milvus 2.4.13 has at most 4 vector fields per collection, not 5 (vector and 4 in vectors)"
    )


def test_a_dropped_or_reshaped_vector_field_is_a_breaking_change() -> None:
    live = Schema(
        8, vectors=(VectorField("image", 4), VectorField("audio", 16), VectorField("t", 2))
    )
    candidate = Schema(
        16,  # vector's own dimension is a model change
        vectors=(
            VectorField("image", 8),
            VectorField("t", 2, "BINARY_VECTOR"),
            VectorField("x", 2),
        ),
    )
    assert breaking_changes(live, candidate) == [
        "vector field 'image' changes dimension from 4 to 8",
        "vector field 'audio' (FLOAT_VECTOR, dim 16) is missing",
        "vector field 't' changes type from FLOAT_VECTOR to BINARY_VECTOR",
    ]
    assert breaking_changes(live, Schema(8, vectors=(*live.vectors, VectorField("new", 3)))) == []


def _image_batch(images: list[object]) -> VectorBatch:
    n = len(images)
    ids = np.arange(10, 10 + n, dtype=np.int64)
    vectors = np.ones((n, 8), dtype=np.float32)
    return VectorBatch(ids, vectors, {"image": images}, "data/a.parquet", 100)


@pytest.mark.parametrize(
    ("bad", "problem"),
    [
        ([1.0, 2.0, 3.0], "vector has 3 values, spec.collection.vectors[0].dimension is 4"),
        (None, "value is null; every row needs a 4-dim vector"),
        ("1,2,3,4", "FLOAT_VECTOR needs a list of 4 numbers"),
        ([1.0, True, 0.0, 0.0], "FLOAT_VECTOR needs a list of 4 numbers"),
        ([1.0, float("nan"), 0.0, 0.0], "not a finite float32"),
        ([1.0, 1e300, 0.0, 0.0], "not a finite float32"),
        ([0.0, 0.0, 0.0, 0.0], "all zeros"),
    ],
)
def test_a_bad_value_of_a_second_vector_names_file_row_and_field(bad: object, problem: str) -> None:
    image = VectorFieldSpec.model_validate(IMAGE)
    good = [1.0, 0.0, 0.0, 0.0]
    batch = _image_batch([good, good, bad])
    with pytest.raises(SourceError) as caught:
        check_batch(batch, 8, "COSINE", (), [image])
    message = str(caught.value)
    assert message.startswith("data/a.parquet, row 102 (id 12), vector field 'image': ")
    assert problem in message
    check_batch(_image_batch([good, [1, 2, 3, 4]]), 8, "COSINE", (), [image])  # ints are numbers
    l2 = VectorFieldSpec.model_validate(IMAGE | {"metric": "L2"})
    check_batch(_image_batch([[0.0] * 4]), 8, "COSINE", (), [l2])  # zeros are fine for L2
