"""Where embrel's ingest could lose time to the plain loop: the client-side work, no Milvus.

Both loops read the same Parquet file in 5,000-row batches and build the same row
dicts; embrel adds its source reader's checks (nulls, ragged vectors) and
``check_batch`` (dimension, NaN/inf, zero vectors). This times those parts alone, so a
gap in build_throughput larger than this is not embrel's CPU work.

    python -m benchmarks.ingest_overhead [--rows 100000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from benchmarks.support import machine, median, table, write_vectors
from controller.milvus import ID_FIELD, VECTOR_FIELD
from controller.sources import open_files_source
from controller.validation.sanity import check_batch

DIM = 384
BATCH = 5000


def baseline_rows(source: Path) -> None:
    """build_throughput's baseline loop without the insert call."""
    for batch in pq.ParquetFile(source).iter_batches(BATCH):
        ids = batch.column("id").to_numpy().tolist()
        vectors = batch.column("vector").flatten().to_numpy().reshape(len(ids), DIM)
        _consume([{"id": i, "vector": v} for i, v in zip(ids, vectors, strict=True)])


def embrel_read(source: Path) -> None:
    for _ in open_files_source(str(source), "id", "vector").batches(BATCH):
        pass


def embrel_read_check(source: Path) -> None:
    for batch in open_files_source(str(source), "id", "vector").batches(BATCH):
        check_batch(batch, DIM, "COSINE")


def embrel_rows(source: Path) -> None:
    """The engine's insert loop; the row dicts as MilvusGateway.insert builds them."""
    for batch in open_files_source(str(source), "id", "vector").batches(BATCH):
        check_batch(batch, DIM, "COSINE")
        ids = batch.ids.tolist()
        _consume([{ID_FIELD: ids[i], VECTOR_FIELD: batch.vectors[i]} for i in range(len(ids))])


def _consume(rows: list[dict[str, Any]]) -> None:
    if not rows:
        raise AssertionError("empty batch")


CASES: list[tuple[str, Callable[[Path], None]]] = [
    ("baseline: read + row dicts", baseline_rows),
    ("embrel: source read (with its checks)", embrel_read),
    ("embrel: read + check_batch", embrel_read_check),
    ("embrel: read + check_batch + row dicts", embrel_rows),
]


def run(rows: int, repeat: int) -> list[tuple[str, float]]:
    print(f"ingest overhead: client-side work for {rows:,} x {DIM}-dim rows, on {machine()}")
    results = []
    with tempfile.TemporaryDirectory(prefix="embrel-bench-cpu-") as tmp:
        source = write_vectors(Path(tmp) / "vectors.parquet", rows, DIM)
        for label, case in CASES:
            times = []
            for _ in range(repeat):
                started = time.perf_counter()
                case(source)
                times.append(time.perf_counter() - started)
            results.append((label, median(times)))
    base = results[0][1]
    print(
        table(
            ["client-side work", "median s", "s per 100k rows", "vs baseline"],
            [
                [k, f"{t:.3f}", f"{t * 100_000 / rows:.3f}", f"{t - base:+.3f} s"]
                for k, t in results
            ],
        )
    )
    return results


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args(argv)
    run(args.rows, args.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
