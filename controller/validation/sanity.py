"""Checks on the data itself, run on every batch before anything reaches Milvus.

Pure numpy and no I/O, so the same checks serve a dry run and a real load. Each
check scans a batch in a few vectorised passes without (n, d) temporaries.

Extra scalar fields are checked against their declared Milvus type here, in the check
pass, because Milvus itself only refuses them at insert time: after the collection was
created, with a message such as "FieldData 'title' has 2999 rows" that names no row.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from controller.errors import SourceError
from controller.sources.base import VectorBatch

if TYPE_CHECKING:
    from controller.spec import FieldSpec, VectorFieldSpec

# Rows compared per step in DuplicateIdTracker.check, bounding its scratch memory.
_SCAN_BLOCK = 1 << 20


def check_batch(
    batch: VectorBatch,
    dimension: int,
    metric: str,
    fields: Sequence[FieldSpec] = (),
    vectors: Sequence[VectorFieldSpec] = (),
) -> None:
    """Raise SourceError if the batch has the wrong dimension or unusable vectors,
    or an extra field (``fields``: the spec's collection.fields) Milvus would refuse,
    or an unusable value in one of the other vector fields (``vectors``).

    Non-finite values are always rejected; all-zero vectors only for COSINE,
    where they have no direction and the similarity is undefined.
    """
    _check_dimension(batch, dimension)
    _check_finite(batch)
    if metric.upper() == "COSINE":
        _check_nonzero(batch)
    _check_fields(batch.fields, fields, lambda i: _row(batch, i))
    for position, spec in enumerate(vectors):
        values = batch.fields.get(spec.name)
        if values is None:  # a reader bug or a caller that did not ask for the column
            raise ValueError(f"the batch carries no values for vector field {spec.name!r}")
        path = f"spec.collection.vectors[{position}]"
        where = _in_vector(lambda i: _row(batch, i), spec.name)
        _check_vector_field(values, spec, path, where)


def check_field_values(
    columns: Mapping[str, Sequence[Any]],
    fields: Sequence[FieldSpec],
    origin: str,
    first_row: int,
    ids: npt.NDArray[np.int64],
) -> None:
    """The field checks of ``check_batch`` for rows that are not a VectorBatch yet
    (documents, before they are embedded): ``columns`` maps field name to values."""
    _check_fields(columns, fields, lambda i: f"{origin}, row {first_row + i} (id {ids[i]})")


def _row(batch: VectorBatch, i: int) -> str:
    return f"{batch.origin}, row {batch.first_row + i} (id {batch.ids[i]})"


def _more(count: int) -> str:
    if count < 2:
        return ""
    return f" ({count - 1} more such row{'s' if count > 2 else ''} in this batch)"


def _check_dimension(batch: VectorBatch, dimension: int) -> None:
    actual = batch.vectors.shape[1]
    if actual != dimension:
        raise SourceError(
            f"{batch.origin}: data has {actual}-dim vectors, the spec says "
            f"collection.dimension: {dimension}; fix the spec or the embedding model"
        )


def _check_finite(batch: VectorBatch) -> None:
    # Finite float32 values cannot overflow a float64 row sum, so a non-finite sum
    # marks exactly the rows holding NaN or +-inf (inf - inf gives NaN).
    with np.errstate(invalid="ignore"):  # inf - inf is what we are looking for
        sums = batch.vectors.sum(axis=1, dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(sums))
    if bad.size:
        i = int(bad[0])
        vector = batch.vectors[i]
        position = int(np.flatnonzero(~np.isfinite(vector))[0])
        value = "NaN" if np.isnan(vector[position]) else str(vector[position])
        raise SourceError(
            f"{_row(batch, i)}: vector holds {value} at position {position}"
            f"{_more(bad.size)}; vectors must contain only finite numbers"
        )


def _check_nonzero(batch: VectorBatch) -> None:
    zero = np.flatnonzero(~batch.vectors.any(axis=1))
    if zero.size:
        raise SourceError(
            f"{_row(batch, int(zero[0]))}: vector is all zeros{_more(zero.size)}; "
            "COSINE similarity is undefined for it, so drop the row or fix its embedding"
        )


# --- other vector fields ------------------------------------------------------------


def _in_vector(where: Where, name: str) -> Where:
    return lambda i: f"{where(i)}, vector field {name!r}"


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_vector_field(
    values: Sequence[Any], spec: VectorFieldSpec, path: str, where: Where
) -> None:
    """Each value a list of ``spec.dimension`` finite numbers (not all zero for COSINE)."""
    for i, value in enumerate(values):
        if value is None:
            raise SourceError(
                f"{where(i)}: value is null; every row needs a {spec.dimension}-dim vector"
            )
        if not isinstance(value, list | tuple) or not all(map(_is_number, value)):
            raise SourceError(
                f"{where(i)}: value is {_describe(value)}; {spec.type} needs a list of "
                f"{spec.dimension} numbers"
            )
        if len(value) != spec.dimension:
            raise SourceError(
                f"{where(i)}: vector has {len(value)} values, {path}.dimension is {spec.dimension}"
            )
    if not values:
        return
    with np.errstate(over="ignore"):  # a float64 beyond float32's range becomes inf
        matrix = np.asarray(values, dtype=np.float32)
    bad = np.flatnonzero(~np.isfinite(matrix).all(axis=1))
    if bad.size:
        raise SourceError(
            f"{where(int(bad[0]))}: vector holds a value that is not a finite float32"
            f"{_more(bad.size)}; vectors must contain only finite numbers"
        )
    if spec.metric == "COSINE" and (zero := np.flatnonzero(~matrix.any(axis=1))).size:
        raise SourceError(
            f"{where(int(zero[0]))}: vector is all zeros{_more(zero.size)}; COSINE "
            "similarity is undefined for it"
        )


# --- extra scalar fields ------------------------------------------------------------

_INT_BITS = {"INT8": 8, "INT16": 16, "INT32": 32, "INT64": 64}
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_FLOAT64_MAX = float(np.finfo(np.float64).max)
_ALLOWED_TYPES: dict[str, frozenset[type]] = {
    **dict.fromkeys(_INT_BITS, frozenset({int})),
    "FLOAT": frozenset({int, float}),
    "DOUBLE": frozenset({int, float}),
    "BOOL": frozenset({bool}),
    "VARCHAR": frozenset({str}),
}
_EXPECTED = {
    **dict.fromkeys(_INT_BITS, "an integer"),
    "FLOAT": "a number",
    "DOUBLE": "a number",
    "BOOL": "true or false",
    "VARCHAR": "a string",
}

Where = Callable[[int], str]


def _check_fields(
    columns: Mapping[str, Sequence[Any]], fields: Sequence[FieldSpec], where: Where
) -> None:
    for spec in fields:
        values = columns.get(spec.name)
        if values is None:  # a reader bug or a caller that did not ask for the column
            raise ValueError(f"the batch carries no values for field {spec.name!r}")
        _check_field(values, spec, _in_field(where, spec))


def _in_field(where: Where, spec: FieldSpec) -> Where:
    return lambda i: f"{where(i)}, field {spec.name!r} ({spec.type})"


def _check_field(values: Sequence[Any], spec: FieldSpec, where: Where) -> None:
    # Exact types, checked in one C-level pass: bool is an int subclass, and a JSON
    # true/false or a Parquet boolean is not an integer.
    kinds = set(map(type, values))
    if type(None) in kinds:
        if spec.nullable:  # stored as null, or as the field's default
            present = [i for i, v in enumerate(values) if v is not None]
            _check_field([values[i] for i in present], spec, lambda j: where(present[j]))
            return
        i = next(i for i, v in enumerate(values) if v is None)
        raise SourceError(
            f"{where(i)}: value is null; the field is not nullable, so every row needs a "
            "value (fill it in, or declare it nullable: true in collection.fields)"
        )
    if spec.type == "JSON":
        _check_json(values, where)
        return
    allowed = _ALLOWED_TYPES[spec.type]
    if not kinds <= allowed:
        i = next(i for i, v in enumerate(values) if type(v) not in allowed)
        raise SourceError(
            f"{where(i)}: value is {_describe(values[i])}; {spec.type} needs {_EXPECTED[spec.type]}"
        )
    if spec.type in _INT_BITS:
        _check_int_range(values, _INT_BITS[spec.type], where)
    elif spec.type in ("FLOAT", "DOUBLE"):
        _check_float_range(values, spec.type, where)
    elif spec.type == "VARCHAR":
        assert spec.max_length is not None  # the spec requires maxLength for VARCHAR
        _check_varchar(values, spec.max_length, where)


def _check_int_range(values: Sequence[int], bits: int, where: Where) -> None:
    low, high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    if values and (min(values) < low or max(values) > high):
        i = next(i for i, v in enumerate(values) if not low <= v <= high)
        raise SourceError(
            f"{where(i)}: value {values[i]} is out of range; a {bits}-bit integer holds "
            f"{low}..{high}"
        )


def _check_float_range(values: Sequence[float], kind: str, where: Where) -> None:
    limit = _FLOAT32_MAX if kind == "FLOAT" else _FLOAT64_MAX
    for i, value in enumerate(values):
        # NaN and inf pass (Milvus stores them); a finite value must not overflow to inf.
        # An int is compared exactly: math.isfinite would overflow on a 400-digit one.
        if (type(value) is int or math.isfinite(value)) and abs(value) > limit:
            raise SourceError(
                f"{where(i)}: value {_describe(value)} is too large for {kind} (at most "
                f"{limit:.4g} in magnitude); use DOUBLE or scale the value"
            )


def _check_varchar(values: Sequence[str], max_length: int, where: Where) -> None:
    # Milvus counts VARCHAR length in UTF-8 bytes, not characters.
    for i, value in enumerate(values):
        try:
            size = len(value.encode("utf-8"))
        except UnicodeEncodeError:  # a lone surrogate, e.g. "\ud800" in JSON
            raise SourceError(
                f"{where(i)}: value {_describe(value)} is not valid Unicode (it holds a lone "
                "surrogate); Milvus stores VARCHAR as UTF-8"
            ) from None
        if size > max_length:
            raise SourceError(
                f"{where(i)}: value is {size} bytes long in UTF-8, over maxLength "
                f"{max_length}; raise maxLength (at most 65535) or shorten the value"
            )


def _check_json(values: Sequence[Any], where: Where) -> None:
    for i, value in enumerate(values):
        try:
            json.dumps(value, allow_nan=False, ensure_ascii=False).encode("utf-8")
        except (TypeError, ValueError, RecursionError) as exc:  # includes UnicodeEncodeError
            raise SourceError(
                f"{where(i)}: value {_describe(value)} cannot be stored as JSON ({exc})"
            ) from None


def _describe(value: Any) -> str:
    """A value and its type, short enough for one line of an error."""
    text = repr(value)
    if len(text) > 40:
        text = text[:37] + "..."
    return f"{text} ({type(value).__name__})"


class DuplicateIdTracker:
    """Finds ids that occur more than once across all batches added.

    Holds one int64 per id (8 bytes) plus the names of the files seen, and sorts
    once in ``check``: far cheaper than a set of Python ints (~70 bytes per id).
    """

    def __init__(self) -> None:
        self._chunks: list[npt.NDArray[np.int64]] = []
        self._origins: dict[str, None] = {}  # insertion-ordered set

    def __len__(self) -> int:
        return sum(int(chunk.shape[0]) for chunk in self._chunks)

    def add(self, batch: VectorBatch) -> None:
        # Copy: batch.ids may be a view that keeps the whole batch, vectors included,
        # alive.
        self._chunks.append(np.array(batch.ids, dtype=np.int64))
        self._origins[batch.origin] = None

    def check(self) -> None:
        """Raise SourceError naming a duplicated id and how many rows repeat ids."""
        ids = self._merge_sorted()
        extra, first = _count_repeats(ids)
        if first is None:
            return
        occurrences = int(
            np.searchsorted(ids, first, "right") - np.searchsorted(ids, first, "left")
        )
        raise SourceError(
            f"duplicate ids in {self._files()}: id {first} appears {occurrences} "
            f"times, and {extra} row{'s' if extra != 1 else ''} in all reuse an id seen "
            "before; every id must be unique within a release"
        )

    def _merge_sorted(self) -> npt.NDArray[np.int64]:
        """Concatenate into one sorted array, freeing each chunk as it is copied."""
        merged = np.empty(len(self), dtype=np.int64)
        start = 0
        while self._chunks:
            chunk = self._chunks.pop(0)
            merged[start : start + chunk.shape[0]] = chunk
            start += chunk.shape[0]
        merged.sort()  # in place
        self._chunks = [merged]  # later add() and check() calls keep working
        return merged

    def _files(self) -> str:
        names = list(self._origins)
        shown = ", ".join(names[:3])
        return shown + (f" and {len(names) - 3} more files" if len(names) > 3 else "")


def _count_repeats(ids: npt.NDArray[np.int64]) -> tuple[int, int | None]:
    """Return (rows equal to their predecessor, smallest repeated id) of sorted ids."""
    extra, first = 0, None
    for start in range(1, ids.shape[0], _SCAN_BLOCK):
        stop = min(start + _SCAN_BLOCK, ids.shape[0])
        same = ids[start:stop] == ids[start - 1 : stop - 1]
        count = int(np.count_nonzero(same))
        if count and first is None:
            first = int(ids[start + int(np.argmax(same))])
        extra += count
    return extra, first
