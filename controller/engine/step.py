"""The vocabulary between the decision and the steps: requests, step names, a Step."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from controller.status import Phase

RetainVerb = Literal["release", "drop", "load"]


class StepName(StrEnum):
    """Every step the engine runs. The values appear in events, in the
    ``embrel_step_duration_seconds{step}`` label and in the docs: never rename one."""

    BUILD = "build"
    DISCARD_INCOMPLETE = "discard_incomplete"
    INDEX = "index"
    LOAD = "load"
    VALIDATE = "validate"
    ACCEPT = "accept"
    ABORT = "abort"
    FLIP = "flip"
    VERIFY_FLIP = "verify_flip"
    RELEASE = "release"
    RETAIN = "retain"
    CLEAR_ROLLBACK = "clear_rollback"
    CAPTURE_REFERENCE = "capture_reference"
    MONITOR = "monitor"
    POST_PROMOTION = "post_promotion"  # the postPromotion webhooks of a new live period
    DONE = "done"  # terminal: nothing to run, the pass has settled


@dataclass(frozen=True)
class Intents:
    """Requests from a person, applied by the engine exactly once."""

    promote: bool = False
    abort: bool = False
    rollback: bool = False
    rollback_to: str | None = None  # a version; None means "the previous one"
    hold: bool = False  # validate but do not promote (`embrel validate`)


@dataclass(frozen=True)
class Step:
    """What to do next, on which collection, and the status to show while it runs."""

    name: StepName
    target: str = ""
    phase: Phase = Phase.PENDING
    reason: str = ""
    message: str = ""
    terminal: bool = False
    # A settled pass: observe again after this many seconds (a drain, drift, a re-probe).
    requeue_after: float | None = None
    verb: RetainVerb | None = None  # retain: what retention does to the target
    rollback: bool = False  # flip: back to a kept version, asked for or by the guard
    auto: str = ""  # flip: the guard's breaches when it rolled back on its own
    # done: a person's request (promote, abort, rollback) that cannot be carried out. A
    # refusal changes nothing: the status stays as it was and the request is dropped.
    refused: str = ""


def done(phase: Phase, reason: str, message: str, requeue_after: float | None = None) -> Step:
    """A terminal step: the release has settled in ``phase`` for now."""
    return Step(
        StepName.DONE,
        phase=phase,
        reason=reason,
        message=message,
        terminal=True,
        requeue_after=requeue_after,
    )
