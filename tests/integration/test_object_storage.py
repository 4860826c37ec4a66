"""A release whose vectors and golden set are objects in S3, Google Cloud Storage or
Azure Blob Storage (real APIs on loopback: tests/support/object_stores.py), through
`embrel apply` as a user runs it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import (
    REAL,
    Backend,
    Corpus,
    embrel,
    release_yaml,
    write_release,
    write_vectors,
)
from tests.support.object_stores import Bucket, every_store


def store_release(tmp_path: Path, backend: Backend, version: str, source: str, golden: str) -> Path:
    doc = release_yaml(backend, version, Path("unused"))
    spec = doc["spec"]
    assert isinstance(spec, dict)
    spec["source"]["files"]["uri"] = source
    spec["validation"]["goldenSet"] = {"uri": golden, "k": 10, "minRecall": 0.8}
    return write_release(tmp_path / f"release-{version}.yaml", doc)


def upload_corpus(tmp_path: Path, store: Bucket, corpus: Corpus) -> str:
    """v1 in two Parquet objects (ids 0-999, 1000-1999) and the golden set."""
    for part, rows in enumerate((slice(0, 1000), slice(1000, 2000))):
        local = write_vectors(
            tmp_path / f"part-{part}.parquet", corpus.ids[rows], corpus.vectors["v1"][rows]
        )
        store.put(f"emb/v1/part-{part}.parquet", local)
    return store.put("golden.parquet", corpus.dir / "golden.parquet")


# S3 on the embedded default (Lite) too, proven in the default suite; GCS and Azure on
# the in-memory fake (what is read from the store is the same whatever Milvus is).
@pytest.mark.parametrize(
    ("backend", "store"),
    [
        ("fake", "s3"),
        ("lite", "s3"),
        pytest.param("server", "s3", marks=[pytest.mark.server, REAL]),
        ("fake", "gs"),
        ("fake", "az"),
    ],
    indirect=True,
)
def test_a_release_from_object_storage_goes_live(
    tmp_path: Path,
    backend: Backend,
    corpus: Corpus,
    store: Bucket,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    golden = upload_corpus(tmp_path, store, corpus)
    spec = store_release(tmp_path, backend, "v1", store.uri("emb/v1/*.parquet"), golden)
    state = ("--state-dir", str(tmp_path / "state"))
    r = embrel(*state, "apply", "-f", str(spec), cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert backend.alias_target() == f"{backend.alias}__v1"
    assert backend.collections()[f"{backend.alias}__v1"]["rows"] == 2000
    assert "recall@10=1" in r.stdout
    # The same objects again: the build hash (from their ETags) is unchanged, no rebuild.
    r = embrel(*state, "apply", "-f", str(spec), cwd=tmp_path)
    assert r.returncode == 0 and "building" not in r.stdout, r.stdout + r.stderr
    for text in (r.stdout, r.stderr):
        assert store.secret not in text
    if store.scheme != "s3":
        return  # that each store's failure to answer is temporary: the unit tests
    # The store unreachable: what serves stands, nothing is rebuilt or failed.
    monkeypatch.setenv("AWS_ENDPOINT_URL", store.unreachable["AWS_ENDPOINT_URL"])
    r = embrel(*state, "apply", "-f", str(spec), cwd=tmp_path)
    assert r.returncode == 0 and "building" not in r.stdout, r.stdout + r.stderr
    assert backend.alias_target() == f"{backend.alias}__v1"


@every_store()
def test_a_missing_object_fails_before_milvus_is_touched(
    tmp_path: Path, backend: Backend, corpus: Corpus, store: Bucket
) -> None:
    golden = upload_corpus(tmp_path, store, corpus)
    # The keys in the uri where the scheme takes them (S3, Azure), else in the
    # environment (a GCS token), and no secret in anything embrel writes or prints.
    source = store.uri_with_secret("emb/v9/*.parquet")
    spec = store_release(tmp_path, backend, "v9", source, golden)
    state = ("--state-dir", str(tmp_path / "state"))
    r = embrel(*state, "apply", "-f", str(spec), cwd=tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"no objects match the source pattern {store.uri('emb/v9/*.parquet')}" in r.stdout
    assert backend.collections() == {}, "nothing is written to Milvus for a missing source"
    status = embrel(*state, "status", "products", "-o", "json", cwd=tmp_path, check=True)
    assert json.loads(status.stdout)["phase"] == "Failed"
    for text in (r.stdout, r.stderr, status.stdout):
        assert store.secret not in text
