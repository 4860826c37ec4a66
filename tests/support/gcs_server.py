"""A Google Cloud Storage JSON API on loopback for tests: ``gcp-storage-emulator`` (PyPI,
pure Python), started as its own process on a free port, objects kept in memory.

The emulator checks no credentials: anyone may read and write. What it proves is the
GCS side of embrel's reads (listing, metadata, ranged reads, not-found answers) through
``pyarrow.fs.GcsFileSystem``, pointed at it by ``STORAGE_EMULATOR_HOST`` as a user would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support.processes import stop
from tests.support.s3_server import free_port


@dataclass(frozen=True)
class GcsServer:
    endpoint: str  # http://127.0.0.1:PORT

    def bucket(self) -> str:
        """A new, empty bucket (the server lives for the session: one bucket per test)."""
        name = f"b-{uuid.uuid4().hex[:12]}"
        body = json.dumps({"name": name}).encode()
        self._call("POST", "/storage/v1/b?project=test", body, "application/json")
        return name

    def put(self, bucket: str, key: str, source: Path | bytes) -> None:
        data = source.read_bytes() if isinstance(source, Path) else source
        # A multipart upload (metadata, then the bytes): the emulator's plain media upload
        # fails on an empty body.
        boundary = uuid.uuid4().hex
        body = b"".join(
            (
                f"--{boundary}\r\nContent-Type: application/json\r\n\r\n".encode(),
                json.dumps({"name": key}).encode(),
                f"\r\n--{boundary}\r\nContent-Type: application/octet-stream\r\n\r\n".encode(),
                data,
                f"\r\n--{boundary}--\r\n".encode(),
            )
        )
        kind = f"multipart/related; boundary={boundary}"
        self._call("POST", f"/upload/storage/v1/b/{bucket}/o?uploadType=multipart", body, kind)

    def _call(
        self, method: str, path: str, body: bytes, kind: str = "application/octet-stream"
    ) -> None:
        request = urllib.request.Request(
            f"{self.endpoint}{path}", data=body, headers={"Content-Type": kind}, method=method
        )
        urllib.request.urlopen(request, timeout=10).close()


@contextmanager
def running_gcs_server(log: Path) -> Iterator[GcsServer]:
    """``gcp-storage-emulator`` on a free loopback port until the block ends."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    program = Path(sys.executable).with_name("gcp-storage-emulator")
    if not program.exists():
        raise RuntimeError(
            f"{program} is missing: install the test extras (make .venv/.test-installed)"
        )
    env = {k: v for k, v in os.environ.items() if k != "STORAGE_EMULATOR_HOST"}
    command = [str(program), "start", "-H", "127.0.0.1", "--port", str(port), "--in-memory"]
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=out, env=env)
    try:
        _wait_until_up(endpoint, process, log)
        yield GcsServer(endpoint)
    finally:
        stop(process)


def _wait_until_up(
    endpoint: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 30
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"gcp-storage-emulator exited with {process.returncode}: {log.read_text()}"
            )
        try:
            urllib.request.urlopen(f"{endpoint}/storage/v1/b", timeout=1).close()
            return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"gcp-storage-emulator did not answer on {endpoint} within {timeout} s")
