"""Checks on the data itself, run on every batch before anything reaches Milvus.

Pure numpy and no I/O, so the same checks serve a dry run and a real load. Each
check scans a batch in a few vectorised passes without (n, d) temporaries.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from controller.errors import SourceError
from controller.sources.base import VectorBatch

# Rows compared per step in DuplicateIdTracker.check, bounding its scratch memory.
_SCAN_BLOCK = 1 << 20


def check_batch(batch: VectorBatch, dimension: int, metric: str) -> None:
    """Raise SourceError if the batch has the wrong dimension or unusable vectors.

    Non-finite values are always rejected; all-zero vectors only for COSINE,
    where they have no direction and the similarity is undefined.
    """
    _check_dimension(batch, dimension)
    _check_finite(batch)
    if metric.upper() == "COSINE":
        _check_nonzero(batch)


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
