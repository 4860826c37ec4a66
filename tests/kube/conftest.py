"""Fixtures for the Kubernetes driver: the API mock server and clients for it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from controller.kube import KubeGateway
from tests.support.kube_api import KubeApiServer


@pytest.fixture
def kube_api() -> Iterator[KubeApiServer]:
    """kmock's emulator with the gaps closed (tests/support/kube_api.py), on loopback."""
    server = KubeApiServer(bookmark_interval=0.3).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def kubeconfig(kube_api: KubeApiServer, tmp_path: Path) -> Path:
    return kube_api.write_kubeconfig(tmp_path / "kubeconfig", namespace="test")


@pytest.fixture
def api(kube_api: KubeApiServer) -> Iterator[client.ApiClient]:
    """The official client, as a person's kubectl would talk to the server."""
    cfg = client.Configuration()
    cfg.host = kube_api.url
    with client.ApiClient(cfg) as api_client:
        yield api_client


@pytest.fixture
def kube(kubeconfig: Path) -> Iterator[KubeGateway]:
    """embrel's own gateway, connected through the kubeconfig."""
    gateway = KubeGateway.connect(kubeconfig)
    try:
        yield gateway
    finally:
        gateway.close()
