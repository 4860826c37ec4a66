"""Shared fixtures: the two Milvus backends, release files, data, the CLI.

``backend`` runs a test on Milvus Lite (a fresh local folder per test) and on the
real Milvus 2.3.5 standalone server (started once per session, stopped at the end;
each test gets its own alias so tests never see each other's collections).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from tests.support.milvus_server import (
    MilvusServer,
    drop_alias_collections,
    milvus_server_available,
)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def milvus_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MilvusServer]:
    if not milvus_server_available():
        pytest.fail("milvus-server is not installed; run `make test` (it installs milvus==2.3.5)")
    server = MilvusServer()
    server.start(tmp_path_factory.mktemp("milvus-server"))
    try:
        yield server
    finally:
        server.stop()


@dataclass
class Backend:
    kind: str  # "lite" | "server"
    uri: str
    alias: str

    def inspect(self) -> dict[str, Any]:
        """What Milvus holds for this alias, asked with pymilvus in a separate process
        (Milvus Lite would otherwise stay locked by the test process)."""
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


@pytest.fixture(params=["lite", pytest.param("server", marks=pytest.mark.server)])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    alias = f"t{uuid.uuid4().hex[:10]}"
    if request.param == "lite":
        yield Backend("lite", str(tmp_path / "milvus.db"), alias)
        return
    server: MilvusServer = request.getfixturevalue("milvus_server")
    b = Backend("server", server.uri, alias)
    yield b
    drop_alias_collections(b.uri, b.alias)


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
    """Run the real `embrel` entry point in a subprocess, as a user would."""
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
