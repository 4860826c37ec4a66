"""Two local controllers with different state folders race to flip one alias.

Their flocks do not serialise them, so only the flip's compare-and-set stands between
them. The real server only: Milvus Lite locks its folder to one process, and the fake
lives in one. Both run `embrel promote` as a person would, in subprocesses; a thread
here records every move of the alias as Milvus reports it.

A promotes v2, B promotes v3, both validated while v1 served. B decides while A warms
v2 up (many warm-up searches: seconds), so both decisions are made on v1. A flips
first; B's compare finds the alias on v2 and refuses (AliasMoved), says why, observes
again and flips from v2 on that fresh decision. A flip on B's stale decision would
show as a second move *from v1*.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from controller.config import RetryPolicy
from controller.milvus import MilvusGateway
from tests.conftest import (
    REAL,
    Backend,
    embrel,
    release_yaml,
    unit_vectors,
    write_release,
    write_vectors,
)

pytestmark = pytest.mark.parametrize(
    "backend", [pytest.param("server", marks=[pytest.mark.server, REAL])], indirect=True
)
ROWS = 10_000  # the flip's warm-up searches one query per row (at most 10,000): seconds
WAITING = 3  # `embrel apply`'s exit code for AwaitingPromotion
FLIP = re.compile(r"switched alias (\S+): (\S+) -> (\S+);")


class AliasLog(threading.Thread):
    """Every target the alias is seen on, in order, polled from this process."""

    def __init__(self, backend: Backend) -> None:
        super().__init__(daemon=True)
        self.milvus = MilvusGateway(backend.uri, policy=RetryPolicy(attempts=1))
        self.alias, self.seen = backend.alias, [backend.alias_target()]
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.005):
            target = self.milvus.alias_target(self.alias)
            if target != self.seen[-1]:
                self.seen.append(target)

    def close(self) -> list[str | None]:
        self.stop.set()
        self.join(10)
        self.milvus.close()
        return self.seen


def promote(state: Path, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "controller.cli", "--state-dir", str(state), "promote", "products"],
        cwd=cwd,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def read_until(proc: subprocess.Popen[str], text: str, timeout: float = 120.0) -> str:
    assert proc.stdout is not None
    out, deadline = "", time.monotonic() + timeout
    while text not in out:
        assert time.monotonic() < deadline, out
        line = proc.stdout.readline()
        assert line, f"exited before {text!r}: {out}"
        out += line
    return out


def test_two_local_controllers_never_flip_on_a_stale_decision(
    tmp_path: Path, backend: Backend
) -> None:
    rng = np.random.default_rng(11)
    ids = np.arange(ROWS, dtype=np.int64)
    v1 = unit_vectors(rng, ROWS, 16)
    sources = {
        v: write_vectors(tmp_path / f"{v}.parquet", ids, x)
        for v, x in {
            "v1": v1,
            "v2": v1 + 0.01 * unit_vectors(rng, ROWS, 16),
            "v3": v1 + 0.01 * unit_vectors(rng, ROWS, 16),
        }.items()
    }
    a, b = tmp_path / "a", tmp_path / "b"  # two state folders: two flocks

    def apply(state: Path, version: str, code: int = 0, **spec: object) -> None:
        doc = release_yaml(backend, version, sources[version], dimension=16, **spec)
        path = write_release(tmp_path / f"{version}.yaml", doc)
        r = embrel("--state-dir", str(state), "apply", "-f", str(path), cwd=tmp_path)
        assert r.returncode == code, r.stdout + r.stderr

    apply(a, "v1")
    # Manual promotion: both validated while v1 serves. Retention waits (drainSeconds),
    # so neither drops the other's candidate.
    waiting = {
        "promotion": {"mode": "manual", "drainSeconds": 600},
        "validation": {"warmupQueries": ROWS},
    }
    apply(a, "v2", WAITING, **waiting)
    apply(b, "v3", WAITING, **waiting)
    name = {v: f"{backend.alias}__{v}" for v in ("v1", "v2", "v3")}
    assert backend.alias_target() == name["v1"]
    # A's retention, right after its flip, would drop B's candidate (owned by the same
    # track, neither live nor A's desired version); a second alias keeps it (retention
    # never drops an aliased collection), so that B gets as far as its flip.
    with backend.port() as port:
        port.point_alias(f"{backend.alias}_b", name["v3"])

    log = AliasLog(backend)  # the alias under test only
    log.start()
    first = promote(a, tmp_path)
    try:
        # A has decided to flip (the step began); B decides while A warms v2 up.
        out_a = read_until(first, "- promoting")
        second = promote(b, tmp_path)
        out_b, _ = second.communicate(timeout=300)
        rest_a, _ = first.communicate(timeout=300)
        out_a += rest_a
    finally:
        first.kill()
        seen = log.close()
    assert first.returncode == 0, out_a
    assert second.returncode == 0, out_b

    flips = [m.groups()[1:] for m in FLIP.finditer(out_a + out_b)]
    assert FLIP.findall(out_a) == [(backend.alias, name["v1"], name["v2"])], out_a
    assert FLIP.findall(out_b) == [(backend.alias, name["v2"], name["v3"])], out_b
    # Each flip moved the alias from where the previous one left it: none from a stale
    # observation, which would be a second move away from v1.
    assert [src for src, _ in flips] == [name["v1"], name["v2"]]
    assert seen == [name["v1"], name["v2"], name["v3"]], seen

    # The loser said why, then decided again on what it observed.
    moved = (
        f"alias {backend.alias} points at {name['v2']}, the decision was made for "
        f"{name['v1']}; not flipping it to {name['v3']}, observing again"
    )
    assert moved in out_b, out_b
    assert out_b.index(moved) < out_b.index("switched alias")
    # Every target was validated before the flip, and records the move it was made on.
    collections = backend.collections()
    for version, previous in (("v2", "v1"), ("v3", "v2")):
        props = collections[name[version]]["properties"]
        assert props["embrel.validation"] == "passed", props
        assert f'"from": "{name[previous]}"' in props["embrel.cutover"], props
