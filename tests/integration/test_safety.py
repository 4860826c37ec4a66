"""Zero downtime across flips, and crash safety: the alias never sees an incomplete collection."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from controller.config import BuildOptions, ControllerConfig, ReconcileOptions
from controller.drivers.local import LocalController
from controller.errors import MilvusRejected
from controller.ports import Advance
from controller.spec import parse_release
from controller.status import Phase
from tests.conftest import (
    REAL_ONLY,
    REPO,
    Backend,
    embrel,
    release_yaml,
    unit_vectors,
    write_golden,
    write_release,
    write_vectors,
)
from tests.support.fake_milvus import FakeMilvus

N, DIM = 3000, 32
RANGES = {"v1": 0, "v2": 1_000_000, "v3": 2_000_000}  # each version's ids live in their own range
# Measured on Milvus 2.3.5: searches within ~10 ms of a flip may fail with
# this message; clients retry once (the client guidance in docs/).
TRANSIENT = ("failed to get delegator", "can not find client of node")


class Quiet:
    def event(self, reason: str, message: str, warning: bool = False) -> None:
        pass

    def progress(self, stage: str, total: int | None) -> AbstractContextManager[Advance]:
        return nullcontext(lambda n: None)


def version_of(ids: list[int]) -> str:
    found = {v for v, base in RANGES.items() for i in ids if base <= i < base + N}
    assert len(found) == 1, f"one answer mixed versions: {found}"
    return found.pop()


@contextmanager
def readers(backend: Backend, query: np.ndarray, threads: int = 3) -> Iterator[dict[str, object]]:
    """Search through the alias continuously from several clients until the block ends."""
    alias = backend.alias
    stop = threading.Event()
    seen: Counter[str] = Counter()
    failures: list[str] = []
    retried = Counter[str]()
    lock = threading.Lock()

    def read() -> None:
        with backend.port() as client:  # each reader its own connection
            while not stop.is_set():
                for attempt in (1, 2):
                    try:
                        hits = client.search_ids(alias, query[None, :], 5, {}, "Bounded")
                        version = version_of([int(i) for i in hits[0]])
                        with lock:
                            seen[version] += 1
                        break
                    except Exception as exc:  # every failure is counted
                        if attempt == 1 and any(t in str(exc) for t in TRANSIENT):
                            retried["transient"] += 1
                            continue
                        with lock:
                            failures.append(repr(exc))
                        break

    workers = [threading.Thread(target=read, daemon=True) for _ in range(threads)]
    for w in workers:
        w.start()
    result: dict[str, object] = {"seen": seen, "failures": failures, "retried": retried}
    try:
        yield result
    finally:
        stop.set()
        for w in workers:
            w.join(timeout=30)


def test_zero_failed_searches_through_cutover_and_rollback(
    tmp_path: Path, backend: Backend
) -> None:
    rng = np.random.default_rng(3)
    base = unit_vectors(rng, N, DIM)
    specs = {}
    for version, offset in RANGES.items():
        ids = np.arange(N, dtype=np.int64) + offset
        source = write_vectors(tmp_path / f"{version}.parquet", ids, base)
        # v3's golden set expects ids it does not hold: validation must reject it.
        labels = ids[:50, None] if version != "v3" else ids[:50, None] - offset
        golden = write_golden(tmp_path / f"golden-{version}.parquet", base[:50], labels)
        doc = release_yaml(backend, version, source, golden, min_recall=0.9)
        specs[version] = write_release(tmp_path / f"{version}.yaml", doc)

    controller = LocalController(ControllerConfig(state_dir=tmp_path / "state"), Quiet())
    track = "test/products"

    def apply(version: str) -> Phase:
        text = specs[version].read_text()
        controller.record_spec(specs[version], text, parse_release(text))
        return controller.reconcile_track(track).status.phase

    try:
        assert apply("v1") == Phase.LIVE
        with readers(backend, base[0]) as reads:
            time.sleep(0.5)
            assert apply("v2") == Phase.LIVE
            time.sleep(0.5)
            assert apply("v3") == Phase.FAILED  # built and validated while readers run
            time.sleep(0.5)
            controller.store.update_intents(
                track, lambda i: i.__setitem__("rollback", {"to": "v1"})
            )
            controller.reconcile_track(track)
            time.sleep(0.5)
        with backend.port() as check:  # in-process: this process holds Milvus Lite
            assert check.alias_target(backend.alias) == f"{backend.alias}__v1"
    finally:
        controller.close()
    seen = reads["seen"]
    assert reads["failures"] == [], reads["failures"][:5]  # type: ignore[index]
    assert isinstance(seen, Counter)
    assert seen["v3"] == 0, "an unvalidated collection answered through the alias"
    assert seen["v1"] > 0 and seen["v2"] > 0, f"readers did not span the flips: {seen}"


# -- crash safety ------------------------------------------------------------------

CRASH_ROWS = 60_000


@pytest.fixture
def crash_specs(tmp_path: Path, backend: Backend) -> dict[str, Path]:
    rng = np.random.default_rng(11)
    specs = {}
    for version in ("v1", "v2"):
        rows = 2000 if version == "v1" else CRASH_ROWS
        source = write_vectors(
            tmp_path / f"{version}.parquet", np.arange(rows), unit_vectors(rng, rows, DIM)
        )
        specs[version] = write_release(
            tmp_path / f"{version}.yaml", release_yaml(backend, version, source)
        )
    config = ControllerConfig(
        state_dir=tmp_path / "state",
        build=BuildOptions(batch_size=1000),
        reconcile=ReconcileOptions(max_attempts=1),
    )
    specs["config"] = tmp_path / "config.yaml"
    specs["config"].write_text(config.model_dump_json(by_alias=True))
    return specs


def _apply_and_kill(spec: Path, config: Path, marker: str, delay: float) -> str:
    """Start `embrel apply`, SIGKILL it `delay` seconds after it prints ``marker``."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "controller.cli", "--config", str(config), "apply", "-f", str(spec)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    out = []
    for line in proc.stdout:
        out.append(line)
        if marker in line:
            time.sleep(delay)
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=60)
    text = "".join(out)
    assert marker in text, text
    assert proc.returncode == -signal.SIGKILL, f"finished before the kill: {text}"
    return text


# Real only: a SIGKILLed `embrel apply` process is the point, and the fake's Milvus lives
# in the test process, which another process cannot share.
@REAL_ONLY
@pytest.mark.parametrize(("marker", "delay"), [("inserting", 1.0), ("building the index", 0.0)])
def test_killed_apply_resumes_and_never_exposes_incomplete(
    tmp_path: Path, backend: Backend, crash_specs: dict[str, Path], marker: str, delay: float
) -> None:
    def apply(version: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "controller.cli",
                "--config",
                str(crash_specs["config"]),
                "apply",
                "-f",
                str(crash_specs[version]),
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=600,
        )

    assert apply("v1").returncode == 0
    _apply_and_kill(crash_specs["v2"], crash_specs["config"], marker, delay)
    held = backend.inspect()
    assert held["alias_target"] == f"{backend.alias}__v1", (
        "the alias moved onto an incomplete build"
    )

    r = apply("v2")
    assert r.returncode == 0, r.stdout + r.stderr
    held = backend.inspect()
    assert held["alias_target"] == f"{backend.alias}__v2"
    assert held["collections"][f"{backend.alias}__v2"]["rows"] == CRASH_ROWS


# Real only: `embrel abort` from another process must reach an apply process while it
# inserts, which takes seconds on a real Milvus and no time on the fake.
@REAL_ONLY
def test_abort_while_apply_runs_stops_before_the_flip(
    tmp_path: Path, backend: Backend, crash_specs: dict[str, Path]
) -> None:
    """`embrel abort` from another shell reaches a running apply between its steps."""
    config = crash_specs["config"]
    base = [sys.executable, "-m", "controller.cli", "--config", str(config)]
    assert (
        subprocess.run(
            [*base, "apply", "-f", str(crash_specs["v1"])], cwd=REPO, timeout=300
        ).returncode
        == 0
    )
    proc = subprocess.Popen(
        [*base, "apply", "-f", str(crash_specs["v2"])],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if "inserting" in line:
            break
    aborted = subprocess.run(
        [*base, "abort", "products"], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    rest = proc.stdout.read()
    assert proc.wait(timeout=300) == 1, rest
    assert aborted.returncode == 0, aborted.stdout + aborted.stderr
    assert "Handed to the running controller" in aborted.stdout
    assert "aborted v2" in rest and "switched alias" not in rest
    assert backend.alias_target() == f"{backend.alias}__v1"


FAKE_ONLY = pytest.mark.parametrize("backend", ["fake"], indirect=True)


def apply_spec(specs: dict[str, Path], version: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return embrel("--config", str(specs["config"]), "apply", "-f", str(specs[version]), cwd=cwd)


@FAKE_ONLY  # an insert that fails part-way cannot be caused on a real Milvus on purpose
def test_an_insert_failing_part_way_never_reaches_the_alias_and_is_rebuilt(
    tmp_path: Path, backend: Backend, crash_specs: dict[str, Path]
) -> None:
    apply = partial(apply_spec, crash_specs, cwd=tmp_path)

    assert apply("v1").returncode == 0
    assert backend.fake is not None
    backend.fake.fail_insert_after(CRASH_ROWS // 2, MilvusRejected("disk quota exceeded"))
    r = apply("v2")
    assert r.returncode != 0 and "disk quota exceeded" in r.stdout + r.stderr, r.stdout
    assert backend.alias_target() == f"{backend.alias}__v1", "the alias moved onto a partial build"

    r = apply("v2")
    assert r.returncode == 0, r.stdout + r.stderr
    held = backend.inspect()
    assert held["alias_target"] == f"{backend.alias}__v2"
    assert held["collections"][f"{backend.alias}__v2"]["rows"] == CRASH_ROWS


@FAKE_ONLY  # Milvus going away for a moment, on cue
def test_milvus_unavailable_during_validation_leaves_the_alias_and_a_retry_releases(
    tmp_path: Path, backend: Backend, crash_specs: dict[str, Path]
) -> None:
    apply = partial(apply_spec, crash_specs, cwd=tmp_path)

    assert apply("v1").returncode == 0
    assert backend.fake is not None
    backend.fake.unavailable("search_ids", calls=1)
    r = apply("v2")
    assert r.returncode == 4, r.stdout + r.stderr  # Milvus stayed unavailable
    assert "unavailable" in r.stdout + r.stderr
    assert backend.alias_target() == f"{backend.alias}__v1"
    waiting = status_json(tmp_path, crash_specs["config"])
    assert waiting["message"].startswith("waiting for Milvus since "), waiting["message"]
    assert waiting["unavailableSince"] in waiting["message"]

    r = apply("v2")
    assert r.returncode == 0, r.stdout + r.stderr
    assert backend.alias_target() == f"{backend.alias}__v2"
    assert "unavailableSince" not in status_json(tmp_path, crash_specs["config"])


@FAKE_ONLY  # Milvus gone right after alter_alias, on cue
def test_a_flip_interrupted_before_its_proof_is_proven_and_recorded_by_the_next_pass(
    tmp_path: Path,
    backend: Backend,
    crash_specs: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    apply = partial(apply_spec, crash_specs, cwd=tmp_path)

    assert apply("v1").returncode == 0
    assert backend.fake is not None
    real_point = FakeMilvus.point_alias

    def point_then_go_down(fake: FakeMilvus, alias: str, collection: str) -> None:
        real_point(fake, alias, collection)
        fake.state.down = True

    monkeypatch.setattr(FakeMilvus, "point_alias", point_then_go_down)
    r = apply("v2")
    assert r.returncode == 4, r.stdout + r.stderr
    assert backend.alias_target() == f"{backend.alias}__v2", "the flip itself took effect"
    monkeypatch.setattr(FakeMilvus, "point_alias", real_point)
    backend.fake.down = False

    r = apply("v2")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "never proven; probing the alias" in r.stdout
    status = status_json(tmp_path, crash_specs["config"])
    assert status["phase"] == "Live"
    assert status["cutover"]["verified"] and status["cutover"]["from"] == f"{backend.alias}__v1"
    assert status["validation"]["passed"]
    assert [(h["version"], h["outcome"]) for h in status["history"]] == [
        ("v1", "Retired"),
        ("v2", "Live"),
    ]
    r = embrel("--config", str(crash_specs["config"]), "rollback", "products", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert backend.alias_target() == f"{backend.alias}__v1", "v1 was recorded as retired"


def status_json(cwd: Path, config: Path) -> dict[str, Any]:
    shown = embrel("--config", str(config), "status", "products", "-o", "json", cwd=cwd)
    out: dict[str, Any] = json.loads(shown.stdout)
    return out
