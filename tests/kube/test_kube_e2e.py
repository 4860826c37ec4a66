"""The controller as it runs in production: `embrel controller` as a subprocess against
the API mock (tests/support/kube_api.py) and Milvus (Lite files; the real server too).

Milvus Lite locks its folder to one process, so Milvus is inspected through the
status while a controller runs, and directly (another process) once it has stopped.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from kubernetes import client

from controller.drivers.kube import ANNOTATIONS, FINALIZER
from tests.conftest import REPO, Backend, Corpus, release_yaml, unit_vectors, write_vectors
from tests.support.kube_api import EMBREL, EVENTS, LEASES, KubeApiServer
from tests.support.milvus_server import drop_alias_collections

pytestmark = pytest.mark.heavy

G, V, P = "embrel.dev", "v1alpha1", "embeddingreleases"
MERGE = "application/merge-patch+json"
LEASE_SECONDS = 3


class Controller:
    """One `embrel controller` process, its output in a log file."""

    def __init__(self, workdir: Path, kubeconfig: Path, name: str, *flags: str) -> None:
        self.log_path = workdir / f"{name}.log"
        config = workdir / "config.yaml"
        config.write_text(
            yaml.safe_dump({"stateDir": str(workdir / "state"), "log": {"level": "INFO"}})
        )
        self.args = [
            sys.executable,
            "-m",
            "controller.cli",
            "--config",
            str(config),
            "controller",
            "--kubeconfig",
            str(kubeconfig),
            "--metrics-port",
            "0",
            "--lease-namespace",
            "test",
            "--lease-duration",
            str(LEASE_SECONDS),
            *flags,
        ]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Controller:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                self.args, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT
            )
        return self

    @property
    def identity(self) -> str:
        """From the first line it prints: ``embrel controller IDENTITY: watching ...``."""
        line = wait_for(lambda: self.log().split("\n", 1)[0] if ":" in self.log() else "")
        return line.split()[2].rstrip(":")

    def readyz(self) -> int:
        """The readiness probe: 200 once the watch is synced and it leads or stands by."""
        port = wait_for(lambda: re.search(r"metrics on port (\d+)", self.log()))
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port.group(1)}/readyz") as r:
                return int(r.status)
        except urllib.error.HTTPError as exc:
            return exc.code

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)


def wait_for(predicate: Callable[[], Any], timeout: float = 90.0, every: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(every)
    raise AssertionError(f"condition not met within {timeout}s")


@pytest.fixture
def controllers(tmp_path: Path, kubeconfig: Path) -> Iterator[Callable[..., Controller]]:
    started: list[Controller] = []

    def start(name: str = "controller", *flags: str) -> Controller:
        c = Controller(tmp_path, kubeconfig, name, *flags).start()
        started.append(c)
        return c

    yield start
    for c in started:
        c.stop()


def objects(api: client.ApiClient) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api)


def create(api: client.ApiClient, doc: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = objects(api).create_namespaced_custom_object(G, V, "test", P, doc)
    return out


def get(api: client.ApiClient, name: str = "products") -> dict[str, Any]:
    out: dict[str, Any] = objects(api).get_namespaced_custom_object(G, V, "test", P, name)
    return out


def patch(api: client.ApiClient, body: dict[str, Any], name: str = "products") -> None:
    objects(api).patch_namespaced_custom_object(G, V, "test", P, name, body, _content_type=MERGE)


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in obj.get("status", {}).get("conditions", []) if c["type"] == kind), {})


def settled(api: client.ApiClient, phase: str, name: str = "products") -> dict[str, Any]:
    """The object once status reaches ``phase`` for its current generation."""

    def check() -> dict[str, Any] | None:
        obj = get(api, name)
        status = obj.get("status", {})
        current = status.get("observedGeneration") == obj["metadata"]["generation"]
        return obj if current and status.get("phase") == phase else None

    try:
        result: dict[str, Any] = wait_for(check)
    except AssertionError:
        raise AssertionError(f"never {phase}: {json.dumps(get(api, name).get('status'))}") from None
    return result


def ready(obj: dict[str, Any]) -> bool:
    """What `kubectl wait er/products --for=condition=Ready` waits for."""
    cond = condition(obj, "Ready")
    return cond.get("status") == "True" and cond.get("observedGeneration") == obj["metadata"].get(
        "generation"
    )


def events(kube_api: KubeApiServer) -> list[dict[str, Any]]:
    return sorted(kube_api.objects(EVENTS, "test"), key=lambda e: e["firstTimestamp"])


def embrel_cli(*args: str, kubectl: bool = False) -> subprocess.CompletedProcess[str]:
    """The CLI as a person runs it; ``kubectl`` runs it as the kubectl-embrel plugin."""
    plugin = Path(sys.executable).parent / "kubectl-embrel"  # installed by pip install -e .
    if kubectl and plugin.exists():
        command = [str(plugin)]
    elif kubectl:
        main = "import sys; from controller.cli import kubectl_main; sys.exit(kubectl_main())"
        command = [sys.executable, "-c", main]
    else:
        command = [sys.executable, "-m", "controller.cli"]
    return subprocess.run(
        [*command, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_release_ready_then_cutover_with_secret_credentials(
    backend: Backend,
    corpus: Corpus,
    api: client.ApiClient,
    kube_api: KubeApiServer,
    kubeconfig: Path,
    controllers: Callable[..., Controller],
) -> None:
    token = "s3cr3t-t0ken-value"
    client.CoreV1Api(api).create_namespaced_secret(
        "test",
        {
            "metadata": {"name": "milvus-auth"},
            "data": {"token": base64.b64encode(token.encode()).decode()},
        },
    )
    golden = corpus.dir / "golden.parquet"
    doc = release_yaml(backend, "v1", corpus.path("v1"), golden)
    doc["spec"]["milvus"]["secretRef"] = "milvus-auth"  # type: ignore[index]
    ctl = controllers()
    create(api, doc)

    live = settled(api, "Live")
    assert ready(live)
    assert live["status"]["live"]["version"] == "v1"
    assert live["metadata"]["finalizers"] == [FINALIZER]

    doc["spec"].update(version="v2", source={"files": {"uri": str(corpus.path("v2"))}})  # type: ignore[union-attr]
    patch(api, {"spec": doc["spec"]})
    cut = settled(api, "Live")
    assert cut["metadata"]["generation"] == 2 and ready(cut)
    assert cut["status"]["live"]["collection"] == f"{backend.alias}__v2"
    promoted = [e for e in events(kube_api) if e["reason"] == "Promoted"]
    assert len(promoted) == 2
    assert f"{backend.alias}__v1 -> {backend.alias}__v2" in promoted[-1]["message"]
    assert {e["involvedObject"]["uid"] for e in promoted} == {cut["metadata"]["uid"]}

    ctl.stop()
    assert backend.alias_target() == f"{backend.alias}__v2"
    assert f"{backend.alias}__v1" in backend.collections()  # kept for rollback
    everything = json.dumps([get(api), events(kube_api)]) + ctl.log()
    assert token not in everything


def test_failed_validation_warns_and_keeps_the_alias(
    backend: Backend,
    corpus: Corpus,
    api: client.ApiClient,
    kube_api: KubeApiServer,
    controllers: Callable[..., Controller],
) -> None:
    golden = corpus.dir / "golden.parquet"
    doc = release_yaml(backend, "v1", corpus.path("v1"), golden)
    ctl = controllers()
    create(api, doc)
    settled(api, "Live")

    # The same vectors on shuffled ids: recall against the golden set collapses.
    doc["spec"].update(version="broken", source={"files": {"uri": str(corpus.path("broken"))}})  # type: ignore[union-attr]
    patch(api, {"spec": doc["spec"]})
    failed = settled(api, "Failed")
    assert condition(failed, "Stalled")["status"] == "True"
    assert condition(failed, "Ready")["status"] == "False"
    assert failed["status"]["live"]["version"] == "v1"
    warnings = [e for e in events(kube_api) if e["type"] == "Warning"]
    assert "ValidationFailed" in {e["reason"] for e in warnings}

    ctl.stop()
    assert backend.alias_target() == f"{backend.alias}__v1"


def test_promote_rollback_and_abort_through_annotations(
    backend: Backend,
    corpus: Corpus,
    api: client.ApiClient,
    kubeconfig: Path,
    controllers: Callable[..., Controller],
) -> None:
    ctl = controllers()
    doc = release_yaml(backend, "v1", corpus.path("v1"))
    create(api, doc)
    settled(api, "Live")
    kube = ["-n", "test", "--kubeconfig", str(kubeconfig)]

    manual = {"mode": "manual", "drainSeconds": 0}
    doc["spec"].update(
        version="v2", source={"files": {"uri": str(corpus.path("v2"))}}, promotion=manual
    )  # type: ignore[union-attr]
    patch(api, {"spec": doc["spec"]})
    waiting = settled(api, "AwaitingPromotion")
    assert waiting["status"]["live"]["version"] == "v1"

    promote = embrel_cli("promote", "products", "--kube", *kube)
    assert promote.returncode == 0, promote.stdout + promote.stderr
    assert "Live" in promote.stdout
    promoted = settled(api, "Live")
    assert promoted["status"]["live"]["version"] == "v2"
    assert ANNOTATIONS["promote"] not in (promoted["metadata"].get("annotations") or {})

    back = embrel_cli("rollback", "products", "--to", "v1", *kube, kubectl=True)
    assert back.returncode == 0, back.stdout + back.stderr
    rolled = settled(api, "RolledBack")
    assert rolled["status"]["live"]["version"] == "v1"

    doc["spec"].update(version="v3", source={"files": {"uri": str(corpus.path("v3"))}})  # type: ignore[union-attr]
    patch(api, {"spec": doc["spec"]})
    settled(api, "AwaitingPromotion")
    patch(api, {"metadata": {"annotations": {ANNOTATIONS["abort"]: "true"}}})  # kubectl annotate
    aborted = settled(api, "Failed")
    assert condition(aborted, "Ready")["reason"] == "Aborted"
    assert aborted["status"]["live"]["version"] == "v1"
    wait_for(lambda: ANNOTATIONS["abort"] not in (get(api)["metadata"].get("annotations") or {}))

    status = embrel_cli("status", "products", *kube, kubectl=True)
    assert status.returncode == 0 and "Failed" in status.stdout

    ctl.stop()
    assert backend.alias_target() == f"{backend.alias}__v1"


def test_deletion_retains_or_drops_what_the_track_owns(
    request: pytest.FixtureRequest,
    backend: Backend,
    corpus: Corpus,
    api: client.ApiClient,
    kube_api: KubeApiServer,
    controllers: Callable[..., Controller],
) -> None:
    other = Backend(backend.kind, backend.uri, f"{backend.alias}x")
    if backend.kind == "server":
        request.addfinalizer(lambda: drop_alias_collections(other.uri, other.alias))
    kept = release_yaml(backend, "v1", corpus.path("v1"), name="kept")
    gone = release_yaml(other, "v1", corpus.path("v1"), name="gone", deletionPolicy="Delete")
    gone["spec"]["promotion"] = {"drainSeconds": 0}  # type: ignore[index]
    ctl = controllers()
    create(api, kept)
    create(api, gone)
    settled(api, "Live", "kept")
    settled(api, "Live", "gone")
    gone["spec"].update(version="v2", source={"files": {"uri": str(corpus.path("v2"))}})  # type: ignore[union-attr]
    patch(api, {"spec": gone["spec"]}, "gone")
    settled(api, "Live", "gone")

    for name in ("kept", "gone"):
        objects(api).delete_namespaced_custom_object(G, V, "test", P, name)
    wait_for(lambda: not kube_api.objects(EMBREL, "test"))
    deleting = [e["message"] for e in events(kube_api) if e["reason"] == "Deleting"]
    ctl.stop()

    assert backend.alias_target() == f"{backend.alias}__v1"
    assert list(backend.collections()) == [f"{backend.alias}__v1"]
    assert other.alias_target() is None
    assert other.collections() == {}
    assert any(f"{other.alias}__v1" in m and f"alias {other.alias}" in m for m in deleting)


def test_one_leader_acts_and_a_standby_takes_over(
    backend: Backend,
    tmp_path: Path,
    api: client.ApiClient,
    kube_api: KubeApiServer,
    controllers: Callable[..., Controller],
) -> None:
    rng = np.random.default_rng(3)
    rows = 40_000  # inserting takes a few seconds: long enough to be killed in the middle
    source = write_vectors(
        tmp_path / "big.parquet", np.arange(rows, dtype=np.int64), unit_vectors(rng, rows, 32)
    )
    first = controllers("first")
    leader = first.identity
    wait_for(lambda: holder(kube_api) == leader)
    second = controllers("second")
    standby = second.identity
    assert standby != leader
    assert wait_for(lambda: second.readyz() == 200)  # a healthy standby is ready
    assert first.readyz() == 200

    doc = release_yaml(backend, "v1", source)
    doc["spec"]["collection"]["index"] = {"type": "IVF_FLAT", "params": {"nlist": 64}}  # type: ignore[index]
    create(api, doc)
    # Kill the leader while it inserts rows: Milvus holds an incomplete candidate.
    wait_for(lambda: any("inserting" in e["message"] for e in events(kube_api)), every=0.02)
    assert holder(kube_api) == leader  # the standby never took the Lease meanwhile
    killed = time.monotonic()
    first.kill()
    wait_for(lambda: holder(kube_api) == standby, timeout=30, every=0.05)
    takeover = time.monotonic() - killed
    print(f"standby took the Lease {takeover:.2f}s after the leader was killed")

    live = settled(api, "Live")
    assert live["status"]["live"]["rows"] == rows
    acted = [e["reportingInstance"] for e in events(kube_api)]
    # Only the Lease holder acts: the leader until it died, then the standby.
    assert acted == sorted(acted, key=lambda who: who == standby)
    assert set(acted) == {leader, standby}
    resumed = [e["message"] for e in events(kube_api) if e["reportingInstance"] == standby]
    assert any("discarding an incomplete candidate" in m for m in resumed), resumed
    second.stop()
    assert backend.alias_target() == f"{backend.alias}__v1"
    # The standby takes over within the lease duration (plus one retry period).
    assert takeover < LEASE_SECONDS + LEASE_SECONDS / 5 + 1.5, takeover


def holder(kube_api: KubeApiServer) -> str:
    leases = kube_api.objects(LEASES, "test")
    return str(leases[0]["spec"].get("holderIdentity") or "") if leases else ""
