"""What every vector source yields: batches of ids, vectors and extra scalar fields.

Row numbers (``first_row`` and the "row N" in error messages) count from 0 within
one file, matching what pyarrow, pandas and numpy show for the same data.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class VectorBatch:
    """Consecutive rows of one source file.

    ``ids`` is int64 with shape ``(n,)``; ``vectors`` is float32, C-contiguous,
    shape ``(n, d)`` and may be read-only (it can share memory with the reader);
    each list in ``fields`` has length ``n``. ``origin`` and ``first_row`` let a
    later check point at the exact file and row.
    """

    ids: npt.NDArray[np.int64]
    vectors: npt.NDArray[np.float32]
    fields: dict[str, list[Any]]
    origin: str
    first_row: int

    def __post_init__(self) -> None:
        # Readers build batches; a mismatch here is a bug in a reader, not bad data.
        n = self.ids.shape[0]
        if self.ids.ndim != 1 or self.vectors.ndim != 2 or self.vectors.shape[0] != n:
            raise ValueError(
                f"inconsistent batch from {self.origin}: ids {self.ids.shape}, "
                f"vectors {self.vectors.shape}"
            )
        for name, values in self.fields.items():
            if len(values) != n:
                raise ValueError(f"field {name!r} has {len(values)} values for {n} rows")

    def __len__(self) -> int:
        return int(self.ids.shape[0])


@runtime_checkable
class VectorSource(Protocol):
    """A readable set of vectors; ``batches`` may be called more than once."""

    def describe(self) -> str:
        """One line for plans and logs, e.g. "3 parquet files matching data/*.parquet"."""
        ...

    def count_rows(self) -> int | None:
        """Total rows when cheaply known (file metadata), else None."""
        ...

    def batches(self, batch_size: int) -> Iterator[VectorBatch]:
        """Yield batches of at most ``batch_size`` rows, in file and row order."""
        ...


@dataclass(frozen=True)
class GoldenSet:
    """Labelled queries: vectors with the ids a good index should return for them."""

    queries: npt.NDArray[np.float32]  # (nq, d)
    relevant: list[npt.NDArray[np.int64]]  # nq arrays of relevant ids
    origin: str


def sample_rows(
    batches: Iterable[VectorBatch], total: int, n: int, seed: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """A seeded uniform sample of ``n`` rows (ids, vectors) from a stream of ``total`` rows.

    One pass, memory bounded by the sample: the row positions are drawn first, then
    picked out of each batch as it streams by. The order is the draw's (random) order.
    """
    n = min(n, total)
    picks = np.random.default_rng(seed).choice(total, size=n, replace=False)
    order = np.argsort(picks)
    wanted = picks[order]
    ids = np.empty(n, dtype=np.int64)
    vectors: npt.NDArray[np.float32] | None = None
    offset = taken = 0
    for batch in batches:
        end = offset + len(batch.ids)
        stop = int(np.searchsorted(wanted, end))
        local = wanted[taken:stop] - offset
        if len(local):
            if vectors is None:
                vectors = np.empty((n, batch.vectors.shape[1]), dtype=np.float32)
            ids[order[taken:stop]] = batch.ids[local]
            vectors[order[taken:stop]] = batch.vectors[local]
        taken, offset = stop, end
        if taken == n:
            break
    if taken != n or vectors is None:
        raise ValueError(f"expected {total} rows to sample from, the source ended after {offset}")
    return ids, vectors
