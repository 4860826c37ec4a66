"""Shared fixtures: the Milvus backends, release files, data, the CLI.

``backend`` runs an integration scenario on three backends: ``fake``, the in-memory
``MilvusPort`` (tests/support/fake_milvus.py) behind every connection the drivers
open, with `embrel` run inside the test process; ``lite``, Milvus Lite (a fresh local
folder per test); and ``server``, the real Milvus 2.3.5 standalone server (started once
per session, stopped at the end; each test gets its own alias so tests never see each
other's collections). Lite and the server run `embrel` as a user would, in a subprocess,
and are marked ``real``: `make test` runs them in its second step. ``ON_LITE_TOO`` keeps
a scenario's Lite run in the default suite, to prove the embedded default there.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

import controller.drivers.wiring
from controller.milvus import MilvusGateway, RetryPolicy
from controller.ports import MilvusPort
from controller.sources.base import VectorBatch
from tests.support import inprocess_cli
from tests.support.fake_milvus import FakeMilvus, FakeState
from tests.support.milvus_server import (
    MilvusServer,
    drop_alias_collections,
    milvus_server_available,
)

REPO = Path(__file__).resolve().parents[1]
# The object store fixtures: s3_server and s3 (a real S3 API on loopback); gcs_server,
# azurite and store (S3, GCS or Azure, by the test's parameter).
pytest_plugins = ["tests.support.s3_server", "tests.support.object_stores"]


@pytest.fixture(scope="session")
def milvus_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MilvusServer]:
    if not milvus_server_available():
        pytest.fail("milvus-server is not installed; run `make test` (it installs milvus==2.3.5)")
    # A short session lease: a server restarted on the same folder (tests of Milvus
    # restarts) waits for its previous run's sessions to expire.
    server = MilvusServer(extra_config={"common.session.ttl": 10})
    server.start(tmp_path_factory.mktemp("milvus-server"))
    try:
        yield server
    finally:
        server.stop()


@dataclass
class Backend:
    kind: str  # "fake" | "lite" | "server"
    uri: str
    alias: str
    fake: FakeState | None = field(default=None, repr=False)  # what the fake Milvus holds

    def inspect(self) -> dict[str, Any]:
        """What Milvus holds for this alias. Lite and the server are asked with pymilvus in
        a separate process (Milvus Lite would otherwise stay locked by the test process)."""
        if self.fake is not None:
            return _inspect_fake(self.fake, self.alias)
        out = subprocess.run(
            [sys.executable, "-m", "tests.support.inspect_milvus", self.uri, self.alias],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        )
        result: dict[str, Any] = json.loads(out.stdout)
        return result

    def alias_target(self) -> str | None:
        target = self.inspect()["alias_target"]
        return str(target) if target else None

    def collections(self) -> dict[str, dict[str, Any]]:
        result: dict[str, dict[str, Any]] = self.inspect()["collections"]
        return result

    @contextmanager
    def port(self) -> Iterator[MilvusPort]:
        """A connection from the test process (for tests that run the controller in it:
        Milvus Lite lets one process hold several)."""
        # One attempt: a reader counts every failure itself.
        once = RetryPolicy(attempts=1)
        port: MilvusPort = (
            FakeMilvus(self.fake) if self.fake else MilvusGateway(self.uri, policy=once)
        )
        try:
            yield port
        finally:
            port.close()

    def upsert(self, collection: str, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Overwrite rows, as an application writing into the collection would."""
        rows = VectorBatch(ids.astype(np.int64), vectors.astype(np.float32), {}, "test", 0)
        if self.fake is not None:
            FakeMilvus(self.fake).upsert(collection, rows)
            return
        from pymilvus import MilvusClient

        client = MilvusClient(uri=self.uri)
        try:
            client.upsert(
                collection, [{"id": int(i), "vector": v} for i, v in zip(ids, vectors, strict=True)]
            )
        finally:
            client.close()

    def read(self, collection: str, fields: list[str], in_process: bool) -> dict[str, np.ndarray]:
        """ids, vectors and ``fields`` of every row, by id, read independently of embrel's
        gateway; in another process unless ``in_process`` (the controller ran in this one)."""
        if self.fake is not None:
            return _read_fake(self.fake, collection, fields)
        from tests.support.dump_collection import read

        if in_process:
            return read(self.uri, collection, fields)
        out = Path(f"/tmp/embrel-dump-{uuid.uuid4().hex}.npz")
        try:
            subprocess.run(
                [
                    *(sys.executable, "-m", "tests.support.dump_collection"),
                    *(self.uri, collection, str(out), *fields),
                ],
                cwd=REPO,
                check=True,
                timeout=300,
            )
            with np.load(out) as data:
                return {k: data[k] for k in data.files}
        finally:
            out.unlink(missing_ok=True)


def _inspect_fake(state: FakeState, alias: str) -> dict[str, Any]:
    with state.lock:
        collections = {
            name: {
                "loaded": c.loaded,
                "rows": c.flushed,  # get_collection_stats, as inspect_milvus reads it
                "properties": dict(c.properties),
                "aliases": sorted(a for a, t in state.aliases.items() if t == name),
            }
            for name, c in sorted(state.collections.items())
            if name.startswith(f"{alias}__")
        }
        return {"alias_target": state.aliases.get(alias), "collections": collections}


def _read_fake(state: FakeState, collection: str, fields: list[str]) -> dict[str, np.ndarray]:
    with state.lock:
        rows = state.collections[collection].rows
        ids = sorted(rows)
        arrays = {
            "ids": np.asarray(ids, dtype=np.int64),
            "vectors": np.asarray([rows[i][0] for i in ids], dtype=np.float32),
        }
        for name in fields:
            arrays[name] = np.asarray([rows[i][1][name] for i in ids])
        return arrays


# The scenarios (tests/integration) run on all three; elsewhere `backend` means Lite and
# the server, as the heavy end-to-end checks (tests/kube) use it.
REAL = pytest.mark.real
SCENARIO_BACKENDS = [
    "fake",
    pytest.param("lite", marks=REAL),
    pytest.param("server", marks=[pytest.mark.server, REAL]),
]
OTHER_BACKENDS = ["lite", pytest.param("server", marks=pytest.mark.server)]
# A scenario that also runs on Milvus Lite in the default suite.
ON_LITE_TOO = pytest.mark.parametrize(
    "backend",
    ["fake", "lite", pytest.param("server", marks=[pytest.mark.server, REAL])],
    indirect=True,
)
# A scenario that needs a real Milvus (say why next to it): Lite and the server only.
REAL_ONLY = pytest.mark.parametrize(
    "backend",
    [pytest.param("lite", marks=REAL), pytest.param("server", marks=[pytest.mark.server, REAL])],
    indirect=True,
)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" not in metafunc.fixturenames:
        return
    for mark in metafunc.definition.iter_markers("parametrize"):
        names = mark.args[0]
        if "backend" in (names.replace(" ", "").split(",") if isinstance(names, str) else names):
            return  # the test chose its backends
    scenario = "tests/integration" in Path(str(metafunc.definition.path)).as_posix()
    params = SCENARIO_BACKENDS if scenario else OTHER_BACKENDS
    metafunc.parametrize("backend", params, indirect=True)


@pytest.hookimpl(wrapper=True, trylast=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    inprocess_cli.reroute()  # after pytest's capture took sys.stdout for this phase
    return (yield)


@pytest.hookimpl(wrapper=True, trylast=True)
def pytest_runtest_teardown(item: pytest.Item) -> Iterator[None]:
    inprocess_cli.reroute()
    return (yield)


@pytest.fixture
def backend(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Backend]:
    alias = f"t{uuid.uuid4().hex[:10]}"
    if request.param == "fake":
        yield fake_backend(monkeypatch, alias)
        return
    if request.param == "lite":
        yield Backend("lite", str(tmp_path / "milvus.db"), alias)
        return
    server: MilvusServer = request.getfixturevalue("milvus_server")
    b = Backend("server", server.uri, alias)
    yield b
    drop_alias_collections(b.uri, b.alias)


def fake_backend(monkeypatch: pytest.MonkeyPatch, alias: str) -> Backend:
    """One FakeMilvus per test behind every connection the drivers open to its URI (a
    server URL, so specs take the server path); `embrel` runs in this process."""
    state = FakeState(flips_a_second_apart=True)
    uri = f"http://fake-{alias}:19530"
    real_connect = controller.drivers.wiring.connect_milvus

    def connect(
        to: str, db: str, credentials: Any, policy: Any, observer: Any = None
    ) -> MilvusPort:
        if to == uri:
            return FakeMilvus(state, observer)
        return real_connect(to, db, credentials, policy, observer)  # e.g. an unreachable one

    monkeypatch.setattr(controller.drivers.wiring, "connect_milvus", connect)
    monkeypatch.setattr(sys.modules[__name__], "_CLI_IN_PROCESS", True)
    return Backend("fake", uri, alias, state)


_CLI_IN_PROCESS = False  # set for the fake backend: its Milvus lives in this process


# -- data -------------------------------------------------------------------------


def unit_vectors(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.normal(size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def write_vectors(path: Path, ids: np.ndarray, vectors: np.ndarray) -> Path:
    dim = vectors.shape[1]
    table = pa.table(
        {
            "id": pa.array(ids, pa.int64()),
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), dim),
        }
    )
    pq.write_table(table, path, row_group_size=1000)
    return path


def write_golden(path: Path, queries: np.ndarray, relevant: np.ndarray) -> Path:
    pq.write_table(
        pa.table(
            {
                "vector": pa.array(list(queries), pa.list_(pa.float32())),
                "relevant_ids": pa.array([list(r) for r in relevant], pa.list_(pa.int64())),
            }
        ),
        path,
    )
    return path


@dataclass
class Corpus:
    """A small corpus in several versions plus a golden set labelled on v1."""

    dir: Path
    ids: np.ndarray
    vectors: dict[str, np.ndarray]

    def path(self, version: str) -> Path:
        return self.dir / f"{version}.parquet"


@pytest.fixture
def corpus(tmp_path: Path) -> Corpus:
    """v1, v2 (v1 + small noise) and broken (v1 vectors on shuffled ids), 2,000 x 32."""
    rng = np.random.default_rng(7)
    data = tmp_path / "data"
    data.mkdir()
    ids = np.arange(2000, dtype=np.int64)
    v1 = unit_vectors(rng, 2000, 32)
    v2 = v1 + 0.01 * rng.normal(size=v1.shape).astype(np.float32)
    v2 = (v2 / np.linalg.norm(v2, axis=1, keepdims=True)).astype(np.float32)
    c = Corpus(data, ids, {"v1": v1, "v2": v2, "v3": v2, "broken": v1})
    for version in ("v1", "v2", "v3"):
        write_vectors(c.path(version), ids, c.vectors[version])
    write_vectors(c.path("broken"), rng.permutation(ids), v1)
    queries = v1[:100]
    relevant = np.argsort(-(queries @ v1.T), axis=1)[:, :10]
    write_golden(data / "golden.parquet", queries, relevant)
    return c


# Latency is measured in every validation; a few searches are enough for tests.
QUICK_LATENCY = {"warmupQueries": 5, "latencyQueries": 20}


def release_yaml(
    backend: Backend,
    version: str,
    source: Path,
    golden: Path | None = None,
    min_recall: float = 0.8,
    name: str = "products",
    dimension: int = 32,
    **spec: object,
) -> dict[str, object]:
    body: dict[str, object] = {
        "alias": backend.alias,
        "version": version,
        "model": {"name": "test-model", "revision": "1"},
        "milvus": {"uri": backend.uri},
        "collection": {
            "dimension": dimension,
            "metric": "COSINE",
            "index": {"type": "HNSW", "params": {"M": 16, "efConstruction": 100}},
        },
        "source": {"files": {"uri": str(source), "idField": "id", "vectorField": "vector"}},
    }
    validation: dict[str, object] = dict(QUICK_LATENCY)
    if golden is not None:
        validation["goldenSet"] = {"uri": str(golden), "k": 10, "minRecall": min_recall}
    extra = spec.pop("validation", {})
    assert isinstance(extra, dict)
    body["validation"] = validation | extra
    # Tests inspect retention right after a flip, and only the drift tests monitor.
    promotion, monitoring = spec.pop("promotion", {}), spec.pop("monitoring", {})
    assert isinstance(promotion, dict) and isinstance(monitoring, dict)
    body["promotion"] = {"drainSeconds": 0} | promotion
    body["monitoring"] = {"enabled": False} | monitoring
    body.update(spec)
    return {
        "apiVersion": "embrel.dev/v1alpha1",
        "kind": "EmbeddingRelease",
        "metadata": {"name": name, "namespace": "test"},
        "spec": body,
    }


def write_release(path: Path, doc: dict[str, object]) -> Path:
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


# -- the CLI ----------------------------------------------------------------------


def embrel(
    *args: str, cwd: Path, check: bool = False, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run the real `embrel` entry point in a subprocess, as a user would; in this
    process on the fake backend (whose Milvus lives here)."""
    if _CLI_IN_PROCESS:
        result = inprocess_cli.run_cli(args, cwd)
    else:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        result = subprocess.run(
            [sys.executable, "-m", "controller.cli", *args],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    if check and result.returncode != 0:
        raise AssertionError(
            f"embrel {' '.join(args)} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
        )
    return result


def embrel_watch(backend: Backend, *args: str) -> subprocess.Popen[str] | inprocess_cli.Watcher:
    """`embrel ARGS` (a `run --watch`) left running, its stderr merged into stdout."""
    if backend.kind == "fake":
        return inprocess_cli.Watcher(args)
    return subprocess.Popen(
        [sys.executable, "-m", "controller.cli", *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
