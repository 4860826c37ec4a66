"""Webhook gates and notifications: what is sent, how it is signed, how an answer is
judged. Pure: the HTTP calls are ``controller.webhooks``' (behind ``WebhookPort`` and
``NotifierPort``), so the engine stays free of I/O.

A webhook gate receives a JSON description of the release (``release_payload``) and
passes with a 2xx answer within its timeout. Every body is signed with HMAC-SHA256
over ``<timestamp>.<body>`` (``signature``) and sent with the headers
``X-Embrel-Timestamp`` and ``X-Embrel-Signature: sha256=<hex>``; a receiver checks it
with ``verify`` (docs/webhooks.md).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from controller.spec import EmbeddingRelease, NotificationSpec, WebhookSpec, redact_uri
from controller.validation.results import Check, Outcome

SIGNATURE_HEADER = "X-Embrel-Signature"
TIMESTAMP_HEADER = "X-Embrel-Timestamp"
EVENT_HEADER = "X-Embrel-Event"
# A receiver refuses a signature older than this: a captured request cannot be replayed.
MAX_SIGNATURE_AGE_SECONDS = 300.0
CHECK_PREFIX = "webhook/"  # gate checks of webhooks are named webhook/<name>


@dataclass(frozen=True)
class HookAnswer:
    """How one webhook call ended, after its retries: what the gate is judged on."""

    ok: bool  # a 2xx answer within the timeout
    detail: str  # the status or the error, URL credentials redacted
    status: int | None = None  # the last HTTP status, None without an answer
    attempts: int = 1
    seconds: float = 0.0


def body_bytes(payload: Mapping[str, Any]) -> bytes:
    """The exact bytes sent and signed (compact, keys sorted: the same every time)."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """``sha256=<hex>`` of HMAC-SHA256 over ``<timestamp>.<body>`` with ``secret``.

    The timestamp is signed with the body so that an old request cannot be sent again
    with a fresh timestamp.
    """
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def verify(
    secret: str,
    timestamp: str,
    body: bytes,
    signed: str,
    now: float | None = None,
    max_age: float = MAX_SIGNATURE_AGE_SECONDS,
) -> bool:
    """What a receiver runs: the signature matches and the timestamp is recent."""
    try:
        age = (time.time() if now is None else now) - float(timestamp)
    except ValueError:
        return False
    if abs(age) > max_age:
        return False
    return hmac.compare_digest(signature(secret, timestamp, body), signed)


def signed_headers(secret: str | None, body: bytes, now: float | None = None) -> dict[str, str]:
    """The timestamp header always; the signature header when a secret is configured."""
    timestamp = str(int(time.time() if now is None else now))
    headers = {TIMESTAMP_HEADER: timestamp, "Content-Type": "application/json"}
    if secret:
        headers[SIGNATURE_HEADER] = signature(secret, timestamp, body)
    return headers


# -- webhook gates -------------------------------------------------------------------


def release_payload(
    release: EmbeddingRelease,
    phase: str,
    live: Mapping[str, str | None],
    candidate: Mapping[str, str | None],
    checks: Sequence[Check] = (),
) -> dict[str, Any]:
    """What a webhook gate is told: the release, where the alias points, the candidate
    and, from prePromotion on, the validation so far. Never a credential."""
    failed = [c.name for c in checks if c.outcome == Outcome.FAILED]
    return {
        "kind": "EmbeddingReleaseWebhook",
        "phase": phase,
        "track": release.track,
        "name": release.metadata.name,
        "namespace": release.metadata.namespace,
        "alias": release.spec.alias,
        "version": release.spec.version,
        "live": dict(live),
        "candidate": dict(candidate),
        "validation": {
            "outcome": "failed" if failed else "passed",
            "failed": failed,
            "checks": [
                {"name": c.name, "outcome": str(c.outcome), "value": c.value, "detail": c.detail}
                for c in checks
            ],
        },
    }


def hook_check(hook: WebhookSpec, answer: HookAnswer) -> Check:
    """A webhook's answer as a gate: Passed on 2xx; else Failed, or Inconclusive (the
    release waits for a person) with ``onFailure: pause``."""
    if answer.ok:
        outcome = Outcome.PASSED
    else:
        outcome = Outcome.INCONCLUSIVE if hook.on_failure == "pause" else Outcome.FAILED
    where = redact_uri(hook.url)
    tries = f"{answer.attempts} attempt{'s' if answer.attempts != 1 else ''}"
    detail = f"{hook.phase} {where}: {answer.detail} ({tries}, {answer.seconds:.2f}s)"
    if not answer.ok:
        detail += f"; onFailure {hook.on_failure}"
    metrics = {"attempts": float(answer.attempts), "seconds": round(answer.seconds, 3)}
    if answer.status is not None:
        metrics["status"] = float(answer.status)
    return Check(CHECK_PREFIX + hook.name, None, None, outcome, detail, "", metrics)


def failure_text(checks: Sequence[Check]) -> str:
    """The failed webhooks of ``checks``, as a status message names them."""
    return "; ".join(f"{c.name}: {c.detail}" for c in checks if not c.passed)


# -- notifications -------------------------------------------------------------------


def phase_event(
    release: EmbeddingRelease,
    phase: str,
    previous: str,
    message: str,
    live: Mapping[str, Any] | None,
    at: str,
) -> dict[str, Any]:
    """A phase change, as the ``json`` template sends it."""
    return {
        "kind": "EmbeddingReleasePhase",
        "track": release.track,
        "name": release.metadata.name,
        "namespace": release.metadata.namespace,
        "alias": release.spec.alias,
        "version": release.spec.version,
        "phase": phase,
        "previousPhase": previous,
        "message": message,
        "live": dict(live or {}),
        "at": at,
    }


_EMOJI = {
    "Validating": ":mag:",
    "AwaitingPromotion": ":raised_hand:",
    "Live": ":white_check_mark:",
    "Failed": ":x:",
    "RolledBack": ":rewind:",
    "Degraded": ":warning:",
}


def render(notification: NotificationSpec, event: Mapping[str, Any]) -> dict[str, Any]:
    """The body for ``notification.template``: ``json`` as is; ``slack`` a message with
    ``text`` (what every Slack-compatible receiver shows) and ``blocks``."""
    if notification.template == "json":
        return dict(event)
    head = (
        f"{_EMOJI.get(event['phase'], '')} {event['track']} {event['version']}: "
        f"{event['previousPhase'] or 'new'} → {event['phase']}"
    ).strip()
    fields = [
        {"type": "mrkdwn", "text": f"*alias*\n{event['alias']}"},
        {"type": "mrkdwn", "text": f"*live*\n{event['live'].get('collection') or '—'}"},
    ]
    return {
        "text": f"{head}: {event['message']}",
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": head[:150]}},
            {"type": "section", "text": {"type": "mrkdwn", "text": event["message"][:3000]}},
            {"type": "section", "fields": fields},
        ],
    }


def notify_phase(previous: str, phase: str, wanted: Sequence[str]) -> bool:
    """A change into one of ``wanted`` phases; staying in a phase is no news."""
    return phase != previous and phase in wanted
