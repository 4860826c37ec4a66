"""How the staged Parquet file's layout changes one Milvus 2.3.5 import job.

Stages ``--rows`` x ``--dim`` float32 rows twice: with ``ParquetStaging`` (64k-row row
groups, uncompressed) and as the first version did (one snappy row group per
5,000-row batch), then imports each into a fresh collection on the real server, twice
in alternation, and prints each job's wall time (submit to Completed).

    python -m benchmarks.import_layout [--rows 250000] [--dim 128]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pymilvus import DataType, MilvusClient

from benchmarks.support import start_server
from controller.sources.base import VectorBatch
from controller.sources.staging import ParquetStaging

BATCH = 5000


def per_batch_groups(path: Path, batches: list[VectorBatch], dim: int) -> Path:
    schema = pa.schema([("id", pa.int64()), ("vector", pa.list_(pa.float32()))])
    with pq.ParquetWriter(str(path), schema) as writer:
        for b in batches:
            offsets = pa.array(np.arange(0, (len(b) + 1) * dim, dim, dtype=np.int32))
            vectors = pa.ListArray.from_arrays(offsets, pa.array(b.vectors.reshape(-1)))
            writer.write_table(pa.Table.from_arrays([pa.array(b.ids), vectors], schema=schema))
    return path


def import_seconds(client: MilvusClient, name: str, dim: int, files: list[str]) -> float:
    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
    client.create_collection(name, schema=schema)
    handler = client._get_connection()
    started = time.perf_counter()
    job = handler.do_bulk_insert(name, "", files)
    while (state := handler.get_bulk_insert_state(job)).state not in (1, 6, 7):
        time.sleep(0.25)
    if state.state_name != "Completed":
        raise RuntimeError(f"{name}: {state}")
    return time.perf_counter() - started


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--rows", type=int, default=250_000)
    p.add_argument("--dim", type=int, default=128)
    args = p.parse_args(argv)
    rows, dim = args.rows, args.dim
    vectors = np.random.default_rng(0).standard_normal((rows, dim), dtype=np.float32)
    batches = [
        VectorBatch(
            np.arange(s, min(rows, s + BATCH), dtype=np.int64),
            vectors[s : s + BATCH],
            {},
            "bench",
            s,
        )
        for s in range(0, rows, BATCH)
    ]
    with tempfile.TemporaryDirectory(prefix="embrel-bench-layout-") as tmp:
        root = Path(tmp)
        layouts = {
            "per-batch row groups, snappy": [
                str(per_batch_groups(root / "old.parquet", batches, dim))
            ],
            "ParquetStaging": ParquetStaging(root / "new", str(root / "new"), rows).stage(
                "c", [], batches
            ),
        }
        server = start_server(root / "server")
        try:
            client = MilvusClient(uri=server.uri)
            for rep in range(2):
                for i, (label, files) in enumerate(layouts.items()):
                    seconds = import_seconds(client, f"layout_{rep}_{i}", dim, files)
                    print(f"{label}: {rows:,} rows imported in {seconds:.1f} s", flush=True)
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
