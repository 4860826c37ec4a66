"""Write a collection's ids, vectors (and named scalar fields) to an .npz, using pymilvus.

Run it in its own process, like ``inspect_milvus``, when the CLI under test opened
Milvus Lite (it locks its folder to one process); ``read`` serves tests that run the
controller in-process. Reads by id with Strong consistency, independently of
embrel's gateway.

    python -m tests.support.dump_collection URI COLLECTION OUT.npz [FIELD ...]
"""

from __future__ import annotations

import logging
import sys

import numpy as np
from pymilvus import MilvusClient


def read(uri: str, collection: str, fields: list[str]) -> dict[str, np.ndarray]:
    """ids, vectors and ``fields`` of every row, sorted by id."""
    client = MilvusClient(uri=uri)
    try:
        client.load_collection(collection)
        it = client.query_iterator(
            collection,
            batch_size=5000,
            output_fields=["id", "vector", *fields],
            consistency_level="Strong",
        )
        rows = []
        while page := it.next():
            rows += page
        it.close()
    finally:
        client.close()
    rows.sort(key=lambda r: int(r["id"]))
    arrays = {
        "ids": np.asarray([int(r["id"]) for r in rows], dtype=np.int64),
        "vectors": np.asarray([r["vector"] for r in rows], dtype=np.float32),
    }
    for name in fields:
        arrays[name] = np.asarray([r[name] for r in rows])
    return arrays


def dump(uri: str, collection: str, out: str, fields: list[str]) -> None:
    np.savez(out, **read(uri, collection, fields))


if __name__ == "__main__":
    logging.disable(logging.CRITICAL)
    dump(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:])
