"""A release whose vectors and golden set are objects in S3 (a real S3 API on loopback,
tests/support/s3_server.py), through `embrel apply` as a user runs it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import (
    ON_LITE_TOO,
    Backend,
    Corpus,
    embrel,
    release_yaml,
    write_release,
    write_vectors,
)
from tests.support.s3_server import S3Bucket, free_port


def s3_release(
    tmp_path: Path, backend: Backend, s3: S3Bucket, version: str, source: str, golden: str
) -> Path:
    doc = release_yaml(backend, version, Path("unused"))
    spec = doc["spec"]
    assert isinstance(spec, dict)
    spec["source"]["files"]["uri"] = source
    spec["validation"]["goldenSet"] = {"uri": golden, "k": 10, "minRecall": 0.8}
    return write_release(tmp_path / f"release-{version}.yaml", doc)


def upload_corpus(tmp_path: Path, s3: S3Bucket, corpus: Corpus) -> str:
    """v1 in two Parquet objects (ids 0-999, 1000-1999) and the golden set."""
    for part, rows in enumerate((slice(0, 1000), slice(1000, 2000))):
        local = write_vectors(
            tmp_path / f"part-{part}.parquet", corpus.ids[rows], corpus.vectors["v1"][rows]
        )
        s3.put(f"emb/v1/part-{part}.parquet", local)
    return s3.put("golden.parquet", corpus.dir / "golden.parquet")


@ON_LITE_TOO  # object storage on the embedded default, proven in the default suite
def test_a_release_from_s3_goes_live(
    tmp_path: Path,
    backend: Backend,
    corpus: Corpus,
    s3: S3Bucket,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    golden = upload_corpus(tmp_path, s3, corpus)
    spec = s3_release(tmp_path, backend, s3, "v1", s3.uri("emb/v1/*.parquet"), golden)
    state = ("--state-dir", str(tmp_path / "state"))
    r = embrel(*state, "apply", "-f", str(spec), cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert backend.alias_target() == f"{backend.alias}__v1"
    assert backend.collections()[f"{backend.alias}__v1"]["rows"] == 2000
    assert "recall@10=1" in r.stdout
    # The same objects again: the build hash (from their ETags) is unchanged, no rebuild.
    r = embrel(*state, "apply", "-f", str(spec), cwd=tmp_path)
    assert r.returncode == 0 and "building" not in r.stdout, r.stdout + r.stderr
    # The store unreachable: what serves stands, nothing is rebuilt or failed.
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    r = embrel(*state, "apply", "-f", str(spec), cwd=tmp_path)
    assert r.returncode == 0 and "building" not in r.stdout, r.stdout + r.stderr
    assert backend.alias_target() == f"{backend.alias}__v1"


def test_a_missing_object_fails_before_milvus_is_touched(
    tmp_path: Path, backend: Backend, corpus: Corpus, s3: S3Bucket
) -> None:
    golden = upload_corpus(tmp_path, s3, corpus)
    keys = s3.server.writer
    # The keys in the uri, and no secret in anything embrel writes or prints.
    source = f"s3://{keys.access_key}:{keys.secret_key}@{s3.name}/emb/v9/*.parquet"
    spec = s3_release(tmp_path, backend, s3, "v9", source, golden)
    state = ("--state-dir", str(tmp_path / "state"))
    r = embrel(*state, "apply", "-f", str(spec), cwd=tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"no objects match the source pattern s3://{s3.name}/emb/v9/*.parquet" in r.stdout
    assert backend.collections() == {}, "nothing is written to Milvus for a missing source"
    status = embrel(*state, "status", "products", "-o", "json", cwd=tmp_path, check=True)
    assert json.loads(status.stdout)["phase"] == "Failed"
    for text in (r.stdout, r.stderr, status.stdout):
        assert keys.secret_key not in text
