"""charts/embrel rendered without a helm binary (helm-python-sdk binds Helm's Go SDK)."""

import json
import shutil
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import kmock
import pytest
import yaml

from controller import manifests
from controller.config import ControllerConfig
from controller.crd import custom_resource_definition
from tests.support.kube_api import ALL_VERBS, EMBREL, KubeApiServer
from tests.support.manifests import (
    CHART,
    MANIFESTS,
    ROOT,
    kube_problems,
    load_file,
    load_objects,
)
from tests.unit.test_manifests import (
    LEASE_RULES,
    RELEASE_RULES,
    controller_args,
    kustomize_build,
    pod_images,
    pod_problems,
    with_monitoring,
)

# Labels and annotations only Helm adds; everything else must equal manifests/.
HELM_ONLY_LABELS = {"helm.sh/chart", "app.kubernetes.io/managed-by", "app.kubernetes.io/version"}
HELM_ONLY_ANNOTATIONS = {"checksum/config"}

SCENARIOS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "watch-namespaces": {"watchNamespaces": ["search", "recsys"]},
    "metrics-disabled": {"metrics": {"enabled": False, "port": 8080}},
    # Where the Prometheus Operator's CRDs are installed.
    "monitoring": {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}},
    "monitoring-without-metrics": {
        "metrics": {"enabled": False, "port": 8080},
        "serviceMonitor": {"enabled": True},
        "prometheusRule": {"enabled": True},
    },
    # The state folder on a PersistentVolumeClaim: the chart's, or one of your own.
    "persistence": {"replicaCount": 1, "persistence": {"enabled": True}},
    "persistence-existing-claim": {
        "replicaCount": 1,
        "persistence": {"enabled": True, "existingClaim": "embrel-state-mine"},
    },
    "persistence-shared": {
        "persistence": {"enabled": True, "accessMode": "ReadWriteMany", "storageClass": "nfs"}
    },
}
MONITORING = SCENARIOS["monitoring"]


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
    # A bare cluster: nothing that needs the Prometheus Operator's CRDs.
    assert kinds["defaults"] == [
        "ClusterRole",
        "ClusterRoleBinding",
        "ConfigMap",
        "Deployment",
        "Role",
        "RoleBinding",
        "Service",
        "ServiceAccount",
    ]
    assert kinds["monitoring"] == sorted([*kinds["defaults"], "PrometheusRule", "ServiceMonitor"])
    assert "ClusterRole" not in kinds["watch-namespaces"]
    assert not {"Service", "ServiceMonitor", "PrometheusRule"} & set(kinds["metrics-disabled"])
    assert kinds["monitoring-without-metrics"] == kinds["metrics-disabled"]


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


def _state_volume(objs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    (deployment,) = objs["Deployment"]
    volumes = deployment["spec"]["template"]["spec"]["volumes"]
    (state,) = [v for v in volumes if v["name"] == "state"]
    return dict(state)


def test_without_persistence_the_state_is_an_emptydir(chart: helm.Chart) -> None:
    objs = by_kind(render(chart, {}))
    assert _state_volume(objs) == {"name": "state", "emptyDir": {"sizeLimit": "4Gi"}}
    assert "PersistentVolumeClaim" not in objs
    assert "strategy" not in objs["Deployment"][0]["spec"], "a rolling update, as before"


def test_persistence_puts_the_state_on_a_claim_mounted_by_one_pod(chart: helm.Chart) -> None:
    values = {"replicaCount": 1, "persistence": {"enabled": True, "storageClass": "fast"}}
    objs = by_kind(render(chart, values))
    (claim,) = objs["PersistentVolumeClaim"]
    assert claim["metadata"]["name"] == "embrel-state"
    assert claim["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
    assert claim["spec"] == {
        "accessModes": ["ReadWriteOnce"],
        "storageClassName": "fast",
        "resources": {"requests": {"storage": "8Gi"}},
    }
    assert _state_volume(objs) == {
        "name": "state",
        "persistentVolumeClaim": {"claimName": "embrel-state"},
    }
    assert objs["Deployment"][0]["spec"]["strategy"] == {"type": "Recreate"}
    mounts = objs["Deployment"][0]["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
    assert {"name": "state", "mountPath": "/var/lib/embrel"} in mounts


def test_persistence_with_an_existing_or_a_shared_claim(chart: helm.Chart) -> None:
    objs = by_kind(render(chart, SCENARIOS["persistence-existing-claim"]))
    assert "PersistentVolumeClaim" not in objs
    assert _state_volume(objs)["persistentVolumeClaim"] == {"claimName": "embrel-state-mine"}
    assert objs["Deployment"][0]["spec"]["strategy"] == {"type": "Recreate"}
    objs = by_kind(render(chart, SCENARIOS["persistence-shared"]))
    assert objs["PersistentVolumeClaim"][0]["spec"]["accessModes"] == ["ReadWriteMany"]
    assert objs["Deployment"][0]["spec"]["replicas"] == 2
    assert "strategy" not in objs["Deployment"][0]["spec"]


def test_a_single_pod_volume_with_two_replicas_is_refused(chart: helm.Chart) -> None:
    with pytest.raises(helm.HelmRenderError, match=r"persistence\.accessMode ReadWriteOnce"):
        render(chart, {"persistence": {"enabled": True}})  # replicaCount 2 by default


@pytest.mark.parametrize(
    ("values", "error"),
    [
        ({"replicaCount": "two"}, "/replicaCount"),
        ({"imageTag": "v2"}, "imageTag"),
        ({"watchNamespaces": ["Search"]}, "/watchNamespaces/0"),
        ({"config": {"build": {"batchSize": 0}}}, "/config/build/batchSize"),
        ({"config": {"log": {"level": "LOUD"}}}, "/config/log/level"),
        ({"metrics": {"enabled": True, "port": 70000}}, "/metrics/port"),
        ({"persistence": {"enabled": "yes"}}, "/persistence/enabled"),
        ({"persistence": {"enabled": True, "size": "lots"}}, "/persistence/size"),
        ({"persistence": {"enabled": True, "accessMode": "RWO"}}, "/persistence/accessMode"),
        ({"persistence": {"enabled": True, "existingClaim": "My_Claim"}}, "existingClaim"),
        ({"persistence": {"enabled": True, "sizeLimit": "1Gi"}}, "sizeLimit"),
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
    (rule,) = by_kind(render(chart, MONITORING))["PrometheusRule"]
    source = yaml.safe_load((MANIFESTS / "alerts" / "embrel-rules.yaml").read_text())
    assert rule["spec"] == source
    (static,) = load_file(MANIFESTS / "monitoring" / "prometheusrule.yaml")
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


@pytest.mark.parametrize("with_operator", [False, True], ids=["bare", "monitoring"])
def test_chart_with_defaults_equals_the_static_manifests(
    chart: helm.Chart, with_operator: bool, tmp_path: Path
) -> None:
    """kubectl apply -k and helm install install the same objects, with monitoring or not."""
    values = MONITORING if with_operator else {}
    rendered = {(o["kind"], o["metadata"]["name"]): _comparable(o) for o in render(chart, values)}
    static = {}
    built = kustomize_build(with_monitoring(tmp_path) if with_operator else MANIFESTS)
    for obj in built:
        if obj["kind"] in ("Namespace", "CustomResourceDefinition"):  # --create-namespace, crds/
            continue
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


def test_chart_runs_the_image_that_make_image_builds(chart: helm.Chart) -> None:
    for values in SCENARIOS.values():
        assert pod_images(render(chart, values)) == {manifests.image_reference(ROOT)}


# -- installing on a cluster: every object applied to the API emulator ------------------

# Kinds every cluster serves: (group, version, plural, namespaced).
BUILT_IN = {
    "Namespace": ("", "v1", "namespaces", False),
    "ServiceAccount": ("", "v1", "serviceaccounts", True),
    "ConfigMap": ("", "v1", "configmaps", True),
    "Secret": ("", "v1", "secrets", True),
    "Service": ("", "v1", "services", True),
    "Deployment": ("apps", "v1", "deployments", True),
    "PersistentVolumeClaim": ("", "v1", "persistentvolumeclaims", True),
    "ClusterRole": ("rbac.authorization.k8s.io", "v1", "clusterroles", False),
    "ClusterRoleBinding": ("rbac.authorization.k8s.io", "v1", "clusterrolebindings", False),
    "Role": ("rbac.authorization.k8s.io", "v1", "roles", True),
    "RoleBinding": ("rbac.authorization.k8s.io", "v1", "rolebindings", True),
    "CustomResourceDefinition": (
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        False,
    ),
}
# What the Prometheus Operator's CRDs add.
OPERATOR_KINDS = {
    "ServiceMonitor": ("monitoring.coreos.com", "v1", "servicemonitors", True),
    "PrometheusRule": ("monitoring.coreos.com", "v1", "prometheusrules", True),
}
# The order kubectl and Helm create kinds in: namespaces, then CRDs, then the rest.
FIRST = ("Namespace", "CustomResourceDefinition")


class Cluster:
    """The API emulator as a bare cluster: built-in kinds, and those its CRDs add."""

    def __init__(self, server: KubeApiServer, with_operator: bool = False) -> None:
        self.server = server
        self.kinds: dict[str, tuple[str, str, str, bool]] = {}
        # The emulator serves EmbeddingRelease from the start; a bare cluster only
        # once the CRD is applied.
        del server.emulator.resources[EMBREL]
        for kind, where in (BUILT_IN | (OPERATOR_KINDS if with_operator else {})).items():
            self._serve(kind, where)
        self.namespaces = {"default"}

    def _serve(self, kind: str, where: tuple[str, str, str, bool]) -> None:
        group, version, plural, namespaced = where
        resource = kmock.resource(group, version, plural)
        self.server.emulator.resources[resource] = kmock.ResourceInfo(
            kind=kind, singular=kind.lower(), namespaced=namespaced, verbs=ALL_VERBS
        )
        self.kinds[kind] = where

    def apply(self, objs: list[dict[str, Any]]) -> list[str]:
        """Create every object as `kubectl apply` would; the problems the server answers."""
        ordered = sorted(objs, key=lambda o: FIRST.index(o["kind"]) if o["kind"] in FIRST else 2)
        return [p for obj in ordered for p in self._create(obj)]

    def _create(self, obj: dict[str, Any]) -> list[str]:
        kind, meta = obj["kind"], obj["metadata"]
        where = f"{kind}/{meta['name']}"
        if kind not in self.kinds:
            return [f"{where}: no matches for kind {kind!r} in version {obj['apiVersion']!r}"]
        group, version, plural, namespaced = self.kinds[kind]
        if obj["apiVersion"] != (f"{group}/{version}" if group else version):
            return [f"{where}: apiVersion {obj['apiVersion']} is not served"]
        prefix = f"/apis/{group}/{version}" if group else f"/api/{version}"
        if namespaced:
            namespace = meta.get("namespace", "default")
            if namespace not in self.namespaces:
                return [f'{where}: namespaces "{namespace}" not found']
            prefix += f"/namespaces/{namespace}"
        elif "namespace" in meta:
            return [f"{where}: a cluster-scoped object names namespace {meta['namespace']}"]
        request = urllib.request.Request(
            f"{self.server.url}{prefix}/{plural}",
            data=json.dumps(obj).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                status = response.status
        except urllib.error.HTTPError as exc:
            return [f"{where}: {exc.code} {exc.reason}: {exc.read().decode()}"]
        if status != 201:
            return [f"{where}: answered {status}, not 201 Created"]
        if kind == "Namespace":
            self.namespaces.add(meta["name"])
        if kind == "CustomResourceDefinition":
            self._serve_crd(obj)
        return []

    def _serve_crd(self, crd: dict[str, Any]) -> None:
        spec = crd["spec"]
        (version,) = [v["name"] for v in spec["versions"] if v["served"]]
        names = spec["names"]
        self._serve(
            names["kind"], (spec["group"], version, names["plural"], spec["scope"] == "Namespaced")
        )

    def stored(self) -> set[tuple[str, str | None, str]]:
        """(kind, namespace, name) of every object the server holds."""
        return {
            (self.server.emulator.resources[res].kind, ns, name)
            for (res, ns, name), obj in self.server.emulator.objects.items()
            if not obj.deleted
        }


@pytest.fixture
def cluster() -> Iterator[KubeApiServer]:
    server = KubeApiServer().start()
    try:
        yield server
    finally:
        server.stop()


def identities(objs: list[dict[str, Any]]) -> set[tuple[str, str | None, str]]:
    return {(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in objs}


FIRST_RELEASE = [
    ROOT / "examples/kube/milvus-credentials-secret.yaml",
    ROOT / "examples/kube/products.yaml",
]


def first_release() -> list[dict[str, Any]]:
    """`kubectl create namespace search` and the example release with its Secret."""
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "search"}}
    return [namespace, *(obj for path in FIRST_RELEASE for obj in load_file(path))]


@pytest.mark.parametrize("with_operator", [False, True], ids=["bare", "monitoring"])
def test_kustomize_install_is_accepted_then_a_first_release(
    cluster: KubeApiServer, with_operator: bool, tmp_path: Path
) -> None:
    """kubectl apply -k manifests/ (with the monitoring Component where the Prometheus
    Operator is), then the example release: the server accepts every object."""
    target = Cluster(cluster, with_operator)
    objs = kustomize_build(with_monitoring(tmp_path) if with_operator else MANIFESTS)
    assert target.apply(objs) == []
    assert target.apply(first_release()) == []
    assert identities(objs) | identities(first_release()) <= target.stored()


@pytest.mark.parametrize("scenario", ["defaults", "monitoring", "persistence"])
def test_helm_install_is_accepted_then_a_first_release(
    cluster: KubeApiServer, chart: helm.Chart, scenario: str
) -> None:
    """helm install embrel charts/embrel -n embrel --create-namespace: crds/ first."""
    target = Cluster(cluster, with_operator=scenario == "monitoring")
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "embrel"}}
    crds = [yaml.safe_load(crd["data"]) for crd in chart.crds]
    objs = render(chart, SCENARIOS[scenario])
    assert target.apply([namespace, *crds, *objs]) == []
    assert target.apply(first_release()) == []
    assert identities(objs) | identities(crds) <= target.stored()


def test_monitoring_on_a_bare_cluster_is_refused(
    cluster: KubeApiServer, chart: helm.Chart, tmp_path: Path
) -> None:
    """What the optional Component and values avoid: no Prometheus Operator, no kinds."""
    target = Cluster(cluster)
    problems = target.apply(kustomize_build(with_monitoring(tmp_path)))
    assert problems == [
        "ServiceMonitor/embrel: no matches for kind 'ServiceMonitor' in version 'monitoring.coreos.com/v1'",
        "PrometheusRule/embrel: no matches for kind 'PrometheusRule' in version 'monitoring.coreos.com/v1'",
    ]


def test_a_release_before_the_crd_is_refused(cluster: KubeApiServer) -> None:
    """The emulator serves EmbeddingRelease only once the CRD is applied, like a cluster."""
    problems = Cluster(cluster).apply(first_release())
    assert problems == [
        "EmbeddingRelease/products: no matches for kind 'EmbeddingRelease' in version 'embrel.dev/v1alpha1'"
    ]
