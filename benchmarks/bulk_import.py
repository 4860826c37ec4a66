"""Bulk import against insert: `embrel apply` from Parquet to a live, indexed collection.

Runs the real CLI as a subprocess against the real Milvus 2.3.5 server, once with
``source.files.load: insert`` and once with ``bulkImport`` (staging under the run's
temporary folder, which the standalone server reads from the same disk), on the same
``--rows`` x ``--dim`` source; then bulk import again at a tenth of the rows, to show
whether the controller's memory grows with the corpus. With ``--s3`` both loads run
again from the same files as objects on a real S3 API server on loopback (moto_server,
``tests.support.s3_server``): what object storage costs a whole release. Each run
reports the wall time
of the whole apply (check pass, load, index, load into memory, validation, flip: a
searchable, indexed collection behind the alias), the load phase alone (from the
collection's creation to the "loaded N rows" event: inserts and flush, or staging and
the import jobs) and the controller's peak RSS (VmHWM).

    python -m benchmarks.bulk_import --backend server [--rows 1000000] [--dim 128]
        [--small-rows 100000] [--index IVF_FLAT|FLAT|HNSW] [--s3] [--files 64]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from benchmarks.build_memory import MB, Run, import_floor, run_measured
from benchmarks.support import (
    INDEXES,
    Backend,
    fresh_alias,
    machine,
    open_backend,
    release_doc,
    table,
    write_parts,
    write_vectors,
    write_yaml,
)

BATCH = 5000
ROWS_PER_FILE = 250_000
# The engine's event lines around the load (controller.engine.steps.build).
LOAD_PHASE = ("created ", "loaded ")


@dataclass(frozen=True)
class Source:
    uri: str  # a local glob, or s3://bucket/prefix/*.parquet
    where: str  # "local" | "s3"
    env: dict[str, str]  # the S3 endpoint and keys, as a user would set them


def apply_once(
    backend: Backend, source: Source, rows: int, dim: int, load: str, index: str, work: Path
) -> Run:
    """`embrel apply` of ``source`` with ``load``; the collection is dropped afterwards."""
    alias = fresh_alias("bi")
    folder = work / alias
    stage = folder / "stage"
    config = write_yaml(
        folder / "config.yaml",
        {
            "stateDir": str(folder / "state"),
            "build": {"batchSize": BATCH},
            "milvus": {"importStaging": {"path": str(stage), "rowsPerFile": ROWS_PER_FILE}},
        },
    )
    uri = backend.uri(alias)
    doc = release_doc(
        name="bulk",
        alias=alias,
        version="v1",
        uri=uri,
        source=source.uri,
        dim=dim,
        index=INDEXES[index],
    )
    doc["spec"]["source"]["files"]["load"] = load
    spec = write_yaml(folder / "release.yaml", doc)
    argv = [sys.executable, "-m", "controller.cli", "--config", str(config), "apply", "-f"]
    try:
        label = f"{load} {rows:,}" + (" from s3" if source.where == "s3" else "")
        run = run_measured([*argv, str(spec)], Run(label, rows, rows * dim * 4), source.env)
    finally:
        backend.discard(uri, alias)
    if run.returncode != 0:
        log = "\n".join(line for _, line in run.output[-30:])
        raise RuntimeError(f"embrel apply ({load}) exited {run.returncode}:\n{log}")
    if stage.exists() and any(stage.iterdir()):
        raise RuntimeError(f"staged files left behind in {stage}")
    return run


def load_seconds(r: Run) -> float:
    begin = next((t for t, line in r.output if LOAD_PHASE[0] in line), None)
    end = next((t for t, line in r.output if LOAD_PHASE[1] in line), None)
    return end - begin if begin is not None and end is not None else float("nan")


def report(floor: Run, runs: Sequence[Run]) -> str:
    rows = [
        [
            r.label,
            f"{r.wall:.1f}",
            f"{r.rows / r.wall:,.0f}",
            f"{load_seconds(r):.1f}",
            f"{r.rows / load_seconds(r):,.0f}",
            f"{r.peak_rss / MB:,.0f}",
            f"{(r.peak_rss - floor.peak_rss) / MB:,.0f}",
        ]
        for r in runs
    ]
    out = table(
        [
            "run",
            "apply wall s",
            "rows/s end to end",
            "load phase s",
            "rows/s load phase",
            "peak RSS MB",
            "above floor MB",
        ],
        rows,
    )
    insert, bulk = runs[0], runs[1]
    out += (
        f"\n\nEnd to end, bulk import is {insert.wall / bulk.wall:.2f}x insert's rows/s; "
        f"the load phase alone {load_seconds(insert) / load_seconds(bulk):.2f}x."
        f"\nImport floor (`embrel --help`): peak RSS {floor.peak_rss / MB:,.0f} MB."
    )
    for local in (insert, bulk):
        remote = next((r for r in runs if r.label == f"{local.label} from s3"), None)
        if remote is not None:
            out += f"\n{local.label}: from s3 / local, apply wall time {remote.wall / local.wall:.2f}x."
    small = next((r for r in runs[2:] if r.rows < bulk.rows), None)
    if small is not None:
        growth = (bulk.peak_rss - floor.peak_rss) / max(small.peak_rss - floor.peak_rss, 1)
        out += (
            f"\nBulk import RSS above the floor, {bulk.rows:,} vs {small.rows:,} rows: "
            f"x{growth:.2f}."
        )
    return out


@contextmanager
def sources(folder: Path, parts: list[Path], s3: bool) -> Iterator[list[Source]]:
    """The parts as a local glob and, with ``s3``, as objects on moto_server."""
    local = Source(f"{folder}/*.parquet", "local", {})
    if not s3:
        yield [local]
        return
    from tests.support.s3_server import running_s3_server

    with running_s3_server(folder.parent / "moto.log") as server:
        bucket = server.bucket()
        for part in parts:
            server.client().upload_file(str(part), bucket, f"emb/{part.name}")
        yield [local, Source(f"s3://{bucket}/emb/*.parquet", "s3", server.env())]


def run(rows: int, dim: int, small_rows: int, index: str, s3: bool, files: int) -> list[Run]:
    print(
        f"bulk import vs insert: `embrel apply` of {rows:,} x {dim}-dim rows from {files} "
        f"Parquet files{' (local, then S3 on loopback)' if s3 else ''}, "
        f"{ROWS_PER_FILE:,} rows per staged file, {index} index, on {machine()}",
        flush=True,
    )
    floor = import_floor()
    runs: list[Run] = []
    with (
        tempfile.TemporaryDirectory(prefix="embrel-bench-bulk-") as tmp,
        open_backend("server") as backend,
    ):
        work = Path(tmp)
        (work / "source").mkdir()
        parts = write_parts(work / "source", rows, dim, files)
        with sources(work / "source", parts, s3) as where:
            local = where[0]
            for load in ("insert", "bulkImport"):
                runs.append(apply_once(backend, local, rows, dim, load, index, work))
                print(f"  {runs[-1].label}: {runs[-1].wall:.1f} s", flush=True)
            for remote in where[1:]:
                for load in ("insert", "bulkImport"):
                    runs.append(apply_once(backend, remote, rows, dim, load, index, work))
                    print(f"  {runs[-1].label}: {runs[-1].wall:.1f} s", flush=True)
        for part in parts:
            part.unlink()
        if small_rows:
            small = Source(str(write_vectors(work / "small.parquet", small_rows, dim)), "local", {})
            runs.append(apply_once(backend, small, small_rows, dim, "bulkImport", index, work))
            print(f"  {runs[-1].label}: {runs[-1].wall:.1f} s", flush=True)
    for r in runs:
        start = r.output[0][0] if r.output else 0.0
        print(f"\n  {r.label}:")
        print("\n".join(f"    {t - start:6.1f} s  {line.strip()}" for t, line in r.output))
    print("\n" + report(floor, runs), flush=True)
    return runs


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--backend", choices=["server"], default="server")
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument(
        "--small-rows", type=int, default=100_000, help="a bulk import this size too (0: none)"
    )
    p.add_argument("--index", choices=sorted(INDEXES), default="IVF_FLAT")
    p.add_argument("--s3", action="store_true", help="both loads again from S3 on loopback")
    p.add_argument("--files", type=int, default=16, help="Parquet files the source is cut into")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    run(args.rows, args.dim, args.small_rows, args.index, args.s3, args.files)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
