"""End to end: a real Prometheus scrapes `embrel run --watch --metrics-port`, drifted
vectors are written into the live collection, and EmbeddingDriftHigh fires in
Prometheus' own /api/v1/alerts.

Real Milvus server only: on Milvus Lite the controller process holds the database, so
the test could not write into the live collection.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import REPO, Backend, Corpus, release_yaml, unit_vectors, write_release
from tests.support.milvus_server import MilvusServer, drop_alias_collections
from tests.support.prometheus import PrometheusServer, short_rules

pytestmark = [pytest.mark.heavy, pytest.mark.server]

LIVE_TIMEOUT = 240.0
ALERT_TIMEOUT = 120.0


@pytest.fixture
def server_backend(milvus_server: MilvusServer) -> Iterator[Backend]:
    backend = Backend("server", milvus_server.uri, f"t{uuid.uuid4().hex[:10]}")
    yield backend
    drop_alias_collections(backend.uri, backend.alias)


@pytest.fixture
def controller(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], int, Path]]:
    """`embrel run --watch` serving metrics on a free loopback port."""
    folder = tmp_path / "releases"
    folder.mkdir()
    config = tmp_path / "config.yaml"
    # Settled releases are passed again every second, so that monitoring runs on time
    # whether or not the watcher honours the engine's requeue delay.
    config.write_text(
        f"stateDir: {tmp_path / 'state'}\n"
        "reconcile: {watchIntervalSeconds: 0.3, resyncSeconds: 1}\n"
    )
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "controller.cli", "--config", str(config), "run"),
            *("--watch", str(folder), "--metrics-port", "0", "--metrics-address", "127.0.0.1"),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        match = re.search(r"Metrics on http://127\.0\.0\.1:(\d+)/metrics", first)
        assert match, f"no metrics address in the controller's first line: {first!r}"
        yield proc, int(match.group(1)), folder
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)


@pytest.fixture
def prometheus(tmp_path: Path, controller: tuple[Any, int, Path]) -> Iterator[PrometheusServer]:
    _, port, _ = controller
    rules = short_rules(tmp_path / "rules.yaml", hold="2s")
    server = PrometheusServer(tmp_path / "prometheus", [f"127.0.0.1:{port}"], rules)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()  # by PID


def scrape(port: int) -> dict[str, list[tuple[dict[str, str], float]]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def drift_alerts(prometheus: PrometheusServer) -> list[dict[str, Any]]:
    return [a for a in prometheus.alerts() if a["labels"]["alertname"] == "EmbeddingDriftHigh"]


def write_drifted_vectors(uri: str, collection: str, ids: np.ndarray, dim: int) -> None:
    """Another writer upserts the same ids with unrelated vectors into the live collection."""
    from pymilvus import MilvusClient

    vectors = unit_vectors(np.random.default_rng(99), len(ids), dim)
    client = MilvusClient(uri=uri)
    try:
        rows = [{"id": int(i), "vector": v.tolist()} for i, v in zip(ids, vectors, strict=True)]
        client.upsert(collection, rows)
        client.flush(collection)
    finally:
        client.close()


def test_drift_in_the_live_collection_fires_the_alert_in_prometheus(
    server_backend: Backend,
    corpus: Corpus,
    controller: tuple[subprocess.Popen[str], int, Path],
    prometheus: PrometheusServer,
) -> None:
    proc, port, folder = controller
    doc = release_yaml(
        server_backend,
        "v1",
        corpus.path("v1"),
        monitoring={"enabled": True, "interval": "1s", "thresholds": {"minSameIdCosine": 0.9}},
    )
    write_release(folder / "products.yaml", doc)

    # Live, and drift measured at least once against the reference: cosine ~1, no alert.
    deadline = time.monotonic() + LIVE_TIMEOUT
    cosine: list[tuple[dict[str, str], float]] = []
    while time.monotonic() < deadline and proc.poll() is None:
        cosine = scrape(port).get("embrel_drift_same_id_cosine", [])
        if cosine:
            break
        time.sleep(0.5)
    assert cosine, f"no drift measurement within {LIVE_TIMEOUT:.0f}s (controller rc {proc.poll()})"
    assert cosine[0][1] > 0.99
    live = [labels for labels, _ in scrape(port)["embrel_release_info"] if labels["role"] == "live"]
    assert [(x["version"], x["release"]) for x in live] == [("v1", "products")]
    collection = live[0]["collection"]

    # Prometheus scrapes the controller and evaluates the rules before any drift.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not prometheus.query(
        'embrel_drift_same_id_cosine{release="products"}'
    ):
        time.sleep(0.5)
    assert prometheus.query('up{job="embrel"} == 1'), prometheus.logs()
    time.sleep(3)  # a few rule evaluations (every 1s) on the healthy values
    assert drift_alerts(prometheus) == []

    write_drifted_vectors(server_backend.uri, collection, corpus.ids, corpus.vectors["v1"].shape[1])

    deadline = time.monotonic() + ALERT_TIMEOUT
    states: list[str] = []
    firing: list[dict[str, Any]] = []
    while time.monotonic() < deadline and not firing:
        alerts = drift_alerts(prometheus)
        states += [a["state"] for a in alerts if a["state"] not in states]
        firing = [a for a in alerts if a["state"] == "firing"]
        time.sleep(0.5)
    assert firing, (
        f"EmbeddingDriftHigh never fired within {ALERT_TIMEOUT:.0f}s (states seen: {states}); "
        f"controller metrics: {scrape(port).get('embrel_drift_same_id_cosine')}"
    )
    labels = firing[0]["labels"]
    assert (labels["namespace"], labels["release"], labels["version"]) == ("test", "products", "v1")
    assert labels["metric"] == "same_id_cosine"
    assert labels["collection"] == collection
    assert "version v1" in firing[0]["annotations"]["description"]
    assert float(firing[0]["value"]) < 0.9
