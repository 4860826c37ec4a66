"""Where build memory goes: Arrow's peak allocation while streaming a Parquet source.

Streams a 1M x 128 float32 file (512 MB of vectors) in 5,000-row batches, each way
in a fresh subprocess (Arrow's pool keeps one high-water mark per process), for two
layouts: 10,000-row row groups, and one row group (what ``pq.write_table`` writes by
default for up to 1Mi rows). Compares embrel's own reader with ``pq.ParquetFile``
options: ``pre_buffer`` (default True) caches every row group's column chunks for
the life of the reader, and without ``buffer_size`` a whole column chunk is read at once.

    python -m benchmarks.parquet_read_memory [--rows 1000000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks.support import machine, table, write_vectors
from controller.sources import open_files_source

DIM = 128
BATCH = 5000
MB = 1e6
READERS: dict[str, dict[str, Any]] = {
    "embrel source (controller.sources)": {},
    "pq.ParquetFile() defaults": {},
    "pq.ParquetFile(pre_buffer=False)": {"pre_buffer": False},
    "pq.ParquetFile(pre_buffer=False, buffer_size=1 MiB)": {
        "pre_buffer": False,
        "buffer_size": 1 << 20,
    },
}
EMBREL = next(iter(READERS))


def child(reader: str, path: Path) -> dict[str, float]:
    """Stream ``path`` once; report Arrow's peak allocation and the process's VmHWM."""
    rows = 0
    started = time.perf_counter()
    if reader == EMBREL:
        for batch in open_files_source(str(path), "id", "vector").batches(BATCH):
            rows += len(batch)
    else:
        for record_batch in pq.ParquetFile(path, **READERS[reader]).iter_batches(BATCH):
            rows += record_batch.num_rows
    hwm = next(
        ln for ln in Path("/proc/self/status").read_text().splitlines() if ln.startswith("VmHWM")
    )
    return {
        "rows": rows,
        "seconds": time.perf_counter() - started,
        "arrow_peak": pa.default_memory_pool().max_memory(),
        "hwm": int(hwm.split()[1]) * 1024,
    }


def measure(reader: str, path: Path) -> dict[str, float]:
    argv = [sys.executable, "-m", "benchmarks.parquet_read_memory", "--child", reader, str(path)]
    done = subprocess.run(argv, capture_output=True, text=True, check=True)
    result: dict[str, float] = json.loads(done.stdout)
    return result


def write_layouts(folder: Path, rows: int) -> dict[str, Path]:
    grouped = write_vectors(folder / "groups.parquet", rows, DIM)
    single = folder / "single.parquet"
    pq.write_table(pq.read_table(grouped), single, compression="none", row_group_size=rows)
    return {"10,000-row row groups": grouped, "one row group": single}


def run(rows: int) -> list[list[str]]:
    print(
        f"parquet read memory: {rows:,} x {DIM}-dim float32 in {BATCH}-row batches, on {machine()}"
    )
    results = []
    with tempfile.TemporaryDirectory(prefix="embrel-bench-pq-") as tmp:
        for layout, path in write_layouts(Path(tmp), rows).items():
            for reader in READERS:
                r = measure(reader, path)
                results.append(
                    [
                        layout,
                        reader,
                        f"{r['arrow_peak'] / MB:,.0f}",
                        f"{r['hwm'] / MB:,.0f}",
                        f"{r['seconds']:.2f}",
                    ]
                )
    print(
        table(["file layout", "reader", "Arrow peak MB", "process peak RSS MB", "read s"], results)
    )
    return results


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--child", nargs=2, metavar=("READER", "PATH"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child[0], Path(args.child[1]))))
        return 0
    run(args.rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
