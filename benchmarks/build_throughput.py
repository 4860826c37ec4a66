"""Build throughput: embrel's ingest against a plain pymilvus insert loop.

Both read the same Parquet file in 5,000-row batches and insert into the same backend
in the same run. The baseline is the loop a person would write by hand (read, insert
rows as dicts, flush). embrel runs its real engine through LocalController; its ingest
phase is timed from the "inserting" event to the "loaded N rows" event, so it includes
the per-batch sanity checks, the flush and the row count, but not the source pre-check
pass, which is reported on its own.

    python -m benchmarks.build_throughput [--rows 100000] [--repeat 2] [--backend both]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
from pymilvus import DataType, MilvusClient

from benchmarks.support import (
    BACKENDS,
    Backend,
    TimedReporter,
    fresh_alias,
    machine,
    median,
    open_backend,
    release_doc,
    table,
    write_vectors,
    write_yaml,
)
from controller.config import BuildOptions, ControllerConfig
from controller.drivers.local import LocalController, read_spec
from controller.status import Phase

DIM = 384
BATCH = 5000
TARGET_RATIO = 0.90


@dataclass(frozen=True)
class BaselineTimes:
    ingest: float  # every insert, then the flush
    flush: float  # the flush alone


@dataclass(frozen=True)
class EmbrelTimes:
    precheck: float  # "building the candidate" -> "inserting": source check pass + create
    ingest: float  # "inserting" -> "loaded N rows": insert, checks, flush, row count
    flush: float  # last insert -> "loaded N rows": flush, row count, properties
    index: float
    load: float
    validate: float
    total: float  # the whole reconcile_track: build, index, load, validate, flip


@dataclass(frozen=True)
class BackendResult:
    kind: str
    rows: int
    baseline: list[BaselineTimes]
    embrel: list[EmbrelTimes]

    @property
    def baseline_rps(self) -> float:
        return self.rows / median([t.ingest for t in self.baseline])

    @property
    def embrel_rps(self) -> float:
        return self.rows / median([t.ingest for t in self.embrel])

    @property
    def ratio(self) -> float:
        return self.embrel_rps / self.baseline_rps


# -- the baseline ------------------------------------------------------------------


def run_baseline(uri: str, alias: str, source: Path, dim: int) -> BaselineTimes:
    """Insert every row of ``source`` and flush, with plain pymilvus."""
    client = MilvusClient(uri=uri)
    name = f"{alias}__baseline"
    try:
        # embrel's schema; the consistency level governs reads only, so it favours neither side.
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
        client.create_collection(name, schema=schema, consistency_level="Strong")
        started = time.perf_counter()
        for batch in pq.ParquetFile(source).iter_batches(BATCH):
            ids = batch.column("id").to_numpy().tolist()
            vectors = batch.column("vector").flatten().to_numpy().reshape(len(ids), dim)
            client.insert(name, [{"id": i, "vector": v} for i, v in zip(ids, vectors, strict=True)])
        inserted = time.perf_counter()
        client.flush(name)
        done = time.perf_counter()
        return BaselineTimes(ingest=done - started, flush=done - inserted)
    finally:
        client.close()


# -- embrel ------------------------------------------------------------------------


def run_embrel(uri: str, alias: str, source: Path, dim: int, workdir: Path) -> EmbrelTimes:
    """Apply one release with the real engine; phase times from the reporter's events."""
    spec = write_yaml(
        workdir / f"{alias}.yaml",
        release_doc(
            name=alias.replace("_", "-"), alias=alias, version="v1", uri=uri, source=source, dim=dim
        ),
    )
    config = ControllerConfig(
        state_dir=workdir / f"state-{alias}", build=BuildOptions(batch_size=BATCH)
    )
    reporter = TimedReporter()
    controller = LocalController(config, reporter)
    try:
        text, release = read_spec(spec)
        controller.record_spec(spec, text, release)
        started = time.perf_counter()
        result = controller.reconcile_track(release.track)
        total = time.perf_counter() - started
    finally:
        controller.close()
    if result.status.phase != Phase.LIVE:
        raise RuntimeError(
            f"embrel did not go live: {result.status.phase}: {result.status.message}"
        )
    return _phases(reporter, total)


def _phases(r: TimedReporter, total: float) -> EmbrelTimes:
    return EmbrelTimes(
        precheck=r.between("building the candidate", "inserting"),
        ingest=r.between("inserting", "loaded "),
        flush=r.at("loaded ") - r.last_tick_of("loading "),
        index=r.span("building the index"),
        load=r.span("loading the candidate"),
        validate=r.span("validating"),
        total=total,
    )


# -- one backend -------------------------------------------------------------------


def measure(backend: Backend, source: Path, rows: int, repeat: int) -> BackendResult:
    """Alternate the order (baseline first, then embrel first, ...) so warm-up favours neither."""
    result = BackendResult(backend.kind, rows, [], [])
    for i in range(repeat):
        order = ("baseline", "embrel") if i % 2 == 0 else ("embrel", "baseline")
        for which in order:
            alias = fresh_alias(f"bt_{which[0]}")
            uri = backend.uri(alias)
            try:
                line = _measure_one(result, which, uri, alias, source, backend.root)
            finally:
                backend.discard(uri, alias)
            print(f"  [{backend.kind} #{i + 1}] {line}", flush=True)
    return result


def _measure_one(
    result: BackendResult, which: str, uri: str, alias: str, source: Path, workdir: Path
) -> str:
    if which == "baseline":
        b = run_baseline(uri, alias, source, DIM)
        result.baseline.append(b)
        return f"baseline ingest {b.ingest:.2f} s (flush {b.flush:.2f} s)"
    t = run_embrel(uri, alias, source, DIM, workdir)
    result.embrel.append(t)
    return (
        f"embrel ingest {t.ingest:.2f} s (flush+count {t.flush:.2f} s; "
        f"pre-check {t.precheck:.2f} s, apply {t.total:.2f} s)"
    )


# -- report ------------------------------------------------------------------------


def report(results: Sequence[BackendResult]) -> str:
    ingest = table(
        ["backend", "rows", "baseline rows/s", "embrel rows/s", "embrel/baseline", "target"],
        [
            [
                r.kind,
                f"{r.rows:,}",
                f"{r.baseline_rps:,.0f}",
                f"{r.embrel_rps:,.0f}",
                f"{r.ratio:.2f}",
                f">= {TARGET_RATIO:.2f}: {'met' if r.ratio >= TARGET_RATIO else 'NOT met'}",
            ]
            for r in results
        ],
    )
    return f"{ingest}\n\nMedian seconds per phase:\n\n{_phase_table(results)}"


_EMBREL_PHASES = ("precheck", "ingest", "flush", "index", "load", "validate", "total")


def _phase_table(results: Sequence[BackendResult]) -> str:
    return table(
        [
            "backend",
            "baseline ingest",
            "of which flush",
            "embrel pre-check",
            "embrel ingest",
            "of which flush+count",
            "index",
            "load",
            "validate",
            "embrel apply total",
        ],
        [
            [
                r.kind,
                f"{median([b.ingest for b in r.baseline]):.2f}",
                f"{median([b.flush for b in r.baseline]):.2f}",
                *(f"{median([getattr(t, k) for t in r.embrel]):.2f}" for k in _EMBREL_PHASES),
            ]
            for r in results
        ],
    )


def run(rows: int, repeat: int, backends: Sequence[str]) -> list[BackendResult]:
    print(
        f"build throughput: {rows:,} x {DIM}-dim float32, {repeat} repeats, on {machine()}",
        flush=True,
    )
    results = []
    with tempfile.TemporaryDirectory(prefix="embrel-bench-data-") as tmp:
        source = write_vectors(Path(tmp) / "vectors.parquet", rows, DIM)
        for kind in backends:
            with open_backend(kind) as backend:
                results.append(measure(backend, source, rows, repeat))
    print(report(results), flush=True)
    return results


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--backend", choices=[*BACKENDS, "both"], default="both")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    backends = BACKENDS if args.backend == "both" else (args.backend,)
    run(args.rows, args.repeat, backends)
    return 0


if __name__ == "__main__":
    sys.exit(main())
