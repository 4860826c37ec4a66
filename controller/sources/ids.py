"""Lists of ids (a delta's deletes): Parquet, JSON Lines, .npy or plain text.

    parquet          an integer column named by ``id_field``
    .jsonl/.ndjson   one object per line with an integer ``id_field``
    .npy             a 1-D integer array
    .txt             one integer per line (blank lines and ``#`` comments skipped)

Ids are few next to the corpus (8 bytes each), so the whole list is returned as one
sorted, de-duplicated int64 array.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import numpy.typing as npt

from controller.errors import SourceError
from controller.sources.files import (
    _arrow_ids,
    _as_int64,
    _json_id,
    _json_objects,
    _load_npy,
    _open_parquet,
    _record_batches,
    parquet_schema,
)
from controller.sources.location import SourceFile, StorageSettings, match_files, read_failure

_FORMATS = {".parquet": "parquet", ".npy": "npy", ".jsonl": "jsonl", ".ndjson": "jsonl"}
_FORMATS |= {".txt": "txt"}
_BATCH = 65_536
_INTEGER = re.compile(r"^[+-]?[0-9]+$")


def read_ids(
    uri: str,
    id_field: str,
    base_dir: Path | None = None,
    settings: StorageSettings | None = None,
) -> npt.NDArray[np.int64]:
    """Every id in the files ``uri`` names (local or in object storage), sorted and unique."""
    chunks: list[npt.NDArray[np.int64]] = [np.empty(0, np.int64)]
    for path in match_files(uri, base_dir, settings):
        fmt = _FORMATS.get(path.suffix.lower())
        if fmt is None:
            raise SourceError(
                f"{path}: unsupported id file type {path.suffix or '(no extension)'}; an id "
                "list must end in .parquet, .jsonl, .ndjson, .npy or .txt"
            )
        chunks.append(_READERS[fmt](path, id_field))
    return np.unique(np.concatenate(chunks))


def _parquet_ids(path: SourceFile, id_field: str) -> npt.NDArray[np.int64]:
    import pyarrow as pa  # imported on use, as in controller.sources.files

    with _open_parquet(path) as parquet:
        schema = parquet_schema(path, parquet)
        if id_field not in schema.names:
            raise SourceError(
                f"{path} has no column {id_field!r}; its columns are {', '.join(schema.names)}. "
                "Check source.delta.deletes.idField"
            )
        if not pa.types.is_integer(schema.field(id_field).type):
            raise SourceError(
                f"{path}: id column {id_field!r} has type {schema.field(id_field).type}; "
                "expected an integer type"
            )
        out, first_row = [], 0
        for batch in _record_batches(path, parquet, _BATCH, [id_field]):
            out.append(_arrow_ids(batch.column(0), str(path), first_row))
            first_row += batch.num_rows
    return np.concatenate(out) if out else np.empty(0, np.int64)


def _jsonl_ids(path: SourceFile, id_field: str) -> npt.NDArray[np.int64]:
    ids = []
    for line, obj in _json_objects(path):
        if id_field not in obj:
            raise SourceError(
                f"{path}, line {line}: missing key {id_field!r}; the line has keys "
                f"{', '.join(map(repr, obj)) or '(none)'}"
            )
        ids.append(_json_id(obj[id_field], id_field, f"{path}, line {line}"))
    return np.asarray(ids, dtype=np.int64)


def _npy_ids(path: SourceFile, id_field: str) -> npt.NDArray[np.int64]:
    array = _load_npy(path)
    if array.ndim != 1 or array.dtype.kind not in "iu":
        raise SourceError(
            f"{path} holds a {array.dtype} array of shape {array.shape}; an id list "
            "must be a 1-D integer array"
        )
    return _as_int64(np.array(array), str(path), 0)


def _text_ids(path: SourceFile, id_field: str) -> npt.NDArray[np.int64]:
    ids = []
    try:
        with path.open_binary() as fh:
            lines = fh.read().decode().splitlines()
    except UnicodeDecodeError as exc:
        raise SourceError(f"cannot read {path}: {exc}") from exc
    except OSError as exc:
        raise read_failure(path, f"cannot read {path}", exc) from exc
    for number, raw in enumerate(lines, start=1):
        text = raw.split("#", 1)[0].strip()
        if not text:
            continue
        if not _INTEGER.match(text):
            raise SourceError(f"{path}, line {number}: {text!r} is not an integer id")
        ids.append(_json_id(int(text), "id", f"{path}, line {number}"))
    return np.asarray(ids, dtype=np.int64)


_READERS = {"parquet": _parquet_ids, "jsonl": _jsonl_ids, "npy": _npy_ids, "txt": _text_ids}
