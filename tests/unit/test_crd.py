"""The CRD: generated from the spec model, structural, in sync, and refusing bad specs."""

import copy
import shutil
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from controller import manifests
from controller.crd import custom_resource_definition, structural, validation_schema
from controller.errors import SpecError
from controller.spec import release_from_dict
from controller.status import Phase, ReleaseStatus, with_phase
from tests.support.manifests import ROOT, kube_problems, schema_problems

GOOD: dict[str, Any] = {
    "apiVersion": "embrel.dev/v1alpha1",
    "kind": "EmbeddingRelease",
    "metadata": {"name": "products", "namespace": "search"},
    "spec": {
        "alias": "products",
        "version": "v1",
        "model": {"name": "m", "revision": None},
        "milvus": {"uri": "http://milvus:19530", "secretRef": "milvus-credentials"},
        "collection": {"dimension": 8, "index": {"type": "HNSW", "params": {"M": 16}}},
        "source": {"files": {"uri": "/data/v1.parquet"}},
        "validation": {"gates": {"maxP99LatencyMs": 50}},
    },
}


def _schema() -> dict[str, Any]:
    crd = custom_resource_definition()
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def test_committed_generated_files_match_their_sources() -> None:
    """CRD (manifests and chart), PrometheusRule, chart rules, argocd-cm, values schema."""
    assert manifests.out_of_date(ROOT) == [], "run `make manifests` and commit the result"


def test_a_stale_crd_is_detected(tmp_path: Path) -> None:
    _copy_sources(tmp_path)
    assert manifests.out_of_date(tmp_path) == []
    crd = tmp_path / "charts/embrel/crds/embeddingrelease.yaml"
    crd.write_text(crd.read_text().replace("maximum: 32768", "maximum: 65536"))
    assert manifests.out_of_date(tmp_path) == [Path("charts/embrel/crds/embeddingrelease.yaml")]
    assert manifests.main(["--root", str(tmp_path), "--check"]) == 1
    manifests.main(["--root", str(tmp_path)])
    assert manifests.out_of_date(tmp_path) == []


def _copy_sources(tmp_path: Path) -> None:
    sources = [manifests.RULES_SOURCE, manifests.HEALTH_LUA, manifests.PYPROJECT]
    for path in [*manifests.generated_files(ROOT), *sources]:
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / path, tmp_path / path)


def test_a_version_bump_repins_the_image_everywhere(tmp_path: Path) -> None:
    """pyproject's version is the one place: the Deployment, chart and image follow it."""
    _copy_sources(tmp_path)
    pyproject = tmp_path / manifests.PYPROJECT
    version = manifests.package_version(ROOT)
    pyproject.write_text(
        pyproject.read_text().replace(f'version = "{version}"', 'version = "9.8.7"')
    )
    assert manifests.out_of_date(tmp_path) == [manifests.DEPLOYMENT, manifests.CHART_YAML]
    manifests.main(["--root", str(tmp_path)])
    assert manifests.out_of_date(tmp_path) == []
    assert "image: embrel/embrel:9.8.7\n" in (tmp_path / manifests.DEPLOYMENT).read_text()
    assert 'appVersion: "9.8.7"\n' in (tmp_path / manifests.CHART_YAML).read_text()
    assert manifests.image_reference(tmp_path, "embed") == "embrel/embrel:9.8.7-embed"


def test_a_pin_that_matches_no_line_is_an_error(tmp_path: Path) -> None:
    _copy_sources(tmp_path)
    deployment = tmp_path / manifests.DEPLOYMENT
    deployment.write_text(deployment.read_text().replace("image: ", "img: "))
    with pytest.raises(ValueError, match=r"manifests/deployment\.yaml: expected one line"):
        manifests.out_of_date(tmp_path)


def test_crd_passes_kubernetes_strict_validation() -> None:
    crd = yaml.safe_load((ROOT / "manifests/crd.yaml").read_text())
    assert kube_problems(crd, "manifests/crd.yaml") == []


def _structural_problems(node: dict[str, Any], path: str) -> list[str]:
    """The apiextensions.k8s.io/v1 rules for a structural schema (and what the API server
    refuses besides): a type everywhere, no junctors, no refs, properties xor
    additionalProperties, and defaults that validate."""
    problems = []
    if "type" not in node and not node.get("x-kubernetes-preserve-unknown-fields"):
        problems.append(f"{path}: no type")
    for banned in ("anyOf", "oneOf", "allOf", "not", "$ref", "const", "$defs", "title"):
        if banned in node:
            problems.append(f"{path}: {banned} is not structural")
    if "properties" in node and "additionalProperties" in node:
        problems.append(f"{path}: additionalProperties and properties are mutually exclusive")
    if "default" in node:
        errors = list(
            jsonschema.Draft4Validator(validation_schema(node)).iter_errors(node["default"])
        )
        problems += [f"{path}: default {node['default']!r}: {e.message}" for e in errors]
    for key, child in node.get("properties", {}).items():
        problems += _structural_problems(child, f"{path}.{key}")
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            problems += _structural_problems(node[key], f"{path}[{key}]")
    return problems


def test_schema_is_structural() -> None:
    schema = _schema()
    assert _structural_problems(schema, "openAPIV3Schema") == []
    # Only name and generateName may be constrained under metadata.
    assert schema["properties"]["metadata"] == {"type": "object"}


def test_structural_check_catches_a_union_left_in_place() -> None:
    broken = copy.deepcopy(_schema())
    broken["properties"]["spec"]["properties"]["alias"] = {
        "anyOf": [{"type": "string"}, {"type": "null"}]
    }
    assert _structural_problems(broken, "s") == [
        "s.spec.alias: no type",
        "s.spec.alias: anyOf is not structural",
    ]


def test_translation_of_json_schema_keywords() -> None:
    defs = {"Gate": {"type": "object", "properties": {"min": {"type": "number"}}}}
    assert structural({"anyOf": [{"$ref": "#/$defs/Gate"}, {"type": "null"}]}, defs) == {
        "type": "object",
        "nullable": True,
        "properties": {"min": {"type": "number"}},
    }
    assert structural({"type": "number", "exclusiveMinimum": 0.0}, {}) == {
        "type": "number",
        "minimum": 0.0,
        "exclusiveMinimum": True,
    }
    assert structural({"const": "x"}, {}) == {"type": "string", "enum": ["x"]}
    with pytest.raises(ValueError, match="oneOf"):
        structural({"oneOf": [{"type": "string"}]}, {})


def test_spec_constraints_come_from_the_model() -> None:
    spec = _schema()["properties"]["spec"]
    props = spec["properties"]
    assert set(spec["required"]) == {"alias", "version", "model", "milvus", "collection", "source"}
    assert props["collection"]["properties"]["dimension"] == {
        "type": "integer",
        "minimum": 2,
        "maximum": 32768,
    }
    assert props["collection"]["properties"]["metric"]["enum"] == ["COSINE", "IP", "L2"]
    assert props["deletionPolicy"]["enum"] == ["Retain", "Delete"]
    assert props["alias"]["pattern"] == "^[A-Za-z_][A-Za-z0-9_]*$"
    assert props["source"]["properties"]["files"]["nullable"] is True


def test_good_release_passes_crd_and_model() -> None:
    assert schema_problems(GOOD) == []
    release_from_dict(GOOD)


def _mutate(path: str, value: Any) -> dict[str, Any]:
    obj = copy.deepcopy(GOOD)
    *parents, leaf = path.split(".")
    node = obj
    for key in parents:
        node = node[key]
    if value is _DELETE:
        del node[leaf]
    else:
        node[leaf] = value
    return obj


_DELETE = object()


@pytest.mark.parametrize(
    ("path", "value", "error_at"),
    [
        ("spec.collection.metric", "HAMMING", "spec.collection.metric"),
        ("spec.collection.dimension", -8, "spec.collection.dimension"),
        ("spec.collection.index.type", "HNSWX", "spec.collection.index.type"),
        ("spec.source", _DELETE, "spec"),
        ("spec.model.name", _DELETE, "spec.model"),
        ("spec.collection.dimensions", 8, "spec.collection"),
        ("spec.bogus", 1, "spec"),
        ("spec.alias", "prod-ucts", "spec.alias"),
        ("spec.version", "-v1", "spec.version"),
        ("spec.validation.gates.maxP99LatencyMs", 0, "spec.validation.gates.maxP99LatencyMs"),
        ("spec.retention", {"keepPrevious": -1}, "spec.retention.keepPrevious"),
        ("spec.deletionPolicy", "Orphan", "spec.deletionPolicy"),
        (
            "spec.promotion",
            {"postPromotion": {"interval": "5 min"}},
            "spec.promotion.postPromotion.interval",
        ),
    ],
)
def test_bad_spec_is_refused_by_the_crd_and_the_model(path: str, value: Any, error_at: str) -> None:
    bad = _mutate(path, value)
    problems = schema_problems(bad)
    assert problems, f"the CRD accepted {path}={value!r}"
    assert any(p.startswith(f"{error_at}:") for p in problems), problems
    with pytest.raises(SpecError):
        release_from_dict(bad)


def test_printer_columns_name_fields_the_schema_has() -> None:
    crd = custom_resource_definition()
    version = crd["spec"]["versions"][0]
    columns = {c["name"].upper(): c for c in version["additionalPrinterColumns"]}
    assert list(columns)[:6] == ["ALIAS", "VERSION", "PHASE", "LIVE", "RECALL", "AGE"]
    assert columns["RECALL"]["type"] == "number"
    schema = version["schema"]["openAPIV3Schema"]
    for column in version["additionalPrinterColumns"]:
        *parents, leaf = column["jsonPath"].lstrip(".").split(".")
        node = schema
        for key in parents:
            node = node["properties"][key]
        assert leaf in node.get("properties", {}) or parents == ["metadata"], column


def test_names_and_status_subresource() -> None:
    spec = custom_resource_definition()["spec"]
    assert spec["group"] == "embrel.dev" and spec["scope"] == "Namespaced"
    assert spec["names"]["shortNames"] == ["er"]
    assert spec["names"]["plural"] == "embeddingreleases"
    assert spec["versions"][0]["name"] == "v1alpha1"
    assert spec["versions"][0]["subresources"] == {"status": {}}


@pytest.mark.parametrize("phase", list(Phase))
def test_status_the_engine_writes_passes_the_status_schema(phase: Phase) -> None:
    status = with_phase(
        ReleaseStatus(observed_generation=3, spec_hash="abc"),
        phase,
        str(phase),
        "message",
        "2026-11-25T10:00:00Z",
    )
    status.live = {"version": "v1", "collection": "products__v1", "model": "m", "rows": 10}
    status.candidate = {"version": "v2", "collection": "products__v2", "indexed_rows": 5}
    status.validation = {"outcome": "passed", "passed": True, "recall": 0.93, "checks": []}
    obj = GOOD | {"status": ReleaseStatus.to_dict(status)}
    assert schema_problems(obj) == []
    obj["status"]["conditions"][0]["status"] = "Maybe"
    assert schema_problems(obj) != []
