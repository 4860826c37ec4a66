"""ReleaseClient on a real Milvus Lite: a query is embedded by the serving collection's
own encoder, across announcements, flips, rollbacks and drops."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

from controller.client import (
    ALIAS_PROPERTY,
    NEXT_PROPERTY,
    PROMOTED_AT_PROPERTY,
    SEARCH_FIELD_PROPERTY,
    VERSION_PROPERTY,
    Answer,
    EncoderCache,
    EncoderMismatch,
    MissingEncoder,
    ReleaseClient,
)
from controller.engine import state
from controller.spec import EmbedderSpec
from tests.client.conftest import ALIAS, TEXTS, A, B, Factory, HashEncoder, Track, descriptor

FIELDS = ["text", "model"]


@pytest.fixture
def factory() -> Factory:
    return Factory()


@pytest.fixture
def make_client(track: Track, factory: Factory) -> Iterator[Callable[..., ReleaseClient]]:
    made: list[ReleaseClient] = []

    def make(**kwargs: Any) -> ReleaseClient:
        kwargs.setdefault("encoders", factory)
        kwargs.setdefault("pause", 0)
        made.append(ReleaseClient(track.uri, ALIAS, **kwargs))
        return made[-1]

    yield make
    for client in made:
        client.close()


def assert_own_model(answers: list[Answer], texts: list[str]) -> None:
    """Each query found its own document, in a collection embedded by the model that
    embedded the query (a query of another model would not score a cosine of 1)."""
    assert len(answers) == len(texts)
    for answer, text in zip(answers, texts, strict=True):
        top = answer.hits[0]
        assert top["entity"]["text"] == text
        assert top["distance"] == pytest.approx(1.0, abs=1e-4)
        assert top["entity"]["model"] == answer.encoder["model"]
        assert answer.collection == f"{ALIAS}__{answer.version}"


def wait_for(condition: Callable[[], bool], seconds: float) -> float:
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < seconds, "timed out"
        time.sleep(0.01)
    return time.monotonic() - start


def serve_until(client: ReleaseClient, text: str, version: str) -> tuple[list[Answer], float]:
    """Search ``text`` until ``version`` answers (within 1 s); every answer, and how long."""
    served: list[Answer] = []

    def answered() -> bool:
        served.extend(client.search_text([text], output_fields=FIELDS))
        return served[-1].version == version

    return served, wait_for(answered, 1.0)


def test_search_text_answers_from_the_live_collection_with_its_encoder(
    make_client: Callable[..., ReleaseClient], factory: Factory
) -> None:
    client = make_client()
    texts = [TEXTS[3], TEXTS[41]]
    answers = client.search_text(texts, limit=3, output_fields=FIELDS)
    assert_own_model(answers, texts)
    assert {(a.version, a.collection) for a in answers} == {("v1", "products__v1")}
    assert factory.queries == [("hash-a", tuple(texts))]
    assert factory.models() == ["hash-a"]
    assert client.answers == {"v1": 2} and client.retried == 0
    assert client.search_text([]) == []
    with pytest.raises(TypeError, match="list of strings"):
        client.search_text("one query")


def test_the_announced_encoder_loads_before_the_flip_which_is_followed_both_ways(
    track: Track, make_client: Callable[..., ReleaseClient]
) -> None:
    slow = Factory(load_seconds=0.3)
    client = make_client(encoders=slow, refresh_seconds=0.2)
    assert client.search_text([TEXTS[0]], output_fields=FIELDS)[0].version == "v1"

    track.announce("products__v1", "v2", B)
    time.sleep(0.25)
    assert client.search_text([TEXTS[1]], output_fields=FIELDS)[0].version == "v1"
    wait_for(lambda: client.encoders.cached(B) and slow.models() == ["hash-a", "hash-b"], 2)
    b_loaded_at = slow.calls[1][1]
    time.sleep(0.35)  # the load finishes before the flip

    flipped_at = time.monotonic()
    track.flip("v2")
    assert b_loaded_at < flipped_at
    served, followed_in = serve_until(client, TEXTS[7], "v2")
    assert followed_in <= 0.2 + 0.15
    assert_own_model(served, [TEXTS[7]] * len(served))
    assert slow.models() == ["hash-a", "hash-b"]  # no load after the flip
    assert client.preloaded == 1

    track.flip("v1")  # rollback
    back, _ = serve_until(client, TEXTS[9], "v1")
    assert_own_model(back, [TEXTS[9]] * len(back))
    assert client.flips_followed == 2 and slow.models() == ["hash-a", "hash-b"]
    assert client.answers["v1"] >= 3 and client.answers["v2"] >= 1


def test_concurrent_readers_never_mix_models_while_the_alias_flips(
    track: Track, make_client: Callable[..., ReleaseClient], factory: Factory
) -> None:
    client = make_client(refresh_seconds=0.05)
    stop, errors, answers = threading.Event(), [], []

    def read(worker: int) -> None:
        i = worker
        while not stop.is_set():
            texts = [TEXTS[i % 60], TEXTS[(i * 13) % 60]]
            try:
                got = client.search_text(texts, limit=2, output_fields=FIELDS)
                assert_own_model(got, texts)
                answers.extend(got)
            except Exception as exc:  # reported below
                errors.append(exc)
            i += 3

    readers = [threading.Thread(target=read, args=(n,)) for n in range(3)]
    for reader in readers:
        reader.start()
    for version in ("v2", "v1", "v2", "v1", "v2"):
        time.sleep(0.3)
        track.flip(version)
    time.sleep(0.3)
    stop.set()
    for reader in readers:
        reader.join()
    assert errors == []
    assert {a.version for a in answers} == {"v1", "v2"}
    assert client.flips_followed >= 5
    assert sorted(factory.models()) == ["hash-a", "hash-b"]  # one load per model


def test_vectors_go_to_the_collection_of_their_own_model(
    track: Track, make_client: Callable[..., ReleaseClient]
) -> None:
    as_a = HashEncoder("hash-a", 64, []).embed_queries([TEXTS[5]])
    as_b = HashEncoder("hash-b", 48, []).embed_queries([TEXTS[5]])
    track.flip("v2")
    client = make_client(refresh_seconds=60)  # cached: a drop is noticed by the error

    [on_v2] = client.search(as_b, encoder=EmbedderSpec(model="hash-b"), output_fields=FIELDS)
    assert on_v2.collection == "products__v2"
    [on_v1] = client.search(as_a, encoder=A, output_fields=FIELDS)  # drain: still loaded
    assert (on_v1.collection, on_v1.version) == ("products__v1", "v1")
    assert_own_model([on_v1, on_v2], [TEXTS[5]] * 2)

    with pytest.raises(EncoderMismatch, match="match no collection of alias products"):
        client.search(np.ones((1, 64)), encoder=descriptor("hash-c", 64))
    with pytest.raises(EncoderMismatch, match="dimension 64"):
        client.search(as_a, encoder=B)
    with pytest.raises(ValueError, match="descriptor"):
        client.search(as_a, encoder={"model": "hash-a"})

    track.admin.drop_collection("products__v1")  # the client still believes it loaded
    with pytest.raises(EncoderMismatch, match=r"live products__v2 \(sentence-transformers hash-b"):
        client.search(as_a, encoder=A)
    assert client.reresolved == 1 and client.retried == 1


def test_vectors_of_a_released_collection_are_refused_as_drained(
    track: Track, make_client: Callable[..., ReleaseClient]
) -> None:
    track.flip("v2")
    track.admin.release_collection("products__v1")
    client = make_client()
    as_a = HashEncoder("hash-a", 64, []).embed_queries([TEXTS[5]])
    with pytest.raises(EncoderMismatch, match="products__v1 of alias products, no longer loaded"):
        client.search(as_a, encoder=A)


def test_a_collection_dropped_under_the_client_is_resolved_again(
    track: Track, make_client: Callable[..., ReleaseClient], factory: Factory
) -> None:
    client = make_client(refresh_seconds=60)  # only the error can make it look again
    assert client.search_text([TEXTS[2]])[0].version == "v1"
    track.flip("v2")
    track.admin.drop_collection("products__v1")
    [answer] = client.search_text([TEXTS[2]], output_fields=FIELDS)
    assert (answer.version, answer.collection) == ("v2", "products__v2")
    assert_own_model([answer], [TEXTS[2]])
    assert client.reresolved == 1 and client.retried == 1
    # Embedded with A for v1 (before, and on the attempt that found v1 gone), then again
    # with B for v2: the A vectors never went to v2.
    assert [model for model, _ in factory.queries] == ["hash-a", "hash-a", "hash-b"]


def test_a_collection_without_an_encoder_is_refused(
    track: Track, make_client: Callable[..., ReleaseClient]
) -> None:
    track.admin.create_collection("products__old", dimension=64)
    track.flip("old")
    with pytest.raises(MissingEncoder, match=r"products__old .* records no embrel\.encoder"):
        make_client().search_text([TEXTS[0]])


def test_one_encoder_load_per_descriptor_however_many_threads_ask() -> None:
    factory = Factory(load_seconds=0.2)
    encoders = EncoderCache(factory)
    got: list[Any] = []
    threads = [threading.Thread(target=lambda: got.append(encoders.get(A))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 8 and all(e is got[0] for e in got)
    assert factory.models() == ["hash-a"] and encoders.loads == 1
    assert encoders.preload(A) is False

    specs: list[EmbedderSpec] = []

    def recording(spec: EmbedderSpec) -> HashEncoder:
        specs.append(spec)
        return factory(spec)

    EncoderCache(recording, spec_settings={"api_key_env": "SHOP_KEY", "batch_size": 8}).get(A)
    assert specs[0].batch_size == 8 and specs[0].api_key_env is None  # A is not openai

    wrong = EncoderCache(lambda spec: HashEncoder(spec.model, 8, []))
    with pytest.raises(EncoderMismatch, match="produces dimension 8"):
        wrong.get(A)


def test_the_property_names_are_the_controllers() -> None:
    assert VERSION_PROPERTY == state.P_VERSION
    assert ALIAS_PROPERTY == state.P_ALIAS
    assert PROMOTED_AT_PROPERTY == state.P_PROMOTED_AT
    assert NEXT_PROPERTY == "embrel.next"
    assert SEARCH_FIELD_PROPERTY == state.P_SEARCH_FIELD
