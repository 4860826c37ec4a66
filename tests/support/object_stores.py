"""One fixture, ``store``, over the three object stores embrel reads, each a real API on
loopback: S3 (moto_server, tests/support/s3_server.py), Google Cloud Storage
(gcp-storage-emulator, tests/support/gcs_server.py) and Azure Blob Storage (Azurite,
tests/support/azurite.py). A test parametrized with ``store`` (indirectly, by scheme)
gets a fresh bucket and the environment pointing embrel at it, as a user sets it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.azurite import ACCOUNT, ACCOUNT_KEY, AzuriteServer, running_azurite, wrong_key
from tests.support.gcs_server import GcsServer, running_gcs_server
from tests.support.s3_server import S3Server, free_port

SCHEMES = ("s3", "gs", "az")


@dataclass
class Bucket:
    """A bucket (an Azure container) of one store, and the settings that reach it."""

    scheme: str
    name: str
    upload: Callable[[str, Path | bytes], None]
    env: dict[str, str]  # the settings that read the bucket
    secret: str  # the secret among them, which nothing embrel shows may hold
    refused: dict[str, str] | None  # settings the store refuses; None: it checks none
    unreachable: dict[str, str]  # the settings pointing at a port where nothing listens
    user: str = ""  # credentials a uri may carry (scheme://USER:SECRET@bucket/key)

    def uri(self, key: str) -> str:
        return f"{self.scheme}://{self.name}/{key}"

    def uri_with_secret(self, key: str) -> str:
        """The uri with the credentials in it, where the scheme takes them (s3, az)."""
        if not self.user:
            return self.uri(key)
        return f"{self.scheme}://{self.user}:{self.secret}@{self.name}/{key}"

    def put(self, key: str, source: Path | bytes) -> str:
        self.upload(key, source)
        return self.uri(key)


def _s3_bucket(server: S3Server) -> Bucket:
    name = server.bucket()
    closed = server.env() | {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}"}
    return Bucket(
        "s3",
        name,
        lambda key, source: server.put(name, key, source),
        server.env(),
        server.writer.secret_key,
        server.env() | {"AWS_SECRET_ACCESS_KEY": "not-the-secret"},
        closed,
        server.writer.access_key,
    )


def _gcs_bucket(server: GcsServer) -> Bucket:
    name = server.bucket()
    # The emulator takes any token; a token set proves embrel passes one (and hides it).
    token = f"ya29.test-{uuid.uuid4().hex}"
    env = {"STORAGE_EMULATOR_HOST": server.endpoint, "GOOGLE_OAUTH_ACCESS_TOKEN": token}
    closed = env | {"STORAGE_EMULATOR_HOST": f"127.0.0.1:{free_port()}"}
    return Bucket(
        "gs", name, lambda key, source: server.put(name, key, source), env, token, None, closed
    )


def _azure_bucket(server: AzuriteServer) -> Bucket:
    name = server.container()
    env = {
        "AZURE_STORAGE_ACCOUNT_NAME": ACCOUNT,
        "AZURE_STORAGE_ACCOUNT_KEY": ACCOUNT_KEY,
        "AZURE_STORAGE_ENDPOINT": server.endpoint,
    }
    closed = env | {"AZURE_STORAGE_ENDPOINT": f"http://127.0.0.1:{free_port()}/{ACCOUNT}"}
    return Bucket(
        "az",
        name,
        lambda key, source: server.put(name, key, source),
        env,
        ACCOUNT_KEY,
        env | {"AZURE_STORAGE_ACCOUNT_KEY": wrong_key()},
        closed,
        ACCOUNT,
    )


# -- pytest fixtures (tests/conftest.py loads this module as a plugin) ---------------------


@pytest.fixture(scope="session")
def gcs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GcsServer]:
    """One GCS emulator for the session (about 1 s to start); tests use their own buckets."""
    with running_gcs_server(tmp_path_factory.mktemp("gcs") / "gcs.log") as server:
        yield server


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzuriteServer]:
    """One Azurite for the session (a few seconds to start); tests use their own containers."""
    with running_azurite(tmp_path_factory.mktemp("azurite")) as server:
        yield server


@pytest.fixture
def store(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Bucket:
    """A fresh bucket of the store named by the test's parameter (``s3``, ``gs``, ``az``),
    and the environment pointing embrel at it."""
    scheme = getattr(request, "param", "s3")
    if scheme == "s3":
        bucket = _s3_bucket(request.getfixturevalue("s3_server"))
    elif scheme == "gs":
        bucket = _gcs_bucket(request.getfixturevalue("gcs_server"))
    elif scheme == "az":
        bucket = _azure_bucket(request.getfixturevalue("azurite"))
    else:
        raise ValueError(f"no object store {scheme!r}; one of {SCHEMES}")
    for name, value in bucket.env.items():
        monkeypatch.setenv(name, value)
    return bucket


def every_store(*schemes: str) -> pytest.MarkDecorator:
    """Parametrize a test over the stores (all three unless named)."""
    return pytest.mark.parametrize("store", schemes or SCHEMES, indirect=True)
