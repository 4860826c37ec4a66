"""spec.analysis against a real Prometheus (Debian package `prometheus`) that scrapes, on
127.0.0.1, a tiny exporter whose values the test sets per collection, and the search
metrics of examples/analysis (an application's answers counted per serving version)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from controller.status import Phase
from examples.analysis.search_metrics import SearchMetrics
from tests.conftest import Backend, embrel, release_yaml, unit_vectors, write_release, write_vectors
from tests.support.prometheus import PrometheusServer

N, DIM = 400, 32
QUERY = 'max(search_error_ratio{collection="{{candidate}}"})'


class Exporter:
    """Serves ``search_error_ratio{collection=...}`` with the values in ``values``, and
    the application's search metrics (``app``, examples/analysis/search_metrics.py)."""

    def __init__(self) -> None:
        self.values: dict[str, float] = {}
        self.registry = CollectorRegistry()
        self.app = SearchMetrics(self.registry, min_score=0.5)
        exporter = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                lines = ["# TYPE search_error_ratio gauge"] + [
                    f'search_error_ratio{{collection="{c}"}} {v}'
                    for c, v in sorted(exporter.values.items())
                ]
                body = ("\n".join(lines) + "\n").encode() + generate_latest(exporter.registry)
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture(scope="module")
def prometheus(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[PrometheusServer, Exporter]]:
    folder = tmp_path_factory.mktemp("prometheus")
    rules = folder / "rules.yaml"
    rules.write_text("groups: []\n")
    exporter = Exporter()
    server = PrometheusServer(folder / "server", [exporter.target], rules, job="exporter")
    try:
        server.wait_ready()
        yield server, exporter
    finally:
        server.stop()
        exporter.server.shutdown()


def scraped(server: PrometheusServer, collection: str, value: float) -> None:
    """Wait until Prometheus holds ``value`` for ``collection``."""
    deadline = time.monotonic() + 30
    expr = f'search_error_ratio{{collection="{collection}"}}'
    while time.monotonic() < deadline:
        result = server.query(expr)
        if result and float(result[0]["value"][1]) == value:
            return
        time.sleep(0.2)
    raise AssertionError(f"Prometheus never scraped {expr} = {value}")


@pytest.fixture
def track(tmp_path: Path, backend: Backend, prometheus: Any):  # type: ignore[no-untyped-def]
    server, exporter = prometheus
    rng = np.random.default_rng(11)
    state = ("--state-dir", str(tmp_path / "state"))

    def apply(
        version: str, error_ratio: float | None = None, **spec: object
    ) -> tuple[int, str, dict[str, Any]]:
        collection = f"{backend.alias}__{version}"
        if error_ratio is not None:
            exporter.values[collection] = error_ratio
            scraped(server, collection, error_ratio)
        source = write_vectors(
            tmp_path / f"{version}.parquet", np.arange(N), unit_vectors(rng, N, DIM)
        )
        path = write_release(
            tmp_path / f"{version}.yaml", release_yaml(backend, version, source, **spec)
        )
        r = embrel(*state, "apply", "-f", str(path), cwd=tmp_path)
        status = json.loads(
            embrel(*state, "status", "products", "-o", "json", cwd=tmp_path, check=True).stdout
        )
        return r.returncode, r.stdout + r.stderr, status

    return apply, server.url


def analysis(url: str, **metric: object) -> dict[str, object]:
    spec = {"name": "errors", "query": QUERY, "interval": "1s", "count": 2} | metric
    return {"analysis": {"address": url, "metrics": [spec]}}


def check(status: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = next(
        c for c in status["validation"]["checks"] if c["name"] == "analysis/errors"
    )
    return found


def test_a_failing_pre_promotion_analysis_leaves_the_alias_untouched(
    track: Any, backend: Backend
) -> None:
    apply, url = track
    assert apply("v1")[0] == 0
    code, output, status = apply("v2", 0.2, **analysis(url, successCondition="result < 0.05"))
    assert code == 1, output
    assert status["phase"] == Phase.FAILED
    assert backend.alias_target() == f"{backend.alias}__v1"
    assert check(status)["outcome"] == "Failed" and check(status)["value"] == 0.2
    assert check(status)["metrics"]["measurements"] == 1, "decided at the first failure"


def test_a_passing_pre_promotion_analysis_promotes(track: Any, backend: Backend) -> None:
    apply, url = track
    code, output, status = apply("v1", 0.01, **analysis(url, successCondition="result < 0.05"))
    assert code == 0, output
    assert backend.alias_target() == f"{backend.alias}__v1"
    assert check(status)["outcome"] == "Passed" and check(status)["metrics"]["measurements"] == 2


def test_a_query_without_data_is_an_error_within_its_limit(track: Any, backend: Backend) -> None:
    apply, url = track
    metric = analysis(url, query='max(search_error_ratio{collection="nothing"})', count=3)
    metric["analysis"]["metrics"][0] |= {
        "successCondition": "result < 1",
        "consecutiveErrorLimit": 1,
    }  # type: ignore[index]
    code, output, status = apply("v1", **metric)
    assert code == 1, output
    assert check(status)["outcome"] == "Failed" and "no series" in check(status)["detail"]
    assert check(status)["metrics"]["error"] == 2
    assert backend.alias_target() is None


def test_a_failing_post_promotion_analysis_rolls_back(track: Any, backend: Backend) -> None:
    apply, url = track
    assert apply("v1")[0] == 0
    spec = analysis(url, failureCondition="result > 0.1", phase="postPromotion")
    promotion = {"postPromotion": {"watchSeconds": 60}}
    code, output, status = apply("v2", 0.3, promotion=promotion, **spec)
    assert code == 3, output
    assert status["phase"] == Phase.ROLLED_BACK, status["message"]
    assert "post-promotion check failed: analysis/errors" in status["message"]
    assert backend.alias_target() == f"{backend.alias}__v1"
    assert status["cutover"]["verified"] and status["cutover"]["rollback"]


# -- the application's metrics (examples/analysis/search_metrics.py) ---------------------

ZERO_RESULT_RATE = (
    'sum(rate(search_zero_results_total{alias="{{alias}}", version="{{version}}"}[5s]))'
    ' / sum(rate(search_requests_total{alias="{{alias}}", version="{{version}}"}[5s]))'
)


@dataclass
class _Answer:
    hits: list[dict[str, Any]]
    version: str | None


class Traffic:
    """The application: answers served by ``version`` of ``alias``, ``zero_share`` of
    them with no hit above the relevance score, 40 a second, counted by SearchMetrics."""

    def __init__(self, app: SearchMetrics, alias: str) -> None:
        self.app, self.alias = app, alias
        self.zero_share: dict[str, float] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        tick = 0
        while not self.stop.wait(0.025):
            tick += 1
            for version, share in list(self.zero_share.items()):
                empty = (tick % 20) < round(share * 20)
                hits = [{"id": 1, "distance": 0.1 if empty else 0.9}]
                self.app.observe(self.alias, [_Answer(hits, version)], 0.004)


@pytest.fixture
def traffic(backend: Backend, prometheus: Any) -> Iterator[Traffic]:
    _, exporter = prometheus
    flow = Traffic(exporter.app, backend.alias)
    try:
        yield flow
    finally:
        flow.stop.set()
        flow.thread.join(timeout=5)


def serving(server: PrometheusServer, traffic: Traffic, version: str, share: float) -> None:
    """Start ``version``'s answers and wait until Prometheus' zero-result rate shows them."""
    traffic.zero_share[version] = share
    expr = ZERO_RESULT_RATE.replace("{{alias}}", traffic.alias).replace("{{version}}", version)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        result = server.query(expr)
        if result and abs(float(result[0]["value"][1]) - share) < 0.1:
            return
        time.sleep(0.3)
    raise AssertionError(f"Prometheus never showed {expr} near {share}")


def zero_results(url: str, **metric: object) -> dict[str, object]:
    spec = {"name": "zero-results", "query": ZERO_RESULT_RATE, "interval": "1s", "count": 2}
    return {"analysis": {"address": url, "metrics": [spec | metric]}}


def named(status: dict[str, Any], name: str = "analysis/zero-results") -> dict[str, Any]:
    found: dict[str, Any] = next(c for c in status["validation"]["checks"] if c["name"] == name)
    return found


AFTER_THE_FLIP = {"phase": "postPromotion", "failureCondition": "result > 0.5"}
WATCH = {"postPromotion": {"watchSeconds": 60}}


def test_the_application_metrics_roll_back_a_version_that_answers_empty(
    track: Any, backend: Backend, traffic: Traffic, prometheus: Any
) -> None:
    apply, url = track
    assert apply("v1")[0] == 0
    serving(prometheus[0], traffic, "v2", 0.8)
    code, output, status = apply("v2", promotion=WATCH, **zero_results(url, **AFTER_THE_FLIP))
    assert code == 3, output
    assert status["phase"] == Phase.ROLLED_BACK, status["message"]
    assert "analysis/zero-results" in status["message"]
    assert backend.alias_target() == f"{backend.alias}__v1"
    assert status["cutover"]["verified"] and status["cutover"]["rollback"]


def test_the_application_metrics_keep_a_version_that_answers(
    track: Any, backend: Backend, traffic: Traffic, prometheus: Any
) -> None:
    apply, url = track
    assert apply("v1")[0] == 0
    serving(prometheus[0], traffic, "v2", 0.0)
    code, output, status = apply("v2", promotion=WATCH, **zero_results(url, **AFTER_THE_FLIP))
    assert code == 0, output
    assert status["phase"] == Phase.LIVE, status["message"]
    assert backend.alias_target() == f"{backend.alias}__v2"


def test_a_dry_run_metric_is_reported_and_never_decides(
    track: Any, backend: Backend, traffic: Traffic, prometheus: Any
) -> None:
    apply, url = track
    serving(prometheus[0], traffic, "v1", 0.8)
    spec = zero_results(url, successCondition="result < 0.1", dryRun=True)
    code, output, status = apply("v1", **spec)
    assert code == 0, output
    assert backend.alias_target() == f"{backend.alias}__v1"
    check = named(status)
    assert check["outcome"] == "Reported" and "would be Failed" in check["detail"], check


def test_an_inconclusive_metric_waits_for_a_person(
    tmp_path: Path, track: Any, backend: Backend, traffic: Traffic, prometheus: Any
) -> None:
    """0.3 is neither a success (< 0.1) nor a failure (> 0.5): Inconclusive beyond
    inconclusiveLimit, so the release waits; `embrel promote` then flips."""
    apply, url = track
    assert apply("v1")[0] == 0
    serving(prometheus[0], traffic, "v2", 0.3)
    spec = zero_results(url, successCondition="result < 0.1", failureCondition="result > 0.5")
    code, output, status = apply("v2", **spec)
    assert code == 3, output
    assert status["phase"] == Phase.AWAITING_PROMOTION, status["message"]
    assert named(status)["outcome"] == "Inconclusive"
    assert backend.alias_target() == f"{backend.alias}__v1"
    state = ("--state-dir", str(tmp_path / "state"))
    promoted = embrel(*state, "promote", "products", cwd=tmp_path)
    assert promoted.returncode == 0, promoted.stdout + promoted.stderr
    assert backend.alias_target() == f"{backend.alias}__v2"


def test_an_unreachable_prometheus_counts_as_errors_not_failures(
    track: Any, backend: Backend
) -> None:
    """Errors within consecutiveErrorLimit fail nothing; a metric that measured nothing
    cannot pass either: Inconclusive, the alias untouched until a person decides."""
    apply, _ = track
    spec = zero_results("http://127.0.0.1:1", successCondition="result < 0.1")
    code, output, status = apply("v1", **spec)
    assert code == 3, output
    check = named(status)
    assert check["outcome"] == "Inconclusive", check
    assert check["metrics"]["error"] == 2 and check["metrics"]["failed"] == 0, check
    assert backend.alias_target() is None
