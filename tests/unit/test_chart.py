"""charts/embrel rendered without a helm binary (helm-python-sdk binds Helm's Go SDK)."""

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml

from controller import manifests
from controller.config import ControllerConfig
from controller.crd import custom_resource_definition
from tests.support.manifests import CHART, MANIFESTS, kube_problems, load_file, load_objects
from tests.unit.test_manifests import LEASE_RULES, RELEASE_RULES, controller_args, pod_problems

# Labels and annotations only Helm adds; everything else must equal manifests/.
HELM_ONLY_LABELS = {"helm.sh/chart", "app.kubernetes.io/managed-by", "app.kubernetes.io/version"}
HELM_ONLY_ANNOTATIONS = {"checksum/config"}

SCENARIOS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "watch-namespaces": {"watchNamespaces": ["search", "recsys"]},
    "metrics-disabled": {"metrics": {"enabled": False, "port": 8080}},
}


@pytest.fixture(scope="module")
def chart() -> Iterator[helm.Chart]:
    with helm.Chart.load(CHART) as loaded:
        yield loaded


def render(
    chart: helm.Chart, values: dict[str, Any], name: str = "embrel", namespace: str = "embrel"
) -> list[dict[str, Any]]:
    out = chart.render(values, name=name, namespace=namespace)
    return [
        obj
        for path, text in sorted(out.items())
        if not path.endswith("NOTES.txt")
        for obj in load_objects(text)
    ]


def by_kind(objs: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for obj in objs:
        out.setdefault(obj["kind"], []).append(obj)
    return out


def chart_problems(chart_dir: Path, values: dict[str, Any]) -> list[str]:
    """Lint, render and validate every object: what a broken template must fail."""
    report = helm.lint(chart_dir, values, strict=True, namespace="embrel")
    problems = [m["error"] for m in report["messages"] if m["severity"] >= 2] + report["errors"]
    with helm.Chart.load(chart_dir) as loaded:
        for obj in render(loaded, values):
            problems += kube_problems(obj, f"{obj['kind']}/{obj['metadata']['name']}")
            if obj["kind"] == "Deployment":
                problems += pod_problems(obj)
    return problems


@pytest.mark.parametrize("values", SCENARIOS.values(), ids=SCENARIOS.keys())
def test_chart_lints_renders_and_validates(values: dict[str, Any]) -> None:
    assert chart_problems(CHART, values) == []


def test_a_broken_template_fails(tmp_path: Path) -> None:
    copy = tmp_path / "embrel"
    shutil.copytree(CHART, copy)
    template = copy / "templates" / "deployment.yaml"
    template.write_text(template.read_text().replace("containerPort:", "containerport:"))
    problems = chart_problems(copy, {})
    assert any("ports.0: 'containerPort' is a required property" in p for p in problems), problems


def test_kinds_per_scenario(chart: helm.Chart) -> None:
    kinds = {name: sorted(by_kind(render(chart, v))) for name, v in SCENARIOS.items()}
    assert kinds["defaults"] == [
        "ClusterRole",
        "ClusterRoleBinding",
        "ConfigMap",
        "Deployment",
        "PrometheusRule",
        "Role",
        "RoleBinding",
        "Service",
        "ServiceAccount",
        "ServiceMonitor",
    ]
    assert "ClusterRole" not in kinds["watch-namespaces"]
    assert not {"Service", "ServiceMonitor", "PrometheusRule"} & set(kinds["metrics-disabled"])


def test_watch_namespaces_get_a_role_each_and_a_flag_each(chart: helm.Chart) -> None:
    objs = by_kind(render(chart, SCENARIOS["watch-namespaces"], namespace="ops"))
    roles = {(r["metadata"]["namespace"], r["metadata"]["name"]): r for r in objs["Role"]}
    assert roles["search", "embrel"]["rules"] == RELEASE_RULES
    assert roles["recsys", "embrel"]["rules"] == RELEASE_RULES
    assert roles["ops", "embrel-leader-election"]["rules"] == LEASE_RULES
    assert len(roles) == 3
    for binding in objs["RoleBinding"]:
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "embrel", "namespace": "ops"}
        ]
    args = controller_args(objs["Deployment"][0])
    assert (args.namespace, args.leader_elect) == (["search", "recsys"], True)


def test_cluster_wide_rbac_is_least_privilege(chart: helm.Chart) -> None:
    objs = by_kind(render(chart, {}))
    (cluster_role,) = objs["ClusterRole"]
    assert cluster_role["rules"] == RELEASE_RULES
    (role,) = objs["Role"]
    assert role["rules"] == LEASE_RULES


def test_single_replica_without_leader_election(chart: helm.Chart) -> None:
    values = {"replicaCount": 1, "leaderElection": {"enabled": False}}
    objs = by_kind(render(chart, values))
    args = controller_args(objs["Deployment"][0])
    assert (args.leader_elect, args.lease_namespace) == (False, None)
    assert "Role" not in objs  # no Lease to take
    with pytest.raises(helm.HelmRenderError, match="leaderElection"):
        render(chart, {"replicaCount": 2, "leaderElection": {"enabled": False}})


@pytest.mark.parametrize(
    ("values", "error"),
    [
        ({"replicaCount": "two"}, "/replicaCount"),
        ({"imageTag": "v2"}, "imageTag"),
        ({"watchNamespaces": ["Search"]}, "/watchNamespaces/0"),
        ({"config": {"build": {"batchSize": 0}}}, "/config/build/batchSize"),
        ({"config": {"log": {"level": "LOUD"}}}, "/config/log/level"),
        ({"metrics": {"enabled": True, "port": 70000}}, "/metrics/port"),
    ],
)
def test_bad_values_are_refused_by_the_schema(
    chart: helm.Chart, values: dict[str, Any], error: str
) -> None:
    with pytest.raises(helm.HelmValuesError, match=error):
        chart.render(values, name="embrel", namespace="embrel")


def test_rendered_config_is_a_valid_controller_config(chart: helm.Chart) -> None:
    (config_map,) = by_kind(render(chart, {}))["ConfigMap"]
    config = ControllerConfig.model_validate(yaml.safe_load(config_map["data"]["config.yaml"]))
    assert str(config.state_dir) == "/var/lib/embrel"


def test_chart_crd_is_the_generated_crd(chart: helm.Chart) -> None:
    (crd,) = chart.crds
    assert yaml.safe_load(crd["data"]) == custom_resource_definition()


def test_prometheus_rule_carries_the_alert_rules(chart: helm.Chart) -> None:
    (rule,) = by_kind(render(chart, {}))["PrometheusRule"]
    source = yaml.safe_load((MANIFESTS / "alerts" / "embrel-rules.yaml").read_text())
    assert rule["spec"] == source
    (static,) = load_file(MANIFESTS / "prometheusrule.yaml")
    assert static["spec"] == source


def _comparable(obj: dict[str, Any]) -> dict[str, Any]:
    """Drop what only Helm adds; parse the config so formatting does not matter."""
    obj = yaml.safe_load(yaml.safe_dump(obj))
    meta = obj["metadata"]
    labels = {k: v for k, v in meta.get("labels", {}).items() if k not in HELM_ONLY_LABELS}
    meta["labels"] = labels
    template = obj.get("spec", {}).get("template", {}).get("metadata", {})
    annotations = {
        k: v for k, v in template.get("annotations", {}).items() if k not in HELM_ONLY_ANNOTATIONS
    }
    if template:
        template["annotations"] = annotations
    if obj["kind"] == "ConfigMap":
        obj["data"] = {k: yaml.safe_load(v) for k, v in obj["data"].items()}
    return obj


def test_chart_with_defaults_equals_the_static_manifests(chart: helm.Chart) -> None:
    """kubectl apply -k manifests/ and helm install embrel installs the same objects."""
    rendered = {(o["kind"], o["metadata"]["name"]): _comparable(o) for o in render(chart, {})}
    names = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())["resources"]
    static = {}
    for name in names:
        if name in ("namespace.yaml", "crd.yaml"):  # helm: --create-namespace, crds/
            continue
        for obj in load_file(MANIFESTS / name):
            static[obj["kind"], obj["metadata"]["name"]] = _comparable(obj)
    for obj in static.values():
        obj["metadata"]["labels"].pop("app.kubernetes.io/instance", None)
    for obj in rendered.values():
        obj["metadata"]["labels"].pop("app.kubernetes.io/instance", None)
    assert sorted(rendered) == sorted(static)
    for key in static:
        assert rendered[key] == static[key], key


def test_generated_chart_files_have_their_source(chart: helm.Chart) -> None:
    files = {f["name"]: f["data"] for f in chart.files}
    assert files["files/embrel-rules.yaml"] == (MANIFESTS / "alerts/embrel-rules.yaml").read_text()
    assert chart.schema == manifests.values_schema()
