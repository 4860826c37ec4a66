"""Network faults between the controller and the real Milvus server, step by step.

The release's ``milvus.uri`` is a TCP fault proxy (tests/support/tcp_proxy.py) in front
of the server's gRPC port. `embrel apply` runs in this process, so that the first Milvus
call of a step (seen by the gateway's observer) can start the fault: latency, a reset
of every connection, a stall or a black hole, healed after ``HOLD`` seconds. Whatever
happens, the release ends Live with every gate passed, or not Live with the alias where
it was (nowhere: a first release); its collection holds every source id exactly once
(``count(*)``, which counts duplicate primary keys, equals the source's rows, and the
ids read back are the source's); and no call outlasts its deadline.

Each case appends a row to ``RESULTS`` (JSON Lines); ``python -m
tests.support.reliability_table`` renders them into docs/reliability.md.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

import controller.drivers.wiring
from tests.conftest import Backend, Corpus, release_yaml, write_release
from tests.support import inprocess_cli
from tests.support.milvus_server import MilvusServer, drop_alias_collections, stored_ids
from tests.support.reliability_table import FAULTS, RESULTS, STEPS
from tests.support.tcp_proxy import FaultProxy

pytestmark = [pytest.mark.server, pytest.mark.real]

CALL_TIMEOUT = 2.0
CONNECT_TIMEOUT = 4.0
HOLD = 4.0  # seconds a fault lasts
# pymilvus retries a reset call itself until its timeout has passed, starting the last
# try with a whole timeout, and may reconnect within the connect timeout meanwhile.
LONGEST_CALL = 2 * CALL_TIMEOUT + CONNECT_TIMEOUT + 1.0
# A few cases in `-m 'real and not heavy'`; the whole matrix with `-m heavy`.
QUICK = {("insert", "reset"), ("insert", "stall"), ("load", "black_hole"), ("flip", "reset")}


@dataclass
class Injector:
    """Starts ``fault`` on the proxy after the first call of ``operation``, heals it
    ``HOLD`` seconds later, and keeps every call attempt the gateway reports."""

    proxy: FaultProxy
    operation: str
    fault: str
    calls: list[tuple[float, str, float, str | None]] = field(default_factory=list)
    started: float | None = None
    healed: float | None = None

    def observe(self, operation: str, seconds: float, error: str | None) -> None:
        now = time.monotonic()
        self.calls.append((now, operation, seconds, error))
        if self.started is None and operation == self.operation:
            self.started = now
            self._start()
            threading.Timer(HOLD, self._heal).start()

    def _start(self) -> None:
        if self.fault == "latency":
            self.proxy.latency(0.15)
        elif self.fault == "reset":
            self._keep_resetting()
        elif self.fault == "stall":
            self.proxy.stall()
        else:
            self.proxy.black_hole()

    def _keep_resetting(self) -> None:
        """RST every connection now and every 0.5 s until healed: calls in flight break."""
        if self.healed is None:
            self.proxy.reset()
            threading.Timer(0.5, self._keep_resetting).start()

    def _heal(self) -> None:
        self.healed = time.monotonic()
        self.proxy.heal()

    def failures(self) -> list[tuple[float, str, float, str | None]]:
        """Attempts that failed for the network (a missing alias is no fault)."""
        return [c for c in self.calls if c[3] not in (None, "not_found")]

    def recovery_seconds(self) -> float | None:
        """From the first failed call to the first call that succeeded after it."""
        failed = self.failures()
        if not failed:
            return None
        first = failed[0][0] - failed[0][2]  # when that attempt began
        after = [t for t, _, _, error in self.calls if t > failed[0][0] and error is None]
        return round(after[0] - first, 2) if after else None


@pytest.fixture
def server_backend(milvus_server: MilvusServer) -> Iterator[Backend]:
    b = Backend("server", milvus_server.uri, f"nf{os.urandom(4).hex()}")
    yield b
    drop_alias_collections(b.uri, b.alias)


def _observing(injector: Injector) -> Callable[..., Any]:
    real = controller.drivers.wiring.connect_milvus

    def connect(uri: str, db: str, credentials: Any, policy: Any, observer: Any = None) -> Any:
        def both(operation: str, seconds: float, error: str | None) -> None:
            injector.observe(operation, seconds, error)
            if observer is not None:
                observer(operation, seconds, error)

        return real(uri, db, credentials, policy, both)

    return connect


def _config(path: Path) -> Path:
    config = {
        "stateDir": str(path.parent / "state"),
        "milvus": {
            "timeoutSeconds": CONNECT_TIMEOUT,
            "callTimeoutSeconds": CALL_TIMEOUT,
            "retryAttempts": 4,
            "retryMaxWaitSeconds": 2.0,
        },
        "build": {"batchSize": 250},  # several batches: a fault lands in the middle
        "reconcile": {"maxAttempts": 6},
    }
    path.write_text(yaml.safe_dump(config))
    return path


def _cases() -> Iterator[Any]:
    for step in STEPS:
        for fault in FAULTS:
            marks = [] if (step, fault) in QUICK else [pytest.mark.heavy]
            yield pytest.param(step, fault, marks=marks, id=f"{step.replace(' ', '-')}-{fault}")


@pytest.mark.parametrize(("step", "fault"), list(_cases()))
def test_a_release_survives_a_network_fault(
    step: str,
    fault: str,
    server_backend: Backend,
    milvus_server: MilvusServer,
    corpus: Corpus,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    upstream = int(milvus_server.uri.rsplit(":", 1)[1])
    with FaultProxy(upstream) as proxy:
        injector = Injector(proxy, STEPS[step], fault)
        monkeypatch.setattr(controller.drivers.wiring, "connect_milvus", _observing(injector))
        through_proxy = Backend("server", f"http://{proxy.address}", server_backend.alias)
        # Monitoring only where it is the step: it samples the live collection after the flip.
        watch = (
            {"monitoring": {"enabled": True, "sample": 500}} if step == "drift reference" else {}
        )
        golden = corpus.dir / "golden.parquet"
        doc = release_yaml(through_proxy, "v1", corpus.path("v1"), golden, **watch)
        release = write_release(tmp_path / "release.yaml", doc)
        config = _config(tmp_path / "config.yaml")
        started = time.monotonic()
        run = inprocess_cli.run_cli(
            ["apply", "-f", str(release), "--config", str(config)], tmp_path
        )
        seconds = time.monotonic() - started
    assert injector.started is not None, f"no {STEPS[step]} call was seen"
    shown = inprocess_cli.run_cli(
        ["status", "products", "-o", "json", "--config", str(config)], tmp_path
    )
    status: dict[str, Any] = json.loads(shown.stdout)
    phase = status["phase"]
    alias = server_backend.alias_target()
    longest = max(s for _, _, s, _ in injector.calls)
    kinds = sorted({e for _, _, _, e in injector.failures() if e is not None})
    messages = [
        line
        for line in (run.stdout + run.stderr).splitlines()
        if "Milvus" in line and "retry" in line
    ]
    outcome: dict[str, Any] = {
        "step": step,
        "fault": fault,
        "phase": phase,
        "alias": alias,
        "seconds": round(seconds, 1),
        "failed_calls": len(injector.failures()),
        "recovery_seconds": injector.recovery_seconds(),
        "longest_call_seconds": round(longest, 2),
        "error_kinds": kinds,
        "retry_message": messages[0][:200] if messages else "",
        # A Live release reports what failed after the flip as a warning.
        "warning": status.get("message", "").partition("warning: ")[2][:120],
    }
    count, ids = stored_ids(milvus_server.uri, alias) if alias else (0, np.empty(0, np.int64))
    outcome |= {"count": count, "distinct_ids": len(ids)}
    with RESULTS.open("a") as fh:
        fh.write(json.dumps(outcome) + "\n")
    assert longest <= LONGEST_CALL, f"a call took {longest:.1f}s"
    if fault in ("stall", "black_hole"):  # no answer at all: each attempt ends at the deadline
        timed_out = [s for _, _, s, e in injector.calls if e == "timeout"]
        assert timed_out and max(timed_out) <= CALL_TIMEOUT + 1.0, timed_out
    assert phase == "Live", f"{phase}: {status.get('message')}\n{run.stdout[-2000:]}"
    assert count == len(corpus.ids), "count(*) counts every stored row, duplicates too"
    assert np.array_equal(ids, np.sort(corpus.ids)), "every source id, and no other"
    checks = status["validation"]["checks"]
    failed = [c for c in checks if c["outcome"] not in ("Passed", "NotApplicable", "Reported")]
    assert checks and not failed, failed
