"""Flips under load on the real Milvus 2.3.5 server: raw alter_alias vs embrel's verified flip.

Two loaded collections A (ids 0..n) and B (ids 1e6..1e6+n) with the same vectors,
so every answer says which collection served it. Readers search through the alias
all the time: ``--threads`` threads in this process and one separate process, each
with its own connection and the documented client retry (controller.client). The
alias is flipped A <-> B ``--flips`` times, once per ``--interval`` seconds:

* raw: ``alter_alias`` (the baseline every blue/green switch starts from);
* verified: ``Engine.flip_alias``: probes through the alias on a fresh connection,
  re-issuing the flip when they still see the old collection (controller.cutover).

Per flip, from the first ``alter_alias`` call: time until every reader sees the new
target, stale searches (old answers
after the flip call returned), searches still answered by the old collection 2 s
after the flip, failed searches (after the retry), and lost flips (raw: a reader
never saw the target before the next flip; verified: re-issues, and whether healed).

    python -m benchmarks.flip_proof [--flips 100] [--interval 1.0] [--threads 3]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from benchmarks.alias_readers import Search, process_reader, read_loop
from benchmarks.flip_latency import INDEX_PARAMS, _drop_alias, _indexed
from benchmarks.support import (
    QuietReporter,
    fresh_alias,
    machine,
    open_backend,
    release_doc,
    table,
    unit_vectors,
)
from controller.engine import Engine
from controller.milvus import MilvusGateway
from controller.schema import Schema
from controller.sources.base import VectorBatch
from controller.spec import EmbeddingRelease, release_from_dict

DIM, ROWS, B_OFFSET = 32, 2000, 1_000_000
LATE = 2.0  # seconds: the bound for detecting and healing a lost flip


def served_by(hit_id: int) -> str:
    """Which of the two collections holds ``hit_id``."""
    return "B" if hit_id >= B_OFFSET else "A"


@dataclass
class Flip:
    started: float  # when the first alter_alias was sent (after embrel's pre-flip reads)
    returned: float
    target: str
    attempts: int = 1
    verified: bool = True


@dataclass
class Run:
    mode: str
    flips: list[Flip] = field(default_factory=list)
    readers: list[list[Search]] = field(default_factory=list)


def _collection(gateway: MilvusGateway, name: str, vectors: np.ndarray, offset: int) -> None:
    ids = np.arange(len(vectors), dtype=np.int64) + offset
    gateway.create_collection(name, Schema(DIM), {})
    gateway.insert(name, VectorBatch(ids, vectors, {}, "generated", 0))
    gateway.row_count(name)
    gateway.ensure_index(name, "HNSW", "COSINE", INDEX_PARAMS)
    gateway.wait_until(f"index on {name}", lambda: _indexed(gateway, name), timeout=600)
    gateway.load(name)
    gateway.wait_until(f"{name} loaded", lambda: gateway.is_loaded(name), timeout=600)


def _release(uri: str, alias: str) -> EmbeddingRelease:
    doc = release_doc(
        name="flip-proof", alias=alias, version="a", uri=uri, source=Path("-"), dim=DIM
    )
    return release_from_dict(doc)


def run_mode(mode: str, uri: str, flips: int, interval: float, threads: int) -> Run:
    alias = fresh_alias(f"fp_{mode}")
    gateway = MilvusGateway(uri)
    vectors = unit_vectors(np.random.default_rng(0), ROWS, DIM)
    names = {"A": f"{alias}__a", "B": f"{alias}__b"}
    _collection(gateway, names["A"], vectors, 0)
    _collection(gateway, names["B"], vectors, B_OFFSET)
    gateway.point_alias(alias, names["A"])
    engine = Engine(gateway, None, QuietReporter())  # type: ignore[arg-type]
    release = _release(uri, alias)
    flip: Callable[[str, str], tuple[int, bool, float]]
    if mode == "raw":

        def flip(target: str, previous: str) -> tuple[int, bool, float]:
            issued = time.time()
            gateway.point_alias(alias, target)
            return 1, True, issued

    else:

        def flip(target: str, previous: str) -> tuple[int, bool, float]:
            proof = engine.flip_alias(release, target, previous)
            return int(proof["attempts"]), bool(proof["verified"]), float(proof["issuedAt"])

    run = Run(mode)
    query = vectors[0].tolist()
    spawn = mp.get_context("spawn")
    stop_t, stop_p, ready = threading.Event(), spawn.Event(), spawn.Event()
    queue = spawn.Queue()
    proc = spawn.Process(
        target=process_reader, args=(uri, alias, query, stop_p, ready, queue, served_by)
    )
    proc.start()
    outs: list[list[Search]] = [[] for _ in range(threads)]
    workers = [
        threading.Thread(target=read_loop, args=(uri, alias, query, stop_t, o, served_by))
        for o in outs
    ]
    for w in workers:
        w.start()
    try:
        if not ready.wait(timeout=120):
            raise RuntimeError("the reader process did not start searching")
        time.sleep(0.5)
        current = "A"
        for i in range(flips):
            target = "B" if current == "A" else "A"
            started = time.time()
            attempts, verified, issued = flip(names[target], names[current])
            run.flips.append(Flip(issued, time.time(), target, attempts, verified))
            current = target
            time.sleep(max(0.0, started + interval - time.time()))
            if (i + 1) % 20 == 0:
                print(f"  {mode}: {i + 1}/{flips} flips", flush=True)
        time.sleep(interval)
    finally:
        stop_t.set()
        stop_p.set()
        for w in workers:
            w.join(timeout=30)
        run.readers = [*outs, queue.get(timeout=60)]
        proc.join(timeout=30)
        gateway.close()
        _drop_alias_and_collections(uri, alias, list(names.values()))
    return run


def _drop_alias_and_collections(uri: str, alias: str, names: list[str]) -> None:
    from pymilvus import MilvusClient

    class _Server:
        server_uri = uri

    _drop_alias(_Server(), uri, alias)  # type: ignore[arg-type]
    client = MilvusClient(uri=uri)
    try:
        for n in names:
            client.drop_collection(n)
    finally:
        client.close()


@dataclass
class FlipStats:
    visible_after: float | None  # seconds until every reader saw the target; None: never
    stale: int  # old answers from searches started after the flip call returned
    late: int  # old answers from searches started LATE s after the flip began
    stale_for: float = 0.0  # the latest old answer, seconds after the flip call returned


def analyse(run: Run) -> tuple[list[FlipStats], Counter[str], Counter[str]]:
    stats = []
    for i, f in enumerate(run.flips):
        end = run.flips[i + 1].started if i + 1 < len(run.flips) else float("inf")
        visible: list[float | None] = []
        stale = late = 0
        for reader in run.readers:
            window = [s for s in reader if f.started <= s[0] < end and s[2] in ("A", "B")]
            if not window:  # this reader got no answer in the window: no evidence either way
                continue
            old = [s for s in window if s[2] != f.target]
            stale += sum(1 for s in old if s[0] >= f.returned)
            late += sum(1 for s in old if s[0] >= f.started + LATE)
            last_old = max((s[0] for s in old), default=None)
            after = [
                s for s in window if s[2] == f.target and (last_old is None or s[0] > last_old)
            ]
            visible.append(after[0][1] - f.started if after else None)
        seen = None if any(v is None for v in visible) else max(v for v in visible if v is not None)
        latest_old = max(
            (
                s[0]
                for r in run.readers
                for s in r
                if f.returned <= s[0] < end and s[2] in ("A", "B") and s[2] != f.target
            ),
            default=f.returned,
        )
        if seen is None:
            print(f"  {run.mode}: flip {i} to {f.target} not seen by every reader: {visible}")
        stats.append(FlipStats(seen, stale, late, latest_old - f.returned))
    errors = Counter(s[3] for r in run.readers for s in r if s[2] == "error")
    cleared: Counter[str] = Counter()
    for s in (s for r in run.readers for s in r if s[2] == "retried"):
        cleared[s[3]] += int(s[1])
    return stats, errors, cleared


def report(run: Run) -> list[object]:
    stats, errors, cleared = analyse(run)
    searches = sum(1 for r in run.readers for s in r if s[2] != "retried")
    for text, count in cleared.most_common():
        print(f"  {run.mode}: {count} searches failed once, then succeeded on retry: {text}")
    seen = sorted(s.visible_after for s in stats if s.visible_after is not None)
    never = sum(1 for s in stats if s.visible_after is None)
    reissued = sum(1 for f in run.flips if f.attempts > 1)
    unproven = sum(1 for f in run.flips if not f.verified)
    for text, count in errors.most_common():
        print(f"  {run.mode}: {count} failed searches: {text}")
    p = (lambda q: f"{np.percentile(seen, q) * 1000:.0f}") if seen else (lambda q: "-")
    return [
        run.mode,
        len(run.flips),
        searches,
        p(50),
        p(99),
        f"{max(seen) * 1000:.0f}" if seen else "-",
        never,
        reissued,
        unproven,
        f"{sum(s.stale for s in stats)} ({max(s.stale_for for s in stats) * 1000:.0f} ms)",
        sum(s.late for s in stats),
        sum(errors.values()),
        sum(cleared.values()),
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flips", type=int, default=100)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=3)
    args = parser.parse_args(argv)
    print(f"flip proof on {machine()}: {args.flips} flips per mode every {args.interval}s")
    rows = []
    with open_backend("server") as backend:
        assert backend.server_uri is not None
        for mode in ("raw", "verified"):
            run = run_mode(mode, backend.server_uri, args.flips, args.interval, args.threads)
            rows.append(report(run))
    print(
        table(
            [
                "mode",
                "flips",
                "searches",
                "visible p50 ms",
                "p99 ms",
                "max ms",
                "never seen",
                "re-issued",
                "unproven",
                "stale (latest)",
                f"old after {LATE:g}s",
                "failed",
                "retried",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main()
