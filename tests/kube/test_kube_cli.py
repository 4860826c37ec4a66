"""The CLI's Kubernetes verbs, in-process against the API mock (no controller running)."""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from controller.cli import build_parser, main
from controller.drivers.kube import ANNOTATIONS
from controller.kube import KubeGateway
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


def test_kubectl_embrel_offers_only_the_verbs_that_act_on_the_cluster() -> None:
    def verbs(kube: bool) -> set[str]:
        sub = next(a for a in build_parser(kube)._actions if a.dest == "command")
        return set(sub.choices)  # type: ignore[arg-type]

    cluster = {"status", "history", "promote", "abort", "rollback", "list", "get", "version"}
    assert verbs(kube=True) == cluster
    assert verbs(kube=False) == cluster | {"apply", "validate", "run", "demo", "controller"}
    with pytest.raises(SystemExit):
        build_parser(kube=True).parse_args(["apply", "-f", "x.yaml"])


def test_version_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert main(["version"]) == 0
    assert capsys.readouterr().out == f"embrel {version}\n"
    assert main(["version"], kube=True) == 0
    assert capsys.readouterr().out == f"embrel {version}\n"


def _create(api: client.ApiClient, namespace: str, name: str, version: str) -> None:
    body = {
        "apiVersion": f"{G}/{V}",
        "kind": "EmbeddingRelease",
        "metadata": {"name": name},
        "spec": {"alias": name, "version": version},
    }
    client.CustomObjectsApi(api).create_namespaced_custom_object(G, V, namespace, P, body)


def test_list_shows_the_releases_of_a_namespace_or_all(
    api: client.ApiClient, kubeconfig: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _release(api)  # test/products, Live with v2
    _create(api, "test", "articles", "a1")
    _create(api, "other", "faq", "f1")
    assert main(["list", "--kubeconfig", str(kubeconfig)], kube=True) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["NAME", "ALIAS", "VERSION", "PHASE", "LIVE", "AGE"]
    assert [line.split()[:5] for line in lines[1:]] == [
        ["articles", "articles", "a1", "-", "-"],
        ["products", "products", "v2", "Live", "v2"],
    ]
    assert all(line.split()[5].endswith("s") for line in lines[1:]), "created seconds ago"
    assert main(["list", "-A", "--kubeconfig", str(kubeconfig)], kube=True) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[0] == "NAMESPACE"
    assert [line.split()[:2] for line in lines[1:]] == [
        ["other", "faq"],
        ["test", "articles"],
        ["test", "products"],
    ]
    assert main(["list", "-n", "empty", "--kubeconfig", str(kubeconfig)], kube=True) == 0
    assert "No EmbeddingReleases found in namespace empty" in capsys.readouterr().err


def test_age_reads_like_kubectl() -> None:
    from controller.cli.output import age

    now = 1_000_000.0
    stamp = "1970-01-12T13:46:40Z"  # = now
    assert [age(stamp, now + d) for d in (5, 119, 600, 7200 * 3, 86400 * 3)] == [
        "5s",
        "119s",
        "10m",
        "6h",
        "3d",
    ]
    assert age(None, now) == age("not a time", now) == "-"


def test_get_prints_phase_gates_and_cutover(
    api: client.ApiClient, kubeconfig: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _release(api)
    objects = client.CustomObjectsApi(api)
    obj = objects.get_namespaced_custom_object(G, V, "test", P, "products")
    obj["status"]["validation"] = {
        "outcome": "passed",
        "checks": [{"name": "recall@10", "value": 0.93, "threshold": 0.9, "outcome": "passed"}],
    }
    obj["status"]["cutover"] = {"verified": True, "method": "fingerprint", "attempts": 1}
    objects.replace_namespaced_custom_object_status(G, V, "test", P, "products", obj)
    assert main(["get", "products", "--kubeconfig", str(kubeconfig)], kube=True) == 0
    out = capsys.readouterr().out
    assert "Phase:      Live" in out and "recall@10" in out
    assert "Cutover:    verified by fingerprint" in out
    assert main(["get", "missing", "--kubeconfig", str(kubeconfig)], kube=True) == 1


def test_release_changes_follows_the_watch_until_deleted(
    api: client.ApiClient, kube: KubeGateway
) -> None:
    from controller.drivers.kube import release_changes

    _release(api)
    _create(api, "test", "articles", "a1")  # another release: never reported
    changes = release_changes(kube, "test", "products", watch_timeout=5)
    assert next(changes)["status"]["phase"] == "Live"  # type: ignore[index]
    objects = client.CustomObjectsApi(api)
    obj = objects.get_namespaced_custom_object(G, V, "test", P, "products")
    obj["status"]["phase"] = "Degraded"
    objects.replace_namespaced_custom_object_status(G, V, "test", P, "products", obj)
    objects.patch_namespaced_custom_object(G, V, "test", P, "articles", {"spec": {"version": "a2"}})
    assert next(changes)["status"]["phase"] == "Degraded"  # type: ignore[index]
    objects.delete_namespaced_custom_object(G, V, "test", P, "products")
    assert next(changes) is None


def test_get_watch_prints_each_change_and_stops_on_ctrl_c(
    api: client.ApiClient,
    kubeconfig: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import controller.drivers.kube as driver

    def changes(kube: KubeGateway, namespace: str, name: str) -> Iterator[dict[str, Any]]:
        base = {"metadata": {"name": name, "namespace": namespace}}
        for phase in ("Building", "Building", "Validating"):  # the repeat is not printed
            yield base | {"status": {"phase": phase}}
        raise KeyboardInterrupt

    monkeypatch.setattr(driver, "release_changes", changes)
    assert main(["get", "products", "-w", "--kubeconfig", str(kubeconfig)], kube=True) == 0
    out = capsys.readouterr().out
    assert out.count("Phase:") == 2
    assert out.index("Phase:      Building") < out.index("Phase:      Validating")
