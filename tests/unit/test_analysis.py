"""spec.analysis: conditions, limits, templates and the spec's errors (pure)."""

from __future__ import annotations

import json
import math
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from pydantic import ValidationError

from controller.analysis import (
    Limits,
    Measured,
    Measurement,
    QueryFailed,
    judge_value,
    parse_condition,
    render_query,
    summarise,
    verdict,
)
from controller.prometheus import PrometheusQuery, _number
from controller.secrets import env_secrets
from controller.spec import AnalysisSpec
from controller.validation.results import Outcome
from tests.support.specs import minimal_release, spec_error

OK, BAD, UNSURE, ERR = (
    Measurement(0.01, Measured.SUCCESSFUL),
    Measurement(0.5, Measured.FAILED),
    Measurement(0.07, Measured.INCONCLUSIVE),
    Measurement(None, Measured.ERROR, "no series"),
)


@pytest.mark.parametrize(
    ("text", "value", "holds"),
    [
        ("result < 0.05", 0.01, True),
        ("result < 0.05", 0.05, False),
        ("result[0] >= 0.9", 0.9, True),
        ("result != 1", 2.0, True),
        ("result == -1e-3", -0.001, True),
        ("result > .5", 0.4, False),
        ("result != 1", math.nan, False),  # NaN satisfies nothing
    ],
)
def test_conditions(text: str, value: float, holds: bool) -> None:
    assert parse_condition(text).holds(value) is holds


@pytest.mark.parametrize("text", ["result < x", "len(result) > 0", "result <", "__import__('os')"])
def test_anything_but_a_comparison_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="must read `result <op> <number>`"):
        parse_condition(text)


def test_a_measurement_is_judged_on_both_conditions() -> None:
    assert judge_value(0.01, "result < 0.05", None) == Measured.SUCCESSFUL
    assert judge_value(0.07, "result < 0.05", None) == Measured.FAILED
    assert judge_value(0.07, "result < 0.05", "result > 0.1") == Measured.INCONCLUSIVE
    assert judge_value(0.2, "result < 0.05", "result > 0.1") == Measured.FAILED
    assert judge_value(0.2, None, "result > 0.1") == Measured.FAILED
    assert judge_value(math.nan, "result < 0.05", None) == Measured.FAILED


def test_limits_decide_the_metric() -> None:
    limits = Limits(failure_limit=1, inconclusive_limit=0, consecutive_error_limit=1)
    assert verdict([BAD], limits) is None  # one failure is allowed
    assert verdict([BAD, OK, BAD], limits) == Outcome.FAILED
    assert verdict([ERR], limits) is None
    assert verdict([ERR, ERR], limits) == Outcome.FAILED
    assert verdict([ERR, OK, ERR], limits) is None, "errors must be consecutive"
    assert verdict([UNSURE], limits) == Outcome.INCONCLUSIVE


def test_summary_and_dry_run() -> None:
    limits = Limits(0, 0, 4)
    check = summarise("errors", [OK, BAD], limits, dry_run=False)
    assert check.name == "analysis/errors" and check.outcome == Outcome.FAILED
    assert check.value == 0.5 and check.metrics["failed"] == 1.0
    dry = summarise("errors", [OK, BAD], limits, dry_run=True)
    assert dry.outcome == Outcome.REPORTED and "would be Failed" in dry.detail
    assert summarise("errors", [OK, OK], limits, dry_run=False).outcome == Outcome.PASSED
    # Errors within the limit do not fail; only errors measured nothing: never a pass.
    assert summarise("errors", [ERR, OK], limits, dry_run=False).outcome == Outcome.PASSED
    assert summarise("errors", [ERR], limits, dry_run=False).outcome == Outcome.INCONCLUSIVE


def test_templates_are_filled_per_release() -> None:
    query = 'sum(rate(errors{alias="{{alias}}", collection="{{ candidate }}"}[1m]))'
    rendered = render_query(query, {"alias": "products", "candidate": "products__v2"})
    assert rendered == 'sum(rate(errors{alias="products", collection="products__v2"}[1m]))'


def test_prometheus_answers_become_one_number_or_an_error() -> None:
    assert _number({"resultType": "scalar", "result": [1, "0.25"]}) == 0.25
    assert _number({"resultType": "vector", "result": [{"value": [1, "3"]}]}) == 3.0
    assert math.isnan(_number({"resultType": "vector", "result": [{"value": [1, "NaN"]}]}))
    with pytest.raises(QueryFailed, match="no series"):
        _number({"resultType": "vector", "result": []})
    with pytest.raises(QueryFailed, match="2 series; aggregate"):
        _number({"resultType": "vector", "result": [{"value": [1, "1"]}] * 2})
    with pytest.raises(QueryFailed, match="matrix"):
        _number({"resultType": "matrix", "result": []})


def _spec_error(analysis: dict[str, Any], promotion: dict[str, Any] | None = None) -> str:
    return str(spec_error(minimal_release(analysis=analysis, promotion=promotion or {})))


def test_spec_errors_name_the_field() -> None:
    base = {"address": "http://prom:9090"}
    unknown = _spec_error(
        base
        | {
            "metrics": [
                {"name": "e", "query": "x{v='{{colour}}'}", "successCondition": "result < 1"}
            ]
        }
    )
    assert "spec.analysis.metrics[0]" in unknown and "{{colour}}" in unknown
    none = _spec_error(base | {"metrics": [{"name": "e", "query": "up"}]})
    assert "successCondition, failureCondition or both" in none
    bad = _spec_error(base | {"metrics": [{"name": "e", "query": "up", "successCondition": "up"}]})
    assert "result <op> <number>" in bad
    window = _spec_error(
        base
        | {
            "metrics": [
                {
                    "name": "e",
                    "query": "up",
                    "failureCondition": "result < 1",
                    "phase": "postPromotion",
                }
            ]
        }
    )
    assert "watchSeconds" in window


def _analysis(address: str, **secret: str) -> AnalysisSpec:
    metric = {"name": "e", "query": "up", "successCondition": "result < 1"}
    return AnalysisSpec.model_validate(
        {"address": address, "timeoutSeconds": 2, "metrics": [metric], **secret}
    )


def test_an_unreachable_prometheus_is_a_query_error_without_credentials() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"http://reader:pr0mpass@127.0.0.1:{port}"
    with pytest.raises(QueryFailed) as exc:
        PrometheusQuery().query(_analysis(address), "test", "up")
    assert "pr0mpass" not in str(exc.value) and "***@127.0.0.1" in str(exc.value)


class _Prometheus(BaseHTTPRequestHandler):
    """Answers ``up`` = 1 to a request with the bearer token, 401 without it."""

    TOKEN = "pr0m-t0ken-value"

    def do_GET(self) -> None:
        if self.headers.get("Authorization") == f"Bearer {self.TOKEN}":
            code, body = (
                200,
                {"status": "success", "data": {"resultType": "scalar", "result": [0, "1"]}},
            )
        else:
            code, body = 401, {"status": "error", "error": "unauthorized"}
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_the_secret_is_sent_as_a_bearer_token_and_never_shown() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Prometheus)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    address = f"http://127.0.0.1:{server.server_address[1]}"
    env = {"PROM_TOKEN": _Prometheus.TOKEN}
    try:
        query = PrometheusQuery(env_secrets(env))
        assert query.query(_analysis(address, secretEnv="PROM_TOKEN"), "test", "up") == 1.0
        with pytest.raises(QueryFailed, match="HTTP 401") as refused:
            query.query(_analysis(address), "test", "up")  # no secret named: none sent
        with pytest.raises(QueryFailed, match="secretEnv MISSING is not set") as missing:
            query.query(_analysis(address, secretEnv="MISSING"), "test", "up")
        with pytest.raises(QueryFailed, match="Kubernetes driver only"):
            query.query(_analysis(address, secretRef="prom-token"), "test", "up")
    finally:
        server.shutdown()
    for error in (refused.value, missing.value):
        assert _Prometheus.TOKEN not in str(error)


def test_one_secret_source_for_prometheus() -> None:
    with pytest.raises(ValidationError, match="at most one of secretEnv"):
        _analysis("http://p:9090", secretEnv="A", secretRef="b")
    with pytest.raises(ValidationError, match="NAME of an environment variable"):
        _analysis("http://p:9090", secretEnv="sk-not a name")
