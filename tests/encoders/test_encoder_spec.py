"""spec.embedder: every field, the type rules, secrets refused, old specs unchanged."""

from __future__ import annotations

from typing import Any

import pytest

from controller.errors import SpecError
from controller.spec import EmbedderSpec, EmbeddingRelease, release_from_dict
from tests.support.manifests import schema_problems

KEY = "sk-live-0123456789abcdef"


def release(embedder: dict[str, Any] | None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "alias": "docs",
        "version": "v1",
        "model": {"name": "e5"},
        "milvus": {"uri": "./milvus.db"},
        "collection": {"dimension": 384},
        "source": {"documents": {"uri": "docs.parquet"}},
    }
    if embedder is not None:
        spec["embedder"] = embedder
    return {
        "apiVersion": "embrel.dev/v1alpha1",
        "kind": "EmbeddingRelease",
        "metadata": {"name": "docs"},
        "spec": spec,
    }


def parse(embedder: dict[str, Any]) -> EmbedderSpec:
    parsed = release_from_dict(release(embedder)).spec.embedder
    assert parsed is not None
    return parsed


def problems(embedder: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(SpecError) as err:
        release_from_dict(release(embedder), "docs.yaml")
    return dict(err.value.problems)


OPENAI = {"type": "openai", "model": "text-embedding-3-small", "baseUrl": "https://api.x/v1"}


def test_an_existing_spec_parses_unchanged_and_means_the_same() -> None:
    old = parse({"model": "all-MiniLM-L6-v2", "batchSize": 64, "device": "cpu"})
    assert old == parse({})
    assert (old.type, old.model, old.revision) == (
        "sentence-transformers",
        "all-MiniLM-L6-v2",
        None,
    )
    assert (old.batch_size, old.device, old.normalize) == (64, "cpu", True)
    assert (old.query_prefix, old.document_prefix, old.dimension) == ("", "", None)
    # Nothing of the openai type is set, so nothing of it is written back.
    dumped = old.model_dump(by_alias=True, exclude_none=True)
    assert set(dumped) == {
        "type", "model", "batchSize", "device", "normalize", "queryPrefix", "documentPrefix"
    }  # fmt: skip


def test_the_documents_content_identity_of_old_specs_is_unchanged() -> None:
    assert parse({}).document_identity() == {
        "model": "all-MiniLM-L6-v2",
        "revision": "",
        "normalize": True,
    }


def test_every_field_of_the_openai_type() -> None:
    spec = parse(
        OPENAI
        | {
            "baseUrl": "https://api.x/v1/",
            "revision": "2024-01",
            "dimension": 512,
            "normalize": False,
            "queryPrefix": "query: ",
            "documentPrefix": "passage: ",
            "batchSize": 128,
            "concurrency": 8,
            "timeoutSeconds": 12.5,
            "maxRetries": 0,
            "apiKeyEnv": "OPENAI_API_KEY",
            "secretRef": "openai-key",
        }
    )
    assert spec.base_url == "https://api.x/v1"  # {baseUrl}/embeddings is called
    assert (spec.dimension, spec.normalize, spec.revision) == (512, False, "2024-01")
    assert (spec.query_prefix, spec.document_prefix) == ("query: ", "passage: ")
    assert (spec.batch_size, spec.request_concurrency) == (128, 8)
    assert (spec.request_timeout, spec.request_retries) == (12.5, 0)
    assert (spec.api_key_variable, spec.secret_ref) == ("OPENAI_API_KEY", "openai-key")


def test_openai_defaults() -> None:
    spec = parse(OPENAI)
    assert spec.api_key_variable == "EMBREL_ENCODER_API_KEY"
    assert (spec.request_concurrency, spec.request_timeout, spec.request_retries) == (4, 30.0, 3)
    assert spec.secret_ref is None


@pytest.mark.parametrize(
    ("embedder", "path", "says"),
    [
        ({"type": "openai"}, "spec.embedder", "baseUrl is required for type openai"),
        ({"type": "cohere"}, "spec.embedder.type", "'sentence-transformers' or 'openai'"),
        ({"baseUrl": "http://e5:80/v1"}, "spec.embedder", "baseUrl is for type openai only"),
        (
            {"concurrency": 2, "timeoutSeconds": 3, "secretRef": "k"},
            "spec.embedder",
            "concurrency, timeoutSeconds, secretRef are for type openai only",
        ),
        ({"maxRetries": 1}, "spec.embedder", "maxRetries is for type openai only"),
        ({"apiKeyEnv": "K"}, "spec.embedder", "apiKeyEnv is for type openai only"),
        (OPENAI | {"concurrency": 0}, "spec.embedder.concurrency", "greater than or equal to 1"),
        (OPENAI | {"concurrency": 33}, "spec.embedder.concurrency", "less than or equal to 32"),
        (OPENAI | {"timeoutSeconds": 0}, "spec.embedder.timeoutSeconds", "greater than 0"),
        (OPENAI | {"timeoutSeconds": 601}, "spec.embedder.timeoutSeconds", "less than or equal"),
        (OPENAI | {"maxRetries": -1}, "spec.embedder.maxRetries", "greater than or equal to 0"),
        (OPENAI | {"maxRetries": 11}, "spec.embedder.maxRetries", "less than or equal to 10"),
        (OPENAI | {"batchSize": 0}, "spec.embedder.batchSize", "greater than or equal to 1"),
        (OPENAI | {"dimension": 1}, "spec.embedder.dimension", "greater than or equal to 2"),
        (OPENAI | {"dimension": 40000}, "spec.embedder.dimension", "less than or equal"),
        (OPENAI | {"baseUrl": "ftp://x/v1"}, "spec.embedder.baseUrl", "http:// or https://"),
        (OPENAI | {"baseUrl": "api.x/v1"}, "spec.embedder.baseUrl", "http:// or https://"),
        (OPENAI | {"baseUrl": "http://x/v1?a=1"}, "spec.embedder.baseUrl", "no query"),
        (OPENAI | {"secretRef": "Not_A_Name"}, "spec.embedder.secretRef", "pattern"),
        (OPENAI | {"queryPrefix": "q" * 257}, "spec.embedder.queryPrefix", "at most 256"),
        (OPENAI | {"documentPrefix": "d" * 257}, "spec.embedder.documentPrefix", "at most 256"),
        (OPENAI | {"model": ""}, "spec.embedder.model", "at least 1"),
        (OPENAI | {"queryprefix": "q"}, "spec.embedder.queryprefix", "unknown field"),
    ],
)
def test_errors_name_the_field(embedder: dict[str, Any], path: str, says: str) -> None:
    found = problems(embedder)
    assert path in found, found
    assert says in found[path], found[path]


@pytest.mark.parametrize("field", ["apiKey", "api_key", "api-key", "key", "token", "authorization"])
def test_an_api_key_in_the_spec_is_refused_without_echoing_it(field: str) -> None:
    found = problems(OPENAI | {field: KEY})
    assert "must not be written in the spec" in found["spec.embedder"]
    assert "EMBREL_ENCODER_API_KEY" in found["spec.embedder"]
    assert KEY not in str(found)


@pytest.mark.parametrize("url", [f"https://user:{KEY}@api.x/v1", f"https://api.x/v1?api_key={KEY}"])
def test_credentials_in_base_url_are_refused_without_echoing_them(url: str) -> None:
    found = problems(OPENAI | {"baseUrl": url})
    assert "must not be written in baseUrl" in found["spec.embedder.baseUrl"]
    assert KEY not in str(found)


def test_a_key_pasted_into_api_key_env_is_not_echoed() -> None:
    found = problems(OPENAI | {"apiKeyEnv": KEY})
    assert "NAME of an environment variable" in found["spec.embedder.apiKeyEnv"]
    assert KEY not in str(found)


def test_the_content_identity_follows_what_changes_document_vectors() -> None:
    base = parse(OPENAI).document_identity()
    assert base["type"] == "openai"
    assert parse(OPENAI | {"documentPrefix": "passage: "}).document_identity() != base
    assert parse(OPENAI | {"dimension": 256}).document_identity() != base
    # Queries do not change stored vectors, nor does where the model is served.
    assert parse(OPENAI | {"queryPrefix": "query: "}).document_identity() == base
    assert parse(OPENAI | {"baseUrl": "http://other/v1"}).document_identity() == base


def test_the_crd_takes_the_openai_type_and_refuses_what_the_model_refuses() -> None:
    good = release(OPENAI | {"concurrency": 32, "apiKeyEnv": "OPENAI_API_KEY"})
    assert schema_problems(good) == []
    EmbeddingRelease.model_validate(good)
    bad = release(OPENAI | {"concurrency": 33, "type": "cohere"})
    found = " ".join(schema_problems(bad))
    assert "concurrency" in found and "cohere" in found


def test_the_crd_writes_no_openai_default_into_a_sentence_transformers_spec() -> None:
    from controller.crd import custom_resource_definition

    crd = custom_resource_definition()
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    fields = schema["properties"]["spec"]["properties"]["embedder"]["properties"]
    for name in ("baseUrl", "concurrency", "timeoutSeconds", "maxRetries", "apiKeyEnv"):
        assert "default" not in fields[name], name
