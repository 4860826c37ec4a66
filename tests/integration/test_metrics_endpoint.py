"""Metrics from real runs: the Milvus gateway's observer and `embrel run --metrics-port`."""

from __future__ import annotations

import re
import signal
import time
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from controller.milvus import MilvusGateway
from tests.conftest import REAL_ONLY, Backend, Corpus, embrel_watch, release_yaml, write_release


@REAL_ONLY  # checks the gateway's own observer: there is no gateway on the fake
def test_gateway_reports_every_call_with_a_bounded_operation(backend: Backend) -> None:
    calls: list[tuple[str, float, str | None]] = []
    gateway = MilvusGateway(backend.uri, observer=lambda op, s, err: calls.append((op, s, err)))
    try:
        gateway.list_collections()
        assert gateway.alias_target(backend.alias) is None  # NotFound, handled inside
    finally:
        gateway.close()
    ops = [(op, err) for op, _, err in calls]
    assert ("list_collections", None) in ops
    assert ("describe_alias", "not_found") in ops
    assert all(seconds >= 0 for _, seconds, _ in calls)


def scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_watch_serves_release_metrics(tmp_path: Path, backend: Backend, corpus: Corpus) -> None:
    folder = tmp_path / "repo"
    folder.mkdir()
    write_release(folder / "products.yaml", release_yaml(backend, "v1", corpus.path("v1")))
    config = tmp_path / "config.yaml"
    config.write_text(f"stateDir: {tmp_path / 'state'}\nreconcile: {{watchIntervalSeconds: 0.3}}\n")
    proc = embrel_watch(
        backend,
        *("--config", str(config), "run", "--watch", str(folder)),
        *("--metrics-port", "0", "--metrics-address", "127.0.0.1"),
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        match = re.search(r"Metrics on http://127\.0\.0\.1:(\d+)/metrics", first)
        assert match, first
        port = int(match.group(1))
        live = ("embrel_release_phase", frozenset({
            ("namespace", "test"), ("release", "products"), ("version", "v1"), ("phase", "Live"),
        }))  # fmt: skip
        deadline = time.monotonic() + 180
        samples = scrape(port)
        while samples.get(live) != 1.0 and time.monotonic() < deadline:
            time.sleep(0.5)
            samples = scrape(port)
        assert samples.get(live) == 1.0, "the release never showed as Live in /metrics"
        info = [
            dict(labels) for (name, labels), _ in samples.items() if name == "embrel_release_info"
        ]
        assert [(i["role"], i["version"], i["alias"]) for i in info] == [
            ("live", "v1", backend.alias)
        ]
        assert samples[("embrel_leader", frozenset())] == 1.0
        flips = ("embrel_cutovers_total", frozenset({("kind", "promote")}))
        assert samples.get(flips) == 1.0
        searches = [
            v
            for (name, labels), v in samples.items()
            if name == "embrel_milvus_request_duration_seconds_count"
            and ("operation", "search") in labels
        ]
        assert searches and searches[0] > 0, "validation searches were timed"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as r:
            assert r.status == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)  # the metrics thread must not keep the process alive
