"""manifests/ and examples/: valid objects, least-privilege RBAC, a hardened Deployment."""

import argparse
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from controller import manifests
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
# The Prometheus Operator objects: the optional kustomize Component manifests/monitoring/.
MONITORING = sorted(
    p for p in (MANIFESTS / "monitoring").glob("*.yaml") if p.name != "kustomization.yaml"
)
EVERY_FILE = [*TOP_LEVEL, *MONITORING, MANIFESTS / "argocd" / "argocd-cm-patch.yaml"]
# The namespace-scoped alternative to rbac-cluster.yaml (docs/kubernetes.md).
NOT_IN_KUSTOMIZATION = {"rbac-namespaced.yaml"}
# The kustomize fields these kustomizations may use: kustomize_build understands exactly these.
KUSTOMIZE_FIELDS = {"apiVersion", "kind", "resources", "components"}
KUSTOMIZE_KINDS = {
    "Kustomization": "kustomize.config.k8s.io/v1beta1",
    "Component": "kustomize.config.k8s.io/v1alpha1",
}

# Exactly what the controller does; nothing more.
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


def kustomize_build(folder: Path, kind: str = "Kustomization") -> list[dict[str, Any]]:
    """The objects `kustomize build folder` gives, for the part of kustomize used here.

    Resources (files, or folders with their own kustomization) and components, in
    order. Any other field is refused rather than ignored, and so are what kustomize
    itself refuses: a file outside the kustomization's folder, a missing path, and two
    objects with the same kind, namespace and name.
    """
    path = folder / "kustomization.yaml"
    kustomization = yaml.safe_load(path.read_text())
    unknown = set(kustomization) - KUSTOMIZE_FIELDS
    if unknown:
        raise ValueError(f"{path}: kustomize_build does not understand {sorted(unknown)}")
    if (kustomization.get("kind"), kustomization.get("apiVersion")) != (
        kind,
        KUSTOMIZE_KINDS[kind],
    ):
        raise ValueError(f"{path}: expected a {kind} ({KUSTOMIZE_KINDS[kind]})")
    objs: list[dict[str, Any]] = []
    for entry in kustomization.get("resources", []):
        target = (folder / entry).resolve()
        if target.is_dir():
            objs += kustomize_build(target)
        elif target.is_file() and target.is_relative_to(folder.resolve()):
            objs += load_file(target)
        else:
            raise ValueError(f"{path}: resource {entry} is not a file in {folder} nor a folder")
    for entry in kustomization.get("components", []):
        objs += kustomize_build((folder / entry).resolve(), "Component")
    ids = [(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in objs]
    duplicates = {i for i in ids if ids.count(i) > 1}
    if duplicates:
        raise ValueError(f"{path}: objects listed twice: {sorted(duplicates, key=str)}")
    return objs


def with_monitoring(tmp_path: Path) -> Path:
    """The kustomization docs/kubernetes.md tells a user to write to add the Component."""
    overlay = tmp_path / "embrel-with-monitoring"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": KUSTOMIZE_KINDS["Kustomization"],
                "kind": "Kustomization",
                "resources": [str(MANIFESTS)],
                "components": [str(MANIFESTS / "monitoring")],
            }
        )
    )
    return overlay


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    assert all((MANIFESTS / name).is_file() for name in listed)
    assert listed == {p.name for p in TOP_LEVEL} - NOT_IN_KUSTOMIZATION
    component = yaml.safe_load((MANIFESTS / "monitoring" / "kustomization.yaml").read_text())
    assert set(component["resources"]) == {p.name for p in MONITORING}


def test_kustomize_output_installs_on_a_bare_cluster() -> None:
    """No object of the default install needs a CRD the install does not bring."""
    objs = kustomize_build(MANIFESTS)
    groups = {o["apiVersion"].rpartition("/")[0] for o in objs}
    assert "monitoring.coreos.com" not in groups
    assert {o["kind"] for o in objs} == {
        "Namespace",
        "CustomResourceDefinition",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "ConfigMap",
        "Deployment",
        "Service",
    }


def test_monitoring_component_adds_the_operator_objects(tmp_path: Path) -> None:
    base = kustomize_build(MANIFESTS)
    objs = kustomize_build(with_monitoring(tmp_path))
    added = sorted((o["kind"], o["metadata"]["name"]) for o in objs[len(base) :])
    assert objs[: len(base)] == base
    assert added == [("PrometheusRule", "embrel"), ("ServiceMonitor", "embrel")]


def test_kustomize_build_refuses_what_kustomize_refuses(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump({**yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())})
    )
    with pytest.raises(ValueError, match=r"resource namespace\.yaml is not a file"):
        kustomize_build(tmp_path)
    shutil.copy(MANIFESTS / "service.yaml", tmp_path)
    for resources, error in [
        (["service.yaml", "service.yaml"], "objects listed twice"),
        ([str(MANIFESTS / "service.yaml")], "is not a file in"),
    ]:
        (tmp_path / "kustomization.yaml").write_text(
            yaml.safe_dump(
                {
                    "apiVersion": KUSTOMIZE_KINDS["Kustomization"],
                    "kind": "Kustomization",
                    "resources": resources,
                }
            )
        )
        with pytest.raises(ValueError, match=error):
            kustomize_build(tmp_path)
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump({"kind": "Kustomization", "images": [{"name": "embrel/embrel"}]})
    )
    with pytest.raises(ValueError, match="does not understand \\['images'\\]"):
        kustomize_build(tmp_path)


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
        "state on an emptyDir or a claim": {"emptyDir", "persistentVolumeClaim"}
        & set(volumes.get(mounts.get("/var/lib/embrel", ""), {})),
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
    objs = objects("deployment.yaml", "service.yaml", "monitoring/servicemonitor.yaml")
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


def pod_images(objs: list[dict[str, Any]]) -> set[str]:
    """Every container image the objects' pod templates name."""
    images = set()
    for obj in objs:
        pod = obj.get("spec", {}).get("template", {}).get("spec", {})
        for container in [*pod.get("initContainers", []), *pod.get("containers", [])]:
            images.add(container["image"])
    return images


def test_manifests_run_the_image_that_make_image_builds(tmp_path: Path) -> None:
    """The only image named is the tag scripts/build-image.sh (`make image`) builds."""
    built = manifests.image_reference(ROOT)
    assert built == f"embrel/embrel:{manifests.package_version(ROOT)}"
    every = [obj for path in [*TOP_LEVEL, *MONITORING] for obj in load_file(path)]
    assert pod_images(every) == {built}
    assert pod_images(kustomize_build(with_monitoring(tmp_path))) == {built}
    script = (ROOT / "scripts" / "build-image.sh").read_text()
    assert re.search(r"^image=\$\(manifests --image ", script, re.MULTILINE), "tag source"
    assert re.search(r"-t \"\$tag\" -f \"\$ROOT/Dockerfile\"", script), "what is built"
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^image: .*\n(\t.*\n)*\t.*scripts/build-image\.sh", makefile, re.MULTILINE)
