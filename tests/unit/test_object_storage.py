"""Sources in object storage, read from real APIs on loopback: S3 (moto_server, IAM
enforced: tests/support/s3_server.py), Google Cloud Storage (gcp-storage-emulator) and
Azure Blob Storage (Azurite), tests/support/object_stores.py. Globs, hive-partitioned
datasets and each failure with its cause on all three; every format and input kind and
the source identity on S3.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from controller.errors import SourceError, TemporaryError
from controller.read_ahead import read_ahead
from controller.secrets import storage_settings
from controller.sources import LocalFiles, location, open_files_source
from controller.sources.base import VectorBatch
from controller.sources.location import StorageSettings
from controller.spec import DocumentsSource, FilesSource, SourceSpec, release_from_dict
from tests.support.object_stores import Bucket, every_store
from tests.support.s3_server import S3Bucket
from tests.support.specs import minimal_release


def parquet_bytes(tmp_path: Path, first_id: int, n: int = 3, dim: int = 4, **extra: list) -> Path:
    ids = np.arange(first_id, first_id + n, dtype=np.int64)
    vectors = np.arange(n * dim, dtype=np.float32).reshape(n, dim) + first_id
    columns = {"id": ids, "vector": pa.array(list(vectors), pa.list_(pa.float32()))}
    columns.update({k: pa.array(v) for k, v in extra.items()})
    path = tmp_path / f"{first_id}.parquet"
    pq.write_table(pa.table(columns), path)
    return path


def rows(uri: str, extras: tuple[str, ...] = (), **kw: object) -> list[VectorBatch]:
    return list(open_files_source(uri, "id", "vector", extras, **kw).batches(100))  # type: ignore[arg-type]


@every_store()
def test_a_glob_reads_every_matching_object_in_key_order(store: Bucket, tmp_path: Path) -> None:
    for key, first in (("emb/b.parquet", 10), ("emb/a.parquet", 0), ("emb/c.parquet", 20)):
        store.put(key, parquet_bytes(tmp_path, first))
    store.put("emb/notes.txt", b"not data")
    store.put("emb/deeper/d.parquet", parquet_bytes(tmp_path, 90))  # * stays in one segment
    source = open_files_source(store.uri("emb/*.parquet"), "id", "vector")
    assert source.describe() == f"3 parquet files matching {store.uri('emb/*.parquet')}"
    assert source.count_rows() == 9
    batches = list(source.batches(2))
    assert [b.origin for b in batches if b.first_row == 0] == [
        store.uri(f"emb/{name}.parquet") for name in "abc"
    ]
    assert np.concatenate([b.ids for b in batches]).tolist() == [0, 1, 2, 10, 11, 12, 20, 21, 22]
    assert batches[0].vectors.tolist() == [[0, 1, 2, 3], [4, 5, 6, 7]]
    every = rows(store.uri("emb/**/*.parquet"))  # ** spans folders
    assert sorted(np.concatenate([b.ids for b in every]).tolist())[-1] == 92


@every_store()
def test_a_folder_is_a_hive_partitioned_dataset(store: Bucket, tmp_path: Path) -> None:
    store.put("ds/year=2025/lang=fr/part-0.parquet", parquet_bytes(tmp_path, 20, n=2))
    store.put("ds/year=2024/lang=en/part-0.parquet", parquet_bytes(tmp_path, 0, n=2))
    store.put("ds/_SUCCESS", b"")
    batches = rows(store.uri("ds"), ("year", "lang"))
    assert [(b.ids.tolist(), b.fields) for b in batches] == [
        ([0, 1], {"year": [2024, 2024], "lang": ["en", "en"]}),
        ([20, 21], {"year": [2025, 2025], "lang": ["fr", "fr"]}),
    ]
    assert rows(store.uri("ds/"))[0].origin == store.uri("ds/year=2024/lang=en/part-0.parquet")


@every_store()
def test_missing_object_empty_glob_and_missing_bucket_are_named(store: Bucket) -> None:
    store.put("emb/a.txt", b"1\n")
    with pytest.raises(SourceError, match="does not exist") as missing:
        rows(store.uri("emb/missing.parquet"))
    assert store.uri("emb/missing.parquet") in str(missing.value)
    with pytest.raises(SourceError, match=r"no objects match the source pattern .*emb/\*\.parquet"):
        rows(store.uri("emb/*.parquet"))
    for key in ("emb/a.parquet", "emb/*.parquet"):
        uri = f"{store.scheme}://no-such-bucket/{key}"
        with pytest.raises(SourceError, match="bucket 'no-such-bucket' does not exist") as info:
            rows(uri)
        assert uri in str(info.value)


def test_access_denied_fails_at_once_with_its_cause(s3: S3Bucket, tmp_path: Path) -> None:
    uri = s3.put("emb/a.parquet", parquet_bytes(tmp_path, 0))
    nobody = StorageSettings(environ=s3.server.env(s3.server.nobody))
    for target in (uri, s3.uri("emb/*.parquet")):
        with pytest.raises(SourceError, match=r"access denied .*ACCESS_DENIED") as denied:
            rows(target, settings=nobody)
        assert not isinstance(denied.value, TemporaryError)


# GCS is left out: its emulator takes any credentials (tests/support/gcs_server.py).
@every_store("s3", "az")
def test_refused_credentials_fail_at_once_and_are_never_shown(
    store: Bucket, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store.put("emb/a.parquet", parquet_bytes(tmp_path, 0))
    assert store.refused is not None
    refused = StorageSettings(environ=store.refused)
    caplog.set_level(logging.DEBUG)
    for target in (store.uri("emb/a.parquet"), store.uri("emb/*.parquet")):
        with pytest.raises(SourceError, match=r"credentials were refused|access denied") as info:
            rows(target, settings=refused)
        assert not isinstance(info.value, TemporaryError)
        assert target in str(info.value)
        for secret in refused.secret_values():
            assert secret not in str(info.value)
            assert secret not in caplog.text


@every_store()
def test_an_unreachable_store_is_temporary(store: Bucket, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(location, "GCS_RETRY_S", 1.0)  # GCS retries for as long as told
    with pytest.raises(TemporaryError, match="object storage is unavailable") as info:
        rows(store.uri("emb/a.parquet"), settings=StorageSettings(environ=store.unreachable))
    assert store.secret not in str(info.value)


def options(uri: str, **environ: str) -> dict[str, object]:
    """The options pyarrow's filesystem for ``uri`` was made with (no request is sent)."""
    fs = location.one_file(uri, None, StorageSettings(environ=environ)).fs
    return dict(fs.__reduce__()[1][0])


def test_an_azure_endpoint_names_the_account_by_host_or_by_path() -> None:
    key = {"AZURE_STORAGE_ACCOUNT_NAME": "acct", "AZURE_STORAGE_ACCOUNT_KEY": "a2V5"}
    cloud = options("az://c/k", **key, AZURE_STORAGE_ENDPOINT="https://acct.blob.core.cn/")
    assert (cloud["blob_storage_authority"], cloud["dfs_storage_authority"]) == (
        ".blob.core.cn",
        ".dfs.core.cn",
    )
    assert cloud["blob_storage_scheme"] == "https"
    for endpoint in ("http://127.0.0.1:10000/acct", "127.0.0.1:10000"):
        emulator = options("az://c/k", **key, AZURE_STORAGE_ENDPOINT=endpoint)
        assert emulator["blob_storage_authority"] == "127.0.0.1:10000"
        assert emulator["dfs_storage_authority"] == "127.0.0.1:10000"
    assert options("az://c/k", **key)["blob_storage_authority"] == ".blob.core.windows.net"
    with pytest.raises(SourceError, match="has the path /other"):
        options("az://c/k", **key, AZURE_STORAGE_ENDPOINT="http://127.0.0.1:10000/other")


def test_a_gcs_emulator_host_may_omit_the_scheme_and_a_token_is_sent() -> None:
    bare = options("gs://b/k", STORAGE_EMULATOR_HOST="localhost:4443")
    assert (bare["scheme"], bare["endpoint_override"], bare["anonymous"]) == (
        "http",
        "localhost:4443",
        True,
    )
    token = options("gs://b/k", GOOGLE_OAUTH_ACCESS_TOKEN="ya29.t")
    assert token["access_token"] == "ya29.t" and not token["anonymous"]


def test_a_secret_in_the_uri_is_used_and_never_shown(
    s3: S3Bucket, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    s3.put("emb/a.parquet", parquet_bytes(tmp_path, 0))
    keys = s3.server.writer
    secret_uri = f"s3://{keys.access_key}:{keys.secret_key}@{s3.name}/emb/*.parquet"
    # The environment holds keys that may read nothing: the uri's keys are the ones used.
    nobody = StorageSettings(environ=s3.server.env(s3.server.nobody))
    source = open_files_source(secret_uri, "id", "vector", settings=nobody)
    assert len(next(iter(source.batches(10)))) == 3
    assert keys.secret_key not in source.describe()
    caplog.set_level(logging.DEBUG)
    missing = f"s3://{keys.access_key}:{keys.secret_key}@{s3.name}/emb/none.parquet"
    denied = (
        f"s3://{s3.server.nobody.access_key}:{s3.server.nobody.secret_key}@{s3.name}/emb/a.parquet"
    )
    for uri, cause in ((missing, "does not exist"), (denied, "access denied")):
        with pytest.raises(SourceError, match=cause) as info:
            rows(uri)
        for secret in (keys.secret_key, s3.server.nobody.secret_key):
            assert secret not in str(info.value)
            assert secret not in caplog.text


def test_every_input_kind_reads_from_the_store(s3: S3Bucket, tmp_path: Path) -> None:
    """Documents, id lists (.npy, text), .npy vectors with sibling ids, JSON Lines,
    golden sets and query sets: each through the DataPort, from s3://."""
    data = LocalFiles(tmp_path)
    s3.put("docs/a.jsonl", b'{"id": 1, "text": "one"}\n{"id": 2, "text": "two"}\n')
    docs = data.open_documents(DocumentsSource(uri=s3.uri("docs/*.jsonl")), [])
    assert [b.texts for b in docs.batches(10)] == [["one", "two"]]
    ids = np.array([5, 3], dtype=np.int64)
    np.save(tmp_path / "ids.npy", ids)
    s3.put("del/a.npy", (tmp_path / "ids.npy").read_bytes())
    s3.put("del/b.txt", b"# deleted\n7\n")
    assert data.read_ids(s3.uri("del/*"), "id").tolist() == [3, 5, 7]
    vectors = np.arange(12, dtype=np.float32).reshape(4, 3)
    np.save(tmp_path / "v.npy", vectors)
    np.save(tmp_path / "v.ids.npy", np.array([9, 8, 7, 6]))
    s3.put("npy/v.npy", (tmp_path / "v.npy").read_bytes())
    s3.put("npy/v.ids.npy", (tmp_path / "v.ids.npy").read_bytes())
    npy = list(data.open_vectors(FilesSource(uri=s3.uri("npy/*.npy")), []).batches(3))
    assert [b.ids.tolist() for b in npy] == [[9, 8, 7], [6]]
    assert np.concatenate([b.vectors for b in npy]).tolist() == vectors.tolist()
    s3.put("j/a.jsonl", b'{"id": 4, "vector": [1, 2]}\n')
    assert rows(s3.uri("j/a.jsonl"))[0].vectors.tolist() == [[1.0, 2.0]]
    golden = pa.table(
        {
            "vector": pa.array([[1.0, 0.0], [0.0, 1.0]], pa.list_(pa.float32())),
            "relevant_ids": pa.array([[1], [2]], pa.list_(pa.int64())),
        }
    )
    pq.write_table(golden, tmp_path / "golden.parquet")
    uri = s3.put("golden.parquet", tmp_path / "golden.parquet")
    assert data.read_golden_set(uri).queries.shape == (2, 2)
    assert data.read_query_vectors(uri, "vector", 10, seed=1).shape == (2, 2)
    with pytest.raises(SourceError, match="does not exist"):
        data.read_golden_set(s3.uri("nothing.parquet"))


def test_source_identity_follows_the_objects_without_reading_them(
    s3: S3Bucket, tmp_path: Path
) -> None:
    s3.put("emb/a.parquet", parquet_bytes(tmp_path, 0))
    s3.put("emb/b.parquet", parquet_bytes(tmp_path, 10))
    data = LocalFiles(tmp_path)
    spec = SourceSpec(files=FilesSource(uri=s3.uri("emb/*.parquet")))
    first = data.source_identity(spec)
    assert data.source_identity(spec) == first
    s3.put("emb/b.parquet", parquet_bytes(tmp_path, 10, n=4))  # rewritten: new ETag, size
    assert data.source_identity(spec) != first
    with pytest.raises(SourceError, match="no objects match"):
        data.source_identity(SourceSpec(files=FilesSource(uri=s3.uri("none/*.parquet"))))


def test_a_storage_secret_ref_wins_over_the_environment(tmp_path: Path) -> None:
    """spec.storage.secretRef: the Secret's keys over the environment (Kubernetes driver);
    the local driver, which reads no Secrets, uses the environment."""
    doc = minimal_release(
        "p",
        namespace="shop",
        alias="p",
        milvus={"uri": "./m.db"},
        collection={"dimension": 4},
        source={"files": {"uri": "s3://b/*.parquet"}},
        storage={"secretRef": "s3-reader"},
    )
    release = release_from_dict(doc)
    asked: list[tuple[str, str, str]] = []

    def read(namespace: str, name: str, field: str) -> dict[str, str]:
        asked.append((namespace, name, field))
        return {"AWS_SECRET_ACCESS_KEY": "from-secret", "unrelated": "x"}

    settings = storage_settings(release, read)
    assert asked == [("shop", "s3-reader", "spec.storage.secretRef")]
    assert settings.secret == {"AWS_SECRET_ACCESS_KEY": "from-secret"}
    assert settings.secret_values() == ["from-secret"]
    assert storage_settings(release, None).secret == {}


def test_read_ahead_keeps_order_raises_in_place_and_stops_with_its_reader() -> None:
    closed = threading.Event()

    def items() -> Iterator[int]:
        try:
            yield from range(3)
            raise OSError("the store went away")
        finally:
            closed.set()

    got: list[int] = []
    with pytest.raises(OSError, match="went away"):
        got.extend(read_ahead(items(), depth=1))
    assert got == [0, 1, 2]

    def endless() -> Iterator[int]:
        try:
            yield from itertools.count()
        finally:
            closed.set()

    closed.clear()
    reader = read_ahead(endless(), depth=2)
    assert [next(reader), next(reader)] == [0, 1]
    reader.close()  # the caller stops early: the thread stops and closes its source
    assert closed.wait(2)
