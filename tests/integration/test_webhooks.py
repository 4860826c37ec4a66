"""Webhook gates and notifications in whole releases, on every backend.

The receiver is a real HTTP server on 127.0.0.1 (tests/support/hook_receiver.py) that
checks the HMAC signature with its own copy of the secret.
"""

from __future__ import annotations

import json
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from controller.config import ControllerConfig
from controller.drivers.local import LocalController
from controller.metrics import PrometheusTelemetry
from controller.ports import Advance
from controller.spec import parse_release
from controller.status import Phase
from tests.conftest import Backend, embrel, release_yaml, unit_vectors, write_release, write_vectors
from tests.support.hook_receiver import Reply, receiver

N, DIM = 400, 32
SECRET = "hmac-secret-for-the-receiver"
URL_PASSWORD = "urlpassw0rd"


@pytest.fixture
def track(tmp_path: Path, backend: Backend, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """apply(version, **spec) -> (exit code, output, status); the CLI as a user runs it."""
    monkeypatch.setenv("EMBREL_TEST_HOOK_SECRET", SECRET)
    rng = np.random.default_rng(5)
    state = ("--state-dir", str(tmp_path / "state"))

    def apply(version: str, **spec: object) -> tuple[int, str, dict[str, Any]]:
        source = write_vectors(
            tmp_path / f"{version}.parquet", np.arange(N), unit_vectors(rng, N, DIM)
        )
        doc = release_yaml(backend, version, source, **spec)
        path = write_release(tmp_path / f"{version}.yaml", doc)
        r = embrel(*state, "apply", "-f", str(path), cwd=tmp_path)
        return r.returncode, r.stdout + r.stderr, status()

    def status() -> dict[str, Any]:
        r = embrel(*state, "status", "products", "-o", "json", cwd=tmp_path, check=True)
        out: dict[str, Any] = json.loads(r.stdout)
        return out

    def run(*args: str) -> tuple[int, str]:
        r = embrel(*state, *args, cwd=tmp_path)
        return r.returncode, r.stdout + r.stderr

    return apply, run, status


def with_password(url: str) -> str:
    """The receiver's URL with credentials in it, which must never be shown."""
    return url.replace("http://", f"http://bot:{URL_PASSWORD}@") + f"?token={URL_PASSWORD}"


def gate(url: str, **fields: object) -> dict[str, object]:
    hook = {"name": "approve", "url": url, "secretEnv": "EMBREL_TEST_HOOK_SECRET"} | fields
    return {"promotion": {"webhooks": [hook]}}


def check(status: dict[str, Any], name: str = "webhook/approve") -> dict[str, Any]:
    found: dict[str, Any] = next(c for c in status["validation"]["checks"] if c["name"] == name)
    return found


def assert_nothing_secret(*texts: str) -> None:
    for text in texts:
        assert SECRET not in text and URL_PASSWORD not in text, text


def test_a_failing_pre_promotion_webhook_leaves_the_alias_untouched(
    track: Any, backend: Backend
) -> None:
    apply, _, _ = track
    assert apply("v1")[0] == 0
    with receiver(default=Reply(403, body="change freeze"), secret=SECRET) as r:
        code, output, status = apply("v2", **gate(with_password(r.url), retries=3))
    assert code == 1, output
    assert status["phase"] == Phase.FAILED
    assert backend.alias_target() == f"{backend.alias}__v1"
    assert check(status)["outcome"] == "Failed" and "change freeze" in check(status)["detail"]
    assert len(r.requests) == 1, "a 4xx is not retried"
    (req,) = r.requests
    assert req.verified, "the receiver verified the signature"
    body = req.json()
    assert body["phase"] == "prePromotion" and body["version"] == "v2"
    assert body["live"] == {"collection": f"{backend.alias}__v1", "version": "v1"}
    assert body["candidate"]["collection"] == f"{backend.alias}__v2"
    assert body["validation"]["outcome"] == "passed" and body["validation"]["checks"]
    assert_nothing_secret(output, json.dumps(status))


def test_a_passing_webhook_promotes_and_is_a_check_in_status(track: Any, backend: Backend) -> None:
    apply, _, _ = track
    with receiver(Reply(503), secret=SECRET) as r:  # retried once, then 200
        code, output, status = apply("v1", **gate(r.url))
    assert code == 0, output
    assert backend.alias_target() == f"{backend.alias}__v1"
    assert check(status)["outcome"] == "Passed"
    assert check(status)["metrics"]["attempts"] == 2
    assert [q.verified for q in r.requests] == [True, True]


def test_pause_waits_for_promote(track: Any, backend: Backend) -> None:
    apply, run, status_of = track
    assert apply("v1")[0] == 0
    with receiver(default=Reply(503), secret=SECRET) as r:
        code, output, status = apply("v2", **gate(r.url, onFailure="pause", retries=0))
        assert code == 3, output
        assert status["phase"] == Phase.AWAITING_PROMOTION
        assert "run `embrel promote products`" in status["message"]
        assert backend.alias_target() == f"{backend.alias}__v1"
        assert check(status)["outcome"] == "Inconclusive"
        code, output = run("promote", "products")
    assert code == 0, output
    assert backend.alias_target() == f"{backend.alias}__v2"
    assert status_of()["phase"] == Phase.LIVE
    assert len(r.requests) == 1, "a person's promote does not ask the webhook again"


def test_a_failing_pre_build_webhook_builds_nothing(track: Any, backend: Backend) -> None:
    apply, _, _ = track
    with receiver(default=Reply(500), secret=SECRET) as r:
        code, output, status = apply("v1", **gate(r.url, phase="preBuild", retries=1))
    assert code == 1, output
    assert status["phase"] == Phase.FAILED and "preBuild webhook failed" in status["message"]
    assert len(r.requests) == 2
    assert backend.collections() == {} and backend.alias_target() is None
    assert_nothing_secret(output, json.dumps(status))


class Events:
    def __init__(self) -> None:
        self.seen: list[str] = []

    def event(self, reason: str, message: str, warning: bool = False) -> None:
        self.seen.append(message)

    def progress(self, stage: str, total: int | None) -> AbstractContextManager[Advance]:
        return nullcontext(lambda n: None)


def test_undelivered_notifications_are_counted_and_the_release_goes_live(
    tmp_path: Path, backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EMBREL_TEST_HOOK_SECRET", SECRET)
    registry = CollectorRegistry()
    events = Events()
    controller = LocalController(
        ControllerConfig(state_dir=tmp_path / "state"), events, PrometheusTelemetry(registry)
    )
    rng = np.random.default_rng(9)
    source = write_vectors(tmp_path / "v1.parquet", np.arange(N), unit_vectors(rng, N, DIM))
    with receiver(secret=SECRET) as ok, receiver(default=Reply(500)) as down:
        notifications = [
            {"name": "audit", "url": ok.url, "secretEnv": "EMBREL_TEST_HOOK_SECRET"},
            {"name": "chat", "url": with_password(down.url), "template": "slack", "retries": 1},
        ]
        doc = release_yaml(backend, "v1", source, notifications=notifications)
        path = write_release(tmp_path / "v1.yaml", doc)
        text = path.read_text()
        controller.record_spec(path, text, parse_release(text))
        status = controller.reconcile_track("test/products").status
        assert controller.engines.notifier.flush(30)
        controller.close()
    assert status.phase == Phase.LIVE, status.message
    phases = [(q.json()["previousPhase"], q.json()["phase"]) for q in ok.requests]
    assert phases == [("Indexing", "Validating"), ("Promoting", "Live")], phases
    assert all(q.verified for q in ok.requests)
    assert "Validating" in down.requests[0].json()["text"]
    assert len(down.requests) == 4, "two notifications, each tried twice"
    labels = {"namespace": "test", "release": "products", "notification": "chat"}
    assert registry.get_sample_value("embrel_notifications_failed_total", labels) == 2.0
    assert_nothing_secret(*events.seen, json.dumps(status.to_dict()))


def test_a_failing_post_promotion_webhook_rolls_back_with_a_verified_flip(
    track: Any, backend: Backend
) -> None:
    apply, _, _ = track
    assert apply("v1")[0] == 0
    with receiver(default=Reply(500, body="error rate up"), secret=SECRET) as r:
        code, output, status = apply("v2", **gate(r.url, phase="postPromotion", retries=0))
    assert code == 3, output
    assert status["phase"] == Phase.ROLLED_BACK, status["message"]
    assert status["conditions"][0]["reason"] == "AutoRolledBack"
    assert "post-promotion check failed: webhook/approve" in status["message"]
    assert backend.alias_target() == f"{backend.alias}__v1"
    assert status["cutover"]["verified"] and status["cutover"]["rollback"]
    (req,) = r.requests
    assert req.verified and req.json()["phase"] == "postPromotion"
    assert req.json()["live"]["collection"] == f"{backend.alias}__v2"


def test_a_passing_post_promotion_webhook_is_called_once_per_live_period(
    track: Any, backend: Backend, tmp_path: Path
) -> None:
    apply, run, status_of = track
    with receiver(secret=SECRET) as r:
        code, output, status = apply("v1", **gate(r.url, phase="postPromotion"))
        assert code == 0, output
        again = run("apply", "-f", str(tmp_path / "v1.yaml"))  # another pass
        assert again[0] == 0, again[1]
    assert status["phase"] == Phase.LIVE
    assert check(status_of())["outcome"] == "Passed"
    assert len(r.requests) == 1
