"""A webhook receiver on 127.0.0.1 for tests: scripted answers, every request kept.

With ``secret`` it checks each request's signature as docs/webhooks.md tells a
receiver to (written out here, not embrel's own code) and answers 401 to one that
does not verify.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def signature_ok(secret: str, timestamp: str, body: bytes, signed: str) -> bool:
    """The documented recipe: HMAC-SHA256 over "<timestamp>.<body>", at most 5 minutes old."""
    try:
        fresh = abs(time.time() - int(timestamp)) <= 300
    except ValueError:
        return False
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return fresh and hmac.compare_digest(f"sha256={mac.hexdigest()}", signed)


@dataclass
class Reply:
    status: int = 200
    delay: float = 0.0  # seconds before answering (a timeout)
    headers: dict[str, str] = field(default_factory=dict)
    body: str = "ok"


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    verified: bool | None  # None when the receiver has no secret to check with

    def json(self) -> Any:
        return json.loads(self.body)


class Receiver:
    """Answers from ``script`` in order, then ``default``; ``url`` is where it listens."""

    def __init__(self, script: list[Reply], default: Reply, secret: str | None) -> None:
        self.script, self.default, self.secret = list(script), default, secret
        self.requests: list[Received] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/hook"

    def _next(self, verified: bool | None) -> Reply:
        with self._lock:
            if verified is False:
                return Reply(401, body="signature does not verify")
            return self.script.pop(0) if self.script else self.default

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                headers = {k: v for k, v in self.headers.items()}
                verified = None
                if receiver.secret is not None:
                    verified = signature_ok(
                        receiver.secret,
                        self.headers.get("X-Embrel-Timestamp", ""),
                        body,
                        self.headers.get("X-Embrel-Signature", ""),
                    )
                with receiver._lock:
                    receiver.requests.append(Received(self.path, headers, body, verified))
                reply = receiver._next(verified)
                time.sleep(reply.delay)
                payload = reply.body.encode()
                try:
                    self.send_response(reply.status)
                    for k, v in reply.headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up waiting (a timeout test)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


@contextmanager
def receiver(
    *script: Reply, default: Reply | None = None, secret: str | None = None
) -> Iterator[Receiver]:
    r = Receiver(list(script), default or Reply(), secret)
    r._thread.start()
    try:
        yield r
    finally:
        r._server.shutdown()
        r._server.server_close()
