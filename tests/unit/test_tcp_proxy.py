"""The TCP fault proxy (tests/support/tcp_proxy.py) against a real echo server on loopback."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from tests.support.tcp_proxy import FaultProxy


class EchoServer:
    """Answers every chunk with the same bytes, one thread per connection."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    @staticmethod
    def _echo(conn: socket.socket) -> None:
        with conn:
            try:
                while data := conn.recv(4096):
                    conn.sendall(data)
            except OSError:
                return


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    server = EchoServer()
    yield server
    server.sock.close()


@pytest.fixture
def proxy(echo: EchoServer) -> Iterator[FaultProxy]:
    with FaultProxy(echo.port) as p:
        yield p


def _client(proxy: FaultProxy, timeout: float = 2.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", proxy.port), timeout=timeout)


def _roundtrip(sock: socket.socket, payload: bytes = b"ping") -> bytes:
    sock.sendall(payload)
    got = b""
    while len(got) < len(payload):
        chunk = sock.recv(4096)
        if not chunk:
            break
        got += chunk
    return got


def test_passes_bytes_both_ways(proxy: FaultProxy) -> None:
    with _client(proxy) as sock:
        assert _roundtrip(sock, b"hello") == b"hello"
        assert _roundtrip(sock, b"x" * 200_000) == b"x" * 200_000


def test_listens_on_loopback_only(proxy: FaultProxy) -> None:
    assert proxy.address.startswith("127.0.0.1:")
    with pytest.raises(ValueError, match="loopback"):
        FaultProxy(1, upstream_host="10.0.0.1")


def test_latency_delays_each_direction(proxy: FaultProxy) -> None:
    with _client(proxy) as sock:
        proxy.latency(0.3)
        started = time.monotonic()
        assert _roundtrip(sock) == b"ping"
        assert time.monotonic() - started >= 0.6  # 0.3 s up, 0.3 s down
        proxy.heal()
        started = time.monotonic()
        assert _roundtrip(sock) == b"ping"
        assert time.monotonic() - started < 0.3


def test_reset_sends_rst_and_later_connections_pass(proxy: FaultProxy) -> None:
    with _client(proxy) as sock:
        assert _roundtrip(sock) == b"ping"
        proxy.reset()
        time.sleep(0.1)
        with pytest.raises(ConnectionResetError):
            sock.sendall(b"again")
            sock.recv(4096)
    assert proxy.open_connections() == 0
    with _client(proxy) as sock:
        assert _roundtrip(sock) == b"ping"


def test_stall_holds_bytes_until_healed(proxy: FaultProxy) -> None:
    with _client(proxy, timeout=0.5) as sock:
        proxy.stall()
        sock.sendall(b"held")
        with pytest.raises(TimeoutError):
            sock.recv(4096)
        proxy.heal()
        sock.settimeout(2)
        assert sock.recv(4096) == b"held"  # delivered in order once the network is back


def test_black_hole_accepts_but_never_answers(echo: EchoServer, proxy: FaultProxy) -> None:
    proxy.black_hole()
    before = echo.accepted
    with _client(proxy, timeout=0.5) as sock:  # accepted: connect succeeds
        sock.sendall(b"lost")
        with pytest.raises(TimeoutError):
            sock.recv(4096)
        time.sleep(0.1)
        assert echo.accepted == before  # never reached the server
        proxy.heal()
        sock.settimeout(2)
        with pytest.raises(ConnectionResetError):  # what it carried is gone
            sock.recv(4096)
    with _client(proxy) as sock:
        assert _roundtrip(sock) == b"ping"
