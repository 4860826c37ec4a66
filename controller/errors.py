"""Errors raised by embrel, typed by what a retry means.

    EmbrelError                 base of everything we raise on purpose
    ├── PermanentError          retrying the same input cannot help; the user must act
    │   ├── SpecError           the release spec is invalid (carries field paths)
    │   ├── SourceError         a source file is missing, unreadable or holds bad vectors
    │   ├── ConflictError       the request contradicts what Milvus holds (e.g. reused version)
    │   ├── MilvusRejected      Milvus refused a call for a reason a retry will not fix
    │   │   └── NotFound        the named collection or alias does not exist
    │   └── KubeRejected        the Kubernetes API refused a request (403, 404, 422, ...)
    │       └── KubeNotFound    the object or resource does not exist
    └── TemporaryError          worth retrying after ``delay`` seconds
        ├── MilvusUnavailable   Milvus could not be reached or timed out
        ├── KubeUnavailable     the Kubernetes API could not be reached, or answered 5xx/429
        ├── KubeConflict        409: the object changed since it was read; re-read, then retry
        └── KubeGone            410: a watch's resourceVersion expired; list again

Gateways (``controller.milvus``, ``controller.kube``) translate their library's exceptions
into these at the boundary, keeping the original as ``__cause__``; the engine never
matches message text.
"""

from __future__ import annotations


class EmbrelError(Exception):
    """Base class: the message is written for the person running embrel."""


class PermanentError(EmbrelError):
    """Retrying with the same input cannot succeed."""


class SpecError(PermanentError):
    """The release spec is invalid; ``problems`` lists ``(field path, message)`` pairs."""

    def __init__(self, source: str, problems: list[tuple[str, str]]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  {path}: {msg}" if path else f"  {msg}" for path, msg in problems)
        super().__init__(f"invalid release spec {source}:\n{lines}")


class SourceError(PermanentError):
    """A source file is missing, unreadable, or holds data that breaks the spec."""


class ConflictError(PermanentError):
    """The request contradicts state already recorded in Milvus."""


class MilvusRejected(PermanentError):
    """Milvus refused a call for a reason that a retry will not fix."""


class TemporaryError(EmbrelError):
    """Worth retrying after ``delay`` seconds."""

    def __init__(self, message: str, delay: float = 5.0) -> None:
        super().__init__(message)
        self.delay = delay


class MilvusUnavailable(TemporaryError):
    """Milvus could not be reached, or a call timed out."""


class NotFound(MilvusRejected):
    """The named collection or alias does not exist."""


class KubeRejected(PermanentError):
    """The Kubernetes API refused a request for a reason a retry will not fix."""


class KubeNotFound(KubeRejected):
    """The Kubernetes object (or its resource type) does not exist."""


class KubeUnavailable(TemporaryError):
    """The Kubernetes API could not be reached, timed out, or answered 5xx/429."""


class KubeConflict(TemporaryError):
    """409: the object changed since it was read (optimistic concurrency); re-read and retry."""

    def __init__(self, message: str, delay: float = 0.2) -> None:
        super().__init__(message, delay)


class KubeGone(TemporaryError):
    """410: the resourceVersion a watch resumed from has expired; list again."""

    def __init__(self, message: str, delay: float = 0.0) -> None:
        super().__init__(message, delay)
