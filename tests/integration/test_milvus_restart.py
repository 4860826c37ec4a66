"""Milvus itself restarting in the middle of a release, at every step, on the real server.

The standalone server is SIGKILLed (a crash, an evicted pod) at a chosen moment of a
step, and started again on the same data folder once the release's status says it is
waiting for Milvus. The release reaches Milvus through a TCP proxy
(tests/support/tcp_proxy.py), whose upstream follows the server should it come back on
another port. `embrel apply` runs in this process, so that a Milvus call of the step can
trigger the kill: at its start (the call is then in flight or refused) or at its end
(the next call finds no server).

Whatever happens, the release ends Live with every gate passed and the alias on the new
version; its collection holds every source id exactly once; no collection of the track
is left over; and while Milvus was down the controller retried no faster than its
bounded backoff. Each case appends a row to ``RESULTS`` for docs/reliability.md
(``python -m tests.support.reliability_table``).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytest
import yaml

from controller.milvus import MilvusGateway
from tests.conftest import Backend, Corpus, release_yaml, write_release
from tests.support import inprocess_cli
from tests.support.milvus_server import MilvusServer, drop_alias_collections, stored_ids
from tests.support.reliability_table import RESTART_STEPS, RESULTS
from tests.support.tcp_proxy import FaultProxy

pytestmark = [pytest.mark.server, pytest.mark.real, pytest.mark.heavy]

CALL_TIMEOUT = 3.0
# The fastest the gateway may retry while Milvus is down: tenacity's exponential wait
# starts at 1 s; a pass that gave up waits the error's delay (5 s) before the next one.
MAX_ATTEMPTS_PER_SECOND = 2.0
DRAIN = 4  # drainSeconds in the drain case


@dataclass(frozen=True)
class Trigger:
    """Kill the server at the ``nth`` attempt of ``operation``: ``delay`` seconds after
    it starts (``at="start"``, the call in flight), or as soon as it returns."""

    operation: str
    nth: int = 1
    at: Literal["start", "end"] = "start"
    delay: float = 0.0


# step -> (the trigger, whether the step belongs to a second release)
CASES: dict[str, tuple[Trigger | None, bool]] = {
    "insert": (Trigger("insert", nth=2, delay=0.02), False),
    "index build": (Trigger("create_index", at="end"), False),
    "load": (Trigger("load_collection", delay=0.3), False),
    "validation": (Trigger("search", delay=0.02), False),
    "flip, before its proof": (Trigger("create_alias", at="end"), False),
    "drift measurement": (Trigger("query_iterator", at="end"), False),
    "drain": (None, True),  # killed while the previous version drains, between passes
    "retention drop": (Trigger("drop_collection", delay=0.01), True),
}


@dataclass
class Restarter:
    """Kills the server when the trigger fires, starts it again once the release's status
    says it waits for Milvus, and keeps every Milvus call attempt (start, op, error)."""

    server: MilvusServer
    proxy: FaultProxy
    track_file: Path
    trigger: Trigger | None
    attempts: list[tuple[float, str, str | None]] = field(default_factory=list)
    killed: float | None = None
    back: float | None = None
    waiting_message: str = ""
    error: str = ""
    _seen: int = 0
    _thread: threading.Thread | None = None

    def call(self, operation: str, fn: Callable[[], Any]) -> Any:
        started, error = time.monotonic(), None
        fire = self._fires(operation)
        if fire and self.trigger is not None and self.trigger.at == "start":
            threading.Timer(self.trigger.delay, self.kill_and_restart).start()
        try:
            return fn()
        except Exception as exc:
            error = type(exc).__name__
            raise
        finally:
            self.attempts.append((started, operation, error))
            if fire and self.trigger is not None and self.trigger.at == "end":
                self.kill_and_restart()

    def _fires(self, operation: str) -> bool:
        if self.trigger is None or self.killed is not None:
            return False
        if operation == self.trigger.operation:
            self._seen += 1
        return self._seen == self.trigger.nth and operation == self.trigger.operation

    def kill_and_restart(self) -> None:
        self.killed = time.monotonic()
        self.server.kill()
        self._thread = threading.Thread(target=self._restart, daemon=True)
        self._thread.start()

    def _restart(self) -> None:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not self.waiting_message:
            self.waiting_message = _waiting_message(self.track_file)
            time.sleep(0.2)
        try:
            self.server.restart()
        except Exception as exc:  # reported by the test, not lost in this thread
            self.error = f"{exc}"
            return
        self.proxy.forward_to(int(self.server.uri.rsplit(":", 1)[1]))
        self.back = time.monotonic()

    def join(self) -> None:
        if self._thread is not None:
            self._thread.join(timeout=180)

    def failed_while_down(self) -> list[tuple[float, str, str | None]]:
        assert self.killed is not None and self.back is not None
        return [a for a in self.attempts if self.killed <= a[0] <= self.back and a[2]]


def _waiting_message(track_file: Path) -> str:
    try:
        status = json.loads(track_file.read_text()).get("status", {})
    except (OSError, ValueError):
        return ""
    message = str(status.get("message", ""))
    return message if message.startswith("waiting for Milvus since ") else ""


@pytest.fixture
def restart_alias(milvus_server: MilvusServer) -> Iterator[str]:
    alias = f"rs{time.time_ns() % 10**9}"
    yield alias
    if not milvus_server.running:  # a failed case may have left it down
        milvus_server.restart()
    drop_alias_collections(milvus_server.uri, alias)


@pytest.fixture
def through_proxy(milvus_server: MilvusServer) -> Iterator[FaultProxy]:
    with FaultProxy(int(milvus_server.uri.rsplit(":", 1)[1])) as proxy:
        yield proxy


def _config(path: Path) -> Path:
    config = {
        "stateDir": str(path.parent / "state"),
        "milvus": {
            "timeoutSeconds": CALL_TIMEOUT,
            "callTimeoutSeconds": CALL_TIMEOUT,
            "retryAttempts": 3,
            "retryMaxWaitSeconds": 2.0,
        },
        "build": {"batchSize": 500},
        "reconcile": {"maxAttempts": 12},
    }
    path.write_text(yaml.safe_dump(config))
    return path


def _apply(release: Path, config: Path, cwd: Path) -> Any:
    return inprocess_cli.run_cli(["apply", "-f", str(release), "--config", str(config)], cwd)


def _status(config: Path, cwd: Path) -> dict[str, Any]:
    shown = inprocess_cli.run_cli(
        ["status", "products", "-o", "json", "--config", str(config)], cwd
    )
    out: dict[str, Any] = json.loads(shown.stdout)
    return out


def _track_collections(uri: str, alias: str) -> list[str]:
    from pymilvus import MilvusClient

    client = MilvusClient(uri=uri, timeout=30)
    try:
        return sorted(n for n in client.list_collections() if n.startswith(f"{alias}__"))
    finally:
        client.close()


@pytest.mark.parametrize("step", RESTART_STEPS, ids=[s.replace(" ", "-") for s in RESTART_STEPS])
def test_a_release_survives_milvus_restarting(
    step: str,
    milvus_server: MilvusServer,
    through_proxy: FaultProxy,
    restart_alias: str,
    corpus: Corpus,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    trigger, second_release = CASES[step]
    backend = Backend("server", f"http://{through_proxy.address}", restart_alias)
    config = _config(tmp_path / "config.yaml")
    track_file = tmp_path / "state" / "tracks" / "test.products.json"
    restarter = Restarter(milvus_server, through_proxy, track_file, trigger)
    golden = corpus.dir / "golden.parquet"
    watch = {"monitoring": {"enabled": True, "sample": 500}} if step.startswith("drift") else {}
    v1 = write_release(
        tmp_path / "v1.yaml", release_yaml(backend, "v1", corpus.path("v1"), golden, **watch)
    )
    final, version = v1, "v1"
    if second_release:
        assert _apply(v1, config, tmp_path).returncode == 0
        drain = DRAIN if step == "drain" else 0
        final, version = tmp_path / "v2.yaml", "v2"
        write_release(
            final,
            release_yaml(
                backend,
                "v2",
                corpus.path("v2"),
                golden,
                promotion={"drainSeconds": drain},
                retention={"keepPrevious": 0, "keepLoaded": 0},
            ),
        )

    real_call = MilvusGateway._call

    def call(
        gw: MilvusGateway, action: str, fn: Any, op: str | None = None, retried: bool = True
    ) -> Any:
        operation = op or action.split(" ", 1)[0]
        return real_call(gw, action, lambda: restarter.call(operation, fn), op, retried)

    monkeypatch.setattr(MilvusGateway, "_call", call)
    started = time.monotonic()
    run = _apply(final, config, tmp_path)
    if step == "drain":  # Live on v2 with v1 draining: Milvus goes while nobody acts
        assert _status(config, tmp_path)["phase"] == "Live"
        restarter.kill_and_restart()
        time.sleep(DRAIN)
        run = _apply(final, config, tmp_path)
    for _ in range(3):  # a flip recorded again after the restart drains again
        if "draining" not in _status(config, tmp_path)["message"]:
            break
        time.sleep(DRAIN)
        run = _apply(final, config, tmp_path)
    seconds = time.monotonic() - started
    restarter.join()
    assert restarter.killed is not None, f"no {trigger} call was seen"
    assert restarter.back is not None, f"the server did not come back: {restarter.error}"

    status = _status(config, tmp_path)
    alias = backend.alias_target()
    left = _track_collections(milvus_server.uri, restart_alias)
    failed = restarter.failed_while_down()
    down = restarter.back - restarter.killed
    after = [t for t, _, e in restarter.attempts if t > restarter.back and e is None]
    outcome: dict[str, Any] = {
        "step": step,
        "fault": "restart",
        "phase": status["phase"],
        "alias": alias,
        "seconds": round(seconds, 1),
        "down_seconds": round(down, 1),
        "recovery_seconds": round(after[0] - restarter.back, 2) if after else None,
        "failed_calls": len(failed),
        "error_kinds": sorted({e for _, _, e in failed if e}),
        "waiting_message": restarter.waiting_message[:160],
        "collections": left,
    }
    count, ids = stored_ids(milvus_server.uri, alias) if alias else (0, np.empty(0, np.int64))
    outcome |= {"count": count, "distinct_ids": len(ids)}
    with RESULTS.open("a") as fh:
        fh.write(json.dumps(outcome) + "\n")

    assert status["phase"] == "Live", (
        f"{status['phase']}: {status.get('message')}\n{run.stdout[-3000:]}"
    )
    assert alias == f"{restart_alias}__{version}"
    assert left == [alias], f"collections left over: {left}"
    assert count == len(corpus.ids), "count(*) counts every stored row, duplicates too"
    assert np.array_equal(ids, np.sort(corpus.ids)), "every source id, and no other"
    checks = status.get("validation", {}).get("checks")
    bad = [c for c in checks or [] if c["outcome"] not in ("Passed", "NotApplicable", "Reported")]
    assert checks and not bad, (
        f"{bad or 'no validation'} in {json.dumps(status)[:3000]}\n{run.stdout[-3000:]}"
    )
    assert restarter.waiting_message, "the status never said it was waiting for Milvus"
    assert len(failed) <= MAX_ATTEMPTS_PER_SECOND * down + 3, (len(failed), down)
    assert "unavailableSince" not in status
