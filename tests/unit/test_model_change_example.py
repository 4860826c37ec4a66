"""examples/model-change/: two releases of one track that differ in their encoder, and
the data they read, as the walkthrough in docs/encoders.md uses them."""

from __future__ import annotations

import runpy
from pathlib import Path

import pyarrow.parquet as pq

from controller.sources.labelled_queries import read_labelled_queries
from controller.spec import EmbeddingRelease, parse_release

FOLDER = Path(__file__).parents[2] / "examples" / "model-change"


def _release(name: str) -> EmbeddingRelease:
    path = FOLDER / name
    return parse_release(path.read_text(), str(path))


def test_the_two_releases_change_the_encoder_on_one_track() -> None:
    v1, v2 = _release("v1-minilm.yaml"), _release("v2-e5.yaml")
    assert v1.track == v2.track and v1.spec.alias == v2.spec.alias
    assert v1.collection_name != v2.collection_name
    assert v1.spec.collection.dimension == v2.spec.collection.dimension == 384
    assert v1.spec.embedder is not None and v2.spec.embedder is not None
    assert (v1.spec.embedder.type, v2.spec.embedder.type) == ("sentence-transformers", "openai")
    golden = v2.spec.validation.golden_set
    assert golden is not None and golden.texts is not None and golden.max_drop_vs_live
    assert v2.spec.promotion.mode == "manual"


def test_generate_writes_what_the_releases_read(tmp_path: Path) -> None:
    generate = runpy.run_path(str(FOLDER / "generate.py"))
    generate["main"](tmp_path)
    docs = pq.read_table(tmp_path / "docs.parquet")
    queries = read_labelled_queries(tmp_path / "golden")
    assert docs.num_rows == 500 and len(queries) == 100
    ids = set(docs.column("id").to_pylist())
    assert all(set(r.tolist()) <= ids for r in queries.relevant)
    source = _release("v2-e5.yaml").spec.source.documents
    assert source is not None and source.uri == "data/docs.parquet"
