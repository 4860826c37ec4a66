"""A release track built by hand on Milvus Lite: two collections of one alias, each
embedded by its own deterministic encoder, with the properties embrel records.

The test process holds the Lite file; the "controller" (``Track.admin``) and the
client under test use separate ``MilvusClient`` connections to it.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from pymilvus import MilvusClient

from controller.embedding.descriptor import ENCODER_PROPERTY, descriptor_json, encoder_descriptor
from controller.spec import EmbedderSpec

ALIAS = "products"
COLOURS = ["red", "blue", "green", "black", "white", "grey"]
ITEMS = ["shoe", "boot", "coat", "hat", "scarf", "glove", "sock", "shirt", "dress", "skirt"]
TRAITS = ["wool", "silk", "linen", "cotton", "leather", "denim", "small", "large", "warm"]
WORDS = [*COLOURS, *ITEMS, *TRAITS, "light", "heavy", "soft", "long", "short"]


class HashEncoder:
    """Bag of words hashed into ``dim`` buckets, seeded by the model name: two models
    give unrelated vectors, one model gives a text's own document a cosine of 1."""

    def __init__(self, model: str, dim: int, log: list[tuple[str, tuple[str, ...]]]) -> None:
        self.model, self.dim, self.log = model, dim, log

    def dimension(self) -> int:
        return self.dim

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for token in re.findall(r"\w+", text.lower()):
                digest = hashlib.sha256(f"{self.model}:{token}".encode()).digest()
                out[row, int.from_bytes(digest[:4], "big") % self.dim] += (
                    1.0 if digest[4] % 2 else -1.0
                )
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return (out / np.where(norms == 0, 1, norms)).astype(np.float32)

    def embed_queries(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        self.log.append((self.model, tuple(texts)))
        return self.embed(texts)


@dataclass
class Factory:
    """The ``encoders=`` factory: which specs it was asked for, and when."""

    load_seconds: float = 0.0
    calls: list[tuple[str, float]] = field(default_factory=list)
    queries: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, spec: EmbedderSpec) -> HashEncoder:
        with self.lock:
            self.calls.append((spec.model, time.monotonic()))
        time.sleep(self.load_seconds)  # a model load
        assert spec.dimension is not None
        return HashEncoder(spec.model, spec.dimension, self.queries)

    def models(self) -> list[str]:
        with self.lock:
            return [model for model, _ in self.calls]


def descriptor(model: str, dim: int) -> dict[str, Any]:
    return encoder_descriptor(EmbedderSpec(model=model), dim)


A, B = descriptor("hash-a", 64), descriptor("hash-b", 48)
# 60 short product texts, four distinct words each, no two alike.
TEXTS = [" ".join(np.random.default_rng(i).choice(WORDS, 4, replace=False)) for i in range(60)]


@dataclass
class Track:
    admin: MilvusClient
    uri: str

    def build(self, version: str, encoder: dict[str, Any], texts: list[str] = TEXTS) -> str:
        """``<alias>__<version>``, embedded by ``encoder``, as embrel would leave it."""
        name = f"{ALIAS}__{version}"
        self.admin.create_collection(name, dimension=encoder["dimension"], metric_type="COSINE")
        vectors = HashEncoder(encoder["model"], encoder["dimension"], []).embed(texts)
        similar = vectors @ vectors.T - np.eye(len(texts))
        assert similar.max() < 0.99, "two documents alike: a hit would not tell them apart"
        rows = [
            {"id": i, "vector": v.tolist(), "text": t, "model": encoder["model"]}
            for i, (t, v) in enumerate(zip(texts, vectors, strict=True))
        ]
        self.admin.insert(name, rows)
        self.admin.alter_collection_properties(
            name,
            properties={
                ENCODER_PROPERTY: descriptor_json(encoder),
                "embrel.version": version,
                "embrel.alias": ALIAS,
                "embrel.owner": "embrel",
                "embrel.promotedAt": "",
                "embrel.next": "",
            },
        )
        return name

    def announce(self, live: str, version: str, encoder: dict[str, Any]) -> None:
        next_ = {"version": version, "collection": f"{ALIAS}__{version}", "encoder": encoder}
        self.admin.alter_collection_properties(
            live, properties={"embrel.next": descriptor_json(next_)}
        )

    def flip(self, version: str) -> None:
        self.admin.alter_alias(f"{ALIAS}__{version}", ALIAS)


@pytest.fixture
def track(tmp_path: Path) -> Iterator[Track]:
    uri = str(tmp_path / "milvus.db")
    admin = MilvusClient(uri=uri)
    t = Track(admin, uri)
    t.build("v1", A)
    t.build("v2", B)
    admin.create_alias(f"{ALIAS}__v1", ALIAS)
    yield t
    admin.close()
