"""Staging a bulk import: the rows of a checked source as Parquet files Milvus can import.

Milvus 2.3 imports a Parquet file whose columns are the collection's fields by name:
``id`` (int64), ``vector`` (a list of float32) and every extra scalar field. The source's
own files cannot be handed over as they are (other column names, fixed-size lists,
.npy and JSON Lines), so every batch is written again, streamed: memory stays at about
one batch, whatever the corpus. Files go to ``<path>/<collection>/part-NNNNN.parquet``;
Milvus is told ``<remotePrefix>/<collection>/part-NNNNN.parquet``, the same file as
Milvus reads it (the same folder for a server sharing the controller's disk, e.g. the
standalone server's local storage; a bucket prefix where ``path`` is object storage
mounted into the controller).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from controller.errors import SourceError
from controller.sources.base import VectorBatch
from controller.spec import FieldSpec

ID_COLUMN, VECTOR_COLUMN = "id", "vector"  # the gateway's field names
# Rows per Parquet row group: 64k rows of 128 floats are 32 MB held while staging.
ROW_GROUP_ROWS = 65_536


def _arrow_type(kind: str) -> Any:
    import pyarrow as pa

    return {
        "VARCHAR": pa.string(),
        "JSON": pa.string(),  # Milvus parses the text of a JSON field
        "INT64": pa.int64(),
        "INT32": pa.int32(),
        "INT16": pa.int16(),
        "INT8": pa.int8(),
        "FLOAT": pa.float32(),
        "DOUBLE": pa.float64(),
        "BOOL": pa.bool_(),
    }[kind]


class ParquetStaging:
    """The ``ImportStagingPort``: Parquet files under ``path``, named for Milvus under
    ``remote_prefix``, at most ``rows_per_file`` rows each (one import job per file)."""

    def __init__(self, path: Path, remote_prefix: str, rows_per_file: int) -> None:
        self.path = path
        self.remote_prefix = remote_prefix.rstrip("/")
        self.rows_per_file = rows_per_file

    def stage(
        self, name: str, fields: Sequence[FieldSpec], batches: Iterable[VectorBatch]
    ) -> list[str]:
        import pyarrow as pa

        self.remove(name)  # what an interrupted run left
        folder = self.path / name
        try:
            folder.mkdir(parents=True)
        except OSError as exc:
            raise SourceError(
                f"cannot stage the bulk import in {folder} (milvus.importStaging.path): "
                f"{exc.strerror}"
            ) from exc
        schema = pa.schema(
            [(ID_COLUMN, pa.int64()), (VECTOR_COLUMN, pa.list_(pa.float32()))]
            + [(f.name, _arrow_type(f.type)) for f in fields]
        )
        writer = _PartWriter(folder, schema, self.rows_per_file)
        try:
            for batch in batches:
                writer.write(_table(batch, fields, schema))
        finally:
            writer.close()
        return [f"{self.remote_prefix}/{name}/{part}" for part in writer.parts]

    def remove(self, name: str) -> None:
        shutil.rmtree(self.path / name, ignore_errors=True)


class _PartWriter:
    """Tables appended into part files of at most ``limit`` rows each, in row groups of
    ``ROW_GROUP_ROWS``: the server's Parquet import reads a file row group by row
    group, and one group per 5,000-row batch made it several times slower."""

    def __init__(self, folder: Path, schema: Any, limit: int) -> None:
        self.folder, self.schema, self.limit = folder, schema, limit
        self.parts: list[str] = []
        self._writer: Any = None
        self._rows = 0  # rows in the current part, written or pending
        self._pending: list[Any] = []
        self._pending_rows = 0

    def write(self, table: Any) -> None:
        start = 0
        while start < table.num_rows:
            if self._writer is None or self._rows >= self.limit:
                self._next_part()
            take = min(self.limit - self._rows, table.num_rows - start)
            self._pending.append(table.slice(start, take))
            self._pending_rows += take
            self._rows += take
            start += take
            if self._pending_rows >= ROW_GROUP_ROWS:
                self._flush()

    def _flush(self) -> None:
        import pyarrow as pa

        if self._pending:
            group = pa.concat_tables(self._pending).combine_chunks()
            self._writer.write_table(group, row_group_size=max(group.num_rows, 1))
        self._pending, self._pending_rows = [], 0

    def _next_part(self) -> None:
        import pyarrow.parquet as pq

        self.close()
        part = f"part-{len(self.parts):05d}.parquet"
        # Uncompressed: embeddings do not compress, and both sides save the CPU.
        path = str(self.folder / part)
        self._writer = pq.ParquetWriter(path, self.schema, compression="none")
        self.parts.append(part)
        self._rows = 0

    def close(self) -> None:
        if self._writer is not None:
            self._flush()
            self._writer.close()
            self._writer = None


def _table(batch: VectorBatch, fields: Sequence[FieldSpec], schema: Any) -> Any:
    import pyarrow as pa

    n, dim = batch.vectors.shape
    flat = pa.array(np.ascontiguousarray(batch.vectors, dtype=np.float32).reshape(-1))
    offsets = pa.array(np.arange(0, (n + 1) * dim, dim, dtype=np.int32))
    columns = [pa.array(batch.ids, pa.int64()), pa.ListArray.from_arrays(offsets, flat)]
    for f in fields:
        values = batch.fields[f.name]
        if f.type == "JSON":
            values = [json.dumps(v) for v in values]
        columns.append(pa.array(values, _arrow_type(f.type)))
    return pa.Table.from_arrays(columns, schema=schema)
