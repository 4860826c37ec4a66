"""The engine's DataPort: files on the local disk, with paths relative to the release
spec's folder, and objects in S3, Google Cloud Storage or Azure Blob Storage
(``controller.sources.location``)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from controller.errors import SourceError
from controller.sources.base import GoldenSet, VectorSource
from controller.sources.documents import DocumentSource, open_documents
from controller.sources.files import _ids_path, open_files_source
from controller.sources.ids import read_ids
from controller.sources.labelled_queries import (
    LabelledQueries,
    read_beir,
    read_labelled_queries,
    read_parquet_queries,
)
from controller.sources.location import (
    SourceFile,
    StorageSettings,
    as_file,
    match_files,
    one_file,
    read_failure,
)
from controller.spec import DocumentsSource, FilesSource, LabelledTextsSpec, SourceSpec

# A golden set is a few thousand labelled queries; refuse files that are clearly not one.
MAX_GOLDEN_QUERIES = 100_000


class LocalFiles:
    """The engine's DataPort for files next to (or below) the release YAML, and for
    objects in a store, read with ``settings`` (credentials, endpoint)."""

    def __init__(self, base_dir: Path, settings: StorageSettings | None = None) -> None:
        self.base_dir = base_dir
        self.settings = settings or StorageSettings()

    def open_vectors(self, files: FilesSource, extra_fields: Sequence[str]) -> VectorSource:
        return open_files_source(
            files.uri,
            files.id_field,
            files.vector_field,
            extra_fields,
            self.base_dir,
            self.settings,
        )

    def read_golden_set(self, uri: str) -> GoldenSet:
        return read_golden_set(self._path(uri))

    def read_labelled_queries(self, texts: LabelledTextsSpec) -> LabelledQueries:
        """validation.goldenSet.texts: BEIR or Parquet, as ``format`` says or the path is."""
        path = self._path(texts.uri)
        if texts.format == "parquet":
            return read_parquet_queries(path, texts.text_field)
        if texts.format == "beir":
            folder = path if path.is_dir() else path.parent
            return read_beir(folder, texts.split)
        return read_labelled_queries(path, texts.split, texts.text_field)

    def read_query_vectors(self, uri: str, vector_field: str, sample: int, seed: int) -> np.ndarray:
        return read_query_vectors(self._path(uri), vector_field, sample, seed)

    def open_documents(self, documents: DocumentsSource, columns: Sequence[str]) -> DocumentSource:
        return open_documents(
            documents.uri,
            documents.id_field,
            documents.text_field,
            columns,
            self.base_dir,
            self.settings,
        )

    def read_ids(self, uri: str, id_field: str) -> np.ndarray:
        return read_ids(uri, id_field, self.base_dir, self.settings)

    def source_identity(self, source: SourceSpec) -> str:
        return source_identity(source, self.base_dir, self.settings)

    def _path(self, uri: str) -> SourceFile:
        return one_file(uri, self.base_dir, self.settings)


# Files up to this size are hashed whole; larger ones by size, head and tail, so that a
# pass over terabytes of Parquet stays cheap (a Parquet file's tail is its footer).
FULL_HASH_BYTES = 8 << 20
EDGE_BYTES = 1 << 20


def source_identity(
    source: SourceSpec, base_dir: Path, settings: StorageSettings | None = None
) -> str:
    """The identity of the files a source names: sizes and content hashes, sorted.

    Content, not names or times: the same files named from another folder (a moved
    release file), checked out again or copied elsewhere are the same source; an
    edited file is another. Paths resolve as the build resolves them (globs, relative
    to the release file's folder). An object in a store counts by its size and ETag
    (else modification time), read from its metadata, never downloaded; a file of a
    partitioned dataset also by its partition values. SourceError when a URI matches
    no file.
    """
    uris = [part.uri for part in (source.files, source.documents) if part is not None]
    if (delta := source.delta) is not None:
        uris += [part.uri for part in (delta.upserts, delta.deletes) if part is not None]
    digests = []
    for uri in uris:
        paths = match_files(uri, base_dir, settings)
        paths += [ids for p in paths if p.suffix == ".npy" and (ids := _ids_path(p)).is_file()]
        digests.append(sorted(_file_digest(p) for p in paths))
    return hashlib.sha256(json.dumps(digests).encode()).hexdigest()[:16]


def _file_digest(file: SourceFile) -> str:
    remote = file.identity()
    if remote is not None or file.local is None:
        digest = hashlib.sha256(f"object {remote}".encode())
    else:
        digest = _local_digest(file.local)
    if file.partition:  # the same file in another partition holds other rows
        digest.update(json.dumps(file.partition, default=str).encode())
    return digest.hexdigest()


def _local_digest(path: Path) -> Any:
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with path.open("rb") as fh:
        if size <= FULL_HASH_BYTES:
            digest.update(fh.read())
        else:
            digest.update(fh.read(EDGE_BYTES))
            fh.seek(size - EDGE_BYTES)
            digest.update(fh.read(EDGE_BYTES))
    return digest


def read_query_vectors(
    path: Path | SourceFile, vector_field: str, sample: int, seed: int
) -> np.ndarray:
    """A seeded sample of up to ``sample`` query vectors from a Parquet column."""
    import pyarrow as pa  # imported on use, as in controller.sources.files

    what = f"query set {path}"
    with _open_table_file(as_file(path), what, "validation.queries.uri") as parquet:
        names = parquet.schema_arrow.names
        if vector_field not in names:
            raise SourceError(
                f"{what} has no column {vector_field!r} (validation.queries.vectorField); "
                f"it has {', '.join(map(repr, names)) or 'no columns'}"
            )
        _check_number_lists(parquet.schema_arrow, vector_field, what, "floats")
        total = parquet.metadata.num_rows
        if total == 0:
            raise SourceError(f"{what} holds no rows; give at least one query vector")
        keep = np.sort(np.random.default_rng(seed).choice(total, min(sample, total), replace=False))
        picked: list[Any] = []
        offset = 0
        for batch in parquet.iter_batches(batch_size=10_000, columns=[vector_field]):
            local = keep[(keep >= offset) & (keep < offset + batch.num_rows)] - offset
            picked.append(batch.column(0).take(pa.array(local, type=pa.int64())))
            offset += batch.num_rows
        vector_type = parquet.schema_arrow.field(vector_field).type
    column = pa.chunked_array(picked, type=vector_type)
    return _query_vectors(column.combine_chunks(), keep, what, vector_field)


def read_golden_set(path: Path | SourceFile) -> GoldenSet:
    """Parquet with ``vector`` (list of floats) and ``relevant_ids`` (list of int64).

    Every row is one labelled query: a finite vector of the same length as the others,
    and at least one relevant id (a query with none could only ever score 0).
    """
    what = f"golden set {path}"
    with _open_table_file(as_file(path), what, "validation.goldenSet.uri") as parquet:
        names = set(parquet.schema_arrow.names)
        if missing := {"vector", "relevant_ids"} - names:
            raise SourceError(
                f"{what} lacks column(s) {sorted(missing)}; it has {sorted(names)}. "
                "Expected 'vector' (list of floats) and 'relevant_ids' (list of int64)"
            )
        _check_number_lists(parquet.schema_arrow, "vector", what, "floats")
        _check_number_lists(parquet.schema_arrow, "relevant_ids", what, "integer ids")
        rows = parquet.metadata.num_rows
        if rows > MAX_GOLDEN_QUERIES:
            raise SourceError(
                f"{what} has {rows} queries; at most {MAX_GOLDEN_QUERIES} are supported"
            )
        if rows == 0:
            raise SourceError(f"{what} holds no queries; give at least one labelled query")
        table = parquet.read(columns=["vector", "relevant_ids"]).combine_chunks()
    queries = _query_vectors(table.column("vector").chunk(0), np.arange(rows), what, "vector")
    relevant = _relevant_ids(table.column("relevant_ids").chunk(0), what)
    return GoldenSet(queries, relevant, str(path))


@contextmanager
def _open_table_file(path: SourceFile, what: str, field: str) -> Iterator[Any]:
    """A small Parquet file read whole (golden sets, query sets): errors name ``field``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if path.is_dir():
        raise SourceError(f"{what} is a folder; give the path of a Parquet file ({field})")
    if not path.is_file():
        raise SourceError(f"{what} does not exist ({field})")
    source = path.local if path.local is not None else path.open_random()
    try:
        with pq.ParquetFile(source) as parquet:
            yield parquet
    except (pa.ArrowException, OSError) as exc:
        raise read_failure(path, f"cannot read {what} as Parquet", exc) from exc
    finally:
        if not isinstance(source, Path):
            source.close()


def _check_number_lists(schema: Any, column: str, what: str, holding: str) -> None:
    """The column must be a list of numbers (integers for ids)."""
    import pyarrow as pa

    arrow_type = schema.field(column).type
    types = pa.types
    is_list = types.is_list(arrow_type) or types.is_large_list(arrow_type)
    is_list = is_list or types.is_fixed_size_list(arrow_type)
    value_type = arrow_type.value_type if is_list else None
    if holding == "integer ids":
        ok = value_type is not None and types.is_integer(value_type)
    else:
        ok = value_type is not None and (
            types.is_floating(value_type) or types.is_integer(value_type)
        )
    if not ok:
        raise SourceError(
            f"{what}: column {column!r} has type {arrow_type}; expected lists of {holding}"
        )


def _query_vectors(column: Any, rows: np.ndarray, what: str, name: str) -> np.ndarray:
    """(n, d) float32 from a list column whose i-th value is row ``rows[i]`` of the file."""
    import pyarrow.compute as pc

    def row(i: int) -> str:
        return f"{what}, row {int(rows[i])}"

    if column.null_count:
        raise SourceError(
            f"{row(_first(column.is_null()))}: {name!r} is null; every query needs a vector"
        )
    lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
    dim = int(lengths[0])
    if ragged := np.flatnonzero(lengths != dim).size:
        i = int(np.flatnonzero(lengths != dim)[0])
        raise SourceError(
            f"{row(i)}: {name!r} has {lengths[i]} values but row {int(rows[0])} has {dim}; "
            f"all query vectors must have the same length ({ragged} rows differ)"
        )
    if dim == 0:
        raise SourceError(f"{row(0)}: {name!r} is empty; query vectors need at least one value")
    values = column.flatten()
    if values.null_count:
        raise SourceError(f"{row(_first(values.is_null()) // dim)}: {name!r} holds a null")
    with np.errstate(over="ignore"):  # beyond float32 range becomes inf, refused below
        queries = np.asarray(values.to_numpy(zero_copy_only=False), dtype=np.float32)
    queries = queries.reshape(len(column), dim)
    bad = np.flatnonzero(~np.isfinite(queries).all(axis=1))
    if bad.size:
        raise SourceError(
            f"{row(int(bad[0]))}: {name!r} holds NaN, an infinity or a value beyond 32-bit "
            "float range; query vectors must be finite"
        )
    return queries


def _relevant_ids(column: Any, what: str) -> list[np.ndarray]:
    import pyarrow.compute as pc

    lengths = pc.list_value_length(column).fill_null(0).to_numpy(zero_copy_only=False)
    if (empty := np.flatnonzero(lengths == 0)).size:
        raise SourceError(
            f"{what}, row {int(empty[0])}: 'relevant_ids' is empty or null ({empty.size} such "
            "rows); every labelled query needs at least one relevant id"
        )
    values = column.flatten()
    if values.null_count:
        offsets = np.cumsum(lengths)
        i = int(np.searchsorted(offsets, _first(values.is_null()), side="right"))
        raise SourceError(f"{what}, row {i}: 'relevant_ids' holds a null; ids must be integers")
    raw = values.to_numpy(zero_copy_only=False)
    if raw.dtype == np.uint64 and raw.size and raw.max() > np.iinfo(np.int64).max:
        i = int(
            np.searchsorted(
                np.cumsum(lengths), int(np.argmax(raw > np.iinfo(np.int64).max)), side="right"
            )
        )
        raise SourceError(f"{what}, row {i}: a relevant id does not fit in a signed 64-bit integer")
    return np.split(raw.astype(np.int64), np.cumsum(lengths)[:-1])


def _first(mask: Any) -> int:
    return int(np.flatnonzero(mask.to_numpy(zero_copy_only=False))[0])
