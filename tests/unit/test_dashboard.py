"""The Grafana dashboard: every expression parses (promtool) and refers only to metrics
and labels the controller exports; it covers what a platform team looks at."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.promql import exported, problems, refs

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "manifests" / "grafana" / "embrel-dashboard.json"
# What the dashboard must show: phases, build progress, validation against
# thresholds, drift over time with thresholds, cutovers and rollbacks, Milvus, errors, leader.
REQUIRED = {
    "embrel_release_phase",
    "embrel_release_info",
    "embrel_build_rows_loaded",
    "embrel_build_rows_total",
    "embrel_validation_value",
    "embrel_validation_threshold",
    "embrel_validation_passed",
    "embrel_drift_same_id_cosine",
    "embrel_drift_centroid_distance",
    "embrel_drift_mmd",
    "embrel_drift_canary_overlap",
    "embrel_drift_row_count_change",
    "embrel_drift_query_distance",
    "embrel_drift_threshold",
    "embrel_cutovers_total",
    "embrel_rollbacks_total",
    "embrel_cutover_duration_seconds_bucket",
    "embrel_milvus_request_duration_seconds_bucket",
    "embrel_milvus_request_errors_total",
    "embrel_reconcile_errors_total",
    "embrel_leader",
}
_LABEL_VALUES = re.compile(r"^label_values\((.*),\s*(\w+)\)$")


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for p in items:
        yield p
        yield from panels(p.get("panels", []))


def expressions() -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target, annotation and variable query."""
    d = dashboard()
    out = [
        (f"panel {p['title']!r} {t['refId']}", t["expr"])
        for p in panels(d["panels"])
        for t in p.get("targets", [])
    ]
    out += [
        (f"annotation {a['name']!r}", a["expr"]) for a in d["annotations"]["list"] if "expr" in a
    ]
    for var in d["templating"]["list"]:
        if var["type"] == "query":
            match = _LABEL_VALUES.match(var["query"]["query"])
            assert match, var["query"]
            out.append((f"variable {var['name']}", match.group(1)))
    return out


def test_every_expression_refers_to_exported_metrics() -> None:
    found = [p for where, expr in expressions() for p in problems(expr, where)]
    assert found == []


def test_variables_read_labels_the_metric_has() -> None:
    names = exported()
    for var in dashboard()["templating"]["list"]:
        if var["type"] != "query":
            continue
        match = _LABEL_VALUES.match(var["query"]["query"])
        assert match
        metric = refs(match.group(1))[0].metric
        assert match.group(2) in names[metric], var["name"]


def test_every_expression_parses(tmp_path: Path) -> None:
    """promtool parses each expression as a recording rule (Grafana variables filled in)."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is not installed: `make test` installs the Debian package prometheus")
    rules = []
    for i, (_, expr) in enumerate(expressions()):
        concrete = expr.replace("$__rate_interval", "5m").replace("$namespace", ".*")
        rules.append({"record": f"dashboard:expr_{i}", "expr": concrete.replace("$release", ".*")})
    path = tmp_path / "dashboard-rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    out = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_dashboard_shows_what_the_issue_asks_for() -> None:
    used = {ref.metric for _, expr in expressions() for ref in refs(expr)}
    assert REQUIRED - used == set()


def test_panels_are_well_formed() -> None:
    d = dashboard()
    ids = [p["id"] for p in panels(d["panels"])]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    for p in panels(d["panels"]):
        assert {"x", "y", "w", "h"} <= set(p["gridPos"]), p["title"]
        if p["type"] != "row":
            assert p["datasource"]["uid"] == "${datasource}", p["title"]
            assert p["targets"], p["title"]
    names = {v["name"] for v in d["templating"]["list"]}
    assert names == {"datasource", "namespace", "release"}
