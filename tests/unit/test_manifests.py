"""manifests/ and examples/: valid objects, least-privilege RBAC, a hardened Deployment."""

import argparse
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from controller.cli import _parser
from controller.config import load_config
from tests.support.manifests import (
    MANIFESTS,
    ROOT,
    kube_problems,
    load_file,
    load_objects,
)

TOP_LEVEL = sorted(p for p in MANIFESTS.glob("*.yaml") if p.name != "kustomization.yaml")
EVERY_FILE = [*TOP_LEVEL, MANIFESTS / "argocd" / "argocd-cm-patch.yaml"]
# The namespace-scoped alternative to rbac-cluster.yaml (docs/kubernetes.md).
NOT_IN_KUSTOMIZATION = {"rbac-namespaced.yaml"}

# Exactly what the controller does; nothing more (issue 4).
RELEASE_RULES = [
    {
        "apiGroups": ["embrel.dev"],
        "resources": ["embeddingreleases"],
        "verbs": ["get", "list", "watch", "patch", "update"],
    },
    {
        "apiGroups": ["embrel.dev"],
        "resources": ["embeddingreleases/status"],
        "verbs": ["get", "patch", "update"],
    },
    {
        "apiGroups": ["embrel.dev"],
        "resources": ["embeddingreleases/finalizers"],
        "verbs": ["update"],
    },
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch"]},
    {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]},
]
LEASE_RULES = [
    {
        "apiGroups": ["coordination.k8s.io"],
        "resources": ["leases"],
        "verbs": ["get", "create", "update"],
    }
]


def objects(*names: str) -> dict[tuple[str, str], dict[str, Any]]:
    """(kind, name) -> object, from the named files under manifests/."""
    out = {}
    for name in names:
        for obj in load_file(MANIFESTS / name):
            out[(obj["kind"], obj["metadata"]["name"])] = obj
    return out


def directory_problems(folder: Path) -> list[str]:
    """Every object in every YAML file of ``folder`` against its schema."""
    problems = []
    for path in sorted(folder.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for obj in load_file(path):
            problems += kube_problems(obj, path.name)
    return problems


@pytest.mark.parametrize("path", EVERY_FILE, ids=lambda p: p.name)
def test_every_manifest_validates_strictly(path: Path) -> None:
    objs = load_file(path)
    assert objs, f"{path.name} holds no object"
    for obj in objs:
        assert kube_problems(obj, path.name) == []


def test_a_broken_manifest_fails_validation(tmp_path: Path) -> None:
    shutil.copy(MANIFESTS / "deployment.yaml", tmp_path)
    shutil.copy(MANIFESTS / "service.yaml", tmp_path)
    assert directory_problems(tmp_path) == []
    broken = tmp_path / "deployment.yaml"
    broken.write_text(
        broken.read_text().replace("readOnlyRootFilesystem", "readOnlyRootFileSystem")
    )
    problems = directory_problems(tmp_path)
    assert problems and all("readOnlyRootFileSystem" in p for p in problems), problems


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    assert all((MANIFESTS / name).is_file() for name in listed)
    assert listed == {p.name for p in TOP_LEVEL} - NOT_IN_KUSTOMIZATION


def test_cluster_rbac_grants_exactly_the_verbs_used() -> None:
    objs = objects("rbac-cluster.yaml", "rbac-leader-election.yaml")
    assert objs["ClusterRole", "embrel"]["rules"] == RELEASE_RULES
    assert objs["Role", "embrel-leader-election"]["rules"] == LEASE_RULES
    assert objs["Role", "embrel-leader-election"]["metadata"]["namespace"] == "embrel"
    binding = objs["ClusterRoleBinding", "embrel"]
    assert binding["roleRef"]["name"] == "embrel"
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "embrel", "namespace": "embrel"}
    ]


def test_namespaced_rbac_grants_the_same_verbs_in_one_namespace() -> None:
    objs = objects("rbac-namespaced.yaml")
    assert objs["Role", "embrel"]["rules"] == RELEASE_RULES
    assert objs["Role", "embrel"]["metadata"]["namespace"] == "embrel"
    assert objs["RoleBinding", "embrel"]["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "embrel",
    }


def pod_problems(deployment: dict[str, Any]) -> list[str]:
    """The security and runtime settings the controller's pod must have."""
    pod = deployment["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    sc, psc = c.get("securityContext", {}), pod.get("securityContext", {})
    env = {e["name"]: e for e in c.get("env", [])}
    mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    ports = {p.get("name"): p.get("containerPort") for p in c.get("ports", [])}
    checks = {
        "runs as non-root": psc.get("runAsNonRoot") is True and sc.get("runAsNonRoot") is True,
        "read-only root filesystem": sc.get("readOnlyRootFilesystem") is True,
        "no privilege escalation": sc.get("allowPrivilegeEscalation") is False,
        "drops ALL capabilities": sc.get("capabilities", {}).get("drop") == ["ALL"],
        "seccomp RuntimeDefault": psc.get("seccompProfile", {}).get("type") == "RuntimeDefault",
        "requests and limits": {"requests", "limits"} <= set(c.get("resources", {})),
        "liveness /healthz on metrics": c.get("livenessProbe", {}).get("httpGet")
        == {"path": "/healthz", "port": "metrics"},
        "readiness /readyz on metrics": c.get("readinessProbe", {}).get("httpGet")
        == {"path": "/readyz", "port": "metrics"},
        "metrics port": "metrics" in ports,
        "state on an emptyDir": "emptyDir" in volumes.get(mounts.get("/var/lib/embrel", ""), {}),
        "/tmp on an emptyDir": "emptyDir" in volumes.get(mounts.get("/tmp", ""), {}),
        "POD_NAMESPACE from the downward API": env.get("POD_NAMESPACE", {})
        .get("valueFrom", {})
        .get("fieldRef", {})
        .get("fieldPath")
        == "metadata.namespace",
        "POD_NAME from the downward API": env.get("POD_NAME", {})
        .get("valueFrom", {})
        .get("fieldRef", {})
        .get("fieldPath")
        == "metadata.name",
        "HF_HUB_OFFLINE=1": env.get("HF_HUB_OFFLINE", {}).get("value") == "1",
        "config mounted read-only": mounts.get("/etc/embrel") == "config",
    }
    return [name for name, ok in checks.items() if not ok]


def test_deployment_is_hardened_and_leader_elected() -> None:
    objs = objects("deployment.yaml", "configmap.yaml", "serviceaccount.yaml")
    deployment = objs["Deployment", "embrel"]
    assert pod_problems(deployment) == []
    assert deployment["spec"]["replicas"] == 2
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "embrel" and ("ServiceAccount", "embrel") in objs
    assert pod["containers"][0]["command"] == [
        "embrel",
        "--config",
        "/etc/embrel/config.yaml",
        "controller",
        "--metrics-port",
        "8080",
        "--leader-elect",
        "--lease-namespace",
        "$(POD_NAMESPACE)",
    ]
    config_map = pod["volumes"][0]["configMap"]["name"]
    assert ("ConfigMap", config_map) in objs
    args = controller_args(deployment)
    assert (args.leader_elect, args.lease_namespace, args.namespace) == (True, "embrel", None)


def controller_args(deployment: dict[str, Any]) -> argparse.Namespace:
    """The container's command as the real `embrel` CLI parses it (the env expanded)."""
    command = deployment["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[0] == "embrel"
    argv = [a.replace("$(POD_NAMESPACE)", "embrel") for a in command[1:]]
    args = _parser().parse_args(argv)
    assert args.handler.__name__ == "cmd_controller"
    assert args.config == Path("/etc/embrel/config.yaml")  # where the ConfigMap is mounted
    assert args.metrics_port == 8080
    return args


def test_pod_check_names_what_is_missing() -> None:
    deployment = objects("deployment.yaml")["Deployment", "embrel"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["securityContext"]["capabilities"] = {"drop": ["NET_RAW"]}
    del container["readinessProbe"]
    assert pod_problems(deployment) == ["drops ALL capabilities", "readiness /readyz on metrics"]


def test_configmap_is_a_valid_controller_config(tmp_path: Path) -> None:
    data = objects("configmap.yaml")["ConfigMap", "embrel-config"]["data"]
    (tmp_path / "config.yaml").write_text(data["config.yaml"])
    config = load_config(tmp_path / "config.yaml")
    assert str(config.state_dir) == "/var/lib/embrel"  # the Deployment's state emptyDir
    assert config.log.format == "json"


def test_service_and_servicemonitor_find_the_pods() -> None:
    objs = objects("deployment.yaml", "service.yaml", "servicemonitor.yaml")
    deployment, service = objs["Deployment", "embrel"], objs["Service", "embrel-metrics"]
    monitor = objs["ServiceMonitor", "embrel"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    service_ports = {p["name"] for p in service["spec"]["ports"]}
    assert {e["port"] for e in monitor["spec"]["endpoints"]} <= service_ports
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"


EXAMPLE_RELEASES = sorted(
    [
        *(ROOT / "examples" / "kube").glob("*.yaml"),
        *(ROOT / "examples/demo/releases").glob("*.yaml"),
    ]
)


def example_problems(path: Path) -> list[str]:
    problems = []
    for obj in load_objects(path.read_text()):
        problems += kube_problems(obj, path.name)
    return problems


@pytest.mark.parametrize("path", EXAMPLE_RELEASES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_example_is_valid(path: Path) -> None:
    assert example_problems(path) == []


def test_examples_include_the_kube_release_and_its_secret() -> None:
    kinds = {
        (obj["kind"], obj["metadata"]["name"])
        for path in EXAMPLE_RELEASES
        for obj in load_file(path)
        if path.parent.name == "kube"
    }
    assert kinds == {("EmbeddingRelease", "products"), ("Secret", "milvus-credentials")}
    release = load_file(ROOT / "examples/kube/products.yaml")[0]
    assert release["spec"]["milvus"]["secretRef"] == "milvus-credentials"
    assert release["spec"]["milvus"]["uri"] == "http://milvus.milvus.svc.cluster.local:19530"


def test_a_broken_example_fails(tmp_path: Path) -> None:
    broken = tmp_path / "products.yaml"
    text = (ROOT / "examples/kube/products.yaml").read_text()
    broken.write_text(text.replace("dimension: 384", "dimension: -384"))
    problems = example_problems(broken)
    assert any("CRD schema: spec.collection.dimension" in p for p in problems), problems
    assert any("model:" in p and "spec.collection.dimension" in p for p in problems), problems
