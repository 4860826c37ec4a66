"""The spec model: defaults, field-path errors, collection naming."""

from pathlib import Path

import pytest

from controller.errors import SpecError
from controller.spec import collection_name, parse_release

EXAMPLE = Path(__file__).parents[2] / "examples" / "demo" / "releases" / "products-v1.yaml"

MINIMAL = """
apiVersion: embrel.dev/v1alpha1
kind: EmbeddingRelease
metadata: {name: products}
spec:
  alias: products
  version: v1
  model: {name: m}
  milvus: {uri: ./milvus.db}
  collection: {dimension: 8}
  source: {files: {uri: data.parquet}}
"""


def problems(text: str) -> dict[str, str]:
    with pytest.raises(SpecError) as err:
        parse_release(text, "release.yaml")
    assert "release.yaml" in str(err.value)
    return dict(err.value.problems)


def test_minimal_spec_gets_documented_defaults() -> None:
    r = parse_release(MINIMAL)
    assert r.track == "default/products"
    assert r.spec.collection.metric == "COSINE"
    assert r.spec.collection.index.type == "HNSW"
    assert r.spec.promotion.mode == "auto"
    assert (r.spec.retention.keep_previous, r.spec.retention.keep_loaded) == (2, 1)
    assert r.spec.milvus.is_lite
    assert r.collection_name() == "products__v1"


def test_the_shipped_example_parses() -> None:
    r = parse_release(EXAMPLE.read_text(), str(EXAMPLE))
    assert r.spec.validation.golden_set is not None
    assert r.spec.validation.golden_set.min_recall == 0.8
    assert r.spec.source.files.vector_field == "embedding"


@pytest.mark.parametrize(
    ("change", "path", "says"),
    [
        (
            ("dimension: 8", "dimension: 8, dimensions: 9"),
            "spec.collection.dimensions",
            "unknown field",
        ),
        (
            ("dimension: 8", "dimension: 1"),
            "spec.collection.dimension",
            "greater than or equal to 2",
        ),
        (("dimension: 8", "dimension: 8, metric: cosine"), "spec.collection.metric", "'COSINE'"),
        (("alias: products", "alias: my-products"), "spec.alias", "not a valid Milvus alias"),
        (("  version: v1\n", ""), "spec.version", "missing"),
        (
            ("uri: ./milvus.db", "uri: ./milvus.db, token: s3cret"),
            "spec.milvus",
            "must not be written",
        ),
    ],
)
def test_errors_name_the_field(change: tuple[str, str], path: str, says: str) -> None:
    found = problems(MINIMAL.replace(*change))
    assert path in found, found
    assert says in found[path]


def test_secret_value_is_not_echoed_in_the_error() -> None:
    found = problems(MINIMAL.replace("uri: ./milvus.db", "uri: ./milvus.db, password: hunter2"))
    assert "hunter2" not in str(found)


def test_retention_and_fields_cross_checks() -> None:
    text = MINIMAL + "  retention: {keepPrevious: 1, keepLoaded: 2}\n"
    assert "cannot exceed" in problems(text)["spec.retention"]
    text = MINIMAL.replace("dimension: 8", "dimension: 8, fields: [{name: t, type: VARCHAR}]")
    assert "needs maxLength" in problems(text)["spec.collection.fields[0]"]


def test_malformed_yaml_names_line() -> None:
    found = problems("apiVersion: [unclosed\n")
    assert "malformed YAML (line" in found[""]
    assert "expected a YAML mapping" in problems("- just a list")[""]


def test_wrong_api_version_and_kind() -> None:
    found = problems(
        MINIMAL.replace("v1alpha1", "v2").replace("kind: EmbeddingRelease", "kind: Foo")
    )
    assert set(found) >= {"apiVersion", "kind"}


def test_collection_names_are_valid_and_distinct() -> None:
    assert collection_name("products", "v7") == "products__v7"
    a, b = collection_name("p", "1.0-x"), collection_name("p", "1_0_x")
    assert a != b and b == "p__1_0_x"
    assert a.replace("_", "").isalnum()
    long_names = {collection_name("a" * 200, "v" * 100), collection_name("a" * 200, "v" * 99 + "w")}
    assert len(long_names) == 2
    assert all(len(n) <= 255 for n in long_names)


def test_build_hash_ignores_operational_fields() -> None:
    base = parse_release(MINIMAL)
    manual = parse_release(MINIMAL + "  promotion: {mode: manual}\n")
    other_data = parse_release(MINIMAL.replace("data.parquet", "other.parquet"))
    assert base.build_hash() == manual.build_hash()
    assert base.spec_hash() != manual.spec_hash()
    assert base.build_hash() != other_data.build_hash()


def test_suspend_and_history_limit_are_not_part_of_the_spec_identity() -> None:
    base = parse_release(MINIMAL)
    operated = parse_release(MINIMAL + "  suspend: true\n  historyLimit: 3\n")
    assert (operated.spec.suspend, operated.spec.history_limit) == (True, 3)
    assert (base.spec.suspend, base.spec.history_limit) == (False, 10)
    assert base.spec_hash() == operated.spec_hash()
    assert base.build_hash() == operated.build_hash()


@pytest.mark.parametrize("limit", ["0", "-1", "1001", "ten"])
def test_a_bad_history_limit_names_the_field(limit: str) -> None:
    with pytest.raises(SpecError) as exc:
        parse_release(MINIMAL + f"  historyLimit: {limit}\n")
    assert "spec.historyLimit" in str(exc.value)
