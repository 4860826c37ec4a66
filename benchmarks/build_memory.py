"""Peak memory of `embrel apply` stays bounded as the corpus grows (streaming build).

Runs the real CLI as a subprocess against the real Milvus server (Milvus Lite would
run inside the embrel process and add its own memory) for a small and a large corpus
of 128-dim float32 vectors, and reads each subprocess's peak RSS (VmHWM). If the
build streams, the large corpus peaks about where the small one does, far below the
size of its vectors. A bare `embrel --help` gives the import floor.

    python -m benchmarks.build_memory [--rows 1000000] [--small-rows 100000]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.support import (
    INDEXES,
    Backend,
    fresh_alias,
    machine,
    open_backend,
    release_doc,
    table,
    write_vectors,
    write_yaml,
)

DIM = 128
BATCH = 5000
REPO = Path(__file__).resolve().parents[1]
# IVF_FLAT builds in seconds where HNSW on 1M rows takes many minutes on 2 cores; the
# index is built by the server, so it does not change the embrel process's memory.
INDEX = INDEXES["IVF_FLAT"]
MB = 1e6


@dataclass
class Run:
    label: str
    rows: int
    data_bytes: int
    peak_rss: int = 0  # bytes: VmHWM of the subprocess
    wall: float = 0.0
    returncode: int = 0
    output: list[tuple[float, str]] = field(default_factory=list)  # (time, stdout line)
    samples: list[tuple[float, int, int]] = field(default_factory=list)  # (time, RSS, HWM)

    def phase_peak(self, start: str, end: str) -> int:
        """Highest RSS sampled between the output lines containing ``start`` and ``end``."""
        begin = next((t for t, line in self.output if start in line), None)
        stop = next((t for t, line in self.output if end in line), None)
        if begin is None or stop is None:
            return 0
        return max((rss for t, rss, _ in self.samples if begin <= t <= stop), default=0)

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.wall if self.wall else 0.0


# -- measuring a subprocess --------------------------------------------------------
# Why VmHWM and not ru_maxrss: Linux carries the RSS a child had between fork and exec
# (a copy of the parent's address space) into its ru_maxrss, so a child started from a
# large parent (run_all, after the in-process Milvus Lite runs) reports the parent's
# size. VmHWM belongs to the exec'd program's own address space only.
SAMPLE_S = 0.05


def _memory(pid: int) -> tuple[int, int] | None:
    """(VmRSS, VmHWM) in bytes; None once the process has exited (a zombie has neither)."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return None
    kb = {
        k: int(v.split()[0])
        for k, v in (ln.split(":", 1) for ln in lines)
        if k in ("VmRSS", "VmHWM")
    }
    if len(kb) < 2:
        return None
    return kb["VmRSS"] * 1024, kb["VmHWM"] * 1024


def _sample(pid: int, samples: list[tuple[float, int, int]], stop: threading.Event) -> None:
    """(time, RSS, high-water mark) until the process exits; its peak stays in VmHWM."""
    while not stop.wait(SAMPLE_S):
        if (memory := _memory(pid)) is not None:
            samples.append((time.perf_counter(), *memory))


def run_measured(argv: list[str], run: Run, env: dict[str, str] | None = None) -> Run:
    """Run ``argv`` (with ``env`` added to the environment); peak RSS is the last VmHWM
    read; RSS samples give the peak per phase."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        argv,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **(env or {})},
    )
    stop = threading.Event()
    sampler = threading.Thread(target=_sample, args=(proc.pid, run.samples, stop), daemon=True)
    sampler.start()
    assert proc.stdout is not None
    for line in proc.stdout:
        run.output.append((time.perf_counter(), line.rstrip()))
    run.returncode = proc.wait()
    run.wall = time.perf_counter() - started
    stop.set()
    sampler.join()
    run.peak_rss = max((hwm for _, _, hwm in run.samples), default=0)
    return run


# -- one apply ---------------------------------------------------------------------


def apply_once(backend: Backend, rows: int, workdir: Path) -> Run:
    """Generate ``rows`` vectors, `embrel apply` them, then delete the file and collection."""
    alias = fresh_alias("bm")
    uri = backend.uri(alias)
    folder = workdir / alias
    folder.mkdir()
    source = write_vectors(folder / "vectors.parquet", rows, DIM)
    config = write_yaml(
        folder / "config.yaml", {"stateDir": str(folder / "state"), "build": {"batchSize": BATCH}}
    )
    doc = release_doc(
        name="memory", alias=alias, version="v1", uri=uri, source=source, dim=DIM, index=INDEX
    )
    spec = write_yaml(folder / "release.yaml", doc)
    argv = [
        sys.executable,
        "-m",
        "controller.cli",
        "--config",
        str(config),
        "apply",
        "-f",
        str(spec),
    ]
    try:
        run = run_measured(argv, Run(f"{rows:,} rows", rows, rows * DIM * 4))
    finally:
        source.unlink()
        backend.discard(uri, alias)
    if run.returncode != 0:
        log = "\n".join(line for _, line in run.output[-20:])
        raise RuntimeError(f"embrel apply exited {run.returncode}:\n{log}")
    return run


def import_floor() -> Run:
    """`embrel --help`: the interpreter plus embrel's imports (pymilvus, pyarrow, numpy)."""
    return run_measured(
        [sys.executable, "-m", "controller.cli", "--help"], Run("embrel --help", 0, 0)
    )


# -- report ------------------------------------------------------------------------


def _timeline(r: Run) -> str:
    """The apply's own output, each line with its time and the RSS at that moment."""
    start = r.output[0][0] if r.output else 0.0
    lines = []
    for stamp, line in r.output:
        rss = next((m for t, m, _ in reversed(r.samples) if t <= stamp), 0)
        lines.append(f"    {stamp - start:6.1f} s {rss / MB:6,.0f} MB  {line.strip()}")
    return "\n".join(lines)


# Above-floor memory may grow this much over a 10x larger corpus and still count as bounded.
BOUNDED_GROWTH = 1.5
# The engine's event lines around its two passes over the source (controller.engine).
CHECK_PASS = ("building the candidate", "inserting")
INSERT_PASS = ("inserting", "loaded ")


def report(floor: Run, runs: Sequence[Run]) -> str:
    out = table(
        [
            "rows",
            "vector data MB",
            "peak RSS MB",
            "above import floor MB",
            "peak in check pass MB",
            "peak in insert pass MB",
            "wall s",
            "rows/s",
        ],
        [_report_row(floor, r) for r in runs],
    )
    out += f"\n\nImport floor (`embrel --help`): peak RSS {floor.peak_rss / MB:,.0f} MB."
    if len(runs) == 2:
        out += "\n" + _verdict(floor, *runs)
    return out


def _report_row(floor: Run, r: Run) -> list[str]:
    return [
        f"{r.rows:,}",
        f"{r.data_bytes / MB:,.0f}",
        f"{r.peak_rss / MB:,.0f}",
        f"{(r.peak_rss - floor.peak_rss) / MB:,.0f}",
        f"{r.phase_peak(*CHECK_PASS) / MB:,.0f}",
        f"{r.phase_peak(*INSERT_PASS) / MB:,.0f}",
        f"{r.wall:.1f}",
        f"{r.rows_per_s:,.0f}",
    ]


def _verdict(floor: Run, small: Run, large: Run) -> str:
    growth = (large.peak_rss - floor.peak_rss) / max(small.peak_rss - floor.peak_rss, 1)
    bounded = growth <= BOUNDED_GROWTH
    return (
        f"{large.rows:,} vs {small.rows:,} rows ({large.rows / small.rows:.0f}x the data): "
        f"peak RSS x{large.peak_rss / small.peak_rss:.2f}, above the import floor x{growth:.2f}; "
        f"peak is {large.peak_rss / large.data_bytes:.2f}x the large corpus's vector data. "
        + (
            "Bounded: memory does not grow with the corpus."
            if bounded
            else "NOT bounded: memory grows with the corpus."
        )
    )


def run(rows: int, small_rows: int) -> tuple[Run, list[Run]]:
    print(
        f"build memory: `embrel apply` of {small_rows:,} and {rows:,} x {DIM}-dim rows, batchSize {BATCH}, on {machine()}",
        flush=True,
    )
    floor = import_floor()
    runs = []
    with (
        tempfile.TemporaryDirectory(prefix="embrel-bench-mem-") as tmp,
        open_backend("server") as backend,
    ):
        for n in (small_rows, rows):
            runs.append(apply_once(backend, n, Path(tmp)))
            r = runs[-1]
            print(f"  {r.label}: peak RSS {r.peak_rss / MB:,.0f} MB in {r.wall:.1f} s", flush=True)
            print(_timeline(r), flush=True)
    print(report(floor, runs), flush=True)
    return floor, runs


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--small-rows", type=int, default=100_000)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    run(args.rows, args.small_rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
