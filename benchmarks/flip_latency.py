"""Alias flip and rollback latency: a raw alias move against embrel's rollback and promote.

(a) raw: two loaded collections; each flip is ``MilvusGateway.point_alias`` plus the
    ``alias_target`` read that confirms it, the least any blue/green switch must do.
(b) embrel: a track with v1 and v2 (v2 live, v1 retired and kept loaded); flips
    alternate a rollback request + ``reconcile_track`` and a promote request +
    ``reconcile_track``, the whole pass a user waits for with `embrel rollback`.

    python -m benchmarks.flip_latency [--flips 20] [--rows 10000] [--backend both] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

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
    unit_vectors,
    write_vectors,
    write_yaml,
)
from controller.config import ControllerConfig
from controller.drivers.local import LocalController, read_spec
from controller.milvus import MilvusGateway
from controller.schema import Schema
from controller.sources.base import VectorBatch
from controller.status import Phase

DIM = 128
# embrel's flip event: "switched alias A: x -> y; verified by 12 probes through the alias
# in 0.41s, 1 attempt(s)" (the alias move plus its proof).
_SWITCH = re.compile(r"alias \S+: .*; verified by .* in ([\d.]+)s, \d+ attempt")
INDEX_PARAMS: dict[str, Any] = {"M": 16, "efConstruction": 100}
INDEX: dict[str, Any] = {"type": "HNSW", "params": INDEX_PARAMS}


@dataclass(frozen=True)
class FlipResult:
    kind: str
    raw: list[float]  # seconds per flip
    rollback: list[float]  # reconcile_track after a rollback request
    promote: list[float]  # reconcile_track after a promote request
    switch: list[float]  # the alias switch inside embrel's flip step, from its own event
    row_count: list[float]  # MilvusGateway.row_count on a loaded collection: flush + count


# -- (a) raw -----------------------------------------------------------------------


def raw_flips(backend: Backend, flips: int, rows: int) -> tuple[list[float], list[float]]:
    """Flip times, and the cost of the row_count that embrel's flip step makes first."""
    alias = fresh_alias("fl_raw")
    uri = backend.uri(alias)
    gateway = MilvusGateway(uri)
    try:
        names = [
            _loaded_collection(gateway, f"{alias}__{v}", rows, seed)
            for seed, v in enumerate(("a", "b"))
        ]
        times = [_flip(gateway, alias, names[i % 2]) for i in range(flips)]
        counts = [_timed(lambda: gateway.row_count(names[0])) for _ in range(flips // 2)]
        return times, counts
    finally:
        gateway.close()
        _drop_alias(backend, uri, alias)
        backend.discard(uri, alias)


def _flip(gateway: MilvusGateway, alias: str, target: str) -> float:
    started = time.perf_counter()
    gateway.point_alias(alias, target)
    confirmed = gateway.alias_target(alias)
    elapsed = time.perf_counter() - started
    if confirmed != target:
        raise RuntimeError(f"alias {alias} points to {confirmed}, wanted {target}")
    return elapsed


def _timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def _loaded_collection(gateway: MilvusGateway, name: str, rows: int, seed: int) -> str:
    vectors = unit_vectors(np.random.default_rng(seed), rows, DIM)
    gateway.create_collection(name, Schema(DIM), {})
    gateway.insert(name, VectorBatch(np.arange(rows, dtype=np.int64), vectors, {}, "generated", 0))
    gateway.row_count(name)  # flushes
    gateway.ensure_index(name, "HNSW", "COSINE", INDEX_PARAMS)
    gateway.wait_until(f"index on {name}", lambda: _indexed(gateway, name), timeout=600)
    gateway.load(name)
    gateway.wait_until(f"{name} loaded", lambda: gateway.is_loaded(name), timeout=600)
    return name


def _indexed(gateway: MilvusGateway, name: str) -> bool:
    progress = gateway.index_progress(name)
    return progress is not None and progress[0] >= progress[1]


def _drop_alias(backend: Backend, uri: str, alias: str) -> None:
    """The gateway never drops aliases; the benchmark cleans up with plain pymilvus."""
    if backend.server_uri is None:
        return  # a Lite database is thrown away whole
    from pymilvus import MilvusClient

    client = MilvusClient(uri=uri)
    try:
        client.drop_alias(alias)
    finally:
        client.close()


# -- (b) embrel --------------------------------------------------------------------


@dataclass
class Track:
    controller: LocalController
    reporter: TimedReporter
    track: str

    def request(self, intent: str, value: Any) -> float:
        """Leave a request as `embrel rollback/promote` does, then time the reconcile pass."""
        self.controller.store.update_intents(self.track, lambda i: i.__setitem__(intent, value))
        started = time.perf_counter()
        result = self.controller.reconcile_track(self.track)
        elapsed = time.perf_counter() - started
        if intent not in result.applied:
            raise RuntimeError(
                f"{intent} was not applied: {result.status.phase}: {result.status.message}"
            )
        return elapsed

    def last_switch_ms(self) -> float:
        """The time embrel reports for the alias move and its proof through the alias."""
        for _, _, message in reversed(self.reporter.events):
            if found := _SWITCH.search(message):
                return float(found.group(1)) * 1000
        raise LookupError("no alias switch event")


def embrel_flips(
    backend: Backend, flips: int, rows: int, workdir: Path, profile: bool = False
) -> tuple[list[float], list[float], list[float]]:
    alias = fresh_alias("fl_emb")
    uri = backend.uri(alias)
    track = _two_versions(alias, uri, rows, workdir)
    rollback: list[float] = []
    promote: list[float] = []
    switch: list[float] = []
    profiler = cProfile.Profile() if profile else None
    try:
        for i in range(flips):
            if profiler:
                profiler.enable()
            if i % 2 == 0:
                rollback.append(track.request("rollback", {"to": None}))
            else:
                promote.append(track.request("promote", True))
            if profiler:
                profiler.disable()
            switch.append(track.last_switch_ms() / 1000)
        if profiler:
            _print_profile(profiler, backend.kind)
        return rollback, promote, switch
    finally:
        track.controller.close()
        _drop_alias(backend, uri, alias)
        backend.discard(uri, alias)


def _two_versions(alias: str, uri: str, rows: int, workdir: Path) -> Track:
    """Apply v1, then v2: v2 is live, v1 retired and kept loaded (keepLoaded: 1)."""
    folder = workdir / alias
    folder.mkdir()
    reporter = TimedReporter()
    controller = LocalController(ControllerConfig(state_dir=folder / "state"), reporter)
    track = ""
    for seed, version in enumerate(("v1", "v2")):
        source = write_vectors(folder / f"{version}.parquet", rows, DIM, seed=seed)
        doc = release_doc(
            name="flips", alias=alias, version=version, uri=uri, source=source, dim=DIM, index=INDEX
        )
        spec = write_yaml(folder / f"{version}.yaml", doc)
        text, release = read_spec(spec)
        controller.record_spec(spec, text, release)
        status = controller.reconcile_track(release.track).status
        if status.phase != Phase.LIVE:
            raise RuntimeError(f"{version} did not go live: {status.phase}: {status.message}")
        track = release.track
    return Track(controller, reporter, track)


# -- report ------------------------------------------------------------------------


def _print_profile(profiler: cProfile.Profile, kind: str) -> None:
    """Where a flip's time goes: embrel's own functions and any sleeps, by cumulative time."""
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out).sort_stats("cumulative")
    stats.print_stats(r"controller/|sleep", 25)
    print(f"  [{kind}] cProfile of the embrel flips:\n{out.getvalue()}", flush=True)


def _row(kind: str, what: str, times: Sequence[float]) -> list[str]:
    ms = [t * 1000 for t in times]
    return [kind, what, str(len(ms)), f"{median(ms):.1f}", f"{max(ms):.1f}"]


def report(results: Sequence[FlipResult]) -> str:
    rows = []
    for r in results:
        rows += [
            _row(r.kind, "raw point_alias + alias_target", r.raw),
            _row(r.kind, "embrel rollback (reconcile_track)", r.rollback),
            _row(r.kind, "embrel promote back (reconcile_track)", r.promote),
            _row(r.kind, "embrel rollback + promote, all flips", [*r.rollback, *r.promote]),
            _row(r.kind, "  of which the alias switch (embrel's event)", r.switch),
            _row(r.kind, "gateway.row_count (flush + count), called by each flip", r.row_count),
        ]
    return table(["backend", "flip", "n", "median ms", "max ms"], rows)


def measure(backend: Backend, flips: int, rows: int, profile: bool = False) -> FlipResult:
    raw, row_count = raw_flips(backend, flips, rows)
    print(f"  [{backend.kind}] raw flips: median {median(raw) * 1000:.1f} ms", flush=True)
    rollback, promote, switch = embrel_flips(backend, flips, rows, backend.root, profile)
    print(
        f"  [{backend.kind}] embrel flips: median {median([*rollback, *promote]) * 1000:.1f} ms",
        flush=True,
    )
    return FlipResult(backend.kind, raw, rollback, promote, switch, row_count)


def run(flips: int, rows: int, backends: Sequence[str], profile: bool = False) -> list[FlipResult]:
    print(
        f"flip latency: {flips} flips between two {rows:,} x {DIM}-dim collections, on {machine()}",
        flush=True,
    )
    results = []
    for kind in backends:
        with open_backend(kind) as backend:
            results.append(measure(backend, flips, rows, profile))
    print(report(results), flush=True)
    return results


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--flips", type=int, default=20)
    p.add_argument("--rows", type=int, default=10_000)
    p.add_argument("--backend", choices=[*BACKENDS, "both"], default="both")
    p.add_argument("--profile", action="store_true", help="cProfile the embrel flips")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    backends = BACKENDS if args.backend == "both" else (args.backend,)
    run(args.flips, args.rows, backends, args.profile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
