"""Delta releases: the base copy against plain insert, on one backend in one run.

    python -m benchmarks.delta_copy [--backend lite|server] [--rows 1000000] [--dim 128]
        [--upserts 0.01] [--deletes 0.001] [--index FLAT] [--batch-size 5000] [--profile]

In one run, on one backend, through the controller (LocalController, in process), on
one track:

* **base**: a full release of ``--rows`` x ``--dim`` float32 unit vectors from one
  Parquet file (``source.files``, the insert path): its inserts give the plain-insert
  rate, the baseline;
* **delta**: a ``source.delta`` release on that base (``base: live``), with
  ``--upserts`` x rows upserted (half of them replace base rows, half are new ids) and
  ``--deletes`` x rows deleted (base ids, none of them upserted). Today the controller
  copies the base row by row: ``query_iterator`` pages of ``build.batchSize`` rows,
  each page's kept rows upserted into the candidate, then the upserts.

Each step is timed from the engine's events and progress ticks (the reporter records
when each progress stage opens and its last tick): the base's inserts ("loading")
against the delta's copy ("copying"), each without the flush that follows; the upserts;
the flush and row count; and the build step ("building the candidate" to "building
the index") and the whole release of each. The copy rate is base rows read per second
of the copy stage. The run fails unless the delta's counts are exactly what the files
say and the collection behind the alias holds rows + new - deleted rows.

Peak RSS is this process's VmHWM during each release (reset before it through
/proc/self/clear_refs); on Lite it includes Milvus Lite, which serves from threads of
this process. ``--profile`` runs cProfile over the delta's ``DeltaBuild.load`` (the copy
and the upserts; this thread only: on Lite the server's threads show as time waiting
for its answers) and prints where it went.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import pstats
import re
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pymilvus import MilvusClient

from benchmarks.support import (
    BACKENDS,
    INDEXES,
    Backend,
    TimedReporter,
    fresh_alias,
    machine,
    median,
    open_backend,
    release_doc,
    table,
    unit_vectors,
    write_vectors,
    write_yaml,
)
from controller.config import BuildOptions, ControllerConfig
from controller.drivers.local import LocalController, read_spec
from controller.incremental import BuildResult, DeltaBuild
from controller.ports import Advance
from controller.status import Phase

NEW_SHARE = 0.5  # of the upserts, the share with ids the base lacks
MB = 1e6


# -- data --------------------------------------------------------------------------


@dataclass(frozen=True)
class DeltaFiles:
    upserts: Path
    deletes: Path
    replaced: int  # upserted ids the base holds
    new: int  # upserted ids the base lacks
    deleted: int  # deleted ids, all in the base


def write_delta(folder: Path, rows: int, dim: int, upserts: float, deletes: float) -> DeltaFiles:
    """Upserts (Parquet, the base's layout) and deleted ids (.npy), disjoint, seeded."""
    rng = np.random.default_rng(1)
    n_upserts = round(upserts * rows)
    n_new = round(n_upserts * NEW_SHARE)
    n_replaced, n_deleted = n_upserts - n_new, round(deletes * rows)
    if n_replaced + n_deleted > rows:
        raise SystemExit(f"{n_replaced} replaced + {n_deleted} deleted ids exceed {rows} rows")
    picked = rng.choice(rows, n_replaced + n_deleted, replace=False).astype(np.int64)
    replaced, deleted = picked[:n_replaced], picked[n_replaced:]
    ids = np.sort(np.concatenate([replaced, np.arange(rows, rows + n_new, dtype=np.int64)]))
    vectors = unit_vectors(rng, len(ids), dim)
    upsert_path = folder / "upserts.parquet"
    pq.write_table(
        pa.table(
            {
                "id": pa.array(ids),
                "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), dim),
            }
        ),
        upsert_path,
        compression="none",
    )
    delete_path = folder / "deletes.npy"
    np.save(delete_path, np.sort(deleted))
    return DeltaFiles(upsert_path, delete_path, n_replaced, n_new, n_deleted)


# -- a reporter that also knows when each stage opened -----------------------------


@dataclass
class StageReporter(TimedReporter):
    """TimedReporter, plus when each progress stage was opened and every tick: the copy
    stage's first page is read after it opens, so open -> last tick is the whole copy,
    and the gaps between ticks are the time of each page (read and written)."""

    opened: dict[str, float] = field(default_factory=dict)
    ticks: dict[str, list[float]] = field(default_factory=dict)

    def progress(self, stage: str, total: int | None) -> AbstractContextManager[Advance]:
        self.opened.setdefault(stage, time.perf_counter())
        ticks = self.ticks.setdefault(stage, [])
        inner = super().progress(stage, total)

        @contextmanager
        def recording() -> Iterator[Advance]:
            with inner as advance:

                def tick(rows: int) -> None:
                    advance(rows)
                    ticks.append(time.perf_counter())

                yield tick

        return recording()

    def opened_at(self, prefix: str) -> float:
        return min(stamp for stage, stamp in self.opened.items() if stage.startswith(prefix))

    def stage(self, prefix: str) -> float:
        """Open -> last tick of the stage whose name starts with ``prefix`` (0 if absent)."""
        if not any(s.startswith(prefix) for s in self.last_tick):
            return 0.0
        return self.last_tick_of(prefix) - self.opened_at(prefix)

    def gaps(self, prefix: str) -> list[float]:
        """Seconds from the stage's opening to its first tick, then between ticks."""
        stage = next((s for s in self.ticks if s.startswith(prefix)), None)
        if stage is None:
            return []
        stamps = [self.opened[stage], *self.ticks[stage]]
        return [b - a for a, b in pairwise(stamps)]


# -- memory ------------------------------------------------------------------------


def reset_peak_rss() -> bool:
    """Reset this process's VmHWM to its current RSS (Linux); False where refused."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def peak_rss() -> int:
    """VmHWM in bytes (0 where /proc is missing)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


# -- releases ----------------------------------------------------------------------


@dataclass
class Release:
    version: str
    reporter: StageReporter
    wall: float  # the whole reconcile_track: build, index, load, validation, flip
    build: dict[str, Any]  # status.build
    peak_rss: int  # bytes; 0 when the peak could not be reset before the release

    def span(self, start: str, end: str) -> float:
        return self.reporter.between(start, end)


def apply(
    config: ControllerConfig,
    folder: Path,
    doc: dict[str, Any],
) -> Release:
    """Apply ``doc`` with a fresh controller on the shared state folder; it must go live."""
    version = doc["spec"]["version"]
    spec = write_yaml(folder / f"{version}.yaml", doc)
    reporter = StageReporter()
    controller = LocalController(config, reporter)
    try:
        text, release = read_spec(spec)
        controller.record_spec(spec, text, release)
        reset = reset_peak_rss()
        started = time.perf_counter()
        result = controller.reconcile_track(release.track)
        wall = time.perf_counter() - started
        rss = peak_rss() if reset else 0
    finally:
        controller.close()
    status = result.status
    if status.phase != Phase.LIVE:
        raise RuntimeError(f"{version} did not go live: {status.phase}: {status.message}")
    created = sum(1 for _, _, message in reporter.events if message.startswith("created "))
    if created != 1:
        raise RuntimeError(f"{version}: {created} candidates were created (a build was retried)")
    return Release(version, reporter, wall, status.build or {}, rss)


def specs(
    alias: str, uri: str, base: Path, delta: DeltaFiles, dim: int, index: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The base release (files) and the delta release (on live) of one track."""
    common: dict[str, Any] = {
        "name": alias.replace("_", "-"),
        "alias": alias,
        "uri": uri,
        "dim": dim,
    }
    v1 = release_doc(version="v1", source=base, index=INDEXES[index], **common)
    v2 = release_doc(version="v2", source=base, index=INDEXES[index], **common)
    v2["spec"]["source"] = {
        "delta": {
            "base": "live",
            "upserts": {"uri": str(delta.upserts), "idField": "id", "vectorField": "vector"},
            "deletes": {"uri": str(delta.deletes)},
        }
    }
    return v1, v2


def alias_rows(uri: str, alias: str) -> int:
    """count(*) through the alias with Strong consistency, from a client of our own."""
    client = MilvusClient(uri=uri)
    try:
        result = client.query(alias, output_fields=["count(*)"], consistency_level="Strong")
        return int(result[0]["count(*)"])
    finally:
        client.close()


def check(rows: int, delta: DeltaFiles, release: Release, counted: int) -> int:
    """The delta's counts against what the files say; the expected row count."""
    expected = rows + delta.new - delta.deleted
    want = {
        "rows": expected,
        "copied": rows - delta.replaced - delta.deleted,
        "upserted": delta.replaced + delta.new,
        "inserted": delta.new,
        "replaced": delta.replaced,
        "deleted": delta.deleted,
        "unknownDeletes": 0,
    }
    got = {key: release.build.get(key) for key in want}
    problems = [f"{k} {got[k]} (expected {v})" for k, v in want.items() if got[k] != v]
    if counted != expected:
        problems.append(f"the alias serves {counted} rows (expected {expected})")
    if problems:
        raise SystemExit("the delta is wrong: " + "; ".join(problems))
    return expected


# -- one run -----------------------------------------------------------------------


@dataclass(frozen=True)
class Result:
    kind: str
    rows: int
    dim: int
    index: str
    batch: int
    delta: DeltaFiles
    base: Release
    change: Release
    expected: int

    # The base (files, insert path).
    @property
    def insert_s(self) -> float:  # every batch inserted, without the flush
        return self.base.reporter.stage("loading ")

    @property
    def insert_rps(self) -> float:
        return self.rows / self.insert_s

    @property
    def base_flush_s(self) -> float:  # last insert -> "loaded N rows": flush, count
        return self.base.reporter.at("loaded ") - self.base.reporter.last_tick_of("loading ")

    @property
    def base_build_s(self) -> float:
        return self.base.span("building the candidate", "building the index")

    # The delta.
    @property
    def copy_s(self) -> float:  # every base page read and its kept rows upserted
        return self.change.reporter.stage("copying ")

    @property
    def copy_rps(self) -> float:  # base rows read per second of the copy
        return self.rows / self.copy_s

    @property
    def upsert_s(self) -> float:
        return self.change.reporter.stage("upserting ")

    @property
    def delta_flush_s(self) -> float:
        r = self.change.reporter
        last = "upserting " if self.upsert_s else "copying "
        return r.at("delta on ") - r.last_tick_of(last)

    @property
    def delta_check_s(self) -> float:  # upserts checked, deletes read, base loaded, created
        return self.change.span("building the candidate", "created ")

    @property
    def delta_build_s(self) -> float:
        return self.change.span("building the candidate", "building the index")


def run(args: argparse.Namespace) -> Result:
    print(
        f"delta copy: {args.rows:,} x {args.dim}-dim base, {args.upserts:.2%} upserts "
        f"({NEW_SHARE:.0%} new ids), {args.deletes:.2%} deletes, {args.index} index, "
        f"batch {args.batch_size:,}, {args.backend}, on {machine()}",
        flush=True,
    )
    profiler = cProfile.Profile() if args.profile else None
    with tempfile.TemporaryDirectory(prefix="embrel-bench-delta-") as tmp:
        folder = Path(tmp)
        started = time.perf_counter()
        base = write_vectors(folder / "base.parquet", args.rows, args.dim)
        delta = write_delta(folder, args.rows, args.dim, args.upserts, args.deletes)
        print(f"  data written in {time.perf_counter() - started:.1f} s", flush=True)
        config = ControllerConfig(
            state_dir=folder / "state", build=BuildOptions(batch_size=args.batch_size)
        )
        with open_backend(args.backend) as backend:
            result = _releases(backend, args, folder, base, delta, config, profiler)
    print(f"\nEvents\n\n{timeline(result.base)}\n{timeline(result.change)}")
    print("\n" + report(result), flush=True)
    if profiler is not None:
        print_profile(profiler, args.profile_out)
    return result


def _releases(
    backend: Backend,
    args: argparse.Namespace,
    folder: Path,
    base: Path,
    delta: DeltaFiles,
    config: ControllerConfig,
    profiler: cProfile.Profile | None,
) -> Result:
    alias = fresh_alias("dc")
    uri = backend.uri(alias)
    v1, v2 = specs(alias, uri, base, delta, args.dim, args.index)
    try:
        first = apply(config, folder, v1)
        print(f"  base v1 live: {first.wall:.1f} s", flush=True)
        with profiled_copy(profiler):
            second = apply(config, folder, v2)
        print(f"  delta v2 live: {second.wall:.1f} s", flush=True)
        counted = alias_rows(uri, alias)
    finally:
        backend.discard(uri, alias)
    expected = check(args.rows, delta, second, counted)
    return Result(
        backend.kind,
        args.rows,
        args.dim,
        args.index,
        args.batch_size,
        delta,
        first,
        second,
        expected,
    )


# -- report ------------------------------------------------------------------------


def _rss(release: Release) -> str:
    return f"{release.peak_rss / MB:,.0f}" if release.peak_rss else "n/a"


def _per_batch(gaps: Sequence[float]) -> str:
    """First, median, last and max of a stage's per-batch seconds, and how the last
    quarter's median compares with the first's (growth along the copy)."""
    if not gaps:
        return "none"
    full = gaps[:-1] if len(gaps) > 2 else gaps  # the last batch may be partial
    quarter = max(1, len(full) // 4)
    growth = median(full[-quarter:]) / median(full[:quarter])
    return (
        f"{len(gaps)} batches, first {gaps[0]:.3f}, median {median(gaps):.3f}, "
        f"last {gaps[-1]:.3f}, max {max(gaps):.3f} s; last quarter / first quarter "
        f"x{growth:.2f} (full batches)"
    )


def report(r: Result) -> str:
    d = r.delta
    head = (
        f"{r.kind}, {r.rows:,} x {r.dim}-dim base, index {r.index}, batch {r.batch:,}; delta: "
        f"{d.replaced + d.new:,} upserts ({d.replaced:,} replacing, {d.new:,} new), "
        f"{d.deleted:,} deletes -> {r.expected:,} rows (checked through the alias)"
    )
    summary = table(
        [
            "rows",
            "plain insert rows/s",
            "insert s",
            "base copy rows/s",
            "copy s",
            "copy / insert",
            "delta build s",
            "delta release s",
            "base release s",
        ],
        [
            [
                f"{r.rows:,}",
                f"{r.insert_rps:,.0f}",
                f"{r.insert_s:.1f}",
                f"{r.copy_rps:,.0f}",
                f"{r.copy_s:.1f}",
                f"{r.copy_rps / r.insert_rps:.2f}",
                f"{r.delta_build_s:.1f}",
                f"{r.change.wall:.1f}",
                f"{r.base.wall:.1f}",
            ]
        ],
    )
    phases = table(
        [
            "release",
            "check s",
            "insert/copy s",
            "upserts s",
            "flush+count s",
            "build s",
            "release s",
            "peak RSS MB",
        ],
        [
            [
                "base (files, insert)",
                f"{r.base.span('building the candidate', 'created '):.1f}",
                f"{r.insert_s:.1f}",
                "-",
                f"{r.base_flush_s:.1f}",
                f"{r.base_build_s:.1f}",
                f"{r.base.wall:.1f}",
                _rss(r.base),
            ],
            [
                "delta (copy + upserts)",
                f"{r.delta_check_s:.1f}",
                f"{r.copy_s:.1f}",
                f"{r.upsert_s:.1f}",
                f"{r.delta_flush_s:.1f}",
                f"{r.delta_build_s:.1f}",
                f"{r.change.wall:.1f}",
                _rss(r.change),
            ],
        ],
    )
    note = (
        "insert/copy: the stage's progress from open to last tick, no flush; build: "
        "'building the candidate' -> 'building the index'; release: the whole apply "
        "(build, index, load, validation, flip); peak RSS: this process's VmHWM during "
        "the release"
        + (" (Milvus Lite included: it serves from this process)" if r.kind == "lite" else "")
    )
    batches = (
        f"Per batch of {r.batch:,}:\n"
        f"  base inserts: {_per_batch(r.base.reporter.gaps('loading '))}\n"
        f"  delta copy (page read + kept rows upserted): "
        f"{_per_batch(r.change.reporter.gaps('copying '))}"
    )
    return f"{head}\n\n{summary}\n\n{phases}\n\n{note}\n\n{batches}"


def timeline(release: Release) -> str:
    """The release's events, in seconds from its first one."""
    events = release.reporter.events
    start = events[0][0] if events else 0.0
    lines = [f"    {t - start:7.2f} s  {message}" for t, _, message in events]
    return f"  {release.version}:\n" + "\n".join(lines)


@contextmanager
def profiled_copy(profiler: cProfile.Profile | None) -> Iterator[None]:
    """Run ``profiler`` during ``DeltaBuild.load`` only: the base copy and the upserts."""
    if profiler is None:
        yield
        return
    original = DeltaBuild.load

    def load(self: DeltaBuild, target: str) -> BuildResult:
        profiler.enable()
        try:
            return original(self, target)
        finally:
            profiler.disable()

    DeltaBuild.load = load  # type: ignore[method-assign]
    try:
        yield
    finally:
        DeltaBuild.load = original  # type: ignore[method-assign]


# Where the copy's time goes: (label, pattern of "file:line(function)"), cumulative
# time of the matching functions. The pymilvus names are those of pymilvus 3.0.
BUCKETS = (
    ("reading base pages (MilvusPort.iterate_rows)", r"controller/milvus\.py:\d+\(iterate_rows\)"),
    ("  gRPC query calls (waiting for Milvus)", r"grpc_handler\.py:\d+\(query\)"),
    ("  pymilvus: result rows as dicts", r"client/types\.py:\d+\(__getitem__\)"),
    ("  embrel: dicts to numpy (_rows_to_batch)", r"controller/milvus\.py:\d+\(_rows_to_batch\)"),
    ("upserting rows (MilvusPort.insert)", r"controller/milvus\.py:\d+\(insert\)"),
    ("  embrel: numpy to row dicts", r"controller/milvus\.py:\d+\(<listcomp>\)"),
    ("  pymilvus: row dicts to protobuf", r"grpc_handler\.py:\d+\(_prepare_row_upsert_request\)"),
    ("  gRPC upsert calls (waiting for Milvus)", r"grpc/_interceptor\.py:\d+\(__call__\)"),
    ("reading and checking the upserts file", r"controller/incremental\.py:\d+\(_labelled_iter\)"),
    ("keep/drop masks and row selection", r"controller/incremental\.py:\d+\((_in|_take)\)"),
)


def _cumulative(stats: pstats.Stats, pattern: str, caller: str | None = None) -> float:
    """Cumulative seconds of the functions matching ``pattern`` (called from ``caller``)."""
    total = 0.0
    for (path, line, name), entry in stats.stats.items():  # type: ignore[attr-defined]
        if not re.search(pattern, f"{path}:{line}({name})"):
            continue
        if caller is None:
            total += entry[3]
            continue
        for (cpath, cline, cname), timing in entry[4].items():
            if re.search(caller, f"{cpath}:{cline}({cname})"):
                total += timing[3]
    return total


def print_profile(profiler: cProfile.Profile, out: Path | None) -> None:
    """Where DeltaBuild.load spent its time (this thread), and the functions on its path
    by cumulative time; ``out`` keeps the whole profile for pstats or snakeviz."""
    text = io.StringIO()
    stats = pstats.Stats(profiler, stream=text).sort_stats("cumulative")
    total = _cumulative(stats, r"controller/incremental\.py:\d+\(load\)")
    callers = {  # the sub-buckets count calls from their parent only
        "  gRPC upsert calls (waiting for Milvus)": r"grpc_handler\.py:\d+\(upsert_rows\)",
        "  embrel: numpy to row dicts": r"controller/milvus\.py:\d+\(insert\)",
    }
    rows = []
    for label, pattern in BUCKETS:
        seconds = _cumulative(stats, pattern, callers.get(label))
        share = f"{seconds / total:.0%}" if total else "-"
        rows.append([label, f"{seconds:.2f}", share])
    print(f"\ncProfile of DeltaBuild.load (copy + upserts), {total:.2f} s in all:\n")
    print(table(["where", "s", "of the load"], rows))
    stats.print_stats(25)
    print(text.getvalue(), flush=True)
    if out is not None:
        stats.dump_stats(out)
        print(f"whole profile: {out}", flush=True)


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--backend", choices=BACKENDS, default="lite")
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--upserts", type=float, default=0.01, help="share of rows upserted")
    p.add_argument("--deletes", type=float, default=0.001, help="share of rows deleted")
    p.add_argument("--index", choices=sorted(INDEXES), default="FLAT")
    p.add_argument("--batch-size", type=int, default=BuildOptions().batch_size)
    p.add_argument("--profile", action="store_true", help="cProfile the delta's copy")
    p.add_argument("--profile-out", type=Path, help="with --profile: save the profile here")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    run(parse(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
