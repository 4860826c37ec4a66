"""Invariant 3: embrel drops only what it created, and never a collection an alias points to."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from controller.schema import Schema
from controller.sources.base import VectorBatch
from tests.conftest import REPO, Backend, Corpus, embrel, release_yaml, write_release
from tests.support.fake_milvus import FakeMilvus

SETUP = """
import sys
import numpy as np
from pymilvus import DataType, MilvusClient
uri, alias, action = sys.argv[1:4]
c = MilvusClient(uri=uri)
if action == "legacy":
    s = MilvusClient.create_schema(auto_id=False)
    s.add_field("id", DataType.INT64, is_primary=True)
    s.add_field("vector", DataType.FLOAT_VECTOR, dim=32)
    name = f"{alias}__legacy"
    c.create_collection(name, schema=s)
    c.insert(name, [{"id": i, "vector": np.ones(32, dtype=np.float32)} for i in range(10)])
    c.flush(name)
    ip = c.prepare_index_params()
    ip.add_index(field_name="vector", index_type="FLAT", metric_type="COSINE")
    c.create_index(name, ip)
    c.load_collection(name)
    c.create_alias(name, alias)
elif action == "release":
    c.release_collection(f"{alias}__legacy")
else:
    c.create_alias(f"{alias}__v1", f"{alias}_pinned")
c.close()
"""


def setup_milvus(backend: Backend, action: str) -> None:
    """What another tool does to Milvus: with pymilvus in another process, or on the fake."""
    if backend.fake is not None:
        setup_fake(FakeMilvus(backend.fake), backend.alias, action)
        return
    subprocess.run(
        [sys.executable, "-c", SETUP, backend.uri, backend.alias, action],
        cwd=REPO,
        check=True,
        timeout=120,
        capture_output=True,
    )


def setup_fake(fake: FakeMilvus, alias: str, action: str) -> None:
    """SETUP's three actions through the fake's port."""
    name = f"{alias}__legacy"
    if action == "legacy":
        fake.create_collection(name, Schema(32), {})
        ones = np.ones((10, 32), dtype=np.float32)
        fake.insert(name, VectorBatch(np.arange(10, dtype=np.int64), ones, {}, "legacy", 0))
        fake.row_count(name)
        fake.ensure_index(name, "FLAT", "COSINE", {})
        fake.load(name)
        fake.point_alias(alias, name)
    elif action == "release":
        fake.release(name)
    else:
        fake.point_alias(f"{alias}_pinned", f"{alias}__v1")


def test_foreign_and_aliased_collections_survive_retention(
    tmp_path: Path, backend: Backend, corpus: Corpus
) -> None:
    setup_milvus(backend, "legacy")  # an existing deployment, not made by embrel, behind the alias
    # Taking the alias over from a collection embrel did not create needs spec.adopt.
    keep_nothing = {
        "retention": {"keepPrevious": 0, "keepLoaded": 0},
        "adopt": f"{backend.alias}__legacy",
    }
    state = ("--state-dir", str(tmp_path / "state"))

    for version in ("v1", "v2"):
        doc = release_yaml(backend, version, corpus.path(version), **keep_nothing)
        spec = write_release(tmp_path / f"{version}.yaml", doc)
        r = embrel(*state, "apply", "-f", str(spec), cwd=tmp_path)
        assert r.returncode == 0, r.stdout + r.stderr
        if version == "v1":
            assert "(none)" not in r.stdout and f"{backend.alias}__legacy ->" in r.stdout
            setup_milvus(backend, "pin")  # someone else points another alias at v1

    held = backend.inspect()
    assert held["alias_target"] == f"{backend.alias}__v2"
    names = set(held["collections"])
    assert f"{backend.alias}__legacy" in names, "dropped a collection embrel did not create"
    assert f"{backend.alias}__v1" in names, "dropped a collection another alias points to"
    assert held["collections"][f"{backend.alias}__v1"]["aliases"] == [f"{backend.alias}_pinned"]
