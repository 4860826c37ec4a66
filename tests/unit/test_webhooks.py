"""Webhook gates and notifications over real HTTP, against a receiver on 127.0.0.1."""

from __future__ import annotations

import json
import logging
import socket
import time
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from controller.hooks import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    body_bytes,
    hook_check,
    render,
    signature,
    verify,
)
from controller.metrics import PrometheusTelemetry
from controller.spec import NotificationSpec, WebhookSpec
from controller.validation.results import Outcome
from controller.webhooks import Notifier, WebhookClient, env_secrets
from tests.support.hook_receiver import Reply, receiver
from tests.support.specs import minimal_release, spec_error

SECRET = "s3cr3t-hmac-key-value"
ENV = {"HOOK_SECRET": SECRET, "WRONG_SECRET": "not-the-receivers-key"}
PAYLOAD = {"track": "t/products", "version": "v2"}
TRACK = "t/products"


def hook(url: str, **fields: Any) -> WebhookSpec:
    return WebhookSpec.model_validate({"name": "approve", "url": url} | fields)


class Sleeps:
    """Backoff waits, recorded instead of slept."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def client(sleeps: Sleeps | None = None) -> WebhookClient:
    return WebhookClient(env_secrets(ENV), sleep=sleeps or Sleeps())


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_2xx_passes_and_the_receiver_verifies_the_signature() -> None:
    with receiver(secret=SECRET) as r:
        answer = client().call(TRACK, hook(r.url, secretEnv="HOOK_SECRET"), PAYLOAD)
    assert answer.ok and answer.status == 200 and answer.attempts == 1, answer
    (req,) = r.requests
    assert req.verified is True
    assert req.json() == PAYLOAD
    assert req.headers[SIGNATURE_HEADER].startswith("sha256=")
    assert req.headers["X-Embrel-Event"] == "gate"


def test_a_wrong_secret_is_refused_by_the_receivers_check_and_not_retried() -> None:
    with receiver(secret=SECRET) as r:
        answer = client().call(TRACK, hook(r.url, secretEnv="WRONG_SECRET"), PAYLOAD)
    assert not answer.ok and answer.status == 401 and answer.attempts == 1, answer
    assert [q.verified for q in r.requests] == [False]


def test_a_4xx_fails_at_once_without_retry() -> None:
    sleeps = Sleeps()
    with receiver(default=Reply(403, body="change freeze")) as r:
        answer = client(sleeps).call(TRACK, hook(r.url, retries=3), PAYLOAD)
    assert not answer.ok and answer.status == 403 and answer.attempts == 1
    assert "change freeze" in answer.detail
    assert len(r.requests) == 1 and sleeps.waits == []


def test_5xx_then_2xx_is_retried_and_passes() -> None:
    sleeps = Sleeps()
    with receiver(Reply(503), Reply(502)) as r:
        answer = client(sleeps).call(TRACK, hook(r.url, retries=2), PAYLOAD)
    assert answer.ok and answer.attempts == 3 and len(r.requests) == 3, answer
    assert len(sleeps.waits) == 2
    # each attempt is signed afresh
    assert all(TIMESTAMP_HEADER in q.headers for q in r.requests)


def test_retries_are_bounded() -> None:
    with receiver(default=Reply(500)) as r:
        answer = client().call(TRACK, hook(r.url, retries=2), PAYLOAD)
    assert not answer.ok and answer.attempts == 3 and len(r.requests) == 3
    assert "HTTP 500" in answer.detail


def test_429_honours_retry_after() -> None:
    sleeps = Sleeps()
    with receiver(Reply(429, headers={"Retry-After": "7"})) as r:
        answer = client(sleeps).call(TRACK, hook(r.url), PAYLOAD)
    assert answer.ok and answer.attempts == 2 and sleeps.waits == [7.0]


def test_no_answer_within_the_timeout_fails_after_the_retries() -> None:
    with receiver(default=Reply(200, delay=1.5)) as r:
        started = time.monotonic()
        answer = client().call(TRACK, hook(r.url, timeoutSeconds=0.3, retries=1), PAYLOAD)
    assert not answer.ok and answer.status is None and answer.attempts == 2, answer
    assert "no answer within 0.3s" in answer.detail
    assert time.monotonic() - started < 3.0


def test_url_credentials_and_the_secret_never_appear_in_details_or_logs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = f"http://admin:hunter2pass@127.0.0.1:{closed_port()}/hook?token=tok3nvalue"
    caplog.set_level(logging.DEBUG)
    spec = hook(url, secretEnv="HOOK_SECRET", retries=1)
    answer = client().call(TRACK, spec, PAYLOAD)
    check = hook_check(spec, answer)
    assert not answer.ok and answer.attempts == 2
    shown = json.dumps(check.to_dict()) + caplog.text
    for secret in ("hunter2pass", "tok3nvalue", SECRET, "admin:"):
        assert secret not in shown, shown
    assert "***@127.0.0.1" in check.detail and "token=***" in check.detail


def test_a_missing_secret_sends_nothing() -> None:
    with receiver() as r:
        answer = client().call(TRACK, hook(r.url, secretEnv="NOT_SET_ANYWHERE"), PAYLOAD)
    assert not answer.ok and answer.attempts == 0 and r.requests == []
    assert "secretEnv NOT_SET_ANYWHERE is not set" in answer.detail


@pytest.mark.parametrize(
    ("on_failure", "outcome"), [("fail", Outcome.FAILED), ("pause", Outcome.INCONCLUSIVE)]
)
def test_a_failed_answer_fails_or_pauses_the_gate(on_failure: str, outcome: Outcome) -> None:
    with receiver(default=Reply(404)) as r:
        spec = hook(r.url, onFailure=on_failure)
        check = hook_check(spec, client().call(TRACK, spec, PAYLOAD))
    assert check.name == "webhook/approve" and check.outcome == outcome
    assert f"onFailure {on_failure}" in check.detail


def test_signature_is_hmac_sha256_over_timestamp_and_body() -> None:
    body = body_bytes(PAYLOAD)
    signed = signature(SECRET, "1700000000", body)
    assert verify(SECRET, "1700000000", body, signed, now=1700000100)
    assert not verify("other", "1700000000", body, signed, now=1700000100)
    assert not verify(SECRET, "1700000000", body + b" ", signed, now=1700000100)
    assert not verify(SECRET, "1700000000", body, signed, now=1700009999), "a replay is refused"


# -- notifications -------------------------------------------------------------------


def notification(url: str, **fields: Any) -> NotificationSpec:
    return NotificationSpec.model_validate({"name": "chat", "url": url} | fields)


EVENT = {
    "track": TRACK,
    "version": "v2",
    "alias": "products",
    "phase": "Live",
    "previousPhase": "Promoting",
    "message": "v2 is live",
    "live": {"collection": "products__v2"},
}


def test_slack_template_has_text_and_blocks() -> None:
    body = render(notification("http://x.test/", template="slack"), EVENT)
    assert "t/products v2: Promoting → Live" in body["text"]
    assert body["blocks"][0]["type"] == "header"
    assert render(notification("http://x.test/"), EVENT) == EVENT


def test_notifications_are_delivered_in_the_background() -> None:
    notifier = Notifier(client())
    with receiver(secret=SECRET) as r:
        spec = notification(r.url, secretEnv="HOOK_SECRET")
        notifier.notify(TRACK, spec, render(spec, EVENT))
        assert notifier.flush(10)
        notifier.close()
    (req,) = r.requests
    assert req.verified and req.json()["phase"] == "Live"
    assert req.headers["X-Embrel-Event"] == "notification"


def test_an_undelivered_notification_is_counted_after_bounded_retries() -> None:
    registry = CollectorRegistry()
    telemetry = PrometheusTelemetry(registry)
    sleeps = Sleeps()
    notifier = Notifier(client(sleeps), telemetry)
    with receiver(default=Reply(500)) as r:
        spec = notification(r.url, retries=2)
        started = time.monotonic()
        notifier.notify(TRACK, spec, EVENT)  # returns at once
        assert time.monotonic() - started < 0.1
        assert notifier.flush(10)
        notifier.close()
    assert len(r.requests) == 3
    labels = {"namespace": "t", "release": "products", "notification": "chat"}
    assert registry.get_sample_value("embrel_notifications_failed_total", labels) == 1.0


# -- the spec ------------------------------------------------------------------------


def _errors(promotion: dict[str, Any]) -> str:
    return str(spec_error(minimal_release(promotion=promotion)))


def test_spec_errors_name_the_field() -> None:
    url = "http://h.test/"
    pause = _errors(
        {"webhooks": [{"name": "a", "url": url, "phase": "preBuild", "onFailure": "pause"}]}
    )
    assert "spec.promotion.webhooks[0]" in pause and "prePromotion only" in pause
    both = _errors({"webhooks": [{"name": "a", "url": url, "secretEnv": "X", "secretRef": "s"}]})
    assert "at most one of secretEnv" in both
    twice = _errors({"webhooks": [{"name": "a", "url": url}, {"name": "a", "url": url}]})
    assert "spec.promotion.webhooks" in twice and "a twice" in twice
    scheme = _errors({"webhooks": [{"name": "a", "url": "ftp://u:pw1234@h/"}]})
    assert "http:// or https://" in scheme and "pw1234" not in scheme
    env = _errors({"webhooks": [{"name": "a", "url": url, "secretEnv": "sk-live value"}]})
    assert "NAME of an environment variable" in env and "sk-live" not in env


def test_webhook_and_analysis_checks_are_gates_in_the_validation_metrics() -> None:
    from controller.status import ReleaseStatus
    from tests.unit.test_decide import release

    registry = CollectorRegistry()
    checks = [
        {"name": "webhook/approve", "value": None, "threshold": None, "passed": False},
        {"name": "analysis/errors", "value": 0.2, "threshold": None, "passed": True},
    ]
    status = ReleaseStatus(validation={"checks": checks})
    PrometheusTelemetry(registry).observe_status(release(), status)
    labels = {"namespace": "search", "release": "products", "version": "v2"}
    get = registry.get_sample_value
    assert get("embrel_validation_passed", labels | {"gate": "webhook/approve"}) == 0.0
    assert get("embrel_validation_passed", labels | {"gate": "analysis/errors"}) == 1.0
    assert get("embrel_validation_value", labels | {"gate": "analysis/errors"}) == 0.2


def test_a_receiver_echoing_the_url_credentials_has_them_scrubbed() -> None:
    with receiver(default=Reply(400, body="bad token tok3nvalue for user admin")) as r:
        url = r.url.replace("http://", "http://admin:hunter2pass@") + "?token=tok3nvalue"
        answer = client().call(TRACK, hook(url), PAYLOAD)
    assert not answer.ok and "tok3nvalue" not in answer.detail, answer.detail
    assert "bad token *** for user ***" in answer.detail
