"""The alert rules: promtool accepts them, their unit tests pass (each alert firing and
not firing), and they only refer to metrics the controller exports."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.promql import problems

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "manifests" / "alerts" / "embrel-rules.yaml"
RULE_TESTS = Path(__file__).with_name("embrel-rules.test.yaml")
DOCS = REPO / "docs" / "observability.md"
ALERTS = {
    "EmbeddingDriftHigh",
    "EmbeddingReleaseFailed",
    "EmbeddingReleaseStuck",
    "EmbeddingRollback",
    "EmbeddingControllerDown",
}


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is not installed: `make test` installs the Debian package prometheus")
    return path


def rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def alerts() -> dict[str, dict[str, Any]]:
    return {r["alert"]: r for r in rules() if "alert" in r}


def test_promtool_checks_the_rules() -> None:
    out = subprocess.run(
        [promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(rules())} rules found" in out.stdout


def test_promtool_unit_tests_pass() -> None:
    out = subprocess.run(
        [promtool(), "test", "rules", RULE_TESTS.name],
        cwd=RULE_TESTS.parent,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


def test_every_alert_is_tested_firing_and_not_firing() -> None:
    doc = yaml.safe_load(RULE_TESTS.read_text())
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in doc["tests"]:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    assert set(alerts()) == ALERTS
    assert firing == ALERTS, f"no firing case for {ALERTS - firing}"
    assert quiet == ALERTS, f"no not-firing case for {ALERTS - quiet}"


def test_alerts_say_what_and_where() -> None:
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        for line in DOCS.read_text().splitlines()
        if line.startswith("#")
    }
    for name, rule in alerts().items():
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, name
        notes = rule["annotations"]
        assert notes["summary"] and notes["description"], name
        anchor = notes["runbook_url"].split("#", 1)[1]
        assert notes["runbook_url"] == f"docs/observability.md#{anchor}", name
        assert anchor in anchors, f"{name}: docs/observability.md has no section #{anchor}"
        if name != "EmbeddingControllerDown":  # no release to name when nothing runs
            assert "$labels.release" in notes["description"], name
            assert "$labels.version" in notes["description"], name


def test_rules_refer_only_to_exported_metrics() -> None:
    recorded = {r["record"]: frozenset() for r in rules() if "record" in r}
    found = []
    for rule in rules():
        where = rule.get("alert") or rule.get("record")
        if rule.get("record"):
            continue  # constants such as vector(3600)
        found += problems(str(rule["expr"]), where, recorded, frozenset({"metric"}))
    assert found == []


def test_the_checker_catches_unknown_names() -> None:
    """The check above would notice a typo in a metric or label name."""
    assert problems('embrel_drift_mmdd{namespace="a"}', "x")
    assert problems('embrel_drift_mmd{namspace="a"}', "x")
    assert problems("sum by (relase) (embrel_drift_mmd)", "x")
    assert problems('sum by (release) (embrel_drift_mmd{namespace="$ns"})', "x") == []
