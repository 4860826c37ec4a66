"""Every Milvus call has a deadline, and a call without an answer becomes a retried
``MilvusTimedOut`` (or ``MilvusConnectionLost``) that names the operation.

The gateway talks to a real gRPC server, Milvus Lite's (``milvus-lite server``), through
the TCP fault proxy (tests/support/tcp_proxy.py): no server start of the real Milvus.
"""

from __future__ import annotations

import ast
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.config import RetryPolicy
from controller.errors import MilvusConnectionLost, MilvusTimedOut
from controller.milvus import MilvusGateway
from tests.support.tcp_proxy import FaultProxy

REPO = Path(__file__).resolve().parents[2]
# Client methods that build objects locally and never reach the server.
_LOCAL = {"close", "prepare_index_params", "create_schema", "_get_connection"}  # no RPC
SLACK = 0.6  # scheduling on 2 shared cores, the proxy's 20 ms tick


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def lite_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """Milvus Lite's gRPC server on a loopback port, for this module."""
    exe = shutil.which("milvus-lite", path=str(Path(sys.executable).parent))
    assert exe, "milvus-lite is installed with pymilvus[milvus-lite]"
    port = _free_port()
    data = tmp_path_factory.mktemp("lite-server")
    args = [exe, "server", "--data-dir", str(data), "--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture
def proxy(lite_port: int) -> Iterator[FaultProxy]:
    # A proxy per test: its own port, so pymilvus shares no connection between tests.
    with FaultProxy(lite_port) as p:
        yield p


Calls = list[tuple[str, float, str | None]]


def _gateway(proxy: FaultProxy, calls: Calls, attempts: int = 1) -> MilvusGateway:
    policy = RetryPolicy(attempts=attempts, max_wait=0.5, timeout=2.0, call_timeout=1.0)
    return MilvusGateway(
        f"http://{proxy.address}", policy=policy, observer=lambda *c: calls.append(c)
    )


def test_every_client_call_passes_a_timeout() -> None:
    """Read the gateway: every call on the pymilvus client names ``timeout=``."""
    tree = ast.parse((REPO / "controller" / "milvus.py").read_text())
    missing = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        owner = node.func.value
        on_client = isinstance(owner, ast.Attribute) and owner.attr == "_client"
        named = {k.arg for k in node.keywords}
        if on_client and node.func.attr not in _LOCAL and "timeout" not in named:
            missing.append(f"line {node.lineno}: {node.func.attr}")
    assert missing == []


def test_a_stalled_call_ends_at_its_deadline_naming_the_operation(proxy: FaultProxy) -> None:
    calls: Calls = []
    gateway = _gateway(proxy, calls)
    assert isinstance(gateway.list_collections(), list)
    proxy.stall()
    started = time.monotonic()
    with pytest.raises(MilvusTimedOut, match="did not answer listing collections within 1s"):
        gateway.list_collections()
    assert 1.0 <= time.monotonic() - started < 1.0 + SLACK
    assert calls[-1][0] == "list_collections" and calls[-1][2] == "timeout"
    proxy.heal()
    assert isinstance(gateway.list_collections(), list)  # the same connection works again


def test_a_black_hole_ends_at_the_deadline_too(proxy: FaultProxy) -> None:
    calls: Calls = []
    gateway = _gateway(proxy, calls)
    proxy.black_hole()
    started = time.monotonic()
    with pytest.raises(MilvusTimedOut, match="listing collections"):
        gateway.list_collections()
    assert time.monotonic() - started < 1.0 + SLACK
    proxy.heal()
    assert isinstance(gateway.list_collections(), list)  # over a new connection


def test_the_connect_times_out(proxy: FaultProxy) -> None:
    proxy.black_hole()
    started = time.monotonic()
    with pytest.raises(
        MilvusTimedOut, match=r"did not answer connecting to Milvus at .* within 2s"
    ):
        _gateway(proxy, [])
    assert time.monotonic() - started < 2.0 + SLACK


def test_a_stall_that_heals_is_retried_with_backoff(proxy: FaultProxy) -> None:
    calls: Calls = []
    gateway = _gateway(proxy, calls, attempts=4)
    proxy.stall()
    threading.Timer(1.5, proxy.heal).start()
    assert isinstance(gateway.list_collections(), list)
    kinds = [kind for op, _, kind in calls if op == "list_collections"]
    assert kinds[0] == "timeout" and kinds[-1] is None


def test_a_reset_during_a_call_is_a_lost_connection(proxy: FaultProxy) -> None:
    """Connections reset under a call and no new one answering: pymilvus retries on its
    own until the deadline, then the gateway says the connection was lost."""
    calls: Calls = []
    gateway = _gateway(proxy, calls)
    proxy.latency(0.4)

    def cut() -> None:
        proxy.black_hole()  # new connections go nowhere
        proxy.reset()

    threading.Timer(0.2, cut).start()
    started = time.monotonic()
    with pytest.raises((MilvusConnectionLost, MilvusTimedOut), match="listing collections"):
        gateway.list_collections()
    # pymilvus' own retry loop may start a last try (with the whole timeout) just before
    # the deadline, and reconnects within the connect timeout: bounded, not hanging.
    assert time.monotonic() - started < 1.0 + 2.0 + SLACK
    assert calls[-1][2] in {"reset", "timeout"}
    proxy.heal()
    assert isinstance(gateway.list_collections(), list)


@pytest.mark.parametrize(
    ("message", "kind"),
    [
        # What pymilvus 3 raised here when the proxy reset the connection under a call.
        (
            "<MilvusException: (code=StatusCode.UNAVAILABLE, message=[list_collections] Retry "
            "timeout: 1s, StatusCode.UNAVAILABLE, Stream removed (recvmsg:Connection reset by "
            "peer (104)), channel_state=IDLE)>",
            MilvusConnectionLost,
        ),
        ("StatusCode.DEADLINE_EXCEEDED Deadline Exceeded", MilvusTimedOut),
        (
            "Fail connecting to server on 127.0.0.1:1, illegal connection params or server "
            "unavailable",
            MilvusTimedOut,
        ),
    ],
)
def test_no_answer_is_told_apart(message: str, kind: type[Exception]) -> None:
    from controller.milvus import _no_answer

    error = _no_answer("inserting into c", message, 5.0)
    assert type(error) is kind
    assert "inserting into c" in str(error) and "within 5s" in str(error)


def test_the_request_error_metric_counts_timeouts(proxy: FaultProxy) -> None:
    from prometheus_client import CollectorRegistry

    from controller.metrics import PrometheusTelemetry

    registry = CollectorRegistry()
    telemetry = PrometheusTelemetry(registry)
    policy = RetryPolicy(attempts=2, max_wait=0.1, timeout=2.0, call_timeout=0.5)
    gateway = MilvusGateway(
        f"http://{proxy.address}", policy=policy, observer=telemetry.milvus_call
    )
    proxy.stall()
    with pytest.raises(MilvusTimedOut):
        gateway.list_collections()
    labels = {"operation": "list_collections", "kind": "timeout"}
    assert registry.get_sample_value("embrel_milvus_request_errors_total", labels) == 2.0
