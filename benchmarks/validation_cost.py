"""What validation costs: 1,000 queries against a 100k x 384 candidate and live collection.

    python -m benchmarks.validation_cost [--rows 100000] [--queries 1000] [--backend lite]

Builds live (v1) and a refreshed candidate (v2 = v1 + small noise, same model) through
the controller, then runs every gate once more directly to time each one. Also times
the exact ground truth for the ANN-recall gate three ways on the same data: numpy
matrix products in blocks with a running top-k merge (what embrel does), one full
score matrix, and a per-query loop; with peak Python-heap memory of each.
"""

from __future__ import annotations

import argparse
import time
import tracemalloc
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks.support import (
    TimedReporter,
    fresh_alias,
    machine,
    open_backend,
    release_doc,
    table,
    unit_vectors,
    write_yaml,
)
from controller.config import ControllerConfig
from controller.drivers.local import LocalController
from controller.engine import P_MODEL, P_SOURCE_ROWS
from controller.sources import LocalFiles
from controller.spec import parse_release
from controller.validation.gates import GateContext, run_validation
from controller.validation.metrics import exact_topk, exact_topk_naive

K = 10
CHUNK = 20_000


def write_pair(folder: Path, rows: int, dim: int) -> tuple[Path, Path, np.ndarray]:
    """live.parquet and candidate.parquet (live + noise), chunk by chunk; returns live."""
    rng = np.random.default_rng(0)
    schema = pa.schema([("id", pa.int64()), ("vector", pa.list_(pa.float32(), dim))])
    live = unit_vectors(rng, rows, dim)
    paths = (folder / "live.parquet", folder / "candidate.parquet")
    with pq.ParquetWriter(paths[0], schema) as a, pq.ParquetWriter(paths[1], schema) as b:
        for start in range(0, rows, CHUNK):
            block = live[start : start + CHUNK]
            noisy = block + 0.02 * rng.standard_normal(block.shape, dtype=np.float32)
            noisy /= np.linalg.norm(noisy, axis=1, keepdims=True)
            ids = pa.array(np.arange(start, start + len(block), dtype=np.int64))
            for writer, vectors in ((a, block), (b, noisy)):
                column = pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), dim)
                writer.write_table(pa.table({"id": ids, "vector": column}, schema=schema))
    return paths[0], paths[1], live


def write_queries(path: Path, corpus: np.ndarray, n: int) -> Path:
    rng = np.random.default_rng(1)
    q = corpus[rng.choice(len(corpus), n, replace=False)]
    q = q + 0.1 * rng.standard_normal(q.shape, dtype=np.float32)
    pq.write_table(pa.table({"vector": pa.array(list(q), pa.list_(pa.float32()))}), path)
    return path


def gates(queries: Path, n: int) -> dict[str, object]:
    """Every gate on, with thresholds that always pass: this measures cost, not quality
    (a failed candidate is released, and the timed re-run needs it loaded)."""
    return {
        "queries": {"uri": str(queries), "sample": n},
        "gates": {
            "minOverlapWithLive": {"k": K, "min": 0.0},
            "minMeanCosineToLive": {"min": -1.0, "sample": 2000},
            "minAnnRecall": {"k": K, "min": 0.0, "sample": n},
            "maxRowCountChange": 1.0,
            "maxP99LatencyRatioToLive": 1000.0,
            "distributionDrift": {"sample": 1000},
        },
        "latencyQueries": 200,
    }


def build(kind: str, rows: int, dim: int, n: int, folder: Path) -> tuple[dict[str, float], int]:
    live_src, cand_src, corpus = write_pair(folder, rows, dim)
    queries = write_queries(folder / "queries.parquet", corpus, n)
    del corpus
    with open_backend(kind) as backend:
        alias = fresh_alias("val")
        uri = backend.uri("val")
        controller = LocalController(ControllerConfig(state_dir=folder / "state"), TimedReporter())
        try:
            for version, source in (("v1", live_src), ("v2", cand_src)):
                doc = release_doc(
                    name="val", alias=alias, version=version, uri=uri, source=source, dim=dim
                )
                doc["spec"]["model"]["revision"] = "same"
                if version == "v2":
                    doc["spec"]["validation"] = gates(queries, n)
                path = write_yaml(folder / f"{version}.yaml", doc)
                release = parse_release(path.read_text())
                controller.record_spec(path, path.read_text(), release)
                result = controller.reconcile_track(release.track, hold=version == "v2")
                print(
                    f"  {version}: {result.status.phase} {result.status.message[:100]}", flush=True
                )
            gateway = controller.gateway(release, folder)
            cand, live = f"{alias}__v2", f"{alias}__v1"
            props = gateway.properties(cand)
            ctx = GateContext(
                release,
                cand,
                int(props[P_SOURCE_ROWS]),
                live,
                "v1",
                gateway.properties(live).get(P_MODEL),
                gateway,
                LocalFiles(folder),
            )
            started = time.perf_counter()
            run = run_validation(ctx)
            total = time.perf_counter() - started
            print(
                "  " + ", ".join(f"{c.name}={c.value}" for c in run.checks if c.value is not None)
            )
        finally:
            controller.close()
            backend.discard(uri, alias)
    return run.seconds | {"total": total}, len(run.checks)


def ground_truth(rows: int, dim: int, n: int) -> list[list[str]]:
    rng = np.random.default_rng(2)
    corpus = unit_vectors(rng, rows, dim)
    queries = unit_vectors(rng, n, dim)

    def per_query_loop() -> np.ndarray:
        out = np.empty((n, K), dtype=np.int64)
        for i, q in enumerate(queries):
            scores = corpus @ q
            top = np.argpartition(-scores, K)[:K]
            out[i] = top[np.argsort(-scores[top])]
        return out

    ways: list[tuple[str, Callable[[], np.ndarray]]] = [
        (
            "blocks of 8192 rows, running top-k (embrel)",
            lambda: exact_topk(corpus, queries, K, "IP"),
        ),
        ("one full score matrix", lambda: exact_topk_naive(corpus, queries, K, "IP")),
        ("per-query loop", per_query_loop),
    ]
    results, out = [], []
    for name, fn in ways:
        tracemalloc.start()
        started = time.perf_counter()
        results.append(fn())
        seconds = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        out.append([name, f"{seconds:.2f}", f"{peak / 1e6:,.0f}"])
    same = all(np.array_equal(np.sort(results[0], 1), np.sort(r, 1)) for r in results[1:])
    out.append(["(all three agree on the top-k sets)", str(same), ""])
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--backend", choices=["lite", "server"], default="lite")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/embrel-bench-validation"))
    args = p.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    print(
        f"validation cost on {machine()}\n{args.rows:,} x {args.dim}, {args.queries:,} queries, {args.backend}"
    )
    seconds, checks = build(args.backend, args.rows, args.dim, args.queries, args.workdir)
    print(f"\nTime per gate ({checks} checks)\n")
    print(table(["gate", "seconds"], [[k, f"{v:.2f}"] for k, v in seconds.items()]))
    print(f"\nExact ground truth for {args.queries:,} queries over {args.rows:,} x {args.dim}\n")
    print(
        table(
            ["method", "seconds", "peak heap MB"], ground_truth(args.rows, args.dim, args.queries)
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
