"""Errors raised by embrel, typed by what a retry means.

    EmbrelError                 base of everything we raise on purpose
    ├── PermanentError          retrying the same input cannot help; the user must act
    │   ├── UsageError          a command line that cannot be run (unknown track, bad flags)
    │   ├── SpecError           the release spec is invalid (carries field paths)
    │   │   └── ConfigError     the controller's config file is invalid
    │   ├── SourceError         a source file is missing, unreadable or holds bad vectors
    │   ├── ConflictError       the request contradicts what Milvus holds (e.g. reused version)
    │   ├── MilvusRejected      Milvus refused a call for a reason a retry will not fix
    │   │   └── NotFound        the named collection or alias does not exist
    │   ├── KubeRejected        the Kubernetes API refused a request (403, 404, 422, ...)
    │   │   └── KubeNotFound    the object or resource does not exist
    │   └── WebhookFailed       a webhook gate did not pass (spec.promotion.webhooks)
    └── TemporaryError          worth retrying after ``delay`` seconds
        ├── MilvusUnavailable   Milvus could not be reached or timed out
        │   ├── MilvusTimedOut        a call got no answer within its deadline
        │   └── MilvusConnectionLost  the connection broke during a call (reset, closed)
        ├── SourceUnavailable   object storage could not be reached, timed out or throttled
        ├── BuildIncomplete     the candidate holds fewer rows than were written; rebuilt
        ├── WaitTimedOut        an index build or a load did not finish in its time limit
        ├── NotSettled          a step did not take effect, or a pass did not settle
        ├── FlipFenced          a flip refused: this controller may not act now
        │   └── AliasMoved      a flip refused: the alias moved since the decision
        ├── KubeUnavailable     the Kubernetes API could not be reached, or answered 5xx/429
        ├── KubeConflict        409: the object changed since it was read; re-read, then retry
        └── KubeGone            410: a watch's resourceVersion expired; list again

Each class carries the status ``reason`` it is reported under, so the engine and both
drivers name a failure the same way (``reason_of``). Gateways (``controller.milvus``,
``controller.kube``) translate their library's exceptions into these at the boundary,
keeping the original as ``__cause__``; the engine never matches message text.
"""

from __future__ import annotations

from typing import ClassVar

from controller.status import Reason


class EmbrelError(Exception):
    """Base class: the message is written for the person running embrel."""

    reason: ClassVar[Reason] = Reason.FAILED


def reason_of(exc: BaseException) -> Reason:
    """The status reason an error is reported under."""
    return exc.reason if isinstance(exc, EmbrelError) else Reason.FAILED


class PermanentError(EmbrelError):
    """Retrying with the same input cannot succeed."""


class UsageError(PermanentError):
    """The command line asks for something that cannot be done (not a spec problem)."""


class SpecError(PermanentError):
    """The release spec is invalid; ``problems`` lists ``(field path, message)`` pairs."""

    reason = Reason.INVALID_SPEC
    what = "release spec"

    def __init__(self, source: str, problems: list[tuple[str, str]]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  {path}: {msg}" if path else f"  {msg}" for path, msg in problems)
        super().__init__(f"invalid {self.what} {source}:\n{lines}")


class ConfigError(SpecError):
    """The controller's config file (``--config``) is invalid or unreadable."""

    what = "controller config"


class SourceError(PermanentError):
    """A source file is missing, unreadable, or holds data that breaks the spec."""

    reason = Reason.INVALID_SOURCE


class ConflictError(PermanentError):
    """The request contradicts state already recorded in Milvus."""

    reason = Reason.VERSION_CONFLICT


class MilvusRejected(PermanentError):
    """Milvus refused a call for a reason that a retry will not fix."""

    reason = Reason.MILVUS_REJECTED


class WebhookFailed(PermanentError):
    """A webhook gate (``spec.promotion.webhooks``) did not pass: the release stops."""

    reason = Reason.WEBHOOK_FAILED


class TemporaryError(EmbrelError):
    """Worth retrying after ``delay`` seconds."""

    reason = Reason.RETRYING

    def __init__(self, message: str, delay: float = 5.0) -> None:
        super().__init__(message)
        self.delay = delay


class MilvusUnavailable(TemporaryError):
    """Milvus could not be reached, or a call timed out."""

    reason = Reason.MILVUS_UNAVAILABLE


class MilvusTimedOut(MilvusUnavailable):
    """A Milvus call got no answer within its deadline (``milvus.callTimeoutSeconds``)."""


class MilvusConnectionLost(MilvusUnavailable):
    """The connection to Milvus broke during a call: whether the call took effect is
    unknown, so only calls that are safe to repeat are retried as they were."""


class SourceUnavailable(TemporaryError):
    """Object storage could not be reached, timed out or was throttled: read again later."""


class BuildIncomplete(TemporaryError):
    """The candidate holds a different row count than was written; it will be rebuilt."""

    reason = Reason.BUILD_INCOMPLETE


class WaitTimedOut(TemporaryError):
    """An index build or a load did not finish within its time limit."""

    reason = Reason.WAIT_TIMED_OUT


class NotSettled(TemporaryError):
    """A step did not take effect, or a pass ran out of steps; the next pass retries."""

    reason = Reason.NOT_SETTLED


class FlipFenced(TemporaryError):
    """A flip refused right before ``alter_alias``: this controller is not (surely) the
    leader. Nothing was changed; the next pass observes and decides again."""

    reason = Reason.FLIP_FENCED

    def __init__(self, message: str, delay: float = 1.0) -> None:
        super().__init__(message, delay)


class AliasMoved(FlipFenced):
    """A flip refused because the alias no longer points where the decision saw it
    (another writer moved it): the compare in the flip's compare-and-set failed."""

    reason = Reason.ALIAS_MOVED


class NotFound(MilvusRejected):
    """The named collection or alias does not exist."""


class KubeRejected(PermanentError):
    """The Kubernetes API refused a request for a reason a retry will not fix."""

    reason = Reason.KUBE_REJECTED


class KubeNotFound(KubeRejected):
    """The Kubernetes object (or its resource type) does not exist."""


class KubeUnavailable(TemporaryError):
    """The Kubernetes API could not be reached, timed out, or answered 5xx/429."""

    reason = Reason.KUBE_UNAVAILABLE


class KubeConflict(TemporaryError):
    """409: the object changed since it was read (optimistic concurrency); re-read and retry."""

    def __init__(self, message: str, delay: float = 0.2) -> None:
        super().__init__(message, delay)


class KubeGone(TemporaryError):
    """410: the resourceVersion a watch resumed from has expired; list again."""

    def __init__(self, message: str, delay: float = 0.0) -> None:
        super().__init__(message, delay)
