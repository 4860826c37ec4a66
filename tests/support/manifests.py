"""Checks shared by the manifest, chart, CRD and example tests.

Each check returns a list of problems (empty when fine), so a test can show that
a deliberately broken copy is caught by the very same check.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

from controller.crd import custom_resource_definition, validation_schema
from controller.errors import SpecError
from controller.spec import release_from_dict

ROOT = Path(__file__).parents[2]
MANIFESTS = ROOT / "manifests"
CHART = ROOT / "charts" / "embrel"
# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest
# kubernetes-validate knows.
KUBE_VERSIONS = ("1.27.0", "1.37.0")
# Kinds that come with CRDs kubernetes-validate does not ship.
OPERATOR_KINDS = {"ServiceMonitor", "PrometheusRule"}
_USER_METADATA = {"name", "namespace", "labels", "annotations"}


def load_objects(text: str) -> list[dict[str, Any]]:
    """Every non-empty YAML document in ``text``."""
    return [doc for doc in yaml.safe_load_all(text) if doc]


def load_file(path: Path) -> list[dict[str, Any]]:
    return load_objects(path.read_text())


@cache
def release_validator() -> jsonschema.Draft4Validator:
    """Judges an EmbeddingRelease as the API server would with our CRD installed."""
    schema = custom_resource_definition()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return jsonschema.Draft4Validator(validation_schema(schema))


def schema_problems(obj: dict[str, Any]) -> list[str]:
    """Field errors the API server would answer for this EmbeddingRelease."""
    return [
        f"{'.'.join(str(p) for p in err.absolute_path) or '<root>'}: {err.message}"
        for err in release_validator().iter_errors(obj)
    ]


def release_problems(obj: dict[str, Any], where: str) -> list[str]:
    """CRD schema errors plus the model's own (cross-field rules the CRD cannot state)."""
    problems = [f"{where}: CRD schema: {p}" for p in schema_problems(obj)]
    # The model knows the user's metadata only; the API server adds generation, uid...
    user_meta = {k: v for k, v in obj.get("metadata", {}).items() if k in _USER_METADATA}
    try:
        release_from_dict(obj | {"metadata": user_meta}, where)
    except SpecError as exc:
        problems.append(f"{where}: model: {exc}")
    return problems


def kube_problems(obj: dict[str, Any], where: str) -> list[str]:
    """Strict schema validation of one object for every supported Kubernetes version."""
    kind = obj.get("kind", "")
    if kind == "EmbeddingRelease":
        return release_problems(obj, where)
    if kind in OPERATOR_KINDS:
        # Only the metadata is Kubernetes' own; validate it inside a ConfigMap.
        probe = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": obj.get("metadata")}
        return kube_problems(probe, f"{where} ({kind} metadata)") + _operator_problems(obj, where)
    problems = []
    for version in KUBE_VERSIONS:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as err:
            path = ".".join(str(p) for p in err.path)
            problems.append(f"{where}: {kind} (Kubernetes {version}) {path}: {err.message}")
        except kubernetes_validate.SchemaNotFoundError as err:
            problems.append(f"{where}: {err.message}")
    return problems


def _operator_problems(obj: dict[str, Any], where: str) -> list[str]:
    """The fields of prometheus-operator kinds that our files use, by hand."""
    spec = obj.get("spec") or {}
    if obj["kind"] == "ServiceMonitor":
        ok = (
            obj.get("apiVersion") == "monitoring.coreos.com/v1"
            and isinstance(spec.get("selector", {}).get("matchLabels"), dict)
            and all(isinstance(e.get("port"), str) for e in spec.get("endpoints", [None]) if e)
            and spec.get("endpoints")
        )
        return [] if ok else [f"{where}: ServiceMonitor needs selector.matchLabels and endpoints"]
    groups = spec.get("groups")
    ok = (
        obj.get("apiVersion") == "monitoring.coreos.com/v1"
        and isinstance(groups, list)
        and all(g.get("name") and isinstance(g.get("rules"), list) for g in groups)
    )
    return [] if ok else [f"{where}: PrometheusRule needs spec.groups with name and rules"]
