"""Incremental releases without Milvus: delta base resolution and identity, the id and
document readers, content hashes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from controller.embedding.content import content_hash, embedding_input
from controller.engine import (
    OWNER_VALUE,
    P_BASE,
    P_BUILD_HASH,
    P_OWNER,
    P_PROMOTED_AT,
    P_SOURCE_ROWS,
    P_TRACK,
    P_VALIDATION,
    P_VERSION,
    CollectionState,
    Intents,
    Observation,
    base_identity,
    build_conflict,
    decide,
    delta_base,
)
from controller.errors import SourceError, SpecError
from controller.sources.documents import open_documents
from controller.sources.ids import read_ids
from controller.spec import EmbedderSpec, EmbeddingRelease, parse_release
from controller.status import Phase, Reason

DELTA = """
apiVersion: embrel.dev/v1alpha1
kind: EmbeddingRelease
metadata: {{name: products, namespace: search}}
spec:
  alias: products
  version: {version}
  model: {{name: m}}
  milvus: {{uri: ./milvus.db}}
  collection: {{dimension: 8}}
  source: {{delta: {{base: {base}, upserts: {{uri: up.parquet}}}}}}
"""


def delta(version: str = "v3", base: str = "live") -> EmbeddingRelease:
    return parse_release(DELTA.format(version=version, base=base))


def kept(version: str, **props: str) -> CollectionState:
    base = {
        P_OWNER: OWNER_VALUE,
        P_TRACK: "search/products",
        P_VERSION: version,
        P_BUILD_HASH: f"hash-{version}",
        P_SOURCE_ROWS: "100",
        P_VALIDATION: "passed",
    }
    return CollectionState(f"products__{version}", base | props, True, (100, 100))


def built_on(r: EmbeddingRelease, base: CollectionState, **props: str) -> CollectionState:
    identity = base_identity(base)
    return kept(r.spec.version, **{P_BASE: identity, P_BUILD_HASH: r.build_hash(identity)} | props)


def snapshot(live: str | None, *colls: CollectionState) -> Observation:
    return Observation(live, {c.name: c for c in colls})


# -- delta base and identity -----------------------------------------------------


def test_delta_base_is_the_alias_target_or_a_kept_version() -> None:
    v1, v2 = kept("v1", **{P_PROMOTED_AT: "t1"}), kept("v2", **{P_PROMOTED_AT: "t2"})
    obs = snapshot("products__v2", v1, v2)
    assert delta_base(delta(base="live"), obs).name == "products__v2"
    assert delta_base(delta(base="v1"), obs).name == "products__v1"
    with pytest.raises(SourceError, match=r"version .v0. .*\(versions kept: v1, v2\)"):
        delta_base(delta(base="v0"), obs)
    with pytest.raises(SourceError, match="points to no collection yet"):
        delta_base(delta(base="live"), snapshot(None))


def test_a_delta_on_another_base_is_other_content() -> None:
    r = delta()
    v1, v2 = kept("v1"), kept("v2")
    assert r.build_hash(base_identity(v1)) != r.build_hash(base_identity(v2))
    assert r.build_hash(base_identity(v1)) != r.build_hash()
    cand = built_on(r, v1)
    assert build_conflict(r, snapshot("products__v1", v1, v2, cand), cand) == ""
    # Live moved to v2 before the candidate (built on v1) served: not the same build.
    why = build_conflict(r, snapshot("products__v2", v1, v2, cand), cand)
    assert "built as products__v3 on products__v1" in why and "now products__v2" in why
    step = decide(r, snapshot("products__v2", v1, v2, cand), Intents())
    assert (step.phase, step.reason) == (Phase.FAILED, Reason.VERSION_CONFLICT)


def test_a_served_delta_keeps_its_base() -> None:
    """Invariant 5: reverting to a retained delta version flips; its base is history."""
    r = delta()
    v1, v2 = kept("v1"), kept("v2", **{P_PROMOTED_AT: "t3"})
    cand = built_on(r, v1, **{P_PROMOTED_AT: "t2", "embrel.retiredAt": "t3"})
    assert build_conflict(r, snapshot("products__v2", v1, v2, cand), cand) == ""
    assert decide(r, snapshot("products__v2", v1, v2, cand), Intents()).name == "flip"


def test_a_changed_delta_spec_is_a_conflict() -> None:
    r = delta()
    v1 = kept("v1")
    cand = built_on(r, v1)
    other = parse_release(DELTA.format(version="v3", base="live").replace("up.parquet", "b.pq"))
    assert "different model, collection or source" in build_conflict(
        other, snapshot("products__v1", v1, cand), cand
    )


def test_spec_refuses_an_empty_delta_and_the_reserved_field() -> None:
    with pytest.raises(SpecError, match="a delta needs upserts, deletes or both"):
        parse_release(
            DELTA.format(version="v3", base="live").replace(", upserts: {uri: up.parquet}", "")
        )
    text = DELTA.format(version="v3", base="live").replace(
        "{dimension: 8}", "{dimension: 8, fields: [{name: embrel_content_hash, type: INT64}]}"
    )
    with pytest.raises(SpecError, match="reserved"):
        parse_release(text)


# -- readers ---------------------------------------------------------------------


def test_read_ids_in_every_format(tmp_path: Path) -> None:
    want = np.array([-3, 5, 7, 2**40], dtype=np.int64)
    pq.write_table(
        pa.table({"pk": pa.array([7, 5, -3, 2**40, 5], pa.int64())}), tmp_path / "a.parquet"
    )
    (tmp_path / "b.jsonl").write_text("".join(json.dumps({"pk": int(i)}) + "\n" for i in want))
    np.save(tmp_path / "c.npy", want[::-1].copy())
    (tmp_path / "d.txt").write_text("# deleted\n7\n\n5\n-3\n1099511627776  # big\n")
    for name in ("a.parquet", "b.jsonl", "c.npy", "d.txt"):
        assert read_ids(name, "pk", tmp_path).tolist() == want.tolist(), name


def test_read_ids_errors_name_the_file_and_the_problem(tmp_path: Path) -> None:
    (tmp_path / "bad.txt").write_text("1\nseven\n")
    with pytest.raises(SourceError, match=r"bad.txt, line 2: 'seven' is not an integer id"):
        read_ids("bad.txt", "id", tmp_path)
    pq.write_table(pa.table({"other": [1]}), tmp_path / "x.parquet")
    with pytest.raises(SourceError, match="has no column 'id'"):
        read_ids("x.parquet", "id", tmp_path)
    with pytest.raises(SourceError, match="does not exist"):
        read_ids("missing.parquet", "id", tmp_path)
    np.save(tmp_path / "f.npy", np.ones(3))
    with pytest.raises(SourceError, match="1-D integer array"):
        read_ids("f.npy", "id", tmp_path)


def test_documents_from_parquet_and_jsonl_in_batches(tmp_path: Path) -> None:
    rows = [{"doc": i, "body": f"text {i}", "title": f"t{i}", "price": i * 1.5} for i in range(7)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet")
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for name in ("d.parquet", "d.jsonl"):
        batches = list(open_documents(name, "doc", "body", ["title", "price"], tmp_path).batches(3))
        assert [len(b) for b in batches] == [3, 3, 1]
        assert [t for b in batches for t in b.texts] == [r["body"] for r in rows]
        assert np.concatenate([b.ids for b in batches]).tolist() == list(range(7))
        assert batches[1].columns == {"title": ["t3", "t4", "t5"], "price": [4.5, 6.0, 7.5]}


def test_bad_documents_are_refused_with_the_row(tmp_path: Path) -> None:
    pq.write_table(pa.table({"id": [1, 2], "text": ["a", None]}), tmp_path / "n.parquet")
    with pytest.raises(SourceError, match=r"n.parquet, row 1: text is null"):
        list(open_documents("n.parquet", "id", "text", [], tmp_path).batches(10))
    pq.write_table(pa.table({"id": [1], "text": [3]}), tmp_path / "i.parquet")
    with pytest.raises(SourceError, match="text column 'text' has type int64"):
        list(open_documents("i.parquet", "id", "text", [], tmp_path).batches(10))
    (tmp_path / "m.jsonl").write_text('{"id": 1, "text": "a"}\n{"id": 2}\n')
    with pytest.raises(SourceError, match=r"m.jsonl, line 2: missing key 'text'"):
        list(open_documents("m.jsonl", "id", "text", [], tmp_path).batches(10))
    np.save(tmp_path / "v.npy", np.ones(2))
    with pytest.raises(SourceError, match=r"unsupported documents file type \.npy"):
        open_documents("v.npy", "id", "text", [], tmp_path)


# -- content hashes --------------------------------------------------------------


def test_content_hash_covers_text_metadata_model_revision_and_normalisation() -> None:
    e = EmbedderSpec()
    base = content_hash("hello", {"title": "T", "shop": "x"}, ["title"], e)
    assert base == content_hash("hello", {"title": "T", "shop": "y"}, ["title"], e), (
        "a field that does not feed the embedding does not change the hash"
    )
    variants = [
        content_hash("hello!", {"title": "T"}, ["title"], e),
        content_hash("hello", {"title": "U"}, ["title"], e),
        content_hash("hello", {"title": "T"}, [], e),
        content_hash("hello", {"title": "T"}, ["title"], EmbedderSpec(model="other")),
        content_hash("hello", {"title": "T"}, ["title"], EmbedderSpec(revision="r2")),
        content_hash("hello", {"title": "T"}, ["title"], EmbedderSpec(normalize=False)),
    ]
    assert len({base, *variants}) == 7
    assert embedding_input("body", {"title": "T", "n": 3}, ["title", "n"]) == "title: T\nn: 3\nbody"
    assert embedding_input("body", {}, []) == "body"


def test_the_documents_example_specs_parse() -> None:
    folder = Path(__file__).parents[2] / "examples" / "documents"
    for name in ("docs-v1.yaml", "docs-v2.yaml"):
        release = parse_release((folder / name).read_text(), name)
        assert release.spec.source.documents is not None and release.spec.embedder is not None
        assert release.spec.embedder.model == "all-MiniLM-L6-v2"
        assert release.spec.collection.dimension == 384
