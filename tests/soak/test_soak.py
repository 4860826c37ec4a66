"""The soak: many release cycles in a row on the real Milvus server, read all the time.

One long-lived controller, `embrel run --watch DIR` in its own process, reconciles a
release folder. Each cycle releases a new version vN (a new file in the folder: build,
validate, flip), rolls it back (`embrel rollback`: the alias to the previous version) and
promotes it again (`embrel promote`: back to vN), with retention (``keepPrevious``)
dropping old versions. Meanwhile reader threads in this process and one separate
process search through the alias with the documented client retry
(controller.client.AliasSearcher, benchmarks/alias_readers.py). Version N holds ids
N * BLOCK + 0..ROWS, so every answer says which collection served it.

At the end: no failed search after the retry; every answer came from a version whose
candidate had passed validation, and not before the alias was first pointed at it; the
``<alias>__*`` collections never numbered more than keepPrevious + 2; the controller's
RSS and open file descriptors flat from after the warm-up to the end.

    make soak                       # SOAK_CYCLES=200 by default
    SOAK_CYCLES=5 .venv/bin/python -m pytest -m soak -s tests/soak

SOAK_KEEP_PREVIOUS (default 1) sets the release's ``retention.keepPrevious``.

Not in `make test`: the module is marked ``soak``, which every step there deselects.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from benchmarks.alias_readers import Search, process_reader, read_loop
from tests.conftest import REPO, Backend, release_yaml, unit_vectors, write_release, write_vectors
from tests.support.inprocess_cli import run_cli

pytestmark = [pytest.mark.soak, pytest.mark.server, pytest.mark.timeout(0)]

CYCLES = int(os.environ.get("SOAK_CYCLES", "200"))
KEEP_PREVIOUS = int(os.environ.get("SOAK_KEEP_PREVIOUS", "1"))
COLLECTION_BOUND = KEEP_PREVIOUS + 2  # live, the kept previous ones, one candidate
THREADS = 3
ROWS, DIM, BLOCK = 300, 16, 1_000_000
READ_PAUSE = 0.02  # seconds between one reader's searches: 2 shared cores
WARMUP = min(5, max(1, CYCLES // 10))  # cycles before the controller's baseline is taken
RSS_GROWTH, FD_GROWTH = 1.5, 10  # "flat": end RSS <= baseline x 1.5, fds <= baseline + 10
TRACK = "products"


def version_of(hit_id: int) -> str:
    """The version whose collection holds ``hit_id``."""
    return f"v{hit_id // BLOCK}"


@dataclass
class Usage:
    rss_kib: int
    fds: int


def usage(pid: int) -> Usage:
    status = Path(f"/proc/{pid}/status").read_text()
    rss = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
    return Usage(rss, len(os.listdir(f"/proc/{pid}/fd")))


@dataclass
class FirstLive:
    """What the version's collection recorded when the test first saw it Live."""

    validation: str  # embrel.validation: "passed" for a candidate the gates let through
    flipped_at: float  # the first alter_alias to it (embrel.cutover issuedAt)


@dataclass
class Collections:
    """Samples the alias's collections every ``every`` seconds in a thread."""

    uri: str
    alias: str
    every: float = 0.5
    most: int = 0
    most_names: list[str] = field(default_factory=list)
    samples: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    def sample(self, client: Any) -> None:
        names = sorted(n for n in client.list_collections() if n.startswith(f"{self.alias}__"))
        self.samples += 1
        if len(names) > self.most:
            self.most, self.most_names = len(names), names

    def run(self) -> None:
        from pymilvus import MilvusClient

        client = MilvusClient(uri=self.uri)
        try:
            while not self.stop.is_set():
                self.sample(client)
                self.stop.wait(self.every)
        finally:
            client.close()


class Track:
    """The release folder the controller watches, and the verbs on its track."""

    def __init__(self, backend: Backend, root: Path) -> None:
        self.backend, self.root = backend, root
        self.data, self.folder, self.state = root / "data", root / "gitops", root / "state"
        for d in (self.data, self.folder):
            d.mkdir()
        self.rng = np.random.default_rng(11)

    def release(self, n: int) -> None:
        """vN as a commit to the folder: new vectors, ids N * BLOCK + 0..ROWS."""
        ids = np.arange(ROWS, dtype=np.int64) + n * BLOCK
        source = write_vectors(self.data / f"v{n}.parquet", ids, unit_vectors(self.rng, ROWS, DIM))
        retention = {"keepPrevious": KEEP_PREVIOUS, "keepLoaded": min(1, KEEP_PREVIOUS)}
        doc = release_yaml(
            self.backend, f"v{n}", source, name=TRACK, dimension=DIM, retention=retention
        )
        staged = write_release(self.root / "staged.yaml", doc)
        staged.replace(self.folder / f"{TRACK}.yaml")  # atomic: never a half-written file

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run_cli(["--state-dir", str(self.state), *args], self.root)

    def status(self) -> dict[str, Any]:
        r = self.cli("status", TRACK, "-o", "json")
        return json.loads(r.stdout) if r.returncode == 0 and r.stdout.strip() else {}

    def wait_live(self, version: str, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            status = self.status()
            if (
                status.get("phase") == "Live"
                and (status.get("live") or {}).get("version") == version
            ):
                return
            time.sleep(0.2)
        raise AssertionError(f"{version} never went Live: {status}")

    def verb(self, *args: str) -> str:
        r = self.cli(*args, TRACK)
        assert r.returncode == 0, f"embrel {' '.join(args)}: {r.stdout}{r.stderr}"
        assert "Handed to the running controller" in r.stdout, r.stdout
        return r.stdout


def start_controller(track: Track, log: Path) -> subprocess.Popen[bytes]:
    config = track.root / "config.yaml"
    config.write_text(f"stateDir: {track.state}\nreconcile: {{watchIntervalSeconds: 0.3}}\n")
    command = ["--config", str(config), "run", "--watch", str(track.folder)]
    with log.open("wb") as out:  # a file, not a pipe: nothing has to drain it for hours
        return subprocess.Popen(
            [sys.executable, "-m", "controller.cli", *command],
            cwd=REPO,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def first_live(client: Any, collection: str) -> FirstLive:
    props = client.describe_collection(collection).get("properties") or {}
    cutover = json.loads(props.get("embrel.cutover") or "{}")
    return FirstLive(str(props.get("embrel.validation")), float(cutover.get("issuedAt", 0.0)))


def unvalidated_answers(searches: list[Search], live: dict[str, FirstLive]) -> list[str]:
    """Answers from a version that never passed validation, or from before the alias was
    first pointed at it (a candidate still being built or validated)."""
    bad: Counter[str] = Counter()
    for _, finished, served, _, _ in searches:
        if served in ("error", "retried"):
            continue
        first = live.get(served)
        if first is None:
            bad[f"{served}: never went Live"] += 1
        elif first.validation != "passed":
            bad[f"{served}: validation {first.validation}"] += 1
        elif finished < first.flipped_at:
            bad[f"{served}: answered before its first flip"] += 1
    return [f"{count} answers from {why}" for why, count in bad.items()]


class Readers:
    """THREADS reader threads here and one reader process, searching through the alias."""

    def __init__(self, uri: str, alias: str) -> None:
        query = unit_vectors(np.random.default_rng(0), 1, DIM)[0].tolist()
        spawn = mp.get_context("spawn")
        self.stop_t, self.stop_p, self.ready = threading.Event(), spawn.Event(), spawn.Event()
        self.queue = spawn.Queue()
        self.outs: list[list[Search]] = [[] for _ in range(THREADS)]
        self.threads = [
            threading.Thread(
                target=read_loop,
                args=(uri, alias, query, self.stop_t, o, version_of),
                kwargs={"pause": READ_PAUSE},
            )
            for o in self.outs
        ]
        self.proc = spawn.Process(
            target=process_reader,
            args=(uri, alias, query, self.stop_p, self.ready, self.queue, version_of, READ_PAUSE),
        )

    def start(self) -> None:
        self.proc.start()
        for t in self.threads:
            t.start()
        assert self.ready.wait(timeout=120), "the reader process did not start searching"

    def stop(self) -> list[Search]:
        self.stop_t.set()
        self.stop_p.set()
        for t in self.threads:
            t.join(timeout=60)
        searches = [s for o in self.outs for s in o]
        if self.proc.pid is not None:
            try:
                searches += self.queue.get(timeout=60)
            finally:
                self.proc.join(timeout=30)
        return searches


@dataclass
class Soak:
    """What the cycles measured."""

    elapsed: float = 0.0
    start: Usage | None = None  # the controller once v1 was live, before the first cycle
    baseline: Usage | None = None  # after WARMUP cycles: what "flat" is measured from
    end: Usage | None = None
    live: dict[str, FirstLive] = field(default_factory=dict)
    rss_kib: list[int] = field(default_factory=list)  # after every cycle


def cycles(track: Track, controller: subprocess.Popen[bytes], sampler: Collections) -> Soak:
    """Release v2..v(CYCLES+1), each rolled back and promoted again."""
    from pymilvus import MilvusClient

    alias = track.backend.alias
    client = MilvusClient(uri=track.backend.uri)
    soak = Soak()
    target = lambda: client.describe_alias(alias)["collection_name"]  # noqa: E731

    def went_live(n: int) -> None:
        track.wait_live(f"v{n}")
        assert target() == f"{alias}__v{n}"
        soak.live[f"v{n}"] = first_live(client, f"{alias}__v{n}")

    try:
        soak.start = soak.baseline = usage(controller.pid)
        began = time.monotonic()
        for n in range(2, CYCLES + 2):
            track.release(n)
            went_live(n)
            out = track.verb("rollback")
            assert target() == f"{alias}__v{n - 1}", out
            out = track.verb("promote")
            assert target() == f"{alias}__v{n}", out
            sampler.sample(client)
            assert controller.poll() is None, "the controller exited"
            now = usage(controller.pid)
            soak.rss_kib.append(now.rss_kib)
            if n - 1 == WARMUP:
                soak.baseline = now
            if (n - 1) % 10 == 0:
                print(
                    f"  cycle {n - 1}/{CYCLES}: {time.monotonic() - began:.0f} s, "
                    f"RSS {now.rss_kib // 1024} MiB, {now.fds} fds, "
                    f"{sampler.most} collections at most",
                    flush=True,
                )
        soak.elapsed = time.monotonic() - began
        soak.end = usage(controller.pid)
        return soak
    finally:
        client.close()


@pytest.mark.parametrize("backend", ["server"], indirect=True)
def test_release_cycles_under_reads(tmp_path: Path, backend: Backend) -> None:
    from pymilvus import MilvusClient

    track = Track(backend, tmp_path)
    track.release(1)
    controller = start_controller(track, tmp_path / "controller.log")
    sampler = Collections(backend.uri, backend.alias)
    readers = Readers(backend.uri, backend.alias)
    try:
        track.wait_live("v1")
        client = MilvusClient(uri=backend.uri)
        try:
            v1 = first_live(client, f"{backend.alias}__v1")
        finally:
            client.close()
        threading.Thread(target=sampler.run, daemon=True).start()
        readers.start()
        soak = cycles(track, controller, sampler)
        soak.live["v1"] = v1
    finally:
        sampler.stop.set()
        searches = readers.stop()
        controller.send_signal(signal.SIGTERM)
        controller.wait(timeout=60)
    report_and_check(soak, searches, sampler, controller.pid)


def report_and_check(soak: Soak, searches: list[Search], sampler: Collections, pid: int) -> None:
    assert soak.start and soak.baseline and soak.end
    start, baseline, end, elapsed = soak.start, soak.baseline, soak.end, soak.elapsed
    answered = [s for s in searches if s[2] not in ("error", "retried")]
    failed = Counter(s[3] for s in searches if s[2] == "error")
    retried = sum(1 for s in answered if s[4])
    cleared = Counter({s[3]: int(s[1]) for s in searches if s[2] == "retried"})
    print(
        f"\nsoak: {CYCLES} cycles in {elapsed:.0f} s ({elapsed / CYCLES:.1f} s a cycle, "
        f"{CYCLES / elapsed:.3f} cycles/s), keepPrevious {KEEP_PREVIOUS}\n"
        f"  reads: {len(answered) + sum(failed.values())} ({THREADS} threads and 1 process), "
        f"answered {len(answered)}, retried {retried}, failed after the retry "
        f"{sum(failed.values())}; versions that served: {len(Counter(s[2] for s in answered))}\n"
        f"  collections: at most {sampler.most} ({', '.join(sampler.most_names)}) in "
        f"{sampler.samples} samples; bound keepPrevious + 2 = {COLLECTION_BOUND}\n"
        f"  controller pid {pid}: RSS {start.rss_kib} KiB at the start, "
        f"{baseline.rss_kib} KiB after {WARMUP} warm-up cycles, {end.rss_kib} KiB at the end; "
        f"fds {start.fds}, {baseline.fds}, {end.fds}"
    )
    after = soak.rss_kib[WARMUP - 1 :]
    if len(after) > 1:
        slope = np.polyfit(np.arange(len(after)), np.asarray(after, dtype=float), 1)[0]
        print(
            f"  controller RSS after the warm-up: {min(after)}..{max(after)} KiB, "
            f"trend {slope:+.0f} KiB a cycle (least squares over {len(after)} cycles)"
        )
    for text, count in cleared.most_common():
        print(f"  cleared by the retry: {count} x {text}")
    for text, count in failed.most_common():
        print(f"  failed: {count} x {text}")

    assert answered, "no reader got an answer"
    assert not failed, f"searches failed after the retry: {dict(failed)}"
    assert not (bad := unvalidated_answers(answered, soak.live)), bad
    assert sampler.most <= COLLECTION_BOUND, (
        f"{sampler.most} collections ({sampler.most_names}) > keepPrevious + 2"
    )
    assert end.rss_kib <= baseline.rss_kib * RSS_GROWTH, (
        f"controller RSS grew from {baseline.rss_kib} to {end.rss_kib} KiB"
    )
    assert end.fds <= baseline.fds + FD_GROWTH, (
        f"controller fds grew from {baseline.fds} to {end.fds}"
    )
