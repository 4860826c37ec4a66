"""spec.collection's schema fields, what each backend supports, breaking changes, and
that the fields added to the spec never change the hashes of specs that do not use them
(an upgraded controller must not rebuild every live release)."""

from __future__ import annotations

import pytest

from controller.errors import SpecError
from controller.schema import Features, Schema, breaking_changes, features_of, unsupported
from controller.spec import CollectionSpec, FieldSpec, parse_release

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
    more = "\n    dynamicField: false\n    load: {replicas: 1}\n    allowSchemaChange: false"
    assert _hashes(spelled, more) == HASHES


def test_a_schema_field_in_use_is_another_build() -> None:
    assert _hashes(", index: TRIE")[1] != HASHES[1]
    assert _hashes("", "\n    dynamicField: true")[1] != HASHES[1]


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
