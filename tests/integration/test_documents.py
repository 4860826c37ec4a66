"""Documents releases on both backends, with a deterministic embedder (no model load).

What embrel does with texts and vectors: change detection against live by content
hash, copying unchanged vectors, the embedding cache across releases, a damaged
cache entry embedded again, and the rows Milvus ends up holding. The same path with
the real model is tests/integration/test_documents_model.py (heavy).
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from controller.config import ControllerConfig
from controller.drivers.local import LocalController
from controller.embedding.content import content_hash, embedding_input
from controller.spec import EmbedderSpec, parse_release
from controller.status import Phase
from tests.conftest import Backend, release_yaml, write_release
from tests.support.corpus import stdlib_paragraphs
from tests.support.embedders import Counting, HashingEmbedder, hashed_vector

DIM = 32
EMBEDDER = {"model": "test-hashing", "revision": "1", "batchSize": 64}
TEST_EMBEDDER = EmbedderSpec.model_validate(EMBEDDER)


class Quiet:
    def event(self, reason: str, message: str, warning: bool = False) -> None:
        pass

    def progress(self, stage: str, total: int | None):  # type: ignore[no-untyped-def]
        from contextlib import nullcontext

        return nullcontext(lambda n: None)


def write_documents(path: Path, docs: dict[int, tuple[str, str]]) -> Path:
    ids = sorted(docs)
    pq.write_table(
        pa.table(
            {
                "id": pa.array(ids, pa.int64()),
                "text": [docs[i][0] for i in ids],
                "title": [docs[i][1] for i in ids],
            }
        ),
        path,
    )
    return path


def documents_doc(
    backend: Backend, version: str, path: Path, dimension: int, embedder: EmbedderSpec
) -> dict[str, object]:
    doc = release_yaml(
        backend,
        version,
        path,
        dimension=dimension,
        collection={
            "dimension": dimension,
            "metric": "COSINE",
            "index": {"type": "HNSW", "params": {"M": 16, "efConstruction": 100}},
            "fields": [{"name": "title", "type": "VARCHAR", "maxLength": 512}],
        },
        embedder=embedder.model_dump(mode="json", by_alias=True),
    )
    spec = doc["spec"]
    assert isinstance(spec, dict)
    spec["source"] = {
        "documents": {
            "uri": str(path),
            "idField": "id",
            "textField": "text",
            "metadataFields": ["title"],
        }
    }
    return doc


def embedded_as(doc: tuple[str, str]) -> str:
    return embedding_input(doc[0], {"title": doc[1]}, ["title"])


class Releases:
    def __init__(
        self,
        tmp_path: Path,
        backend: Backend,
        dimension: int = DIM,
        embedder: EmbedderSpec = TEST_EMBEDDER,
    ) -> None:
        self.tmp, self.backend = tmp_path, backend
        self.dimension, self.spec = dimension, embedder
        self.embedder = Counting(lambda spec: HashingEmbedder(dimension))

    def apply(self, version: str, docs: dict[int, tuple[str, str]]) -> dict[str, Any]:
        """Release ``docs`` as ``version``; the texts embedded and status.build."""
        path = write_documents(self.tmp / f"{version}.parquet", docs)
        doc = documents_doc(self.backend, version, path, self.dimension, self.spec)
        spec = write_release(self.tmp / f"{version}.yaml", doc)
        config = ControllerConfig(state_dir=self.tmp / "state")
        controller = LocalController(config, Quiet(), embedders=self.embedder.factory)
        self.embedder.reset()
        try:
            text = spec.read_text()
            release = parse_release(text, str(spec))
            controller.record_spec(spec, text, release)
            result = controller.reconcile_track(release.track)
        finally:
            controller.close()
        assert result.status.phase == Phase.LIVE, result.status.message
        assert result.status.build is not None
        return result.status.build

    def check_collection(self, version: str, docs: dict[int, tuple[str, str]]) -> None:
        """Every row: its document's title, content hash and embedding, nothing else."""
        collection = f"{self.backend.alias}__{version}"
        got = self.backend.read(collection, ["title", "embrel_content_hash"], in_process=True)
        assert got["ids"].tolist() == sorted(docs)
        spec = TEST_EMBEDDER
        for row, i in enumerate(got["ids"].tolist()):
            text, title = docs[i]
            assert got["title"][row] == title
            assert got["embrel_content_hash"][row] == content_hash(
                text, {"title": title}, ["title"], spec
            )
            assert np.array_equal(got["vectors"][row], hashed_vector(embedded_as(docs[i]), DIM))


def test_documents_embed_only_what_changed_and_reuse_the_cache(
    tmp_path: Path, backend: Backend
) -> None:
    paragraphs = stdlib_paragraphs(600)
    v1 = {i: (p, f"title {i % 7}") for i, p in enumerate(paragraphs)}
    r = Releases(tmp_path, backend)

    build = r.apply("v1", v1)
    assert sorted(r.embedder.texts) == sorted(embedded_as(d) for d in v1.values())
    assert (build["added"], build["embedded"], build["copied"], build["cacheHits"]) == (
        600,
        600,
        0,
        0,
    )

    # 2% edited (12 texts, of which 2 only in a metadata field that feeds the embedding),
    # 3 deleted, 5 added.
    rng = np.random.default_rng(5)
    edited = sorted(rng.choice(600, 12, replace=False).tolist())
    v2 = dict(v1)
    for n, i in enumerate(edited):
        text, title = v1[i]
        v2[i] = (text, "a new title") if n < 2 else (text + " (revised)", title)
    deleted = [i for i in range(600) if i not in edited][:3]
    for i in deleted:
        del v2[i]
    added = {1000 + j: (f"A new document number {j} about embeddings.", "new") for j in range(5)}
    v2 |= added
    build = r.apply("v2", v2)
    want = sorted(embedded_as(v2[i]) for i in [*edited, *added])
    assert sorted(r.embedder.texts) == want, "exactly the changed and new documents are embedded"
    assert {k: build[k] for k in ("added", "updated", "unchanged", "deleted", "copied")} == {
        "added": 5,
        "updated": 12,
        "unchanged": 600 - 12 - 3,
        "deleted": 3,
        "copied": 600 - 12 - 3,
    }
    assert build["base"] == f"{backend.alias}__v1"
    r.check_collection("v2", v2)

    # v1's content again as a new version: the 15 documents that differ from live are
    # all in the cache; damage one entry on disk, and only that one is embedded again.
    damaged = embedded_as(v1[edited[0]])
    cache = sqlite3.connect(tmp_path / "state" / "embedding-cache.sqlite")
    key = content_hash(*v1[edited[0]][:1], {"title": v1[edited[0]][1]}, ["title"], TEST_EMBEDDER)  # type: ignore[arg-type]
    assert (
        cache.execute(
            "UPDATE embeddings SET vector = zeroblob(128) WHERE hash = ?", (key,)
        ).rowcount
        == 1
    )
    cache.commit()
    cache.close()
    build = r.apply("v3", v1)
    assert r.embedder.texts == [damaged], "the damaged entry is recomputed, never served"
    assert (build["cacheHits"], build["cacheMisses"], build["embedded"]) == (14, 1, 1)
    assert (build["added"], build["updated"], build["deleted"]) == (3, 12, 5)
    r.check_collection("v3", v1)
    status = json.dumps(build)
    assert "cacheHitRate" in status and build["cacheHitRate"] == round(14 / 15, 4)
