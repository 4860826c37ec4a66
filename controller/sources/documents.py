"""Documents to embed: an id, a text and metadata per row, from Parquet or JSON Lines.

Streamed like the vector files (``controller.sources.files``): Parquet through
``iter_batches``, JSON Lines line by line, so memory stays at about one batch.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from controller.errors import SourceError
from controller.sources.files import (
    _arrow_ids,
    _check_batch_size,
    _json_id,
    _json_objects,
    _open_parquet,
    _record_batches,
    parquet_schema,
)
from controller.sources.location import SourceFile, StorageSettings, match_files, shown

_FORMATS = {".parquet": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl"}


@dataclass(frozen=True)
class DocumentBatch:
    """Consecutive documents of one file: ids, texts, and the named columns."""

    ids: npt.NDArray[np.int64]
    texts: list[str]
    # Every column asked for besides id and text: metadata that feeds the embedding,
    # and the collection's extra fields.
    columns: dict[str, list[Any]]
    origin: str
    first_row: int

    def __len__(self) -> int:
        return int(self.ids.shape[0])


class DocumentSource(Protocol):
    def describe(self) -> str: ...
    def batches(self, batch_size: int) -> Iterator[DocumentBatch]: ...


def open_documents(
    uri: str,
    id_field: str,
    text_field: str,
    columns: Sequence[str],
    base_dir: Path | None = None,
    settings: StorageSettings | None = None,
) -> DocumentSource:
    """Open the Parquet or JSON Lines files ``uri`` names (a path, glob or folder,
    local or in object storage)."""
    paths = match_files(uri, base_dir, settings)
    formats = {_format_of(path) for path in paths}
    if len(formats) > 1:
        raise SourceError(
            f"documents {shown(uri)!r} match files of different formats ({', '.join(sorted(formats))}); "
            "narrow the pattern (e.g. *.parquet)"
        )
    label = f"{len(paths)} document file{'s' if len(paths) != 1 else ''} matching {shown(uri)}"
    wanted = tuple(c for c in dict.fromkeys(columns) if c not in (id_field, text_field))
    reader = _ParquetDocuments if formats == {"parquet"} else _JsonlDocuments
    return reader(paths, label, id_field, text_field, wanted)


def _format_of(path: SourceFile) -> str:
    fmt = _FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise SourceError(
            f"{path}: unsupported documents file type {path.suffix or '(no extension)'}; "
            "documents must be in .parquet, .jsonl or .ndjson files"
        )
    return fmt


class _Documents:
    def __init__(
        self,
        paths: list[SourceFile],
        label: str,
        id_field: str,
        text_field: str,
        columns: tuple[str, ...],
    ) -> None:
        self._paths, self._label = paths, label
        self._id, self._text, self._columns = id_field, text_field, columns

    def describe(self) -> str:
        return self._label

    def batches(self, batch_size: int) -> Iterator[DocumentBatch]:
        _check_batch_size(batch_size)
        for path in self._paths:
            yield from self._file_batches(path, batch_size)

    def _file_batches(self, path: SourceFile, batch_size: int) -> Iterator[DocumentBatch]:
        raise NotImplementedError


class _ParquetDocuments(_Documents):
    def _file_batches(self, path: SourceFile, batch_size: int) -> Iterator[DocumentBatch]:
        columns = [self._id, self._text, *self._columns]
        with _open_parquet(path) as parquet:
            self._check_schema(path, parquet_schema(path, parquet))
            first_row = 0
            for batch in _record_batches(path, parquet, batch_size, columns):
                if batch.num_rows:
                    yield self._to_batch(str(path), batch, first_row)
                first_row += batch.num_rows

    def _check_schema(self, path: SourceFile, schema: Any) -> None:
        import pyarrow as pa  # imported on use, as in controller.sources.files

        names = list(schema.names)
        missing = [c for c in (self._id, self._text, *self._columns) if c not in names]
        if missing:
            raise SourceError(
                f"{path} has no column {', '.join(map(repr, missing))}; its columns are "
                f"{', '.join(names)}. Check source.documents (idField, textField, "
                "metadataFields) and collection.fields"
            )
        if not pa.types.is_integer(schema.field(self._id).type):
            raise SourceError(
                f"{path}: id column {self._id!r} has type {schema.field(self._id).type}; "
                "expected an integer type"
            )
        text_type = schema.field(self._text).type
        if not (pa.types.is_string(text_type) or pa.types.is_large_string(text_type)):
            raise SourceError(
                f"{path}: text column {self._text!r} has type {text_type}; expected strings"
            )

    def _to_batch(self, origin: str, batch: Any, first_row: int) -> DocumentBatch:
        text = batch.column(self._text)
        if text.null_count:
            row = first_row + int(np.flatnonzero(text.is_null().to_numpy(zero_copy_only=False))[0])
            raise SourceError(f"{origin}, row {row}: text is null; every document needs a text")
        return DocumentBatch(
            ids=_arrow_ids(batch.column(self._id), origin, first_row),
            texts=text.to_pylist(),
            columns={name: batch.column(name).to_pylist() for name in self._columns},
            origin=origin,
            first_row=first_row,
        )


class _JsonlDocuments(_Documents):
    def _file_batches(self, path: SourceFile, batch_size: int) -> Iterator[DocumentBatch]:
        ids: list[int] = []
        texts: list[str] = []
        columns: dict[str, list[Any]] = {name: [] for name in self._columns}
        first_row = 0
        for line, obj in _json_objects(path):
            where = f"{path}, line {line}"
            missing = [k for k in (self._id, self._text, *self._columns) if k not in obj]
            if missing:
                raise SourceError(
                    f"{where}: missing key {', '.join(map(repr, missing))}; the line has keys "
                    f"{', '.join(map(repr, obj)) or '(none)'}"
                )
            if not isinstance(obj[self._text], str):
                raise SourceError(
                    f"{where}: text {self._text!r} is {type(obj[self._text]).__name__}; "
                    "expected a string"
                )
            ids.append(_json_id(obj[self._id], self._id, where))
            texts.append(obj[self._text])
            for name in self._columns:
                columns[name].append(obj[name])
            if len(ids) == batch_size:
                yield _batch(ids, texts, columns, str(path), first_row)
                first_row += len(ids)
                ids, texts, columns = [], [], {name: [] for name in self._columns}
        if ids:
            yield _batch(ids, texts, columns, str(path), first_row)


def _batch(
    ids: list[int], texts: list[str], columns: dict[str, list[Any]], origin: str, first_row: int
) -> DocumentBatch:
    return DocumentBatch(np.asarray(ids, dtype=np.int64), texts, columns, origin, first_row)
