"""make_encoder, the embrel.encoder descriptor, same_space, and the documents' content
hash; the sentence-transformers encoder's prefixes (with a stand-in model, no torch)."""

from __future__ import annotations

import hashlib
import json
import sys
import types
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from controller.embedding.content import content_hash
from controller.embedding.descriptor import (
    ENCODER_PROPERTY,
    descriptor_json,
    encoder_descriptor,
    parse_descriptor,
    same_space,
)
from controller.embedding.embedder import EmbedderUnavailable, SentenceTransformerEmbedder
from controller.embedding.encoders import make_encoder
from controller.embedding.openai import OpenAIEncoder
from controller.spec import EmbedderSpec
from tests.encoders.servers import Reply

E5 = {
    "type": "openai",
    "model": "intfloat/multilingual-e5-small",
    "baseUrl": "https://e5.internal/v1",
    "queryPrefix": "query: ",
    "documentPrefix": "passage: ",
    "apiKeyEnv": "E5_KEY",
    "secretRef": "e5-key",
}


def spec(**fields: Any) -> EmbedderSpec:
    return EmbedderSpec.model_validate(fields)


def test_make_encoder_maps_the_type_to_its_class(fault_server: Any) -> None:
    assert isinstance(make_encoder(spec()), SentenceTransformerEmbedder)
    server = fault_server(lambda n, body: Reply())
    encoder = make_encoder(spec(type="openai", model="m", baseUrl=server.url), api_key="k-1")
    assert isinstance(encoder, OpenAIEncoder)
    encoder.embed(["a"])
    assert server.seen[0].headers["Authorization"] == "Bearer k-1"
    with pytest.raises(ValueError, match="openai only"):
        make_encoder(spec(), api_key="k-1")


def test_the_descriptor_says_how_to_embed_a_query_and_holds_no_secret() -> None:
    descriptor = encoder_descriptor(spec(**E5), 384)
    assert descriptor == {
        "type": "openai",
        "model": "intfloat/multilingual-e5-small",
        "revision": "",
        "dimension": 384,
        "normalize": True,
        "queryPrefix": "query: ",
        "documentPrefix": "passage: ",
        "baseUrl": "https://e5.internal/v1",
    }
    assert ENCODER_PROPERTY == "embrel.encoder"
    text = descriptor_json(descriptor)
    assert "E5_KEY" not in text and "e5-key" not in text
    assert parse_descriptor(text) == descriptor
    local = encoder_descriptor(spec(revision="abc"), 384)
    assert "baseUrl" not in local and local["revision"] == "abc"


def test_unreadable_descriptors_are_none() -> None:
    assert parse_descriptor("not json") is None
    assert parse_descriptor("[1, 2]") is None
    assert parse_descriptor('{"type": "openai"}') is None


def test_same_space_needs_every_space_field_equal() -> None:
    a = encoder_descriptor(spec(**E5), 384)
    assert same_space(a, dict(a))
    assert same_space(a, a | {"baseUrl": "http://elsewhere/v1"})  # same model, other host
    for key, other in [
        ("type", "sentence-transformers"),
        ("model", "intfloat/e5-small-v2"),
        ("revision", "v2"),
        ("dimension", 256),
        ("normalize", False),
        ("queryPrefix", ""),
        ("documentPrefix", "doc: "),
    ]:
        assert not same_space(a, a | {key: other}), key
        assert not same_space(a | {key: other}, a), key


def test_same_space_reads_absent_optional_fields_as_defaults() -> None:
    full = encoder_descriptor(spec(), 384)
    sparse = {
        k: v for k, v in full.items() if k not in ("revision", "queryPrefix", "documentPrefix")
    }
    assert same_space(full, sparse)
    assert same_space(full, sparse | {"revision": None})
    for key in ("type", "model", "dimension"):
        partial = {k: v for k, v in full.items() if k != key}
        assert not same_space(full, partial) and not same_space(partial, partial), key


def test_content_hash_of_old_specs_is_unchanged_and_follows_the_document_prefix() -> None:
    old = hashlib.sha256(
        json.dumps(
            {"input": "hello", "model": "all-MiniLM-L6-v2", "revision": "", "normalize": True},
            sort_keys=True,
            ensure_ascii=False,
        ).encode()
    ).hexdigest()
    assert content_hash("hello", {}, [], spec()) == old
    assert content_hash("hello", {}, [], spec(queryPrefix="q: ")) == old
    assert content_hash("hello", {}, [], spec(documentPrefix="passage: ")) != old
    openai = spec(type="openai", model="all-MiniLM-L6-v2", baseUrl="http://x/v1")
    assert content_hash("hello", {}, [], openai) != old


class _StandInModel:
    """Records what it was asked to encode; vectors of 3 from the text lengths."""

    def __init__(self, where: str, device: str, revision: str | None) -> None:
        self.seen: list[str] = []

    def get_embedding_dimension(self) -> int:
        return 3

    def encode(self, texts: Sequence[str], **options: Any) -> np.ndarray:
        self.seen += texts
        return np.array([[len(t), 1.0, 0.0] for t in texts], dtype=np.float32)


@pytest.fixture
def stand_in(monkeypatch: pytest.MonkeyPatch) -> None:
    module = types.ModuleType("sentence_transformers")
    module.SentenceTransformer = _StandInModel  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "sentence_transformers", module)


@pytest.mark.usefixtures("stand_in")
def test_sentence_transformers_prefixes_documents_and_queries() -> None:
    encoder = SentenceTransformerEmbedder(
        spec(model="./e5", queryPrefix="query: ", documentPrefix="passage: ")
    )
    encoder.embed(["tea"])
    encoder.embed_queries(["tea", "milk"])
    assert encoder._model.seen == ["passage: tea", "query: tea", "query: milk"]
    assert encoder.embed_queries([]).shape == (0, 3)


@pytest.mark.usefixtures("stand_in")
def test_sentence_transformers_checks_the_named_dimension() -> None:
    assert SentenceTransformerEmbedder(spec(model="./m", dimension=3)).dimension() == 3
    wrong = SentenceTransformerEmbedder(spec(model="./m", dimension=384))
    with pytest.raises(
        EmbedderUnavailable, match=r"dimension 3, but spec\.embedder\.dimension says 384"
    ):
        wrong.embed(["a"])
