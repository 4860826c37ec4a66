"""An Azure Blob Storage API on loopback for tests: Azurite's blob service (npm package
``azurite``, installed by the Makefile into ``.tools/``), started as its own process on a
port it picks, blobs kept in memory.

Azurite checks the Shared Key signature of every request: a wrong account key is
refused with ``AuthorizationFailure`` (403), as Azure refuses it.
"""

from __future__ import annotations

import base64
import os
import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
AZURITE = REPO / ".tools" / "node_modules" / ".bin" / "azurite-blob"
# Azurite's one built-in account, as every Azure SDK knows it ("development storage").
ACCOUNT = "devstoreaccount1"
ACCOUNT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
_LISTENS = re.compile(rb"listens on (http://127\.0\.0\.1:\d+)")


@dataclass(frozen=True)
class AzuriteServer:
    endpoint: str  # http://127.0.0.1:PORT/devstoreaccount1, the account's Blob endpoint

    def filesystem(self) -> Any:
        """A pyarrow filesystem on the account that writes (the tests' own uploads)."""
        import pyarrow.fs as pafs

        authority = self.endpoint.split("://")[1].split("/")[0]
        return pafs.AzureFileSystem(
            account_name=ACCOUNT,
            account_key=ACCOUNT_KEY,
            blob_storage_authority=authority,
            dfs_storage_authority=authority,
            blob_storage_scheme="http",
            dfs_storage_scheme="http",
        )

    def container(self) -> str:
        """A new, empty container (the server lives for the session: one per test)."""
        name = f"c-{uuid.uuid4().hex[:12]}"
        self.filesystem().create_dir(name)
        return name

    def put(self, container: str, key: str, source: Path | bytes) -> None:
        body = source.read_bytes() if isinstance(source, Path) else source
        with self.filesystem().open_output_stream(f"{container}/{key}") as out:
            out.write(body)


def wrong_key() -> str:
    """A well-formed account key that is not the account's."""
    return base64.b64encode(b"not the key" * 6).decode()


def azurite_available() -> bool:
    return AZURITE.exists()


@contextmanager
def running_azurite(folder: Path) -> Iterator[AzuriteServer]:
    """Azurite's blob service on a loopback port it picks until the block ends."""
    if not azurite_available():
        raise RuntimeError(
            f"{AZURITE} is missing: `make .venv/.test-installed` installs Azurite there"
        )
    log = folder / "azurite.log"
    command = [
        str(AZURITE),
        "--blobHost", "127.0.0.1",
        "--blobPort", "0",  # any free port: the log says which
        "--inMemoryPersistence",
        "--skipApiVersionCheck",  # pyarrow's Azure SDK may speak a newer API version
        "--silent",
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("AZURE_")}
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=out, env=env, cwd=folder)
    try:
        yield AzuriteServer(f"{_wait_until_up(process, log)}/{ACCOUNT}")
    finally:
        # Killed, not stopped: on SIGTERM Azurite waits for the clients' idle keep-alive
        # connections to close (pyarrow's pool holds them), and it keeps nothing on disk.
        process.kill()
        process.wait()


def _wait_until_up(process: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"azurite exited with {process.returncode}: {log.read_text()}")
        if match := _LISTENS.search(log.read_bytes()):
            return match.group(1).decode()
        time.sleep(0.1)
    raise RuntimeError(f"azurite did not listen within {timeout} s: {log.read_text()}")
