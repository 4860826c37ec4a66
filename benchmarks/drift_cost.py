"""What one drift measurement costs the controller (the target: < 1 s of CPU).

A 100k x 384 live collection (HNSW, loaded), a reference of ``--sample`` vectors
captured by the engine's own ``capture_reference`` step, then ``--repeats`` runs of
its ``monitor`` step. Each Milvus call and the pure math (``monitoring.measure``)
are timed separately: wall time and this process's CPU time. On the server, the
process's CPU is the controller's alone; on Milvus Lite the server runs inside the
process, so only the math's CPU is the controller's.

    python -m benchmarks.drift_cost [--rows 100000] [--dim 384] [--sample 2000] [--backend server]
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.flip_latency import _drop_alias, _indexed
from benchmarks.support import (
    QuietReporter,
    fresh_alias,
    machine,
    median,
    open_backend,
    release_doc,
    table,
    unit_vectors,
)
from controller import monitoring
from controller.drivers.local import ReferenceFolder
from controller.engine import (
    P_REFERENCE_AT,
    Observation,
    Step,
    StepContext,
    StepName,
    utc_now,
)
from controller.engine.steps import monitor as monitor_steps
from controller.milvus import MilvusGateway
from controller.schema import Schema
from controller.sources.base import VectorBatch
from controller.spec import EmbeddingRelease, release_from_dict
from controller.status import Phase

Clock = dict[str, list[tuple[float, float]]]  # name -> [(wall, cpu)]


class TimedGateway:
    """The real gateway, each call timed (wall and this process's CPU)."""

    def __init__(self, inner: MilvusGateway, clock: Clock) -> None:
        self.inner, self.clock = inner, clock

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.inner, name)
        if not callable(method):
            return method

        def timed(*args: Any, **kwargs: Any) -> Any:
            wall, cpu = time.perf_counter(), time.process_time()
            try:
                return method(*args, **kwargs)
            finally:
                self.clock[name].append((time.perf_counter() - wall, time.process_time() - cpu))

        return timed


def _release(uri: str, alias: str, sample: int) -> EmbeddingRelease:
    doc = release_doc(
        name="drift-cost", alias=alias, version="v1", uri=uri, source=Path("unused"), dim=384
    )
    doc["spec"]["monitoring"] = {"sample": sample, "thresholds": {"minSameIdCosine": 0.9}}
    return release_from_dict(doc)


def _live(gateway: MilvusGateway, name: str, rows: int, dim: int) -> None:
    gateway.create_collection(name, Schema(dim), {})
    rng = np.random.default_rng(0)
    for start in range(0, rows, 10_000):
        n = min(10_000, rows - start)
        ids = np.arange(start, start + n, dtype=np.int64)
        gateway.insert(name, VectorBatch(ids, unit_vectors(rng, n, dim), {}, "generated", start))
    gateway.row_count(name)
    gateway.ensure_index(name, "HNSW", "COSINE", {"M": 16, "efConstruction": 100})
    gateway.wait_until(f"index on {name}", lambda: _indexed(gateway, name), timeout=1800)
    gateway.load(name)
    gateway.wait_until(f"{name} loaded", lambda: gateway.is_loaded(name), timeout=600)


def _timed_math(clock: Clock) -> Callable[..., dict[str, float]]:
    measure = monitoring.measure

    def timed(*args: Any, **kwargs: Any) -> dict[str, float]:
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            return measure(*args, **kwargs)
        finally:
            clock["measure (math)"].append((time.perf_counter() - wall, time.process_time() - cpu))

    return timed


def run(
    kind: str, rows: int, dim: int, sample: int, repeats: int, workdir: Path
) -> list[list[object]]:
    out: list[list[object]] = []
    with open_backend(kind) as backend:
        alias = fresh_alias("drift")
        uri = backend.uri(alias)
        name = f"{alias}__v1"
        gateway = MilvusGateway(uri)
        try:
            print(f"  {kind}: building {rows} x {dim} ...", flush=True)
            _live(gateway, name, rows, dim)
            clock: Clock = defaultdict(list)
            timed = TimedGateway(gateway, clock)
            # The engine's own steps, run against the timed gateway (no data port needed).
            ctx = StepContext(
                timed,  # type: ignore[arg-type]
                None,  # type: ignore[arg-type]
                QuietReporter(),
                utc_now,
                references=ReferenceFolder(workdir / kind),
            )
            release = _release(uri, alias, sample)
            step = Step(StepName.MONITOR, name, Phase.LIVE)
            obs = Observation(name, {})
            monitor_steps.capture_reference(ctx, release, step, obs)
            gateway.set_properties(name, {P_REFERENCE_AT: "captured"})
            clock.clear()
            monitoring_measure, monitoring.measure = monitoring.measure, _timed_math(clock)
            totals = []
            try:
                for _ in range(repeats):
                    wall, cpu = time.perf_counter(), time.process_time()
                    monitor_steps.monitor(ctx, release, step, obs)
                    totals.append((time.perf_counter() - wall, time.process_time() - cpu))
            finally:
                monitoring.measure = monitoring_measure
            for what, samples in sorted(clock.items(), key=lambda kv: -sum(w for w, _ in kv[1])):
                calls = len(samples) // repeats
                wall = median([sum(w for w, _ in samples[i::repeats]) for i in range(repeats)])
                cpu = median([sum(c for _, c in samples[i::repeats]) for i in range(repeats)])
                out.append([kind, what, calls, f"{wall * 1000:.0f}", f"{cpu * 1000:.0f}"])
            out.append(
                [
                    kind,
                    "whole monitor step",
                    1,
                    f"{median([w for w, _ in totals]) * 1000:.0f}",
                    f"{median([c for _, c in totals]) * 1000:.0f}",
                ]
            )
        finally:
            gateway.close()
            _drop_alias(backend, uri, alias)
            backend.discard(uri, alias)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--sample", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--backend", choices=("lite", "server", "both"), default="server")
    args = parser.parse_args(argv)
    print(f"drift cost on {machine()}: {args.rows} x {args.dim}, sample {args.sample}")
    kinds = ("lite", "server") if args.backend == "both" else (args.backend,)
    rows: list[list[object]] = []
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        for kind in kinds:
            rows += run(kind, args.rows, args.dim, args.sample, args.repeats, Path(tmp))
    print(table(["backend", "part", "calls", "wall ms (median)", "controller CPU ms"], rows))


if __name__ == "__main__":
    main()
