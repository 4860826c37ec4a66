"""The model boundary rule, rebuilding live's encoder from its descriptor, and the
spec rules of golden sets of query texts."""

from __future__ import annotations

from typing import Any

import pytest

from controller.embedding.descriptor import ENCODER_PROPERTY, encoder_descriptor
from controller.engine.state import P_ENCODER, P_NEXT
from controller.errors import MilvusRejected
from controller.schema import Schema as CollectionSchema
from controller.schema import VectorField
from controller.spec import EmbedderSpec, release_from_dict
from controller.validation.gates import GateContext, model_boundary, same_space_as_live
from controller.validation.space import (
    VectorSpace,
    embedder_from_descriptor,
    in_same_space,
    release_space,
)
from tests.support.specs import minimal_release, spec_error

MINILM = encoder_descriptor(EmbedderSpec(), 384)
E5 = encoder_descriptor(
    EmbedderSpec.model_validate(
        {"type": "openai", "model": "e5", "baseUrl": "http://e5:8000/v1", "queryPrefix": "q: "}
    ),
    384,
)


def doc(**spec: Any) -> dict[str, Any]:
    base = {
        "version": "v2",
        "collection": {"dimension": 384},
        "source": {"files": {"uri": "v2.parquet"}},
    }
    return minimal_release("p", **(base | spec))


def problems(data: dict[str, Any]) -> list[tuple[str, str]]:
    return spec_error(data).problems


def test_the_property_keys_have_one_owner() -> None:
    assert P_ENCODER == ENCODER_PROPERTY == "embrel.encoder"
    assert P_NEXT == "embrel.next"


def test_descriptors_decide_when_both_sides_have_one() -> None:
    a = VectorSpace("m", 384, MINILM)
    assert in_same_space(a, VectorSpace("another-label", 384, dict(MINILM)))
    assert not in_same_space(a, VectorSpace("m", 384, E5)), "same label, other encoder"
    assert not in_same_space(a, VectorSpace("m", 384, MINILM | {"queryPrefix": "query: "}))


def test_without_a_descriptor_the_label_and_dimension_decide() -> None:
    assert in_same_space(VectorSpace("m@1", 16, MINILM), VectorSpace("m@1", 16))
    assert not in_same_space(VectorSpace("m@1", 16), VectorSpace("m@1", 32)), "16 -> 32"
    assert not in_same_space(VectorSpace("m@1", 16), VectorSpace("m@2", 16))
    assert not in_same_space(VectorSpace(None, 16), VectorSpace(None, 16)), "unknown models"
    assert not in_same_space(VectorSpace("m", None), VectorSpace("m", None))


class Schema:
    def __init__(self, dimension: int | None) -> None:
        self.dimension = dimension

    def collection_schema(self, name: str) -> CollectionSchema:
        if self.dimension is None:
            raise MilvusRejected(f"{name} is gone")
        return CollectionSchema(self.dimension)


def gate_context(spec: dict[str, Any], live_model: str | None, schema: Schema, **kw: Any) -> Any:
    return GateContext(
        release_from_dict(doc(**spec)), "products__v2", 10, "products__v1", "v1",
        live_model, schema, None, **kw,  # type: ignore[arg-type]
    )  # fmt: skip


def test_same_space_as_live_reads_the_live_dimension_through_the_port() -> None:
    sixteen = {"collection": {"dimension": 16}}
    assert same_space_as_live(gate_context(sixteen, "m", Schema(16)))
    assert not same_space_as_live(gate_context(sixteen, "m", Schema(32)))
    assert not same_space_as_live(gate_context(sixteen, "m", Schema(None))), "unreadable live"
    boundary = model_boundary(gate_context(sixteen, "m", Schema(32)))
    assert not boundary.same_space and "model changed" in boundary.why and "32-dim" in boundary.why


class WithImage(Schema):
    """A live collection with a 16-dim ``vector`` and an ``image`` of ``dimension``."""

    def collection_schema(self, name: str) -> CollectionSchema:
        assert self.dimension is not None
        return CollectionSchema(16, vectors=(VectorField("image", self.dimension),))


def test_another_search_field_is_another_space() -> None:
    """Queries for one vector field are not queries for another, even of one model and
    one dimension: a changed searchField crosses the boundary as a model change does."""
    image = {"vectors": [{"name": "image", "dimension": 16}], "searchField": "image"}
    on_image = {"collection": {"dimension": 16} | image}
    assert not in_same_space(VectorSpace("m", 16, MINILM, "image"), VectorSpace("m", 16, MINILM))
    assert release_space(release_from_dict(doc(**on_image))).field == "image"
    live = WithImage(16)
    assert same_space_as_live(gate_context(on_image, "m", live, live_search_field="image"))
    assert not same_space_as_live(
        gate_context(on_image, "m", WithImage(8), live_search_field="image")
    )
    boundary = model_boundary(gate_context(on_image, "m", Schema(16)))
    assert not boundary.same_space and "search field changed" in boundary.why
    assert "on field image" in boundary.why


def test_same_space_as_live_compares_descriptors_first() -> None:
    with_minilm = {"embedder": {"model": "all-MiniLM-L6-v2"}}
    assert same_space_as_live(
        gate_context(with_minilm, "old-label", Schema(384), live_encoder=MINILM)
    )
    assert not same_space_as_live(gate_context(with_minilm, "m", Schema(384), live_encoder=E5))
    assert release_space(release_from_dict(doc(**with_minilm))).encoder == MINILM


def test_live_encoder_is_rebuilt_from_its_descriptor() -> None:
    spec = embedder_from_descriptor(MINILM)
    assert (spec.type, spec.model, spec.dimension, spec.normalize) == (
        "sentence-transformers", "all-MiniLM-L6-v2", 384, True,
    )  # fmt: skip
    e5 = embedder_from_descriptor(E5)
    assert (e5.base_url, e5.query_prefix, e5.dimension) == ("http://e5:8000/v1", "q: ", None)


def test_connection_settings_come_from_the_candidate_only_for_the_same_service() -> None:
    like = EmbedderSpec.model_validate(
        {"type": "openai", "model": "e5-large", "baseUrl": "http://e5:8000/v1",
         "apiKeyEnv": "E5_KEY", "concurrency": 8}
    )  # fmt: skip
    rebuilt = embedder_from_descriptor(E5, like)
    assert (rebuilt.model, rebuilt.api_key_env, rebuilt.concurrency) == ("e5", "E5_KEY", 8)
    elsewhere = like.model_copy(update={"base_url": "http://other:8000/v1"})
    assert embedder_from_descriptor(E5, elsewhere).api_key_env is None, "no key to another host"


def test_a_damaged_descriptor_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="cannot be rebuilt"):
        embedder_from_descriptor({"type": "word2vec", "model": "x", "dimension": 3})


def test_golden_set_of_texts_defaults_and_needs_an_embedder() -> None:
    texts = {"goldenSet": {"texts": {"uri": "golden/"}, "maxDropVsLive": {}}}
    r = release_from_dict(doc(validation=texts, embedder={"model": "all-MiniLM-L6-v2"}))
    golden = r.spec.validation.golden_set
    assert golden is not None and golden.texts is not None
    assert (golden.metric, golden.k, golden.min_recall) == ("ndcg", 10, None)
    assert (golden.texts.split, golden.texts.text_field, golden.texts.format) == (
        "test",
        "text",
        None,
    )
    assert golden.max_drop_vs_live is not None
    assert (golden.max_drop_vs_live.max, golden.max_drop_vs_live.confidence) == (0.02, 0.95)
    assert golden.max_drop_vs_live.resamples == 2000
    [(path, message)] = problems(doc(validation=texts))
    assert path == "spec" and "goldenSet.texts needs spec.embedder" in message


@pytest.mark.parametrize(
    ("golden", "path", "fragment"),
    [
        ({"k": 10, "minRecall": 0.8}, "spec.validation.goldenSet", "exactly one of uri"),
        (
            {"uri": "g.parquet", "texts": {"uri": "g/"}, "minRecall": 0.8},
            "spec.validation.goldenSet",
            "exactly one of uri",
        ),
        ({"uri": "g.parquet"}, "spec.validation.goldenSet", "minRecall is required with uri"),
        (
            {"texts": {"uri": "g/", "format": "csv"}},
            "spec.validation.goldenSet.texts.format",
            "csv",
        ),
        ({"texts": {"uri": "g/"}, "metric": "map"}, "spec.validation.goldenSet.metric", "map"),
        (
            {"texts": {"uri": "g/"}, "maxDropVsLive": {"confidence": 1.0}},
            "spec.validation.goldenSet.maxDropVsLive.confidence",
            "less than 1",
        ),
    ],
)
def test_golden_set_errors_name_their_field(
    golden: dict[str, Any], path: str, fragment: str
) -> None:
    data = doc(validation={"goldenSet": golden}, embedder={"model": "all-MiniLM-L6-v2"})
    found = problems(data)
    assert any(p == path and fragment in msg for p, msg in found), found
