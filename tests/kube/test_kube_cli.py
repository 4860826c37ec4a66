"""The CLI's Kubernetes verbs, in-process against the API mock (no controller running)."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
from kubernetes import client

from controller.cli import build_parser, main
from controller.drivers.kube import ANNOTATIONS
from tests.conftest import REPO

G, V, P = "embrel.dev", "v1alpha1", "embeddingreleases"


def test_kubectl_plugin_is_the_cli_with_kube_implied() -> None:
    assert build_parser(kube=True).parse_args(["promote", "products"]).kube
    assert not build_parser().parse_args(["promote", "products"]).kube
    args = build_parser().parse_args(["status", "products", "--kube", "-n", "search"])
    assert args.namespace == "search"
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["kubectl-embrel"] == "controller.cli:kubectl_main"


def test_controller_flags() -> None:
    flags = ["--namespace", "a", "--namespace", "b", "--no-leader-elect", "--lease-duration", "3"]
    flags += ["--workers", "2", "--kubeconfig", "kc", "--config", "c.yaml"]
    args = build_parser().parse_args(["controller", *flags])
    assert args.namespace == ["a", "b"]
    assert not args.leader_elect
    assert (args.lease_duration, args.workers, args.metrics_port) == (3, 2, 8080)
    assert args.kubeconfig == Path("kc") and args.config == Path("c.yaml")
    defaults = build_parser().parse_args(["controller"])
    assert defaults.leader_elect and defaults.lease_name == "embrel-controller"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["controller", "--workers", "0"])


def _release(api: client.ApiClient) -> None:
    objects = client.CustomObjectsApi(api)
    obj = objects.create_namespaced_custom_object(
        G,
        V,
        "test",
        P,
        {
            "apiVersion": f"{G}/{V}",
            "kind": "EmbeddingRelease",
            "metadata": {"name": "products"},
            "spec": {"alias": "products", "version": "v2"},
        },
    )
    obj["status"] = {
        "phase": "Live",
        "message": "v2 is live as products__v2",
        "observedGeneration": 1,
        "live": {"version": "v2", "collection": "products__v2"},
        "history": [{"version": "v2", "collection": "products__v2", "outcome": "Live"}],
    }
    objects.replace_namespaced_custom_object_status(G, V, "test", P, "products", obj)


def test_status_reads_the_object(
    api: client.ApiClient, kubeconfig: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _release(api)
    assert main(["status", "products", "--kube", "--kubeconfig", str(kubeconfig)]) == 0
    out = capsys.readouterr().out
    assert "Phase:      Live" in out and "v2 in products__v2" in out
    assert "Generation: 1 (observed 1)" in out
    assert (
        main(["history", "products", "--kube", "--kubeconfig", str(kubeconfig), "-o", "json"]) == 0
    )
    assert json.loads(capsys.readouterr().out)[0]["collection"] == "products__v2"


def test_a_request_nobody_acts_on_times_out_and_stays(
    api: client.ApiClient, kubeconfig: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _release(api)
    args = ["rollback", "products", "--to", "v1", "--kube", "--kubeconfig", str(kubeconfig)]
    assert main([*args, "--timeout", "0.5"]) == 4
    assert "no controller carried out the request" in capsys.readouterr().err
    obj = client.CustomObjectsApi(api).get_namespaced_custom_object(G, V, "test", P, "products")
    assert obj["metadata"]["annotations"] == {ANNOTATIONS["rollback"]: "v1"}
    assert main(["status", "missing", "--kube", "--kubeconfig", str(kubeconfig)]) == 1
