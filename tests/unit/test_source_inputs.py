"""Bad input found by the check pass, before the collection exists: extra fields against
their Milvus type, golden sets and query sets read and checked before the build."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from controller.errors import SourceError
from controller.sources.base import VectorBatch
from controller.sources.local import LocalFiles, read_golden_set, read_query_vectors
from controller.spec import FieldSpec, parse_release
from controller.validation.inputs import check_validation_inputs
from controller.validation.sanity import check_batch, check_field_values

DIM = 4


def field(name: str, kind: str, max_length: int | None = None) -> FieldSpec:
    return FieldSpec(name=name, type=kind, max_length=max_length)  # type: ignore[arg-type]


def write_source(path: Path, rows: int, **columns: pa.Array | list[Any]) -> Path:
    vectors = [[float(i + 1), 1.0, 0.5, 0.25] for i in range(rows)]
    table = {"id": pa.array(range(rows), pa.int64()), "vector": pa.array(vectors)}
    table |= {name: pa.array(values) for name, values in columns.items()}
    pq.write_table(pa.table(table), path)
    return path


def check_source(path: Path, fields: list[FieldSpec], batch_size: int = 1000) -> None:
    """The check pass a files build runs before it creates the collection."""
    spec = parse_release(
        "apiVersion: embrel.dev/v1alpha1\nkind: EmbeddingRelease\nmetadata: {name: p}\n"
        f"spec: {{alias: p, version: v1, model: {{name: m}}, milvus: {{uri: ./m.db}},\n"
        f"  collection: {{dimension: {DIM}}}, source: {{files: {{uri: {path.name}}}}}}}\n"
    ).spec
    assert spec.source.files is not None
    source = LocalFiles(path.parent).open_vectors(spec.source.files, [f.name for f in fields])
    for batch in source.batches(batch_size):
        check_batch(batch, DIM, "COSINE", fields)


# --- extra fields -----------------------------------------------------------------


def test_an_int64_field_whose_parquet_column_is_string(tmp_path: Path) -> None:
    path = write_source(tmp_path / "d.parquet", 3, views=["1", "2", "x"])
    with pytest.raises(SourceError) as err:
        check_source(path, [field("views", "INT64")])
    text = str(err.value)
    assert f"{path}, row 0 (id 0), field 'views' (INT64)" in text
    assert "'1' (str)" in text and "INT64 needs an integer" in text


def test_a_null_in_an_extra_field_names_file_row_and_field(tmp_path: Path) -> None:
    titles = [f"t{i}" for i in range(3000)]
    titles[2999] = None  # type: ignore[call-overload]
    path = write_source(tmp_path / "d.parquet", 3000, title=titles)
    with pytest.raises(SourceError) as err:
        check_source(path, [field("title", "VARCHAR", 64)])
    assert f"{path}, row 2999 (id 2999), field 'title' (VARCHAR): value is null" in str(err.value)


@pytest.mark.parametrize(
    ("kind", "bad", "bits"),
    [("INT8", 128, 8), ("INT8", -129, 8), ("INT16", 40_000, 16), ("INT32", 2**31, 32)],
)
def test_small_integers_out_of_range(tmp_path: Path, kind: str, bad: int, bits: int) -> None:
    path = write_source(tmp_path / "d.parquet", 3, n=pa.array([1, bad, 2], pa.int64()))
    with pytest.raises(SourceError) as err:
        check_source(path, [field("n", kind)])
    text = str(err.value)
    assert f"row 1 (id 1), field 'n' ({kind}): value {bad} is out of range" in text
    assert f"{bits}-bit integer holds {-(2 ** (bits - 1))}..{2 ** (bits - 1) - 1}" in text


def test_integers_at_the_ends_of_their_range_pass(tmp_path: Path) -> None:
    path = write_source(tmp_path / "d.parquet", 2, n=pa.array([-128, 127], pa.int64()))
    check_source(path, [field("n", "INT8")])


def test_a_varchar_longer_than_max_length_in_utf8_bytes(tmp_path: Path) -> None:
    # 4 characters, 8 bytes: Milvus counts bytes, so maxLength 6 is too short.
    path = write_source(tmp_path / "d.parquet", 2, name=["ok", "éééé"])
    with pytest.raises(SourceError) as err:
        check_source(path, [field("name", "VARCHAR", 6)])
    assert "row 1 (id 1), field 'name' (VARCHAR): value is 8 bytes long in UTF-8, over " in str(
        err.value
    )
    check_source(path, [field("name", "VARCHAR", 8)])  # exactly maxLength passes


@pytest.mark.parametrize(
    ("kind", "values", "says"),
    [
        ("BOOL", ["true", "false"], "'true' (str); BOOL needs true or false"),
        ("BOOL", [1, 0], "1 (int); BOOL needs true or false"),
        ("FLOAT", ["1.5", "2"], "'1.5' (str); FLOAT needs a number"),
        ("DOUBLE", [True, False], "True (bool); DOUBLE needs a number"),
        ("INT64", [1.0, 2.0], "1.0 (float); INT64 needs an integer"),
    ],
)
def test_wrongly_typed_values(tmp_path: Path, kind: str, values: list[Any], says: str) -> None:
    path = write_source(tmp_path / "d.parquet", 2, f=values)
    with pytest.raises(SourceError) as err:
        check_source(path, [field("f", kind)])
    assert f"row 0 (id 0), field 'f' ({kind}): value is {says}" in str(err.value)


def test_a_float_beyond_float32_range(tmp_path: Path) -> None:
    path = write_source(tmp_path / "d.parquet", 2, f=[1.0, 1e39])
    with pytest.raises(SourceError, match=r"row 1 \(id 1\), field 'f' \(FLOAT\).*too large"):
        check_source(path, [field("f", "FLOAT")])
    check_source(path, [field("f", "DOUBLE")])


def test_json_lines_fields_checked_the_same_way(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    rows = [{"id": i, "vector": [1.0, 0.0, 0.0, 1.0], "n": v} for i, v in enumerate([1, "2"])]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    with pytest.raises(SourceError, match=r"d.jsonl, row 1 \(id 1\), field 'n' \(INT32\)"):
        check_source(path, [field("n", "INT32")])


def test_a_lone_surrogate_in_a_json_varchar(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"id": 1, "vector": [1, 0, 0, 1], "s": "a\\ud800"}\n')
    with pytest.raises(SourceError, match="lone surrogate"):
        check_source(path, [field("s", "VARCHAR", 100)])


def test_json_fields_take_any_json_value_but_not_bytes() -> None:
    ids = np.arange(3, dtype=np.int64)
    check_field_values({"j": [{"a": [1]}, "s", 3]}, [field("j", "JSON")], "f.parquet", 0, ids)
    with pytest.raises(SourceError, match=r"f.parquet, row 11 \(id 1\), field 'j' \(JSON\)"):
        check_field_values({"j": [{}, b"\x00", 1]}, [field("j", "JSON")], "f.parquet", 10, ids)


def test_valid_fields_of_every_type_pass() -> None:
    fields = [
        field("s", "VARCHAR", 10),
        field("i", "INT64"),
        field("b", "BOOL"),
        field("f", "FLOAT"),
        field("d", "DOUBLE"),
        field("j", "JSON"),
    ]
    values = {"s": ["a", "b"], "i": [2**63 - 1, -(2**63)], "b": [True, False]}
    values |= {"f": [1, 2.5], "d": [float("nan"), 1e300], "j": [[1], {"k": None}]}
    batch = VectorBatch(np.arange(2, dtype=np.int64), np.ones((2, DIM), np.float32), values, "x", 0)
    check_batch(batch, DIM, "COSINE", fields)


# --- golden sets and query sets ------------------------------------------------------


def write_golden(path: Path, vectors: list[Any], relevant: list[Any]) -> Path:
    table = pa.table(
        {
            "vector": pa.array(vectors, pa.list_(pa.float32())),
            "relevant_ids": pa.array(relevant, pa.list_(pa.int64())),
        }
    )
    pq.write_table(table, path)
    return path


def test_an_empty_golden_set_is_refused(tmp_path: Path) -> None:
    path = write_golden(tmp_path / "g.parquet", [], [])
    with pytest.raises(SourceError, match="holds no queries"):
        read_golden_set(path)


@pytest.mark.parametrize("relevant", [[], None])
def test_a_golden_query_without_relevant_ids_is_refused(tmp_path: Path, relevant: Any) -> None:
    path = write_golden(tmp_path / "g.parquet", [[1.0, 0.0]] * 3, [[1], relevant, [2]])
    with pytest.raises(SourceError) as err:
        read_golden_set(path)
    assert f"golden set {path}, row 1: 'relevant_ids' is empty or null" in str(err.value)


def test_golden_set_nulls_and_ragged_vectors_name_the_row(tmp_path: Path) -> None:
    path = write_golden(tmp_path / "g.parquet", [[1.0, 0.0], [1.0]], [[1], [2]])
    with pytest.raises(SourceError, match=r"row 1: 'vector' has 1 values but row 0 has 2"):
        read_golden_set(path)
    path = write_golden(tmp_path / "g.parquet", [[1.0, 0.0], [1.0, None]], [[1], [2]])
    with pytest.raises(SourceError, match=r"row 1: 'vector' holds a null"):
        read_golden_set(path)
    path = write_golden(tmp_path / "g.parquet", [[1.0, 0.0]] * 2, [[1], [2, None]])
    with pytest.raises(SourceError, match=r"row 1: 'relevant_ids' holds a null"):
        read_golden_set(path)


def test_golden_set_of_the_wrong_column_types(tmp_path: Path) -> None:
    path = tmp_path / "g.parquet"
    pq.write_table(pa.table({"vector": ["a"], "relevant_ids": pa.array([[1]])}), path)
    with pytest.raises(SourceError, match=r"column 'vector' has type string; expected lists"):
        read_golden_set(path)


def test_a_good_golden_set_reads(tmp_path: Path) -> None:
    path = write_golden(tmp_path / "g.parquet", [[1.0, 0.0], [0.0, 1.0]], [[1, 2], [3]])
    golden = read_golden_set(path)
    assert golden.queries.shape == (2, 2)
    assert [r.tolist() for r in golden.relevant] == [[1, 2], [3]]


def test_an_empty_query_set_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "q.parquet"
    pq.write_table(pa.table({"vector": pa.array([], pa.list_(pa.float32()))}), path)
    with pytest.raises(SourceError, match="holds no rows"):
        read_query_vectors(path, "vector", 10, 0)


def release_with(tmp_path: Path, validation: str, monitoring: str = "{}") -> Any:
    return parse_release(
        "apiVersion: embrel.dev/v1alpha1\nkind: EmbeddingRelease\nmetadata: {name: p}\n"
        "spec: {alias: p, version: v1, model: {name: m}, milvus: {uri: ./m.db},\n"
        f"  collection: {{dimension: {DIM}}}, source: {{files: {{uri: d.parquet}}}},\n"
        f"  validation: {validation}, monitoring: {monitoring}}}\n"
    )


def test_validation_inputs_of_the_wrong_dimension_are_refused_before_the_build(
    tmp_path: Path,
) -> None:
    write_golden(tmp_path / "g.parquet", [[1.0, 0.0]], [[1]])  # 2-dim, the spec says 4
    release = release_with(tmp_path, "{goldenSet: {uri: g.parquet, minRecall: 0.5}}")
    with pytest.raises(SourceError) as err:
        check_validation_inputs(release, LocalFiles(tmp_path))
    assert "golden set" in str(err.value) and "g.parquet" in str(err.value)
    assert "has 2-dim vectors, the spec says collection.dimension: 4" in str(err.value)

    queries = tmp_path / "q.parquet"
    pq.write_table(pa.table({"v": pa.array([[1.0] * 3], pa.list_(pa.float32()))}), queries)
    release = release_with(tmp_path, "{queries: {uri: q.parquet, vectorField: v}}")
    with pytest.raises(SourceError, match=r"q.parquet \(validation.queries.uri\) has 3-dim"):
        check_validation_inputs(release, LocalFiles(tmp_path))
    release = release_with(tmp_path, "{}", "{queries: {uri: q.parquet, vectorField: v}}")
    with pytest.raises(SourceError, match=r"q.parquet \(monitoring.queries.uri\) has 3-dim"):
        check_validation_inputs(release, LocalFiles(tmp_path))


def test_validation_inputs_must_have_the_search_fields_dimension(tmp_path: Path) -> None:
    """With ``searchField`` naming a vectors[] entry, its dimension is the one queries
    must have, not collection.dimension's."""
    text = (
        "apiVersion: embrel.dev/v1alpha1\nkind: EmbeddingRelease\nmetadata: {name: p}\n"
        "spec: {alias: p, version: v1, model: {name: m}, milvus: {uri: ./m.db},\n"
        f"  collection: {{dimension: {DIM}, vectors: [{{name: image, dimension: 2}}],\n"
        "    searchField: image}, source: {files: {uri: d.parquet}},\n"
        "  validation: {goldenSet: {uri: g.parquet, minRecall: 0.5}}}\n"
    )
    release = parse_release(text)
    write_golden(tmp_path / "g.parquet", [[1.0, 0.0]], [[1]])  # 2-dim, as image is
    check_validation_inputs(release, LocalFiles(tmp_path))
    write_golden(tmp_path / "g.parquet", [[1.0] * DIM], [[1]])  # collection.dimension's
    with pytest.raises(SourceError) as err:
        check_validation_inputs(release, LocalFiles(tmp_path))
    assert f"has {DIM}-dim vectors" in str(err.value)
    assert "collection.searchField: image, a 2-dim field of collection.vectors" in str(err.value)


def test_validation_inputs_that_fit_pass(tmp_path: Path) -> None:
    write_golden(tmp_path / "g.parquet", [[1.0, 0.0, 0.0, 1.0]], [[1]])
    release = release_with(tmp_path, "{goldenSet: {uri: g.parquet, minRecall: 0.5}}")
    check_validation_inputs(release, LocalFiles(tmp_path))
    check_validation_inputs(release_with(tmp_path, "{}"), LocalFiles(tmp_path))  # none named


@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_float64_vectors_beyond_float32_are_an_error_not_a_numpy_warning(tmp_path: Path) -> None:
    """Found by the fuzz suite: the cast printed "overflow encountered in cast"."""
    path = tmp_path / "d.parquet"
    vectors = pa.array([[1.0, 2.0, 3.0, 1e39]], pa.list_(pa.float64()))
    pq.write_table(pa.table({"id": pa.array([1], pa.int64()), "vector": vectors}), path)
    with pytest.raises(SourceError, match=r"row 0 \(id 1\): vector holds inf at position 3"):
        check_source(path, [])
