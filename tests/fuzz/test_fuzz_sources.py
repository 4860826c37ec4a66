"""Fuzzing the source readers through the check pass a build runs before it writes:
random Parquet, JSON Lines and .npy files (wrong types, nulls, NaN, ragged vectors,
truncated files, random bytes under a data file's name). A SourceError naming the file,
or rows that passed every check; never another exception."""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st

from controller.errors import EmbrelError, SourceError
from controller.incremental import BuildPorts, FilesBuild
from controller.sources.local import LocalFiles
from controller.spec import EmbeddingRelease, FieldSpec, parse_release
from controller.validation.inputs import check_validation_inputs
from controller.validation.sanity import check_batch
from tests.fuzz.settings import clear_error_or_result, fuzz

# A warning on stderr (numpy's "overflow encountered in cast") is noise to the person
# running embrel: the check pass must report bad values as errors, and only so.
pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")

DIM = 3
FIELDS = [
    FieldSpec(name="title", type="VARCHAR", max_length=8),
    FieldSpec(name="n", type="INT8"),
    FieldSpec(name="flag", type="BOOL"),
    FieldSpec(name="score", type="FLOAT"),
]


def release(uri: str, metric: str = "COSINE") -> EmbeddingRelease:
    fields = ", ".join(
        f"{{name: {f.name}, type: {f.type}"
        + (f", maxLength: {f.max_length}}}" if f.max_length else "}")
        for f in FIELDS
    )
    return parse_release(
        "apiVersion: embrel.dev/v1alpha1\nkind: EmbeddingRelease\nmetadata: {name: p}\n"
        "spec: {alias: p, version: v1, model: {name: m}, milvus: {uri: ./m.db},\n"
        f"  collection: {{dimension: {DIM}, metric: {metric}, fields: [{fields}]}},\n"
        f"  source: {{files: {{uri: '{uri}'}}}},\n"
        "  validation: {goldenSet: {uri: golden.parquet, minRecall: 0.5},"
        " queries: {uri: queries.parquet}}}\n"
    )


@contextlib.contextmanager
def _no_progress(stage: str, total: int | None) -> Iterator[Any]:
    yield lambda rows: None


def source_check(folder: Path, uri: str, metric: str = "COSINE") -> int:
    """The engine's check pass (FilesBuild.plan) and the field checks; rows checked."""
    rel = release(uri, metric)
    data = LocalFiles(folder)
    ports = BuildPorts(rel, None, data, _no_progress, 7, lambda: None, None)  # type: ignore[arg-type]
    build = FilesBuild(ports)
    build.plan()
    assert rel.spec.source.files is not None
    source = data.open_vectors(rel.spec.source.files, [f.name for f in FIELDS])
    for batch in source.batches(7):
        check_batch(batch, DIM, metric, FIELDS)
    return build.rows


def run_check(folder: Path, uri: str, metric: str = "COSINE") -> None:
    result = clear_error_or_result(lambda: source_check(folder, uri, metric))
    if isinstance(result, EmbrelError):
        assert isinstance(result, SourceError), type(result)
    else:
        assert result > 0


@contextlib.contextmanager
def fresh(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "in"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    yield folder


# --- values ---------------------------------------------------------------------

numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.integers(-(2**70), 2**70),
    st.sampled_from([0.0, -0.0, 1e39, float("nan")]),
)
anything = st.one_of(
    st.none(),
    st.booleans(),
    numbers,
    st.text(max_size=12),
    st.lists(numbers, max_size=5),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
vectors = st.one_of(
    st.lists(numbers, min_size=DIM, max_size=DIM),  # mostly the right length
    st.lists(st.one_of(numbers, st.none()), max_size=5),
    anything,
)


def field_values() -> st.SearchStrategy[dict[str, Any]]:
    good = {
        "title": st.text(max_size=10),
        "n": st.integers(-200, 200),
        "flag": st.booleans(),
        "score": numbers,
    }
    return st.fixed_dictionaries(
        {name: st.one_of(strategy, anything) for name, strategy in good.items()}
    )


rows = st.lists(
    st.tuples(st.one_of(st.integers(-(2**65), 2**65), anything), vectors, field_values()),
    min_size=0,
    max_size=20,
)


def truncate(path: Path, data: st.DataObject) -> None:
    if data.draw(st.booleans(), label="truncate"):
        raw = path.read_bytes()
        path.write_bytes(raw[: data.draw(st.integers(0, len(raw)), label="keep")])


# --- Parquet ----------------------------------------------------------------------


def write_parquet(columns: dict[str, Any], path: Path, **options: Any) -> None:
    """Write the table; a column Parquet cannot hold (a struct with no fields) as text."""
    try:
        pq.write_table(pa.table(columns), path, **options)
    except pa.ArrowNotImplementedError:
        text = {name: pa.array([str(v) for v in col.to_pylist()]) for name, col in columns.items()}
        pq.write_table(pa.table(text), path, **options)


def arrow_column(values: list[Any], data: st.DataObject) -> pa.Array | None:
    """The values as pyarrow infers them, or as strings when they cannot be one column."""
    try:
        return pa.array(values)
    except (pa.ArrowException, OverflowError, TypeError, ValueError):
        return pa.array([json.dumps(v, default=str) for v in values])


@fuzz
@given(table=rows, data=st.data())
def test_parquet_sources(table: list[Any], data: st.DataObject, tmp_path: Path) -> None:
    with fresh(tmp_path) as folder:
        columns: dict[str, Any] = {
            "id": arrow_column([r[0] for r in table], data),
            "vector": arrow_column([r[1] for r in table], data),
        }
        for name in ("title", "n", "flag", "score"):
            if data.draw(st.integers(0, 9), label=f"drop {name}"):  # 1 in 10: missing column
                columns[name] = arrow_column([r[2][name] for r in table], data)
        if not table:
            columns = {name: pa.array([], pa.int64()) for name in columns}
        write_parquet(columns, folder / "d.parquet", row_group_size=5)
        truncate(folder / "d.parquet", data)
        run_check(folder, "*.parquet", data.draw(st.sampled_from(["COSINE", "L2"]), label="m"))


@fuzz
@given(raw=st.binary(max_size=2048), name=st.sampled_from(["d.parquet", "d.npy", "d.jsonl"]))
def test_random_bytes_under_a_data_file_name(raw: bytes, name: str, tmp_path: Path) -> None:
    with fresh(tmp_path) as folder:
        (folder / name).write_bytes(raw)
        run_check(folder, name)


# --- JSON Lines -------------------------------------------------------------------


@fuzz
@given(table=rows, data=st.data())
def test_jsonl_sources(table: list[Any], data: st.DataObject, tmp_path: Path) -> None:
    with fresh(tmp_path) as folder:
        lines = []
        for ident, vector, fields in table:
            obj = {"id": ident, "vector": vector, **fields}
            if data.draw(st.integers(0, 19), label="drop key") == 0:
                obj.pop(data.draw(st.sampled_from(sorted(obj)), label="key"))
            lines.append(json.dumps(obj, default=str))
        if data.draw(st.booleans(), label="junk line"):
            lines.insert(
                data.draw(st.integers(0, len(lines)), label="at"),
                data.draw(st.text(max_size=30), label="junk"),
            )
        path = folder / "d.jsonl"
        path.write_text("\n".join(lines), encoding="utf-8", errors="surrogatepass")
        truncate(path, data)
        run_check(folder, "d.jsonl")


# --- .npy -------------------------------------------------------------------------

dtypes = st.sampled_from(["float32", "float64", "float16", "int64", "bool", "complex64"])


@fuzz
@given(
    shape=st.lists(st.integers(0, 6), min_size=0, max_size=3),
    dtype=dtypes,
    ids=st.one_of(
        st.none(),
        st.lists(st.integers(-(2**63), 2**63 - 1), max_size=8),
        st.lists(st.integers(0, 2**64 - 1), max_size=8),  # uint64: may not fit int64
    ),
    data=st.data(),
)
def test_npy_sources(
    shape: list[int], dtype: str, ids: list[int] | None, data: st.DataObject, tmp_path: Path
) -> None:
    with fresh(tmp_path) as folder:
        values = data.draw(st.sampled_from([0.0, 1.0, float("nan"), float("inf"), 1e39]), label="v")
        array = np.full(shape, values) if dtype.startswith(("float", "complex")) else np.ones(shape)
        with np.errstate(over="ignore", invalid="ignore"):
            np.save(folder / "d.npy", array.astype(dtype))
        if ids is not None:
            kind = np.uint64 if any(i > 2**63 - 1 for i in ids) else np.int64  # one list, one type
            np.save(folder / "d.ids.npy", np.array(ids, dtype=kind))
        truncate(folder / "d.npy", data)
        run_check(folder, "d.npy", "L2")


# --- golden sets and query sets ---------------------------------------------------

golden_rows = st.lists(st.tuples(vectors, st.one_of(st.lists(st.integers(), max_size=3), anything)))


@fuzz
@given(table=golden_rows, data=st.data())
def test_golden_and_query_sets(table: list[Any], data: st.DataObject, tmp_path: Path) -> None:
    with fresh(tmp_path) as folder:
        vector = arrow_column([r[0] for r in table], data)
        relevant = arrow_column([r[1] for r in table], data)
        if not table:
            vector = relevant = pa.array([], pa.list_(pa.float32()))
        write_parquet({"vector": vector, "relevant_ids": relevant}, folder / "golden.parquet")
        shutil.copy(folder / "golden.parquet", folder / "queries.parquet")
        truncate(folder / "golden.parquet", data)
        result = clear_error_or_result(
            lambda: check_validation_inputs(release("d.parquet"), LocalFiles(folder))
        )
        assert result is None or isinstance(result, SourceError), type(result)
