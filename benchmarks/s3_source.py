"""Reading a source from S3 against reading it from local disk: rows/s and peak memory.

Writes 1M x 128 float32 vectors (512 MB) as 16 Parquet files of 10,000-row row groups,
uploads them to a real S3 API server on loopback (moto_server, tests/support/s3_server.py),
then streams the same data through embrel's reader (``open_files_source``, 5,000-row
batches) from ``<folder>/*.parquet`` and from ``s3://bucket/emb/*.parquet``, each read in
a fresh subprocess (peak RSS is per process), alternating, ``--repeat`` times.

This measures the reader alone, not a build into Milvus: what object storage adds to
reading. moto_server is a single-threaded Python server on the same 2 cores, so the S3
figure is a pessimistic bound for a real store on a fast network.

    python -m benchmarks.s3_source [--rows 1000000] [--files 16] [--repeat 1]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import pyarrow.parquet as pq

from benchmarks.support import machine, table, write_parts
from controller.sources import open_files_source
from controller.sources.location import match_files
from tests.support.s3_server import running_s3_server

DIM = 128
BATCH = 5000
MB = 1e6
DOWNLOAD = "download:"


def child(uri: str) -> dict[str, float]:
    """Stream every row of ``uri`` once; the rows, seconds and this process's VmHWM.
    ``download:<uri>`` fetches each object whole instead, decoding nothing: what the
    server can deliver, the floor under any reader."""
    rows = 0
    started = time.perf_counter()
    if uri.startswith(DOWNLOAD):
        rows = download(uri.removeprefix(DOWNLOAD))
    else:
        for batch in open_files_source(uri, "id", "vector").batches(BATCH):
            rows += len(batch)
    seconds = time.perf_counter() - started
    status = Path("/proc/self/status").read_text().splitlines()
    hwm = next(line for line in status if line.startswith("VmHWM"))
    return {"rows": rows, "seconds": seconds, "hwm": int(hwm.split()[1]) * 1024}


def download(uri: str) -> int:
    """Each object of the glob read whole, in 64 MiB pieces; the rows their footers hold."""
    rows = 0
    for file in match_files(uri, None):
        with file.open_random() as fh:
            while fh.read(64 << 20):
                pass
        with pq.ParquetFile(file.open_random()) as parquet:
            rows += parquet.metadata.num_rows
    return rows


def measure(uri: str, env: dict[str, str]) -> dict[str, float]:
    argv = [sys.executable, "-m", "benchmarks.s3_source", "--child", uri]
    done = subprocess.run(argv, capture_output=True, text=True, check=True, env=env)
    result: dict[str, float] = json.loads(done.stdout)
    return result


def run(rows: int, files: int, repeat: int) -> list[list[str]]:
    print(f"s3 source: {rows:,} x {DIM}-dim float32 in {files} Parquet files, on {machine()}")
    with tempfile.TemporaryDirectory(prefix="embrel-bench-s3-") as tmp:
        parts = write_parts(Path(tmp) / "local", rows, DIM, files)
        with running_s3_server(Path(tmp) / "moto.log") as s3:
            bucket = s3.bucket()
            started = time.perf_counter()
            for part in parts:
                s3.client().upload_file(str(part), bucket, f"emb/{part.name}")
            print(
                f"uploaded {sum(p.stat().st_size for p in parts) / MB:,.0f} MB "
                f"in {time.perf_counter() - started:.1f} s"
            )
            env = {**os.environ, **s3.env()}
            s3_uri = f"s3://{bucket}/emb/*.parquet"
            uris = {
                "local": f"{parts[0].parent}/*.parquet",
                "s3": s3_uri,
                "s3, objects downloaded whole, not decoded": DOWNLOAD + s3_uri,
            }
            runs: dict[str, list[dict[str, float]]] = {k: [] for k in uris}
            for _ in range(repeat):
                for where, uri in uris.items():
                    runs[where].append(measure(uri, env))
    return report(runs, rows)


def report(runs: dict[str, list[dict[str, float]]], rows: int) -> list[list[str]]:
    results = []
    best = {where: min(r["seconds"] for r in rs) for where, rs in runs.items()}
    for where, rs in runs.items():
        assert all(r["rows"] == rows for r in rs), f"{where} read {rs[0]['rows']} rows"
        results.append(
            [
                where,
                " / ".join(f"{r['seconds']:.2f}" for r in rs),
                f"{rows / best[where]:,.0f}",
                f"{max(r['hwm'] for r in rs) / MB:,.0f}",
            ]
        )
    print(table(["source", "read s (each run)", "rows/s (best)", "peak RSS MB"], results))
    print(f"S3 / local time (best runs): {best['s3'] / best['local']:.2f}x")
    return results


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--files", type=int, default=16)
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--child", metavar="URI", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child)))
        return 0
    run(args.rows, args.files, args.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
