"""Data for the demo: a clustered corpus in three versions and a golden set.

    v1.parquet   the corpus as embedded by "model A"
    v2.parquet   the same ids re-embedded by a refreshed model: small, realistic drift
    v3.parquet   a broken pipeline: the right vectors attached to the wrong ids
    golden.parquet   queries with their true top-10 neighbours in v1 (the labels)

Run directly (`python examples/demo/generate.py OUT_DIR`) or through `embrel demo`.
Deterministic: a fixed seed, so every run of the demo prints the same numbers.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROWS, DIM, CLUSTERS, QUERIES, K = 4000, 64, 40, 200, 10
SEED = 20261125


def _normalize(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _write(path: Path, ids: np.ndarray, vectors: np.ndarray) -> None:
    titles = [f"product {i}" for i in ids]
    table = pa.table(
        {
            "id": pa.array(ids, pa.int64()),
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), DIM),
            "title": titles,
        }
    )
    pq.write_table(table, path)


def generate(out: Path) -> None:
    rng = np.random.default_rng(SEED)
    out.mkdir(parents=True, exist_ok=True)
    centers = rng.normal(size=(CLUSTERS, DIM))
    v1 = _normalize(centers[rng.integers(0, CLUSTERS, ROWS)] + 0.6 * rng.normal(size=(ROWS, DIM)))
    v2 = _normalize(v1 + 0.01 * rng.normal(size=(ROWS, DIM)))
    ids = np.arange(ROWS, dtype=np.int64)
    _write(out / "v1.parquet", ids, v1)
    _write(out / "v2.parquet", ids, v2)
    _write(out / "v3.parquet", rng.permutation(ids), v2)  # vectors on the wrong ids

    picks = rng.choice(ROWS, QUERIES, replace=False)
    queries = _normalize(v1[picks] + 0.1 * rng.normal(size=(QUERIES, DIM)))
    relevant = np.argsort(-(queries @ v1.T), axis=1)[:, :K]  # exact neighbours, by cosine
    pq.write_table(
        pa.table(
            {
                "vector": pa.array(list(queries), pa.list_(pa.float32())),
                "relevant_ids": pa.array(list(relevant), pa.list_(pa.int64())),
            }
        ),
        out / "golden.parquet",
    )


if __name__ == "__main__":
    generate(Path(sys.argv[1] if len(sys.argv) > 1 else "data"))
