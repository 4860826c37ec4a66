"""Run every benchmark with its defaults, then print one summary.

    python -m benchmarks.run_all        (or: make benchmarks)

Takes a while (about 25 minutes on 2 cores): build throughput on Milvus Lite and the
real server (and the client-side share of it), the 100k and 1M-row memory builds (and
Arrow's share of them), the flip latencies on both backends, and an incremental
documents release against a full re-embed (about 8 minutes: it embeds 8,000 texts),
a delta release's base copy against plain insert (100k rows on each backend, about
2 minutes each), and the CLI's own latency (--help, status, rollback as fresh processes).
The real server is started and stopped by each benchmark in turn.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence

from benchmarks import (
    build_memory,
    build_throughput,
    cli_latency,
    delta_copy,
    flip_latency,
    incremental_release,
    ingest_overhead,
    parquet_read_memory,
)
from benchmarks.support import BACKENDS, machine, median, table

MB = 1e6


def main(argv: Sequence[str] | None = None) -> int:
    started = time.perf_counter()
    print(f"embrel benchmarks on {machine()}\n", flush=True)
    throughput = build_throughput.run(100_000, 2, BACKENDS)
    print(flush=True)
    ingest_overhead.run(100_000, 5)  # explains the throughput gap, if any (seconds to run)
    print(flush=True)
    floor, memory = build_memory.run(1_000_000, 100_000)
    print(flush=True)
    parquet_read_memory.run(1_000_000)  # where the build's memory goes (under a minute)
    print(flush=True)
    flips = flip_latency.run(20, 10_000, BACKENDS)
    print(flush=True)
    inc_ratio, speeds = incremental_release.run(incremental_release.parse([]))
    print(flush=True)
    deltas = []
    for kind in BACKENDS:
        deltas.append(delta_copy.run(delta_copy.parse(["--backend", kind, "--rows", "100000"])))
        print(flush=True)
    cli = cli_latency.run(10, BACKENDS)
    rows = [
        [
            f"build throughput ({r.kind}, {r.rows:,} rows)",
            f"embrel {r.embrel_rps:,.0f} rows/s vs plain loop {r.baseline_rps:,.0f}",
            f"{r.ratio:.2f} (target >= {build_throughput.TARGET_RATIO:.2f}: "
            f"{'met' if r.ratio >= build_throughput.TARGET_RATIO else 'NOT met'})",
        ]
        for r in throughput
    ]
    small, large = memory
    rows.append(
        [
            f"build memory (server, {large.rows:,} rows)",
            f"peak RSS {large.peak_rss / MB:,.0f} MB for {large.data_bytes / MB:,.0f} MB of vectors",
            f"x{large.peak_rss / small.peak_rss:.2f} of the {small.rows:,}-row peak "
            f"({small.peak_rss / MB:,.0f} MB; import floor {floor.peak_rss / MB:,.0f} MB)",
        ]
    )
    rows += [
        [
            f"flip latency ({f.kind})",
            f"embrel rollback/promote median {median([*f.rollback, *f.promote]) * 1000:.0f} ms, "
            f"max {max([*f.rollback, *f.promote]) * 1000:.0f} ms",
            f"raw alias flip median {median(f.raw) * 1000:.1f} ms, max {max(f.raw) * 1000:.1f} ms",
        ]
        for f in flips
    ]
    rows.append(
        [
            "incremental documents release (lite, 4,000 docs, 1% changed)",
            f"{inc_ratio:.3f} of a full re-embed's wall time",
            f"target <= {incremental_release.TARGET_RATIO:.2f}: "
            f"{'met' if inc_ratio <= incremental_release.TARGET_RATIO else 'NOT met'}",
        ]
    )
    rows += [
        [
            f"delta base copy ({d.kind}, {d.rows:,} rows, {d.index})",
            f"copy {d.copy_rps:,.0f} rows/s vs plain insert {d.insert_rps:,.0f}",
            f"{d.copy_rps / d.insert_rps:.2f} (reported, no target)",
        ]
        for d in deltas
    ]
    rows += [[f"embedder throughput (batch {s[1]})", f"{s[4]} texts/s", s[0]] for s in speeds]
    rows += [
        [
            f"CLI latency ({kind}, {t.what})",
            f"median {t.median * 1000:.0f} ms, p90 {t.p90 * 1000:.0f} ms",
            f"x{t.median / timings[0].median:.1f} of `python -c pass`; target p90 < "
            f"{cli_latency.TARGETS[t.what]:.1f} s: "
            f"{'met' if t.p90 < cli_latency.TARGETS[t.what] else 'NOT met'}",
        ]
        for kind, timings in cli.items()
        for t in timings
        if t.what in cli_latency.TARGETS
    ]
    print("\nSummary\n")
    print(table(["benchmark", "result", "vs baseline"], rows))
    print(f"\nAll benchmarks took {(time.perf_counter() - started) / 60:.1f} min.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
