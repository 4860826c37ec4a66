"""Embedders for tests: a counting wrapper, and a fast deterministic one.

``Counting`` wraps any embedder (the real sentence-transformers one in heavy tests)
and records every text it was asked to embed, so a test can assert exactly what was
embedded. ``HashingEmbedder`` stands in for a model where the test is about what
embrel does with vectors, not about the model: each text gets a fixed unit vector
derived from its sha256, so equal texts always get equal vectors. ``BagOfWords``
is a deterministic model that retrieves: a text's vector is the normalised sum of
its (4+ letter) words' hashed vectors, so a query finds the documents sharing its words; its
``seed`` picks the space, and ``document_words`` makes a deliberately worse model.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import numpy as np

from controller.ports import EmbedderFactory, EmbedderPort
from controller.spec import EmbedderSpec


class HashingEmbedder:
    def __init__(self, dimension: int) -> None:
        self._dimension = dimension

    def dimension(self) -> int:
        return self._dimension

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return np.stack([hashed_vector(t, self._dimension) for t in texts]).astype(np.float32)

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        """Queries as documents: the same text gets the same vector either way."""
        return self.embed(texts)


_WORD = re.compile(r"[a-z0-9]{4,}")  # words of 4+ characters: most stop words are shorter


class BagOfWords:
    """Deterministic and retrieving: the normalised sum of hashed word vectors."""

    def __init__(self, dimension: int, seed: str = "", document_words: int | None = None) -> None:
        self._dimension, self._seed, self._document_words = dimension, seed, document_words

    def dimension(self) -> int:
        return self._dimension

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return self._vectors(texts, self._document_words)

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._vectors(texts, None)

    def _vectors(self, texts: Sequence[str], keep: int | None) -> np.ndarray:
        out = np.zeros((len(texts), self._dimension), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in _WORD.findall(text.lower())[:keep]:
                out[row] += hashed_vector(f"{self._seed}\0{word}", self._dimension)
            norm = np.linalg.norm(out[row])
            out[row] = out[row] / norm if norm else hashed_vector(text, self._dimension)
        return out


def hashed_vector(text: str, dimension: int) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    v = np.random.default_rng(seed).standard_normal(dimension)
    return (v / np.linalg.norm(v)).astype(np.float32)


class Counting:
    """Records each call's texts; builds the wrapped embedder once, on first use."""

    def __init__(self, make: EmbedderFactory) -> None:
        self._make = make
        self._inner: EmbedderPort | None = None
        self.calls: list[list[str]] = []
        self.query_calls: list[list[str]] = []

    def factory(self, spec: EmbedderSpec) -> EmbedderPort:
        if self._inner is None:
            self._inner = self._make(spec)
        return self

    def dimension(self) -> int:
        assert self._inner is not None
        return self._inner.dimension()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        assert self._inner is not None
        self.calls.append(list(texts))
        return self._inner.embed(texts)

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        """Recorded apart from documents: ``texts`` stays what a build embedded."""
        assert self._inner is not None
        self.query_calls.append(list(texts))
        return self._inner.embed_queries(texts)

    @property
    def texts(self) -> list[str]:
        return [t for call in self.calls for t in call]

    def reset(self) -> None:
        self.calls.clear()
        self.query_calls.clear()
