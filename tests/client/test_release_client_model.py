"""ReleaseClient with a real model: the packaged all-MiniLM-L6-v2 (sentence-transformers,
offline) embeds the documents and, through the collection's embrel.encoder, the queries."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from pymilvus import MilvusClient

from controller.client import EncoderCache, ReleaseClient
from controller.embedding.descriptor import ENCODER_PROPERTY, descriptor_json, encoder_descriptor
from controller.spec import EmbedderSpec

COLOURS = ["red", "navy", "olive", "cream", "black"]
THINGS = ["wool scarf", "leather boots", "rain jacket", "linen shirt", "running shoes"]
USES = [
    "for winter walks",
    "for the office",
    "for a wedding",
    "for hiking",
    "for the beach",
    "for children",
    "for travel",
    "for cycling",
]
TEXTS = [f"{c} {t} {u}" for c, t, u in itertools.product(COLOURS, THINGS, USES)]  # 200


@pytest.mark.slow
def test_minilm_queries_find_their_own_documents(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    encoders = EncoderCache()  # make_encoder: sentence-transformers
    descriptor = encoder_descriptor(EmbedderSpec(), 384)
    documents = encoders.get(descriptor).embed(TEXTS)

    uri = str(tmp_path / "milvus.db")
    admin = MilvusClient(uri=uri)
    admin.create_collection("shop__v1", dimension=384, metric_type="COSINE")
    admin.insert("shop__v1", [{"id": i, "vector": v.tolist()} for i, v in enumerate(documents)])
    admin.alter_collection_properties(
        "shop__v1",
        properties={
            ENCODER_PROPERTY: descriptor_json(descriptor),
            "embrel.version": "v1",
            "embrel.alias": "shop",
        },
    )
    admin.create_alias("shop__v1", "shop")

    client = ReleaseClient(uri, "shop", encoders=encoders)
    queries = list(range(0, 200, 5))
    answers = client.search_text([TEXTS[i] for i in queries], limit=5)
    at_rank_1 = sum(a.hits[0]["id"] == i for a, i in zip(answers, queries, strict=True))
    assert at_rank_1 >= 0.9 * len(queries)
    assert {a.version for a in answers} == {"v1"} and encoders.loads == 1
    assert len(TEXTS) == 200
    client.close()
    admin.close()
