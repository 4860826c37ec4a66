"""Defects found by using embrel as a new user and as an attacker, through the real CLI.

After a proven flip nothing turns a live release into an error; conflicts are refused
before anything is built; a foreign alias is taken over only when adopted; commands
that should not change a track do not; a moved release file keeps its track.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from tests.conftest import (
    REAL_ONLY,
    REPO,
    Backend,
    Corpus,
    embrel,
    release_yaml,
    write_release,
    write_vectors,
)

MILVUS = """
import json, sys
import numpy as np
from pymilvus import DataType, MilvusClient
uri, action, name, alias = sys.argv[1:5]
c = MilvusClient(uri=uri)
if action == "create":
    s = MilvusClient.create_schema(auto_id=False)
    s.add_field("id", DataType.INT64, is_primary=True)
    s.add_field("vector", DataType.FLOAT_VECTOR, dim=32)
    c.create_collection(name, schema=s)
    rng = np.random.default_rng(3)
    c.insert(name, [{"id": i, "vector": rng.normal(size=32).tolist()} for i in range(50)])
    c.flush(name)
    ip = c.prepare_index_params()
    ip.add_index(field_name="vector", index_type="FLAT", metric_type="COSINE")
    c.create_index(name, ip)
    c.load_collection(name)
    if alias != "-":
        c.create_alias(name, alias)
else:
    try:
        target = c.describe_alias(alias)["collection_name"]
    except Exception:
        target = None
    print(json.dumps({"collections": c.list_collections(), "target": target}))
c.close()
"""


def milvus(backend: Backend, action: str, name: str, alias: str = "-") -> dict[str, Any]:
    """Act on Milvus in another process (Milvus Lite locks its folder to one process)."""
    out = subprocess.run(
        [sys.executable, "-c", MILVUS, backend.uri, action, name, alias],
        cwd=REPO,
        check=True,
        timeout=120,
        capture_output=True,
        text=True,
    )
    result: dict[str, Any] = json.loads(out.stdout) if action == "list" else {}
    return result


class Track:
    """One release track driven through the CLI, with its state folder."""

    def __init__(self, tmp_path: Path, backend: Backend) -> None:
        self.tmp, self.backend = tmp_path, backend
        self.state = ("--state-dir", str(tmp_path / "state"))

    def spec(self, version: str, source: Path, golden: Path | None = None, **kw: Any) -> Path:
        doc = release_yaml(self.backend, version, source, golden, **kw)
        return write_release(self.tmp / f"{version}.yaml", doc)

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return embrel(*self.state, *args, cwd=self.tmp)

    def apply(
        self, version: str, source: Path, golden: Path | None = None, **kw: Any
    ) -> subprocess.CompletedProcess[str]:
        return self.run("apply", "-f", str(self.spec(version, source, golden, **kw)))

    def status(self) -> dict[str, Any]:
        r = self.run("status", "products", "-o", "json")
        assert r.returncode == 0, r.stdout + r.stderr
        result: dict[str, Any] = json.loads(r.stdout)
        return result

    def record(self) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(
            (self.tmp / "state/tracks/test.products.json").read_text()
        )
        return result


def c(backend: Backend, version: str) -> str:
    return f"{backend.alias}__{version}"


# -- 1. nothing after a proven flip turns a live release into an error ---------------


def test_a_reference_that_cannot_be_written_is_a_warning_on_a_live_release(
    tmp_path: Path, backend: Backend, corpus: Corpus
) -> None:
    track = Track(tmp_path, backend)
    (tmp_path / "state").mkdir()
    (tmp_path / "state/references").write_text("not a folder")  # every write fails
    monitoring = {"enabled": True, "interval": "1h"}
    for attempt in (1, 2):  # a re-apply neither crashes nor fails
        r = track.apply("v1", corpus.path("v1"), monitoring=monitoring)
        assert r.returncode == 0, f"attempt {attempt}\n{r.stdout}\n{r.stderr}"
        assert "Traceback" not in r.stderr
        status = track.status()
        assert status["phase"] == "Live", status
        assert status["live"]["collection"] == c(backend, "v1")
        assert "capture_reference" in status["message"] and "warning" in status["message"]
    assert backend.alias_target() == c(backend, "v1")


def test_degenerate_vectors_leave_a_live_release_live(tmp_path: Path, backend: Backend) -> None:
    """500 all-zero vectors under L2: drift statistics are undefined, and said so."""
    track = Track(tmp_path, backend)
    zeros = write_vectors(
        tmp_path / "zeros.parquet", np.arange(500), np.zeros((500, 16), np.float32)
    )
    monitoring = {"enabled": True, "interval": "1s"}
    doc = release_yaml(backend, "v1", zeros, dimension=16, monitoring=monitoring)
    doc["spec"]["collection"]["metric"] = "L2"  # type: ignore[index]
    spec = write_release(tmp_path / "v1.yaml", doc)
    r = track.run("apply", "-f", str(spec))
    assert r.returncode == 0 and "switched alias" in r.stdout, r.stdout + r.stderr
    time.sleep(1.5)  # the drift interval has passed: the next apply measures
    r = track.run("apply", "-f", str(spec))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "measuring drift" in r.stdout and "RuntimeWarning" not in r.stderr
    assert "undefined" in r.stdout and "degenerate" in r.stdout
    status = track.status()
    assert status["phase"] == "Live" and status["live"]["collection"] == c(backend, "v1")
    assert status["drift"]["undefined"] == ["same_id_cosine"], status["drift"]


# -- 2. an alias named like a collection is refused before building ------------------


# Real only: the foreign collection is made with pymilvus in another process.
@REAL_ONLY
def test_alias_named_like_a_collection_is_refused_before_anything_is_built(
    tmp_path: Path, backend: Backend, corpus: Corpus
) -> None:
    milvus(backend, "create", backend.alias)  # a plain collection bearing the alias's name
    track = Track(tmp_path, backend)
    r = track.apply("v1", corpus.path("v1"))
    assert r.returncode == 1, r.stdout + r.stderr
    assert "AliasConflict" in r.stdout or "name of an existing collection" in r.stdout
    assert "building" not in r.stdout
    assert c(backend, "v1") not in milvus(backend, "list", "-", backend.alias)["collections"]
    assert track.status()["phase"] == "Failed"


# -- 3. a foreign alias is taken over only when adopted ------------------------------


# Real only: the foreign collection is made with pymilvus in another process.
@REAL_ONLY
def test_foreign_alias_is_refused_unless_adopted_and_adopted_is_a_rollback_target(
    tmp_path: Path, backend: Backend, corpus: Corpus
) -> None:
    foreign = f"{backend.alias}_hnsw_2024"  # not named like embrel's collections
    milvus(backend, "create", foreign, backend.alias)
    track = Track(tmp_path, backend)

    r = track.apply("v1", corpus.path("v1"))
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"spec.adopt: {foreign}" in r.stdout
    held = milvus(backend, "list", "-", backend.alias)
    assert held["target"] == foreign and c(backend, "v1") not in held["collections"]

    keep_nothing = {"retention": {"keepPrevious": 0, "keepLoaded": 0}}
    r = track.apply("v1", corpus.path("v1"), adopt=foreign, **keep_nothing)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"{foreign} -> {c(backend, 'v1')}" in r.stdout
    props = backend.collections()[c(backend, "v1")]["properties"]
    assert props.get("embrel.adopted") == foreign

    r = track.run("rollback", "products")
    assert r.returncode == 0, r.stdout + r.stderr
    held = milvus(backend, "list", "-", backend.alias)
    assert held["target"] == foreign, "rollback returns to the adopted collection"
    assert track.status()["phase"] == "RolledBack"

    r = track.run("promote", "products")
    assert r.returncode == 0, r.stdout + r.stderr
    held = milvus(backend, "list", "-", backend.alias)
    assert held["target"] == c(backend, "v1")
    assert foreign in held["collections"], "an adopted collection is never dropped"


# -- 4. commands that should not change a track do not -------------------------------


def test_validate_and_refused_requests_change_nothing(
    tmp_path: Path, backend: Backend, corpus: Corpus
) -> None:
    track = Track(tmp_path, backend)
    keep_nothing = {"retention": {"keepPrevious": 0, "keepLoaded": 0}}
    assert track.apply("v1", corpus.path("v1"), **keep_nothing).returncode == 0
    assert track.apply("v2", corpus.path("v2"), **keep_nothing).returncode == 0
    assert c(backend, "v1") not in backend.collections(), "retention dropped v1"

    before = track.record()
    r = track.run("rollback", "products", "--to", "v1")
    assert r.returncode != 0, r.stdout + r.stderr
    assert "cannot roll back to version v1" in r.stdout
    after = track.record()
    assert after["status"] == before["status"], "a refused rollback changes nothing"
    assert track.status()["phase"] == "Live"

    r = track.run("validate", "-f", str(track.spec("v3", corpus.path("v3"), **keep_nothing)))
    assert r.returncode == 0, r.stdout + r.stderr
    after = track.record()
    assert after["specText"] == before["specText"], "validate never records its spec"
    assert after["status"] == before["status"] and after["generation"] == before["generation"]
    assert backend.alias_target() == c(backend, "v2")

    r = track.apply("v4", corpus.path("broken"), corpus.dir / "golden.parquet", **keep_nothing)
    assert r.returncode == 1, r.stdout + r.stderr
    failed = track.record()
    r = track.run("abort", "products")
    assert r.returncode != 0, r.stdout + r.stderr
    assert track.record()["status"] == failed["status"], "a refused abort changes nothing"
    outcomes = {(h["version"], h["outcome"]) for h in track.status()["history"]}
    assert ("v4", "Failed") in outcomes and ("v4", "Aborted") not in outcomes


def test_validate_on_the_live_version_of_a_rolled_back_track_changes_nothing(
    tmp_path: Path, backend: Backend, corpus: Corpus
) -> None:
    track = Track(tmp_path, backend)
    assert track.apply("v1", corpus.path("v1")).returncode == 0
    assert track.apply("v2", corpus.path("v2")).returncode == 0
    assert track.run("rollback", "products").returncode == 0
    before = track.record()
    assert before["status"]["phase"] == "RolledBack"

    r = track.run("validate", "-f", str(track.spec("v1", corpus.path("v1"))))
    assert "clearing rollback mark" not in r.stdout, r.stdout
    assert track.record() == before, "validate never changes what a track records"
    props = backend.collections()[c(backend, "v2")]["properties"]
    assert props.get("embrel.rolledBackAt"), "the rollback mark stays"


# -- 5. a moved release file keeps its track -----------------------------------------


def test_the_same_files_named_from_another_folder_are_the_same_build(
    tmp_path: Path, backend: Backend, corpus: Corpus
) -> None:
    emb = tmp_path / "emb" / "v2"
    emb.mkdir(parents=True)
    write_vectors(emb / "part-0.parquet", corpus.ids, corpus.vectors["v2"])
    track = Track(tmp_path, backend)
    first = release_yaml(backend, "v2", Path("emb/v2/*.parquet"))
    r = track.run("apply", "-f", str(write_release(tmp_path / "release.yaml", first)))
    assert r.returncode == 0, r.stdout + r.stderr

    moved = tmp_path / "releases"
    moved.mkdir()
    again = release_yaml(backend, "v2", Path("../emb/v2/*.parquet"))
    r = track.run("apply", "-f", str(write_release(moved / "release.yaml", again)))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "different model, collection or source" not in r.stdout
    assert "building the candidate" not in r.stdout
    assert track.status()["phase"] == "Live"

    # Other content under the same version is still a conflict.
    write_vectors(emb / "part-0.parquet", corpus.ids, corpus.vectors["v1"])
    r = track.run("apply", "-f", str(moved / "release.yaml"))
    assert r.returncode == 1 and "different model, collection or source" in r.stdout


def test_history_has_one_entry_per_version_in_the_order_things_happened(
    tmp_path: Path, backend: Backend, corpus: Corpus
) -> None:
    track = Track(tmp_path, backend)
    golden = corpus.dir / "golden.parquet"
    assert track.apply("v1", corpus.path("v1"), golden).returncode == 0
    assert track.apply("v2", corpus.path("v2"), golden).returncode == 0
    assert track.apply("v3", corpus.path("broken"), golden).returncode == 1
    assert track.run("rollback", "products").returncode == 0
    history = [(h["version"], h["outcome"]) for h in track.status()["history"]]
    assert history == [("v2", "RolledBack"), ("v3", "Failed"), ("v1", "Live")]
