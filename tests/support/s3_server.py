"""A real S3 API server on loopback for tests and benchmarks: moto's ``moto_server``,
started as its own process on a free port, with IAM enforced.

Enforcement is what lets a test see a real "access denied": once the users are made
(``/moto-api/reset-auth``), every request must be signed with the secret of an IAM
user (SigV4, checked by the server) and be allowed by that user's policies. Two users:

    ``writer``   s3:* on every bucket: fills buckets, and is who embrel reads as
    ``nobody``   no policy at all: every request is denied
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.processes import stop

REGION = "us-east-1"


@dataclass(frozen=True)
class Keys:
    access_key: str
    secret_key: str


@dataclass
class S3Server:
    endpoint: str  # http://127.0.0.1:PORT
    writer: Keys
    nobody: Keys

    def client(self, keys: Keys | None = None) -> Any:
        import boto3

        keys = keys or self.writer
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=keys.access_key,
            aws_secret_access_key=keys.secret_key,
        )

    def bucket(self) -> str:
        """A new, empty bucket (the server lives for the session: one bucket per test)."""
        name = f"b-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def put(self, bucket: str, key: str, source: Path | bytes) -> None:
        body = source.read_bytes() if isinstance(source, Path) else source
        self.client().put_object(Bucket=bucket, Key=key, Body=body)

    def env(self, keys: Keys | None = None) -> dict[str, str]:
        """The environment embrel reads S3 settings from, as a user would set it."""
        keys = keys or self.writer
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": keys.access_key,
            "AWS_SECRET_ACCESS_KEY": keys.secret_key,
            "AWS_REGION": REGION,
        }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def running_s3_server(log: Path) -> Iterator[S3Server]:
    """``moto_server`` on a free loopback port until the block ends."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    moto = Path(sys.executable).with_name("moto_server")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(moto), "-H", "127.0.0.1", "-p", str(port)], stdout=out, stderr=out, env=env
        )
    try:
        _wait_until_up(endpoint, process)
        yield _with_users(endpoint)
    finally:
        stop(process)


def _wait_until_up(endpoint: str, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"moto_server exited with {process.returncode}")
        try:
            urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"moto_server did not answer on {endpoint} within {timeout} s")


def _with_users(endpoint: str) -> S3Server:
    """Make the users while the server still lets anyone in, then enforce IAM."""
    import boto3

    iam = boto3.client(
        "iam",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id="bootstrap",
        aws_secret_access_key="bootstrap",
    )
    everything = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
    }
    keys = {}
    for user in ("writer", "nobody"):
        iam.create_user(UserName=user)
        if user == "writer":
            iam.put_user_policy(
                UserName=user, PolicyName="s3", PolicyDocument=json.dumps(everything)
            )
        made = iam.create_access_key(UserName=user)["AccessKey"]
        keys[user] = Keys(made["AccessKeyId"], made["SecretAccessKey"])
    request = urllib.request.Request(
        f"{endpoint}/moto-api/reset-auth",
        data=b"0",  # requests from now on that go unchecked
        headers={"Content-Type": "text/plain"},  # a form body would be parsed away
        method="POST",
    )
    urllib.request.urlopen(request, timeout=5).close()
    return S3Server(endpoint, keys["writer"], keys["nobody"])


# -- pytest fixtures (tests/conftest.py loads this module as a plugin) ---------------------


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """One S3 server for the session (about 1 s to start); tests use their own buckets."""
    with running_s3_server(tmp_path_factory.mktemp("s3") / "moto.log") as server:
        yield server


@dataclass
class S3Bucket:
    server: S3Server
    name: str

    def uri(self, key: str) -> str:
        return f"s3://{self.name}/{key}"

    def put(self, key: str, source: Path | bytes) -> str:
        self.server.put(self.name, key, source)
        return self.uri(key)


@pytest.fixture
def s3(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Bucket:
    """A fresh bucket, and the environment pointing embrel at the server as ``writer``."""
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    return S3Bucket(s3_server, s3_server.bucket())
