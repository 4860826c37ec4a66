"""The HTTP side of webhook gates and notifications (httpx + tenacity).

``WebhookClient`` (``WebhookPort``) posts a gate's signed payload and says how it
ended: a 2xx within ``timeoutSeconds`` passes; a connection error, a timeout, a 5xx,
408 or 429 is retried ``retries`` times with capped exponential backoff, honouring
``Retry-After``; any other answer (a 4xx) ends the call at once, since asking again
gets the same no. ``Notifier`` (``NotifierPort``) delivers notifications from one
background thread with the same retries, then counts a failure in telemetry
(``embrel_notifications_failed_total``): a release is never held up by chat.

Secrets (the HMAC key) come from ``secrets`` (``secretEnv`` or, on Kubernetes,
``secretRef``) and are only ever used to sign; messages name the URL with
credentials redacted (``redact_uri``), never a secret.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt
from tenacity.wait import wait_exponential, wait_random

from controller.embedding.openai import MAX_BACKOFF_SECONDS, retry_after_seconds
from controller.hooks import EVENT_HEADER, HookAnswer, body_bytes, signed_headers
from controller.ports import NullTelemetry, Telemetry
from controller.secrets import MissingSecret as MissingSecret  # re-exported
from controller.secrets import SecretSource as SecretSource  # re-exported
from controller.secrets import env_secrets as env_secrets  # re-exported
from controller.spec import NotificationSpec, WebhookSpec, redact_uri, uri_secret_values

log = logging.getLogger(__name__)

# The longest Retry-After honoured: a gate must answer within the pass.
MAX_RETRY_AFTER_SECONDS = 30.0
_RETRY_STATUSES = {408, 429, 500, 502, 503, 504}
_RETRY_EXCEPTIONS = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)
_BACKOFF = wait_exponential(multiplier=0.5, max=MAX_BACKOFF_SECONDS) + wait_random(0, 0.25)
_EXCERPT = 200  # characters of a receiver's answer kept in a detail
QUEUE_SIZE = 256  # notifications waiting; beyond it they are dropped and counted

Hook = WebhookSpec | NotificationSpec


class _Transient(Exception):
    """One attempt failed in a way another attempt may not; carries the wait asked for."""

    def __init__(self, message: str, status: int | None, retry_after: float | None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class _Refused(Exception):
    """The receiver said no (a 4xx, a redirect): asking again gets the same answer."""

    def __init__(self, message: str, status: int | None) -> None:
        super().__init__(message)
        self.status = status


class WebhookClient:
    """``WebhookPort``: one signed POST per call, retried within bounds."""

    def __init__(
        self,
        secrets: SecretSource | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._secrets = secrets or env_secrets()
        self._client = httpx.Client(transport=transport, follow_redirects=False)
        self._sleep = sleep

    def call(self, track: str, hook: WebhookSpec, payload: Mapping[str, Any]) -> HookAnswer:
        """Post ``payload`` to the gate; how it ended, never an exception."""
        return self.post(track, hook, payload, event="gate")

    def post(self, track: str, hook: Hook, payload: Mapping[str, Any], event: str) -> HookAnswer:
        """Post, retrying what a retry can change; the answer, or why there was none."""
        started, attempts = time.monotonic(), 0
        try:
            secret = self._secrets(hook, track.rpartition("/")[0] or "default")
        except MissingSecret as exc:
            return HookAnswer(False, f"not sent: {exc}", None, 0, 0.0)

        def attempt() -> int:
            nonlocal attempts
            attempts += 1
            return self._attempt(hook, payload, secret, event)

        retrying = Retrying(
            stop=stop_after_attempt(hook.retries + 1),
            wait=_wait,
            retry=retry_if_exception_type(_Transient),
            sleep=self._sleep,
            before_sleep=lambda state: _log_retry(hook, state),
            reraise=True,
        )
        try:
            status = retrying(attempt)
        except (_Transient, _Refused) as exc:
            return HookAnswer(False, str(exc), exc.status, attempts, time.monotonic() - started)
        seconds = time.monotonic() - started
        return HookAnswer(True, f"answered HTTP {status}", status, attempts, seconds)

    def _attempt(
        self, hook: Hook, payload: Mapping[str, Any], secret: str | None, event: str
    ) -> int:
        body = body_bytes(payload)  # signed per attempt: each carries a fresh timestamp
        headers = signed_headers(secret, body) | {EVENT_HEADER: event}
        try:
            response = self._client.post(
                hook.url, content=body, headers=headers, timeout=hook.timeout_seconds
            )
        except httpx.TimeoutException:
            raise _Transient(f"no answer within {hook.timeout_seconds:g}s", None, None) from None
        except _RETRY_EXCEPTIONS as exc:
            raise _Transient(_clean(f"{type(exc).__name__}: {exc}", hook), None, None) from None
        except httpx.HTTPError as exc:
            raise _Refused(_clean(f"{type(exc).__name__}: {exc}", hook), None) from None
        status = response.status_code
        if 200 <= status < 300:
            return status
        said = _clean(response.text, hook)
        text = f"answered HTTP {status}" + (f": {said}" if said else "")
        if status in _RETRY_STATUSES:
            raise _Transient(text, status, retry_after_seconds(response))
        raise _Refused(text, status)

    def close(self) -> None:
        self._client.close()


def _wait(state: RetryCallState) -> float:
    exc = state.outcome.exception() if state.outcome else None
    if isinstance(exc, _Transient) and exc.retry_after is not None:
        return min(exc.retry_after, MAX_RETRY_AFTER_SECONDS)
    return float(_BACKOFF(state))


def _log_retry(hook: Hook, state: RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome else None
    wait = state.next_action.sleep if state.next_action else 0.0
    log.warning(
        "webhook %s (%s): %s; attempt %d of %d, retrying in %.1fs",
        hook.name,
        redact_uri(hook.url),
        exc,
        state.attempt_number,
        hook.retries + 1,
        wait,
    )


def _clean(text: str, hook: Hook) -> str:
    """A receiver's text or an httpx message, short, with the URL's credentials redacted
    (httpx names the URL it failed on, in whatever form it parsed it)."""
    text = text.replace(hook.url, redact_uri(hook.url))
    for secret in uri_secret_values(hook.url):
        text = text.replace(secret, "***")
    text = " ".join(text.split())
    return text if len(text) <= _EXCERPT else text[:_EXCERPT] + "..."


class Notifier:
    """``NotifierPort``: a queue and one daemon thread posting what is queued.

    ``notify`` returns at once; a full queue drops the notification and counts it as
    failed. ``flush`` waits until everything queued so far was tried (tests, shutdown).
    """

    def __init__(self, client: WebhookClient, telemetry: Telemetry | None = None) -> None:
        self._client = client
        self._telemetry: Telemetry = telemetry or NullTelemetry()
        self._queue: queue.Queue[tuple[str, NotificationSpec, Mapping[str, Any]] | None] = (
            queue.Queue(QUEUE_SIZE)
        )
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def notify(self, track: str, notification: NotificationSpec, body: Mapping[str, Any]) -> None:
        """Queue one notification; never blocks, never raises."""
        self._start()
        try:
            self._queue.put_nowait((track, notification, body))
        except queue.Full:
            log.warning("notification %s dropped: %d are waiting", notification.name, QUEUE_SIZE)
            self._telemetry.notification_failed(track, notification.name)

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until every queued notification was tried; False on timeout."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)
        return not self._queue.unfinished_tasks

    def close(self) -> None:
        """Deliver what is queued (bounded by the retries), then stop the thread."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            thread.join(timeout=60)

    def _start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="embrel-notifier", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            try:
                self._deliver(*item)
            finally:
                self._queue.task_done()
        self._queue.task_done()

    def _deliver(self, track: str, notification: NotificationSpec, body: Mapping[str, Any]) -> None:
        try:
            answer = self._client.post(track, notification, body, event="notification")
        except Exception as exc:  # whatever happens here must not stop the next delivery
            answer = HookAnswer(False, f"{type(exc).__name__}", None)
        if not answer.ok:
            log.warning(
                "notification %s (%s) not delivered: %s",
                notification.name,
                redact_uri(notification.url),
                answer.detail,
            )
            self._telemetry.notification_failed(track, notification.name)
