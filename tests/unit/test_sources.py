"""File sources: locating files, each format, batching and every error path."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from controller.errors import SourceError
from controller.sources import VectorBatch, VectorSource, open_files_source

# --- helpers ----------------------------------------------------------------------


def write_parquet(
    path: Path,
    ids: Sequence[Any],
    vectors: Sequence[Any],
    vector_type: Any = None,
    id_type: Any = None,
    **extra: Sequence[Any],
) -> Path:
    columns = {
        "id": pa.array(ids, type=id_type or pa.int64()),
        "emb": pa.array(vectors, type=vector_type or pa.list_(pa.float32())),
    }
    columns.update({name: pa.array(values) for name, values in extra.items()})
    pq.write_table(pa.table(columns), path)
    return path


def vecs(n: int, d: int = 3, start: int = 0) -> list[list[float]]:
    return [[float(start + i) + j / 10 for j in range(d)] for i in range(n)]


def write_jsonl(path: Path, rows: Sequence[Any]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def read_all(source: VectorSource, batch_size: int = 1000) -> list[VectorBatch]:
    return list(source.batches(batch_size))


def error_of(source: VectorSource, batch_size: int = 1000) -> str:
    with pytest.raises(SourceError) as info:
        read_all(source, batch_size)
    return str(info.value)


def open_parquet(uri: str, base: Path, extra: Sequence[str] = ()) -> VectorSource:
    return open_files_source(uri, "id", "emb", extra, base_dir=base)


# --- locating files ---------------------------------------------------------------


def test_parquet_file_yields_typed_batch_with_fields(tmp_path: Path) -> None:
    write_parquet(tmp_path / "a.parquet", [7, 8], vecs(2), text=["x", "y"], n=[1, None])
    source = open_parquet("a.parquet", tmp_path, ["text", "n"])
    assert isinstance(source, VectorSource)
    assert source.describe() == "1 parquet file matching a.parquet"
    assert source.count_rows() == 2
    [batch] = read_all(source)
    assert batch.ids.dtype == np.int64 and batch.ids.tolist() == [7, 8]
    assert batch.vectors.dtype == np.float32 and batch.vectors.flags.c_contiguous
    np.testing.assert_allclose(batch.vectors, np.array(vecs(2), dtype=np.float32))
    assert batch.fields == {"text": ["x", "y"], "n": [1, None]}
    assert batch.origin == str(tmp_path / "a.parquet") and batch.first_row == 0
    assert len(batch) == 2


def test_absolute_path_and_file_scheme_ignore_base_dir(tmp_path: Path) -> None:
    path = write_parquet(tmp_path / "a.parquet", [1], vecs(1))
    for uri in (str(path), f"file://{path}"):
        source = open_parquet(uri, tmp_path / "elsewhere")
        assert [b.ids.tolist() for b in read_all(source)] == [[1]]


@pytest.mark.parametrize("uri", ["https://h/x.jsonl", "hdfs://n/*.npy", "ftp://u:pw@h/x.parquet"])
def test_unsupported_schemes_are_refused(tmp_path: Path, uri: str) -> None:
    with pytest.raises(SourceError, match="which embrel cannot read") as info:
        open_parquet(uri, tmp_path)
    message = str(info.value)
    assert uri.split("://")[0] + "://" in message and "s3://, gs://, az://" in message
    assert "pw" not in message  # a credential in the uri is never shown


def test_glob_without_match_names_the_pattern(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"no data files match .*data/\*\.parquet"):
        open_parquet("data/*.parquet", tmp_path)


def test_missing_file_and_directory_are_named(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"missing\.parquet does not exist"):
        open_parquet("missing.parquet", tmp_path)
    (tmp_path / "dir").mkdir()
    with pytest.raises(SourceError, match=r"is the folder .*dir and holds no .parquet files"):
        open_parquet("dir", tmp_path)


def test_a_folder_is_a_hive_partitioned_dataset(tmp_path: Path) -> None:
    """Every .parquet file below the folder, in path order; key=value folders are fields."""
    for lang, first_id in (("fr", 20), ("en", 10)):
        (tmp_path / "ds" / f"lang={lang}").mkdir(parents=True)
        write_parquet(tmp_path / "ds" / f"lang={lang}" / "part-0.parquet", [first_id], vecs(1))
    (tmp_path / "ds" / "_SUCCESS").write_text("")  # writers' markers are not data
    source = open_files_source("ds", "id", "emb", ["lang"], tmp_path)
    batches = read_all(source)
    assert [(b.ids.tolist(), b.fields) for b in batches] == [
        ([10], {"lang": ["en"]}),
        ([20], {"lang": ["fr"]}),
    ]
    assert batches[0].origin.endswith("ds/lang=en/part-0.parquet")


def test_glob_matches_are_read_in_name_order(tmp_path: Path) -> None:
    for name, first_id in (("b", 10), ("c", 20), ("a", 0)):
        write_parquet(tmp_path / f"{name}.parquet", [first_id, first_id + 1], vecs(2))
    source = open_parquet("*.parquet", tmp_path)
    assert source.describe() == "3 parquet files matching *.parquet"
    assert source.count_rows() == 6
    batches = read_all(source)
    assert [Path(b.origin).name for b in batches] == ["a.parquet", "b.parquet", "c.parquet"]
    assert np.concatenate([b.ids for b in batches]).tolist() == [0, 1, 10, 11, 20, 21]


@pytest.mark.parametrize(
    ("batch_size", "sizes", "first_rows"),
    [(2, [2, 1, 2, 1], [0, 2, 0, 2]), (4, [3, 3], [0, 0]), (100, [3, 3], [0, 0])],
)
def test_batches_never_span_two_files(
    tmp_path: Path, batch_size: int, sizes: list[int], first_rows: list[int]
) -> None:
    write_parquet(tmp_path / "p1.parquet", [0, 1, 2], vecs(3))
    write_parquet(tmp_path / "p2.parquet", [3, 4, 5], vecs(3))
    batches = read_all(open_parquet("p*.parquet", tmp_path), batch_size)
    assert [len(b) for b in batches] == sizes
    assert [b.first_row for b in batches] == first_rows
    assert len({b.origin for b in batches[: len(sizes) // 2]}) == 1


def test_mixed_formats_are_refused(tmp_path: Path) -> None:
    write_parquet(tmp_path / "a.parquet", [1], vecs(1))
    np.save(tmp_path / "b.npy", np.ones((1, 3)))
    with pytest.raises(SourceError, match=r"different formats: parquet .*a\.parquet.*npy"):
        open_parquet("*", tmp_path)


def test_unsupported_extension_names_file(tmp_path: Path) -> None:
    (tmp_path / "v.csv").write_text("1,2\n")
    with pytest.raises(SourceError, match=r"v\.csv: unsupported file type \.csv"):
        open_parquet("v.csv", tmp_path)


def test_batch_size_must_be_positive(tmp_path: Path) -> None:
    write_parquet(tmp_path / "a.parquet", [1], vecs(1))
    with pytest.raises(ValueError, match="batch_size"):
        read_all(open_parquet("a.parquet", tmp_path), 0)


# --- parquet ----------------------------------------------------------------------


def test_parquet_file_larger_than_batch_is_streamed(tmp_path: Path) -> None:
    pq.write_table(
        pa.table({"id": list(range(10)), "emb": vecs(10)}),
        tmp_path / "big.parquet",
        row_group_size=3,  # batches cross row-group boundaries too
    )
    source = open_parquet("big.parquet", tmp_path)
    batches = read_all(source, 4)
    assert [len(b) for b in batches] == [4, 4, 2]
    assert [b.first_row for b in batches] == [0, 4, 8]
    assert np.concatenate([b.ids for b in batches]).tolist() == list(range(10))
    # The source is re-iterable: a dry run and the load both read it.
    assert len(read_all(source, 4)) == 3


def test_float64_lists_become_float32(tmp_path: Path) -> None:
    values = [[0.1, 1e-3, 3.0], [2.5, -7.25, 1 / 3]]
    write_parquet(tmp_path / "a.parquet", [1, 2], values, pa.list_(pa.float64()))
    [batch] = read_all(open_parquet("a.parquet", tmp_path))
    assert batch.vectors.dtype == np.float32 and batch.vectors.shape == (2, 3)
    np.testing.assert_array_equal(batch.vectors, np.array(values, dtype=np.float32))


@pytest.mark.parametrize(
    "vector_type",
    [pa.list_(pa.float32(), 3), pa.large_list(pa.float64()), pa.list_(pa.float64(), 3)],
)
def test_fixed_size_and_large_lists(tmp_path: Path, vector_type: Any) -> None:
    write_parquet(tmp_path / "a.parquet", [1, 2, 3], vecs(3), vector_type)
    batches = read_all(open_parquet("a.parquet", tmp_path), 2)
    stacked = np.concatenate([b.vectors for b in batches])
    np.testing.assert_array_equal(stacked, np.array(vecs(3), dtype=np.float32))
    assert all(b.vectors.flags.c_contiguous for b in batches)


@pytest.mark.parametrize("id_type", [pa.int8(), pa.int32(), pa.uint16(), pa.uint64()])
def test_any_integer_id_type_becomes_int64(tmp_path: Path, id_type: Any) -> None:
    write_parquet(tmp_path / "a.parquet", [1, 2], vecs(2), id_type=id_type)
    [batch] = read_all(open_parquet("a.parquet", tmp_path))
    assert batch.ids.dtype == np.int64 and batch.ids.tolist() == [1, 2]


def test_uint64_id_beyond_int64_is_refused(tmp_path: Path) -> None:
    write_parquet(tmp_path / "a.parquet", [1, 2**63], vecs(2), id_type=pa.uint64())
    message = error_of(open_parquet("a.parquet", tmp_path))
    assert "a.parquet, row 1" in message and "does not fit in a signed 64-bit" in message


def test_missing_column_lists_existing_columns(tmp_path: Path) -> None:
    write_parquet(tmp_path / "a.parquet", [1], vecs(1), text=["t"])
    message = error_of(open_parquet("a.parquet", tmp_path, ["title"]))
    assert "a.parquet has no column 'title'" in message
    assert "its columns are id, emb, text" in message


def test_wrong_column_types_are_named(tmp_path: Path) -> None:
    write_parquet(tmp_path / "a.parquet", ["x"], vecs(1), id_type=pa.string())
    assert "id column 'id' has type string; expected an integer" in error_of(
        open_parquet("a.parquet", tmp_path)
    )
    write_parquet(tmp_path / "b.parquet", [1], [["1", "2"]], pa.list_(pa.string()))
    message = error_of(open_parquet("b.parquet", tmp_path))
    assert "b.parquet: vector column 'emb' has type list<" in message
    assert "string>; expected a list, large_list or fixed_size_list of float32" in message


def test_null_vector_reports_file_and_row_across_batches(tmp_path: Path) -> None:
    values: list[Any] = vecs(6)
    values[5] = None
    write_parquet(tmp_path / "a.parquet", range(6), values)
    message = error_of(open_parquet("a.parquet", tmp_path), 4)
    assert "a.parquet, row 5: vector is null" in message


def test_ragged_vectors_report_row(tmp_path: Path) -> None:
    values = vecs(4)
    values[2] = [1.0, 2.0]
    write_parquet(tmp_path / "a.parquet", range(4), values)
    message = error_of(open_parquet("a.parquet", tmp_path))
    assert "a.parquet, row 2: vector has 2 values but row 0 has 3" in message


def test_null_id_and_null_element_report_row(tmp_path: Path) -> None:
    write_parquet(tmp_path / "a.parquet", [1, None], vecs(2))
    assert "a.parquet, row 1: id is null" in error_of(open_parquet("a.parquet", tmp_path))
    write_parquet(tmp_path / "b.parquet", [1, 2], [[1.0, 2.0], [3.0, None]])
    assert "b.parquet, row 1: vector contains a null; every value must be a number" in error_of(
        open_parquet("b.parquet", tmp_path)
    )


def test_non_parquet_file_is_reported_with_cause(tmp_path: Path) -> None:
    (tmp_path / "bad.parquet").write_bytes(b"this is not parquet at all")
    with pytest.raises(SourceError, match=r"cannot read .*bad\.parquet as parquet") as info:
        read_all(open_parquet("bad.parquet", tmp_path))
    assert isinstance(info.value.__cause__, pa.ArrowException)
    with pytest.raises(SourceError, match=r"bad\.parquet"):
        open_parquet("bad.parquet", tmp_path).count_rows()


def test_truncated_parquet_is_reported(tmp_path: Path) -> None:
    path = write_parquet(tmp_path / "t.parquet", range(50), vecs(50))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] + data[-8:])  # keep the footer magic
    with pytest.raises(SourceError, match=r"t\.parquet as parquet") as info:
        read_all(open_parquet("t.parquet", tmp_path))
    assert info.value.__cause__ is not None


# --- npy --------------------------------------------------------------------------


def test_npy_ids_are_row_numbers_and_floats_become_float32(tmp_path: Path) -> None:
    data = np.arange(15, dtype=np.float64).reshape(5, 3) / 7
    np.save(tmp_path / "v.npy", data)
    source = open_files_source("v.npy", "ignored", "ignored", base_dir=tmp_path)
    assert source.count_rows() == 5
    assert "ids are row numbers" in source.describe()
    batches = read_all(source, 2)
    assert [b.ids.tolist() for b in batches] == [[0, 1], [2, 3], [4]]
    assert [b.first_row for b in batches] == [0, 2, 4]
    stacked = np.concatenate([b.vectors for b in batches])
    assert stacked.dtype == np.float32 and all(b.vectors.flags.c_contiguous for b in batches)
    np.testing.assert_array_equal(stacked, data.astype(np.float32))
    assert all(b.fields == {} for b in batches)


def test_npy_row_numbers_run_across_sorted_files(tmp_path: Path) -> None:
    np.save(tmp_path / "b.npy", np.full((2, 4), 2.0, dtype=np.float32))
    np.save(tmp_path / "a.npy", np.full((3, 4), 1.0, dtype=np.float32))
    source = open_files_source("*.npy", "id", "emb", base_dir=tmp_path)
    assert source.count_rows() == 5
    batches = read_all(source, 10)
    assert [Path(b.origin).name for b in batches] == ["a.npy", "b.npy"]
    assert [b.ids.tolist() for b in batches] == [[0, 1, 2], [3, 4]]
    assert [b.first_row for b in batches] == [0, 0]


def test_npy_sibling_ids_are_used_and_not_read_as_data(tmp_path: Path) -> None:
    np.save(tmp_path / "part.npy", np.ones((3, 2), dtype=np.float32))
    np.save(tmp_path / "part.ids.npy", np.array([30, 10, 20], dtype=np.uint32))
    source = open_files_source("*.npy", "id", "emb", base_dir=tmp_path)
    assert source.describe().startswith("1 npy file matching *.npy")
    assert "ids from .ids.npy files" in source.describe()
    batches = read_all(source, 2)
    assert [b.ids.tolist() for b in batches] == [[30, 10], [20]]
    assert all(b.ids.dtype == np.int64 for b in batches)


@pytest.mark.parametrize(
    "ids",
    [np.arange(2), np.arange(3, dtype=np.float64), np.zeros((3, 1), dtype=np.int64)],
    ids=["short", "float", "2-D"],
)
def test_bad_sibling_ids_are_refused(tmp_path: Path, ids: Any) -> None:
    np.save(tmp_path / "v.npy", np.ones((3, 2)))
    np.save(tmp_path / "v.ids.npy", ids)
    message = error_of(open_files_source("v.npy", "id", "emb", base_dir=tmp_path))
    assert "v.ids.npy holds a" in message
    assert "expected a 1-D integer array with one id for each of the 3 rows in v.npy" in message


def test_sibling_ids_must_exist_for_all_files_or_none(tmp_path: Path) -> None:
    np.save(tmp_path / "a.npy", np.ones((1, 2)))
    np.save(tmp_path / "a.ids.npy", np.array([5]))
    np.save(tmp_path / "b.npy", np.ones((1, 2)))
    with pytest.raises(SourceError, match=r"b\.npy has no b\.ids\.npy"):
        open_files_source("*.npy", "id", "emb", base_dir=tmp_path)


@pytest.mark.parametrize(
    "array",
    [np.ones(4), np.ones((2, 2), dtype=np.int32), np.ones((2, 0)), np.ones((2, 2, 2))],
    ids=["1-D", "int", "zero-dim", "3-D"],
)
def test_npy_must_hold_2d_floats(tmp_path: Path, array: Any) -> None:
    np.save(tmp_path / "v.npy", array)
    source = open_files_source("v.npy", "id", "emb", base_dir=tmp_path)
    with pytest.raises(SourceError, match=r"v\.npy holds a .*expected a 2-D float array"):
        source.count_rows()


def test_corrupt_and_truncated_npy_are_reported(tmp_path: Path) -> None:
    (tmp_path / "bad.npy").write_bytes(b"garbage")
    with pytest.raises(SourceError, match=r"cannot read .*bad\.npy as a \.npy array") as info:
        read_all(open_files_source("bad.npy", "id", "emb", base_dir=tmp_path))
    assert isinstance(info.value.__cause__, ValueError)
    np.save(tmp_path / "t.npy", np.ones((100, 4)))
    data = (tmp_path / "t.npy").read_bytes()
    (tmp_path / "t.npy").write_bytes(data[:-100])
    with pytest.raises(SourceError, match=r"t\.npy as a \.npy array"):
        open_files_source("t.npy", "id", "emb", base_dir=tmp_path).count_rows()


def test_npz_named_npy_is_refused(tmp_path: Path) -> None:
    with (tmp_path / "v.npy").open("wb") as handle:
        np.savez(handle, a=np.ones((2, 2)))
    with pytest.raises(SourceError, match=r"v\.npy is an \.npz archive"):
        read_all(open_files_source("v.npy", "id", "emb", base_dir=tmp_path))


def test_npy_cannot_supply_extra_fields(tmp_path: Path) -> None:
    np.save(tmp_path / "v.npy", np.ones((1, 2)))
    with pytest.raises(SourceError, match=r"\.npy files hold only vectors.*title"):
        open_files_source("v.npy", "id", "emb", ["title"], base_dir=tmp_path)


# --- JSON Lines -------------------------------------------------------------------


def open_jsonl(name: str, base: Path, extra: Sequence[str] = ()) -> VectorSource:
    return open_files_source(name, "pk", "vec", extra, base_dir=base)


def test_jsonl_skips_blank_lines_and_keeps_fields(tmp_path: Path) -> None:
    rows = [
        {"pk": 1, "vec": [1, 2.5], "tag": "a"},
        "",
        "   ",
        {"pk": 2, "vec": [3, 4], "tag": None},
    ]
    write_jsonl(tmp_path / "v.jsonl", rows)
    source = open_jsonl("v.jsonl", tmp_path, ["tag"])
    assert source.count_rows() is None
    [batch] = read_all(source)
    assert batch.ids.dtype == np.int64 and batch.ids.tolist() == [1, 2]
    assert batch.vectors.dtype == np.float32 and batch.vectors.flags.c_contiguous
    np.testing.assert_array_equal(batch.vectors, [[1, 2.5], [3, 4]])
    assert batch.fields == {"tag": ["a", None]}


def test_jsonl_batches_per_file_with_ndjson(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "a.ndjson", [{"pk": i, "vec": [i, 0]} for i in range(5)])
    write_jsonl(tmp_path / "b.ndjson", [{"pk": 9, "vec": [9, 0]}])
    source = open_jsonl("*.ndjson", tmp_path)
    assert source.describe() == "2 jsonl files matching *.ndjson"
    batches = read_all(source, 2)
    assert [b.ids.tolist() for b in batches] == [[0, 1], [2, 3], [4], [9]]
    assert [b.first_row for b in batches] == [0, 2, 4, 0]


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ('{"pk": 1, "vec": [1, 2]', "line 2: not valid JSON"),
        ("[1, 2]", "line 2: expected a JSON object, got list"),
        ('{"vec": [1, 2]}', "line 2: missing key 'pk'; the line has keys 'vec'"),
        ('{"pk": 1}', "line 2: missing key 'vec'"),
        ('{"pk": "1", "vec": [1, 2]}', "line 2: id 'pk' is '1'; expected an integer"),
        ('{"pk": true, "vec": [1, 2]}', "line 2: id 'pk' is True; expected an integer"),
        ('{"pk": 1, "vec": [1, "2"]}', "line 2: 'vec'[1] is \"2\"; vectors must hold only numbers"),
        ('{"pk": 1, "vec": [1, null]}', "line 2: 'vec'[1] is null"),
        ('{"pk": 1, "vec": []}', "line 2: 'vec' is []; expected a non-empty list of numbers"),
        ('{"pk": 1, "vec": "1,2"}', "expected a non-empty list of numbers"),
        ('{"pk": 1, "vec": [1, 2, 3]}', "line 2: vector has 3 values but the one on line 1 has 2"),
        ('{"pk": 99999999999999999999, "vec": [1, 2]}', "does not fit in a signed 64-bit"),
    ],
)
def test_jsonl_errors_name_file_and_line(tmp_path: Path, line: str, problem: str) -> None:
    write_jsonl(tmp_path / "v.jsonl", [{"pk": 0, "vec": [0, 0]}, line])
    message = error_of(open_jsonl("v.jsonl", tmp_path))
    assert str(tmp_path / "v.jsonl") in message
    assert problem in message


def test_jsonl_missing_extra_field_is_an_error(tmp_path: Path) -> None:
    write_jsonl(
        tmp_path / "v.jsonl", [{"pk": 0, "vec": [0.0], "title": "t"}, {"pk": 1, "vec": [1]}]
    )
    message = error_of(open_jsonl("v.jsonl", tmp_path, ["title"]))
    assert "v.jsonl, line 2: missing key 'title'" in message


def test_jsonl_invalid_utf8_is_reported_with_line(tmp_path: Path) -> None:
    (tmp_path / "v.jsonl").write_bytes(b'{"pk": 1, "vec": [1]}\n{"pk": 2, "vec": [\xff]}\n')
    assert "v.jsonl, line 2: not valid JSON" in error_of(open_jsonl("v.jsonl", tmp_path))


def test_jsonl_float_overflow_becomes_inf_and_huge_int_is_refused(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "f.jsonl", [{"pk": 1, "vec": [1e39, 2]}])
    [batch] = read_all(open_jsonl("f.jsonl", tmp_path))
    assert np.isposinf(batch.vectors[0, 0])  # left for the sanity check to report
    write_jsonl(
        tmp_path / "i.jsonl", [{"pk": 1, "vec": [1, 2]}, f'{{"pk": 2, "vec": [{10**400}, 2]}}']
    )
    message = error_of(open_jsonl("i.jsonl", tmp_path), 1)
    assert "i.jsonl, line 2: a vector holds a number too large to represent" in message


def test_sample_rows_is_seeded_uniform_and_streams() -> None:
    from controller.sources.base import VectorBatch, sample_rows

    def batches() -> Iterator[VectorBatch]:
        for start in range(0, 1000, 64):
            ids = np.arange(start, min(start + 64, 1000), dtype=np.int64)
            vectors = np.repeat(ids[:, None], 3, axis=1).astype(np.float32)
            yield VectorBatch(ids, vectors, {}, "mem", start)

    ids, vectors = sample_rows(batches(), 1000, 100, seed=1)
    assert len(set(ids.tolist())) == 100
    assert np.array_equal(vectors[:, 0], ids.astype(np.float32)), "ids and vectors stay paired"
    again, _ = sample_rows(batches(), 1000, 100, seed=1)
    other, _ = sample_rows(batches(), 1000, 100, seed=2)
    assert np.array_equal(ids, again) and not np.array_equal(ids, other)
    everything, _ = sample_rows(batches(), 1000, 5000, seed=0)
    assert sorted(everything.tolist()) == list(range(1000))
