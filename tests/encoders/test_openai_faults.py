"""OpenAIEncoder against servers that misbehave: what is retried, how long, what it says."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import numpy as np
import pytest

from controller.embedding.embedder import EmbedderUnavailable
from controller.embedding.openai import (
    MAX_BACKOFF_SECONDS,
    EncoderUnreachable,
    OpenAIEncoder,
    retry_after_seconds,
)
from controller.errors import PermanentError, TemporaryError
from controller.spec import EmbedderSpec
from tests.encoders.servers import FaultServer, Reply, free_port, text_vector

KEY = "sk-test-5ecret-key-0042"


def encoder(url: str, *, key: str | None = None, **fields: object) -> OpenAIEncoder:
    spec = EmbedderSpec.model_validate(
        {"type": "openai", "model": "fake", "baseUrl": url, "apiKeyEnv": "TEST_KEY"} | fields
    )
    return OpenAIEncoder(spec, environ={"TEST_KEY": key} if key else {})


def expected(texts: list[str], dimension: int = 4) -> np.ndarray:
    raw = np.array([text_vector(t, dimension) for t in texts], dtype=np.float32)
    unit: np.ndarray = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    return unit


def test_order_is_kept_across_shuffled_answers_batches_and_concurrency(fault_server: Any) -> None:
    rng = np.random.default_rng(7)
    server: FaultServer = fault_server(lambda n, body: Reply(delay=float(rng.uniform(0, 0.05))))
    texts = [f"text {i}" for i in range(50)]
    with encoder(server.url, batchSize=3, concurrency=4) as enc:
        vectors = enc.embed(texts)
    np.testing.assert_allclose(vectors, expected(texts), rtol=1e-6)
    assert len(server.seen) == 17
    assert 2 <= server.max_in_flight <= 4  # concurrent, and never more than asked
    first = server.seen[0].body
    assert first["model"] == "fake" and first["encoding_format"] == "float"
    assert "dimensions" not in first


def test_normalisation_is_client_side_and_optional(fault_server: Any) -> None:
    server = fault_server(lambda n, body: Reply())
    with encoder(server.url, normalize=False, dimension=4) as enc:
        raw = enc.embed(["a", "b"])
    assert server.seen[0].body["dimensions"] == 4
    np.testing.assert_allclose(raw, [text_vector("a", 4), text_vector("b", 4)], rtol=1e-6)
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0)


def test_the_key_is_sent_as_bearer_from_the_environment(fault_server: Any) -> None:
    server = fault_server(lambda n, body: Reply())
    with encoder(server.url, key=KEY) as enc:
        enc.embed(["a"])
    assert server.seen[0].headers["Authorization"] == f"Bearer {KEY}"
    with encoder(server.url) as enc:  # no key: local servers need none
        enc.embed(["a"])
    assert "Authorization" not in server.seen[1].headers


def test_429_with_retry_after_is_retried_after_the_delay_asked(fault_server: Any) -> None:
    def script(n: int, body: dict[str, Any]) -> Reply:
        if n == 0:
            return Reply(status=429, headers={"Retry-After": "1"}, body={"error": "slow down"})
        return Reply()

    server = fault_server(script)
    with encoder(server.url, maxRetries=2) as enc:
        vectors = enc.embed(["a", "b"])
    np.testing.assert_allclose(vectors, expected(["a", "b"]), rtol=1e-6)
    assert len(server.seen) == 2
    waited = server.seen[1].at - server.seen[0].at
    assert 0.95 <= waited < 2.0, waited  # the 1 s asked, not the 0.5 s first backoff


def test_5xx_is_retried_until_it_succeeds(fault_server: Any) -> None:
    server = fault_server(lambda n, body: Reply(status=503) if n < 2 else Reply())
    waits: list[float] = []
    spec = EmbedderSpec.model_validate(
        {"type": "openai", "model": "fake", "baseUrl": server.url, "maxRetries": 2}
    )
    with OpenAIEncoder(spec, environ={}, sleep=waits.append) as enc:
        assert enc.embed(["a"]).shape == (1, 4)
    assert len(server.seen) == 3
    assert len(waits) == 2 and 0.5 <= waits[0] <= 0.75 and 1.0 <= waits[1] <= 1.25


def test_a_stalled_server_fails_after_bounded_retries_in_bounded_time(fault_server: Any) -> None:
    server = fault_server(lambda n, body: Reply(delay=5.0))
    enc = encoder(server.url, timeoutSeconds=0.3, maxRetries=2)
    started = time.monotonic()
    with pytest.raises(EncoderUnreachable) as err:
        enc.embed(["a"])
    elapsed = time.monotonic() - started
    # 3 attempts of 0.3 s, and backoffs of about 0.5 s and 1 s (plus jitter of 0.25 s each).
    assert 0.9 + 1.5 <= elapsed < 0.9 + 2.0 + 1.5, elapsed
    assert len(server.seen) == 3
    assert isinstance(err.value, TemporaryError)
    assert server.url in str(err.value) and "3 attempt(s)" in str(err.value)
    assert "Timeout" in str(err.value)
    enc.close()


def test_a_refused_connection_is_retried_with_capped_exponential_backoff() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    waits: list[float] = []
    spec = EmbedderSpec.model_validate(
        {"type": "openai", "model": "fake", "baseUrl": url, "maxRetries": 8}
    )
    with (
        OpenAIEncoder(spec, environ={}, sleep=waits.append) as enc,
        pytest.raises(EncoderUnreachable, match="ConnectError"),
    ):
        enc.embed(["a"])
    assert len(waits) == 8
    assert waits == sorted(waits[:5]) + waits[5:]  # growing ...
    assert max(waits) <= MAX_BACKOFF_SECONDS + 0.25  # ... up to the cap (jitter on top)


@pytest.mark.parametrize(
    ("reply", "says"),
    [
        (Reply(dimension=3), "answered vectors of dimension 3, but spec.embedder.dimension says 4"),
        (Reply(status=400, body={"error": {"message": "input too long"}}), "HTTP 400 Bad Request: input too long"),
        (Reply(status=404, body={"detail": "Not Found"}), "HTTP 404 Not Found: Not Found; check baseUrl"),
        (Reply(status=501), "HTTP 501"),
        (Reply(body=b"<html>proxy</html>"), "not JSON"),
        (Reply(body={"data": "nope"}), "no data list"),
        (Reply(body={"data": [{"index": 0, "embedding": [1.0, 2.0, 3.0, 4.0]}]}), "1 embedding(s) for 2 input(s)"),
        (Reply(body={"data": [{"index": 0, "embedding": [1, 2, 3, 4]}, {"index": 0, "embedding": [1, 2, 3, 4]}]}), "data[].index 0"),
        (Reply(body={"data": [{"index": 0, "embedding": [1, 2, 3, 4]}, {"index": 1, "embedding": [1, 2, 3]}]}), "different lengths"),
        (Reply(body={"data": [{"index": 0, "embedding": ["x"] * 4}, {"index": 1, "embedding": [1] * 4}]}), "not lists of numbers"),
        (Reply(body=b'{"data": [{"index": 0, "embedding": [1, NaN, 3, 4]}, {"index": 1, "embedding": [1, 2, 3, 4]}]}'), "NaN or infinity"),
    ],
)  # fmt: skip
def test_permanent_errors_fail_at_once(fault_server: Any, reply: Reply, says: str) -> None:
    server = fault_server(lambda n, body: reply)
    with (
        encoder(server.url, dimension=4, maxRetries=3) as enc,
        pytest.raises(EmbedderUnavailable) as err,
    ):
        enc.embed(["a", "b"])
    assert len(server.seen) == 1  # no retry
    assert isinstance(err.value, PermanentError)
    assert f"encoder {server.url}/embeddings" in str(err.value)
    assert says in str(err.value)


def test_401_is_permanent_and_never_shows_the_key(
    fault_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    echo = {"error": {"message": f"Incorrect API key provided: {KEY}"}}
    server = fault_server(lambda n, body: Reply(status=401, body=echo))
    caplog.set_level(logging.DEBUG)
    with encoder(server.url, key=KEY) as enc, pytest.raises(EmbedderUnavailable) as err:
        enc.embed(["a"])
    message = str(err.value)
    assert len(server.seen) == 1
    assert "HTTP 401 Unauthorized" in message and server.url in message
    assert "TEST_KEY (is set)" in message
    assert KEY not in message and KEY not in caplog.text
    assert KEY not in repr(err.value.__cause__) and KEY not in repr(err.value.__context__)


def test_a_wrong_dimension_after_the_first_answer_is_refused(fault_server: Any) -> None:
    server = fault_server(lambda n, body: Reply(dimension=4 if n == 0 else 5))
    with encoder(server.url) as enc:
        assert enc.dimension() == 4
        with pytest.raises(EmbedderUnavailable, match="dimension 5, but its first answer says 4"):
            enc.embed(["a"])


def test_retry_after_reads_seconds_and_http_dates() -> None:
    def after(value: str) -> float | None:
        return retry_after_seconds(httpx.Response(429, headers={"Retry-After": value}))

    assert after("3") == 3.0
    assert after("-4") == 0.0
    in_5s = format_datetime(datetime.now(UTC) + timedelta(seconds=5), usegmt=True)
    seconds = after(in_5s)
    assert seconds is not None and 3.9 <= seconds <= 5.0
    assert after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    assert after("soon") is None
    assert retry_after_seconds(httpx.Response(429)) is None


def test_a_long_retry_after_is_capped(fault_server: Any) -> None:
    server = fault_server(lambda n, body: Reply(status=429, headers={"Retry-After": "3600"}))
    waits: list[float] = []
    spec = EmbedderSpec.model_validate(
        {"type": "openai", "model": "fake", "baseUrl": server.url, "maxRetries": 1}
    )
    with (
        OpenAIEncoder(spec, environ={}, sleep=waits.append) as enc,
        pytest.raises(EncoderUnreachable, match="HTTP 429") as err,
    ):
        enc.embed(["a"])
    assert waits == [60.0]
    assert err.value.delay == 3600.0  # the next pass waits what the server asked
