"""Vector sources backed by files: parquet, .npy and JSON Lines.

A source is one path, glob or Parquet dataset folder, local or in object storage
(``controller.sources.location``); every matched file must have the same format. Files
are read in sorted path order and streamed: parquet through ``iter_batches``, .npy
through a memory map (ranged reads for an object), JSON Lines line by line, so memory
stays at about one batch.

A batch never spans two files, so ``VectorBatch.origin`` and ``first_row`` always
point at a single file; the last batch of each file may be shorter than asked.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from controller.errors import SourceError
from controller.read_ahead import read_ahead
from controller.sources.base import VectorBatch, VectorSource
from controller.sources.location import (
    IDS_SUFFIX,
    SourceFile,
    StorageSettings,
    match_files,
    read_failure,
    shown,
    storage_errors,
)

_FORMATS = {".parquet": "parquet", ".npy": "npy", ".jsonl": "jsonl", ".ndjson": "jsonl"}
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_JSON_NUMBER_TYPES = frozenset({int, float})

Int64Array = npt.NDArray[np.int64]
Float32Array = npt.NDArray[np.float32]


def open_files_source(
    uri: str,
    id_field: str,
    vector_field: str,
    extra_fields: Sequence[str] = (),
    base_dir: Path | None = None,
    settings: StorageSettings | None = None,
) -> VectorSource:
    """Open the files that ``uri`` names (a path, glob or folder; local, ``file://``,
    or in object storage with ``settings``).

    Relative paths resolve against ``base_dir`` (the release file's directory).
    Files are only checked for existence and format here; their contents are read,
    and checked, when batches are requested. For .npy files ``id_field`` and
    ``vector_field`` are ignored: an .npy file holds one unnamed 2-D array, and ids
    come from a sibling ``<stem>.ids.npy`` file or are the running row number.
    """
    paths = match_files(uri, base_dir, settings)
    fmt = _common_format(paths, uri)
    label = f"{len(paths)} {fmt} file{'s' if len(paths) != 1 else ''} matching {shown(uri)}"
    extras = tuple(dict.fromkeys(extra_fields))  # drop repeats, keep order
    if fmt == "parquet":
        return _ParquetSource(paths, label, id_field, vector_field, extras)
    if fmt == "npy":
        if extras:
            raise SourceError(
                f"{shown(uri)}: .npy files hold only vectors, so the extra fields "
                f"{', '.join(extras)} cannot be read from them; use parquet or JSON "
                "Lines files for sources with extra fields"
            )
        return _NpySource(paths, label)
    return _JsonlSource(paths, label, id_field, vector_field, extras)


# --- formats ----------------------------------------------------------------------


def _format_of(path: SourceFile) -> str:
    fmt = _FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise SourceError(
            f"{path}: unsupported file type {path.suffix or '(no extension)'}; source "
            "files must end in .parquet, .npy, .jsonl or .ndjson"
        )
    return fmt


def _common_format(paths: list[SourceFile], uri: str) -> str:
    first_of: dict[str, SourceFile] = {}
    for path in paths:
        first_of.setdefault(_format_of(path), path)
    if len(first_of) > 1:
        seen = ", ".join(f"{fmt} ({path})" for fmt, path in first_of.items())
        raise SourceError(
            f"source {shown(uri)!r} matches files of different formats: {seen}; all files "
            "of one source must share a format, so narrow the pattern (e.g. *.parquet)"
        )
    return next(iter(first_of))


# --- shared helpers ---------------------------------------------------------------


class _FilesSource:
    """Common part of the file sources: the matched paths and their description."""

    def __init__(self, paths: list[SourceFile], label: str) -> None:
        self._paths = paths
        self._label = label

    def describe(self) -> str:
        return self._label


def _check_batch_size(batch_size: int) -> None:
    # A caller bug, not a data problem, so not a SourceError.
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")


def _as_int64(ids: npt.NDArray[Any], origin: str, first_row: int) -> Int64Array:
    """Convert integer ids to int64, refusing uint64 values that would wrap around."""
    if ids.dtype == np.uint64 and ids.size and ids.max() > _INT64_MAX:
        i = int(np.argmax(ids > _INT64_MAX))
        raise SourceError(
            f"{origin}, row {first_row + i}: id {ids[i]} does not fit in a signed "
            "64-bit integer; ids must be below 2**63"
        )
    return ids.astype(np.int64, copy=False)


# --- parquet ----------------------------------------------------------------------


class _ParquetSource(_FilesSource):
    """Parquet files with an integer id column and a list-of-float vector column."""

    def __init__(
        self,
        paths: list[SourceFile],
        label: str,
        id_field: str,
        vector_field: str,
        extras: tuple[str, ...],
    ) -> None:
        super().__init__(paths, label)
        self._id_field = id_field
        self._vector_field = vector_field
        self._extras = extras
        self._columns = list(dict.fromkeys([id_field, vector_field, *extras]))

    def count_rows(self) -> int:
        total = 0
        for path in self._paths:
            with _open_parquet(path) as parquet:
                total += int(parquet.metadata.num_rows)
        return total

    def batches(self, batch_size: int) -> Iterator[VectorBatch]:
        _check_batch_size(batch_size)
        for path in self._paths:
            yield from self._file_batches(path, batch_size)

    def _file_batches(self, path: SourceFile, batch_size: int) -> Iterator[VectorBatch]:
        with _open_parquet(path) as parquet:
            self._check_schema(path, parquet_schema(path, parquet))
            first_row = 0
            for record_batch in _record_batches(path, parquet, batch_size, self._columns):
                if record_batch.num_rows:
                    yield self._to_batch(str(path), record_batch, first_row)
                first_row += record_batch.num_rows

    def _check_schema(self, path: SourceFile, schema: Any) -> None:
        names: list[str] = list(schema.names)
        missing = [name for name in self._columns if name not in names]
        if missing:
            raise SourceError(
                f"{path} has no column{'s' if len(missing) > 1 else ''} "
                f"{', '.join(map(repr, missing))}; its columns "
                f"are {', '.join(names)}. Check the field names in the release spec"
            )
        import pyarrow as pa

        id_type = schema.field(self._id_field).type
        if not pa.types.is_integer(id_type):
            raise SourceError(
                f"{path}: id column {self._id_field!r} has type {id_type}; expected an integer type"
            )
        vector_type = schema.field(self._vector_field).type
        if not _is_float_list(vector_type):
            raise SourceError(
                f"{path}: vector column {self._vector_field!r} has type {vector_type}; "
                "expected a list, large_list or fixed_size_list of float32 or float64"
            )

    def _to_batch(self, origin: str, record_batch: Any, first_row: int) -> VectorBatch:
        return VectorBatch(
            ids=_arrow_ids(record_batch.column(self._id_field), origin, first_row),
            vectors=_arrow_vectors(record_batch.column(self._vector_field), origin, first_row),
            # Only the requested columns become Python objects.
            fields={name: record_batch.column(name).to_pylist() for name in self._extras},
            origin=origin,
            first_row=first_row,
        )


# pre_buffer=True (pyarrow's default) keeps every row group read so far cached for the
# reader's life, so a 1M-row build held the whole file (904 MB peak, docs/benchmarks.md
# §2); a bounded read buffer also streams files written as a single row group.
READ_BUFFER_BYTES = 1 << 20
# From object storage every buffer refill is one ranged GET, whose latency dominates at
# 1 MiB. An object whose row groups are small enough is read a row group at a time,
# pre-buffered: one coalesced GET for the columns of a row group, the previous row
# group's buffers released (pyarrow keeps one pre-buffer cache per call). Larger row
# groups stream through an 8 MiB buffer per column (memory stays bounded either way).
REMOTE_READ_BUFFER_BYTES = 8 << 20
PREBUFFER_MAX_ROW_GROUP_BYTES = 64 << 20
READ_AHEAD_BATCHES = 2


@contextmanager
def _open_parquet(path: SourceFile) -> Iterator[Any]:
    """The file as a ``ParquetFile`` (streamed with a bounded buffer), closed after use."""
    # pyarrow is imported where it is used: it costs ~0.1 s, and most CLI commands read no files.
    import pyarrow as pa
    import pyarrow.parquet as pq

    source = path.local if path.local is not None else path.open_random()
    try:
        buffer = READ_BUFFER_BYTES if path.local is not None else REMOTE_READ_BUFFER_BYTES
        with pq.ParquetFile(source, pre_buffer=False, buffer_size=buffer) as parquet:
            yield parquet
    except (OSError, pa.ArrowException) as exc:
        raise read_failure(path, f"cannot read {path} as parquet", exc) from exc
    finally:
        if not isinstance(source, Path):
            source.close()


def parquet_schema(path: SourceFile, parquet: Any) -> Any:
    """The file's columns and, for a file of a hive-partitioned dataset, the partition
    fields (the ``key=value`` folders above it), as the rows will have them."""
    import pyarrow as pa

    schema = parquet.schema_arrow
    for name, value in path.partition:
        if name not in schema.names:
            schema = schema.append(pa.field(name, pa.scalar(value).type))
    return schema


def _record_batches(
    path: SourceFile, parquet: Any, batch_size: int, columns: list[str]
) -> Iterator[Any]:
    """``iter_batches`` of ``columns`` with decoding and storage errors turned into ours;
    partition fields are added as constant columns, in the order asked."""
    import pyarrow as pa

    partition = {k: v for k, v in path.partition if k not in parquet.schema_arrow.names}
    stored = [c for c in columns if c not in partition]
    batches = _stored_batches(path, parquet, batch_size, stored)
    while True:
        try:
            record_batch = next(batches)
        except StopIteration:
            return
        except (OSError, pa.ArrowException) as exc:
            raise read_failure(path, f"cannot decode {path} as parquet", exc) from exc
        if partition:
            record_batch = _with_partition(record_batch, columns, partition)
        yield record_batch


def _stored_batches(
    path: SourceFile, parquet: Any, batch_size: int, columns: list[str]
) -> Iterator[Any]:
    """The columns' record batches: an object with small row groups one pre-buffered
    row group at a time, everything else through the bounded read buffer."""
    if path.local is not None or not _small_row_groups(parquet, columns):
        yield from parquet.iter_batches(batch_size=batch_size, columns=columns)
        return
    import pyarrow.parquet as pq

    def groups() -> Iterator[Any]:
        with (
            path.open_random() as source,
            pq.ParquetFile(source, pre_buffer=True, metadata=parquet.metadata) as buffered,
        ):
            for group in range(parquet.num_row_groups):
                yield from buffered.iter_batches(
                    batch_size=batch_size, row_groups=[group], columns=columns
                )

    # The next row group is fetched while the caller converts this one: a GET's latency
    # would otherwise add to every row group's decoding.
    yield from read_ahead(groups(), READ_AHEAD_BATCHES)


def _small_row_groups(parquet: Any, columns: list[str]) -> bool:
    meta = parquet.metadata
    wanted = {
        i for i in range(meta.num_columns) if meta.schema.column(i).path.split(".")[0] in columns
    }
    return all(
        sum(group.column(i).total_compressed_size for i in wanted) <= PREBUFFER_MAX_ROW_GROUP_BYTES
        for group in (meta.row_group(g) for g in range(meta.num_row_groups))
    )


def _with_partition(record_batch: Any, columns: list[str], partition: dict[str, Any]) -> Any:
    import pyarrow as pa

    n = record_batch.num_rows
    arrays = [
        pa.array([partition[c]] * n) if c in partition else record_batch.column(c) for c in columns
    ]
    return pa.RecordBatch.from_arrays(arrays, names=columns)


def _is_float_list(arrow_type: Any) -> bool:
    import pyarrow as pa

    types = pa.types
    is_list = (
        types.is_list(arrow_type)
        or types.is_large_list(arrow_type)
        or types.is_fixed_size_list(arrow_type)
    )
    return bool(is_list and types.is_floating(arrow_type.value_type))


def _first_true(arrow_mask: Any) -> int:
    return int(np.flatnonzero(arrow_mask.to_numpy(zero_copy_only=False))[0])


def _arrow_ids(column: Any, origin: str, first_row: int) -> Int64Array:
    if column.null_count:
        row = first_row + _first_true(column.is_null())
        raise SourceError(f"{origin}, row {row}: id is null; every row needs an integer id")
    return _as_int64(column.to_numpy(), origin, first_row)


def _arrow_vectors(column: Any, origin: str, first_row: int) -> Float32Array:
    """Stack a list column into (n, d) float32 through its flat values buffer."""
    if column.null_count:
        row = first_row + _first_true(column.is_null())
        raise SourceError(f"{origin}, row {row}: vector is null; every row needs a vector")
    import pyarrow.compute as pc

    lengths = pc.list_value_length(column).to_numpy()
    dim = int(lengths[0])
    ragged = np.flatnonzero(lengths != dim)
    if ragged.size:
        i = int(ragged[0])
        raise SourceError(
            f"{origin}, row {first_row + i}: vector has {lengths[i]} values but row "
            f"{first_row} has {dim}; all vectors must have the same length"
        )
    if dim == 0:
        raise SourceError(
            f"{origin}, row {first_row}: vector is empty; vectors need at least one value"
        )
    values = column.flatten()
    if values.null_count:
        row = first_row + _first_true(values.is_null()) // dim
        raise SourceError(
            f"{origin}, row {row}: vector contains a null; every value must be a number"
        )
    # float64 values beyond float32 range become inf quietly; the sanity check names them.
    with np.errstate(over="ignore"):
        flat = np.ascontiguousarray(values.to_numpy(), dtype=np.float32)
    return flat.reshape(len(column), dim)


# --- npy --------------------------------------------------------------------------


class _NpySource(_FilesSource):
    """2-D float .npy files; ids from sibling ``<stem>.ids.npy`` files or row numbers.

    Either every file has a sibling id file or none does: mixing the two would give
    row-number ids that collide with explicit ones.
    """

    def __init__(self, paths: list[SourceFile], label: str) -> None:
        with_ids = [path for path in paths if _ids_path(path).is_file()]
        if with_ids and len(with_ids) != len(paths):
            lacking = next(path for path in paths if not _ids_path(path).is_file())
            raise SourceError(
                f"{with_ids[0]} has ids in {_ids_path(with_ids[0]).name} but {lacking} "
                f"has no {_ids_path(lacking).name}; give every .npy file a sibling "
                ".ids.npy file, or none (then ids are row numbers)"
            )
        self._has_ids = bool(with_ids)
        ids_note = "ids from .ids.npy files" if self._has_ids else "ids are row numbers"
        super().__init__(paths, f"{label} ({ids_note})")

    def count_rows(self) -> int:
        # A memory map reads only the header, so this stays cheap for big files.
        return sum(int(_load_vectors(path).shape[0]) for path in self._paths)

    def batches(self, batch_size: int) -> Iterator[VectorBatch]:
        _check_batch_size(batch_size)
        offset = 0  # running row number across files, used when there are no id files
        for path in self._paths:
            vectors = _load_vectors(path)
            ids = _load_ids(path, vectors.shape[0]) if self._has_ids else None
            for start in range(0, vectors.shape[0], batch_size):
                stop = min(start + batch_size, vectors.shape[0])
                if ids is None:
                    batch_ids = np.arange(offset + start, offset + stop, dtype=np.int64)
                else:
                    batch_ids = _as_int64(np.array(ids[start:stop]), str(_ids_path(path)), start)
                # Copy out of the memory map so the batch does not pin the file.
                batch_vectors = np.array(vectors[start:stop], dtype=np.float32, order="C")
                yield VectorBatch(batch_ids, batch_vectors, {}, str(path), start)
            offset += vectors.shape[0]


def _ids_path(path: SourceFile) -> SourceFile:
    return path.sibling(path.name[: -len(path.suffix)] + IDS_SUFFIX)


def _load_npy(path: SourceFile) -> Any:
    """A memory map of a local .npy file; an object's is read in row ranges."""
    if path.local is None:
        return _RemoteNpy.open(path)
    try:
        array = np.load(path.local, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise SourceError(f"cannot read {path} as a .npy array: {exc}") from exc
    if not isinstance(array, np.ndarray):
        array.close()  # an .npz archive with a .npy name
        raise SourceError(
            f"{path} is an .npz archive, not a single .npy array; save it with numpy.save"
        )
    return array


class _RemoteNpy:
    """An .npy object read a slice of rows at a time with ranged reads: what a memory
    map is to a local file (only the header is read up front)."""

    def __init__(self, path: SourceFile, shape: tuple[int, ...], dtype: Any, offset: int):
        self.path, self.shape, self.dtype, self.offset = path, shape, dtype, offset
        self.ndim = len(shape)
        self._row_bytes = int(dtype.itemsize * int(np.prod(shape[1:], dtype=np.int64)))

    @classmethod
    def open(cls, path: SourceFile) -> _RemoteNpy:
        fmt = np.lib.format
        with (
            path.open_random() as fh,
            storage_errors(f"cannot read {path} as a .npy array", path.secrets),
        ):
            version = fmt.read_magic(fh)
            header = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
            shape, fortran, dtype = header(fh)
            offset = fh.tell()
        if fortran or dtype.hasobject:
            raise SourceError(
                f"{path} holds a Fortran-ordered or object array; save it with numpy.save "
                "from a C-ordered numeric array"
            )
        return cls(path, tuple(shape), dtype, offset)

    def __getitem__(self, rows: slice) -> npt.NDArray[Any]:
        start, stop, _ = rows.indices(self.shape[0])
        count = max(stop - start, 0)
        with (
            self.path.open_random() as fh,
            storage_errors(f"cannot read {self.path}", self.path.secrets),
        ):
            data = fh.read_at(count * self._row_bytes, self.offset + start * self._row_bytes)
        if len(data) != count * self._row_bytes:
            raise SourceError(f"{self.path} ends early: it is shorter than its header says")
        return np.frombuffer(data, dtype=self.dtype).reshape((count, *self.shape[1:]))

    def __array__(self, dtype: Any = None, copy: Any = None) -> npt.NDArray[Any]:
        array = self[:]
        return array if dtype is None else array.astype(dtype)


def _load_vectors(path: SourceFile) -> Any:
    array = _load_npy(path)
    if array.ndim != 2 or array.dtype.kind != "f" or array.shape[1] == 0:
        raise SourceError(
            f"{path} holds a {array.dtype} array of shape {array.shape}; expected a "
            "2-D float array of shape (rows, dimension)"
        )
    return array


def _load_ids(path: SourceFile, rows: int) -> Any:
    ids_path = _ids_path(path)
    ids = _load_npy(ids_path)
    if ids.ndim != 1 or ids.dtype.kind not in "iu" or ids.shape[0] != rows:
        raise SourceError(
            f"{ids_path} holds a {ids.dtype} array of shape {ids.shape}; expected a "
            f"1-D integer array with one id for each of the {rows} rows in {path.name}"
        )
    return ids


# --- JSON Lines -------------------------------------------------------------------


class _JsonRow(NamedTuple):
    line: int
    id: int
    vector: list[float]
    extras: tuple[Any, ...]


class _JsonlSource(_FilesSource):
    """JSON Lines files: one object per line with an id, a vector and extra keys."""

    def __init__(
        self,
        paths: list[SourceFile],
        label: str,
        id_field: str,
        vector_field: str,
        extras: tuple[str, ...],
    ) -> None:
        super().__init__(paths, label)
        self._id_field = id_field
        self._vector_field = vector_field
        self._extras = extras
        self._keys = list(dict.fromkeys([id_field, vector_field, *extras]))

    def count_rows(self) -> None:
        return None  # counting would mean reading every file

    def batches(self, batch_size: int) -> Iterator[VectorBatch]:
        _check_batch_size(batch_size)
        for path in self._paths:
            yield from self._file_batches(path, batch_size)

    def _file_batches(self, path: SourceFile, batch_size: int) -> Iterator[VectorBatch]:
        first_row = 0
        first: _JsonRow | None = None  # fixes the dimension for the whole file
        pending: list[_JsonRow] = []
        for line, obj in _json_objects(path):
            row = self._parse(path, line, obj)
            if first is None:
                first = row
            if len(row.vector) != len(first.vector):
                raise SourceError(
                    f"{path}, line {line}: vector has {len(row.vector)} values but the "
                    f"one on line {first.line} has {len(first.vector)}; all vectors must "
                    "have the same length"
                )
            pending.append(row)
            if len(pending) == batch_size:
                yield _rows_to_batch(path, pending, first_row, self._extras)
                first_row += len(pending)
                pending = []
        if pending:
            yield _rows_to_batch(path, pending, first_row, self._extras)

    def _parse(self, path: SourceFile, line: int, obj: dict[str, Any]) -> _JsonRow:
        missing = [key for key in self._keys if key not in obj]
        if missing:
            raise SourceError(
                f"{path}, line {line}: missing key {', '.join(map(repr, missing))}; the "
                f"line has keys {', '.join(map(repr, obj)) or '(none)'}"
            )
        where = f"{path}, line {line}"
        return _JsonRow(
            line=line,
            id=_json_id(obj[self._id_field], self._id_field, where),
            vector=_json_vector(obj[self._vector_field], self._vector_field, where),
            extras=tuple(obj[name] for name in self._extras),
        )


def _json_objects(path: SourceFile) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line number, object)`` for each non-blank line."""
    try:
        with path.open_binary() as handle:
            for number, raw in enumerate(handle, start=1):
                if raw.strip():
                    yield number, _json_object(raw, path, number)
    except OSError as exc:
        raise read_failure(path, f"cannot read {path}", exc) from exc


def _json_object(raw: bytes, path: SourceFile, line: int) -> dict[str, Any]:
    try:
        obj = json.loads(raw.rstrip(b"\r\n"))  # so error columns count within the line
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        problem = (
            f"{exc.msg} at column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else exc
        )
        raise SourceError(
            f"{path}, line {line}: not valid JSON ({problem}); each line must hold one JSON object"
        ) from exc
    if not isinstance(obj, dict):
        raise SourceError(f"{path}, line {line}: expected a JSON object, got {type(obj).__name__}")
    return obj


def _json_id(value: Any, key: str, where: str) -> int:
    # bool is an int subclass; the exact type check rejects true/false as ids.
    if type(value) is not int:
        raise SourceError(f"{where}: id {key!r} is {value!r}; expected an integer")
    if not _INT64_MIN <= value <= _INT64_MAX:
        raise SourceError(f"{where}: id {value} does not fit in a signed 64-bit integer")
    return value


def _json_vector(value: Any, key: str, where: str) -> list[float]:
    if not isinstance(value, list) or not value:
        raise SourceError(
            f"{where}: {key!r} is {_short(value)}; expected a non-empty list of numbers"
        )
    # map(type) runs in C; only on failure do we look for the offending element.
    if not set(map(type, value)) <= _JSON_NUMBER_TYPES:
        i = next(i for i, v in enumerate(value) if type(v) not in _JSON_NUMBER_TYPES)
        raise SourceError(
            f"{where}: {key!r}[{i}] is {_short(value[i])}; vectors must hold only numbers"
        )
    return value


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _rows_to_batch(
    path: SourceFile, rows: list[_JsonRow], first_row: int, extras: tuple[str, ...]
) -> VectorBatch:
    try:
        # Values beyond float32 range become inf on purpose; the sanity check reports them.
        with np.errstate(over="ignore"):
            vectors = np.array([row.vector for row in rows], dtype=np.float32)
    except OverflowError as exc:  # integers too large even for float64
        lines = (
            f"line {rows[0].line}" if len(rows) == 1 else f"lines {rows[0].line}-{rows[-1].line}"
        )
        raise SourceError(
            f"{path}, {lines}: a vector holds a number too large to represent; "
            "vector values must fit in a 32-bit float"
        ) from exc
    return VectorBatch(
        ids=np.fromiter((row.id for row in rows), dtype=np.int64, count=len(rows)),
        vectors=vectors,
        fields={name: [row.extras[i] for row in rows] for i, name in enumerate(extras)},
        origin=str(path),
        first_row=first_row,
    )
