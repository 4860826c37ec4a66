"""Rebuilding the encoder spec a collection's embrel.encoder describes."""

from __future__ import annotations

import pytest

from controller.embedding.descriptor import encoder_descriptor, same_space, spec_from_descriptor
from controller.spec import EmbedderSpec


def test_a_descriptor_gives_back_a_spec_of_the_same_space() -> None:
    spec = EmbedderSpec(
        type="openai",
        model="text-embedding-3-small",
        dimension=256,
        query_prefix="query: ",
        document_prefix="passage: ",
        base_url="https://api.example.com/v1",
    )
    descriptor = encoder_descriptor(spec, 256)
    rebuilt = spec_from_descriptor(descriptor, api_key_env="SHOP_EMBEDDINGS_KEY", batch_size=8)
    assert same_space(encoder_descriptor(rebuilt, 256), descriptor)
    assert rebuilt.base_url == spec.base_url and rebuilt.api_key_env == "SHOP_EMBEDDINGS_KEY"
    assert spec_from_descriptor(encoder_descriptor(EmbedderSpec(), 384)).revision is None


def test_bad_descriptors_and_space_changing_settings_are_refused() -> None:
    descriptor = encoder_descriptor(EmbedderSpec(), 384)
    with pytest.raises(ValueError, match="needs model and dimension"):
        spec_from_descriptor({"model": "all-MiniLM-L6-v2"})
    with pytest.raises(ValueError, match=r"\['query_prefix'\] would change"):
        spec_from_descriptor(descriptor, query_prefix="query: ")
    with pytest.raises(ValueError, match="apiKey"):
        spec_from_descriptor(descriptor, apiKey="sk-secret")
