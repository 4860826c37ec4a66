"""A TCP fault proxy for tests: loopback only, between a client and a real server.

gRPC is HTTP/2 over TCP, so a byte-level proxy in front of Milvus' gRPC port lets a
test break the network under the controller without touching pymilvus or Milvus:

* ``latency(seconds)``: every chunk is forwarded that much later, both ways;
* ``reset()``: every open connection is closed with an RST (``SO_LINGER`` 0) on both
  sides; new connections pass as before;
* ``stall()``: connections stay open and bytes are accepted but held, not forwarded;
  ``heal()`` forwards what was held, in order (a network that paused);
* ``black_hole()``: bytes are read and dropped, and new connections are accepted but
  never connected upstream; ``heal()`` resets those connections (what they carried is
  gone, so only a new connection can work);
* ``heal()``: pass-through again, no latency.

One thread accepts, one thread per connection pumps both directions with ``select``.
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Literal, Self

LOOPBACK = "127.0.0.1"
Mode = Literal["pass", "stall", "black_hole"]
_CHUNK = 65536
_TICK = 0.02  # how often a pump looks at the mode while nothing arrives


def _rst(sock: socket.socket | None) -> None:
    """Close ``sock`` with an RST instead of a FIN: the peer sees "connection reset"."""
    if sock is None:
        return
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


@dataclass
class _Connection:
    client: socket.socket
    upstream: socket.socket | None  # None: accepted while black-holed
    generation: int  # the proxy's reset generation when it was accepted
    held: dict[str, list[bytes]] = field(default_factory=lambda: {"up": [], "down": []})
    dropped: bool = False  # bytes were thrown away: this stream is broken for good

    def close(self, reset: bool) -> None:
        for sock in (self.client, self.upstream):
            if sock is None:
                continue
            if reset:
                _rst(sock)
            else:
                with contextlib.suppress(OSError):
                    sock.close()


class FaultProxy:
    """Listens on ``127.0.0.1:<port>`` and forwards to ``127.0.0.1:<upstream_port>``."""

    def __init__(self, upstream_port: int, upstream_host: str = LOOPBACK) -> None:
        if upstream_host not in (LOOPBACK, "localhost"):
            raise ValueError("the fault proxy forwards to the loopback interface only")
        self.upstream = (LOOPBACK, upstream_port)
        self.mode: Mode = "pass"
        self.delay = 0.0
        self._generation = 0
        self._connections: list[_Connection] = []
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((LOOPBACK, 0))
        self._listener.listen(64)
        self._listener.settimeout(_TICK * 5)
        self.port: int = self._listener.getsockname()[1]
        self._acceptor = threading.Thread(target=self._accept_loop, daemon=True)

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    # -- controls ------------------------------------------------------------

    def latency(self, seconds: float) -> None:
        self.delay = seconds

    def stall(self) -> None:
        self.mode = "stall"

    def black_hole(self) -> None:
        self.mode = "black_hole"

    def heal(self) -> None:
        self.delay = 0.0
        self.mode = "pass"

    def forward_to(self, upstream_port: int) -> None:
        """Send later connections to another port (a server restarted on a new one)."""
        self.upstream = (LOOPBACK, upstream_port)

    def reset(self) -> None:
        """RST every open connection (both sides); later connections pass."""
        with self._lock:
            self._generation += 1
            victims, self._connections = self._connections, []
        for conn in victims:
            conn.close(reset=True)

    def open_connections(self) -> int:
        with self._lock:
            return len(self._connections)

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> Self:
        self._acceptor.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        self._acceptor.join(timeout=5)
        self._listener.close()
        with self._lock:
            victims, self._connections = self._connections, []
        for conn in victims:
            conn.close(reset=False)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- the pumps -----------------------------------------------------------

    def _accept_loop(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            upstream = None if self.mode == "black_hole" else self._dial()
            if upstream is None and self.mode != "black_hole":
                _rst(client)  # the server is down: say so at once
                continue
            with self._lock:
                conn = _Connection(client, upstream, self._generation, dropped=upstream is None)
                self._connections.append(conn)
            threading.Thread(target=self._pump, args=(conn,), daemon=True).start()

    def _dial(self) -> socket.socket | None:
        try:
            return socket.create_connection(self.upstream, timeout=5)
        except OSError:
            return None

    def _pump(self, conn: _Connection) -> None:
        try:
            while not self._stopped.is_set() and conn.generation == self._generation:
                if conn.dropped and self.mode == "pass":
                    break  # healed, but this stream lost bytes: only a new connection works
                if not self._pump_once(conn):
                    break
        except (OSError, ValueError):  # ValueError: reset() closed a socket under select
            pass
        finally:
            with self._lock:
                if conn in self._connections:
                    self._connections.remove(conn)
            conn.close(reset=conn.dropped or conn.generation != self._generation)

    def _pump_once(self, conn: _Connection) -> bool:
        """Move what arrived; False when either side closed."""
        if self.mode == "pass":
            self._release_held(conn)
        socks = [s for s in (conn.client, conn.upstream) if s is not None]
        readable, _, _ = select.select(socks, [], [], _TICK)
        for sock in readable:
            data = sock.recv(_CHUNK)
            if not data:
                return False
            direction = "up" if sock is conn.client else "down"
            self._route(conn, direction, data)
        return True

    def _route(self, conn: _Connection, direction: str, data: bytes) -> None:
        if self.mode == "black_hole" or conn.upstream is None:
            conn.dropped = True
        elif self.mode == "stall" or conn.held[direction]:
            conn.held[direction].append(data)  # keep the order behind what is held
        else:
            self._send(conn, direction, data)

    def _release_held(self, conn: _Connection) -> None:
        for direction, chunks in conn.held.items():
            while chunks:
                self._send(conn, direction, chunks.pop(0))

    def _send(self, conn: _Connection, direction: str, data: bytes) -> None:
        if self.delay > 0:
            time.sleep(self.delay)
        target = conn.upstream if direction == "up" else conn.client
        if target is not None:
            target.sendall(data)


@contextlib.contextmanager
def fault_proxy(upstream_port: int) -> Iterator[FaultProxy]:
    with FaultProxy(upstream_port) as proxy:
        yield proxy
