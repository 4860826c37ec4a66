"""Phases, conditions and reasons: the status of a release, computed in one place.

Conditions follow the Kubernetes API conventions so that kstatus (Flux) and Argo CD
can read them: ``Ready``, ``Reconciling`` and ``Stalled``, each with a CamelCase
reason, a message, ``observedGeneration`` and a ``lastTransitionTime`` that only
moves when the condition's status changes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from typing import Any


class Phase(StrEnum):
    PENDING = "Pending"
    BUILDING = "Building"
    INDEXING = "Indexing"
    VALIDATING = "Validating"
    AWAITING_PROMOTION = "AwaitingPromotion"
    PROMOTING = "Promoting"
    LIVE = "Live"
    FAILED = "Failed"
    ROLLED_BACK = "RolledBack"
    # The alias was switched but readers could not be shown to see the new target.
    DEGRADED = "Degraded"
    # spec.suspend: the controller changes nothing on its own until it is resumed.
    SUSPENDED = "Suspended"


class Reason(StrEnum):
    """Every reason embrel writes into a condition or event."""

    LIVE = "Live"
    BUILDING = "Building"
    INDEXING = "Indexing"
    LOADING = "Loading"
    VALIDATING = "Validating"
    AWAITING_PROMOTION = "AwaitingPromotion"
    PROMOTING = "Promoting"
    PROMOTED = "Promoted"
    ROLLED_BACK = "RolledBack"
    VALIDATION_FAILED = "ValidationFailed"
    VALIDATED = "Validated"
    INCONCLUSIVE = "Inconclusive"
    ABORTED = "Aborted"
    INVALID_SOURCE = "InvalidSource"
    VERSION_CONFLICT = "VersionConflict"
    ALIAS_CONFLICT = "AliasConflict"
    NO_ROLLBACK_TARGET = "NoRollbackTarget"
    MILVUS_UNAVAILABLE = "MilvusUnavailable"
    MILVUS_REJECTED = "MilvusRejected"
    FAILED = "Failed"  # a permanent error of no more specific kind
    RETRYING = "Retrying"  # a temporary error of no more specific kind
    BUILD_INCOMPLETE = "BuildIncomplete"
    WAIT_TIMED_OUT = "WaitTimedOut"
    NOT_SETTLED = "NotSettled"
    RETENTION = "Retention"
    DRAINING = "Draining"
    FLIP_UNVERIFIED = "FlipUnverified"
    LOST_FLIP_HEALED = "LostFlipHealed"
    MONITORING = "Monitoring"
    DRIFT_DETECTED = "DriftDetected"
    AUTO_ROLLED_BACK = "AutoRolledBack"
    SUSPENDED = "Suspended"
    WEBHOOK_FAILED = "WebhookFailed"  # a webhook gate said no (spec.promotion.webhooks)
    # A flip refused at the last moment; the next pass observes and decides again.
    FLIP_FENCED = "FlipFenced"  # this controller may not act (not the leader, lease stale)
    ALIAS_MOVED = "AliasMoved"  # the alias no longer points where the decision saw it
    # The Kubernetes driver.
    INVALID_SPEC = "InvalidSpec"
    SECRET_UNAVAILABLE = "SecretUnavailable"
    KUBE_UNAVAILABLE = "KubeUnavailable"
    KUBE_REJECTED = "KubeRejected"
    DELETING = "Deleting"


# Phases in which the controller is still working towards the spec.
IN_PROGRESS = {
    Phase.PENDING,
    Phase.BUILDING,
    Phase.INDEXING,
    Phase.VALIDATING,
    Phase.PROMOTING,
}
# Phases that wait for a person (promote, abort, a new spec).
NEEDS_HUMAN = {Phase.FAILED, Phase.ROLLED_BACK, Phase.DEGRADED}


@dataclass(frozen=True)
class Condition:
    type: str
    status: str  # "True" | "False" | "Unknown"
    reason: str
    message: str
    observed_generation: int
    last_transition_time: str


@dataclass(frozen=True)
class HistoryEntry:
    version: str
    collection: str
    outcome: str  # Live | Retired | RolledBack | Failed | Aborted | Dropped
    promoted_at: str | None = None
    retired_at: str | None = None


@dataclass
class ReleaseStatus:
    phase: Phase = Phase.PENDING
    message: str = ""
    observed_generation: int = 0
    spec_hash: str = ""
    conditions: list[Condition] = field(default_factory=list)
    live: dict[str, Any] | None = None
    candidate: dict[str, Any] | None = None
    validation: dict[str, Any] | None = None
    history: list[HistoryEntry] = field(default_factory=list)
    # How the candidate was built: rows copied/upserted/deleted, documents embedded,
    # embedding cache hits.
    build: dict[str, Any] | None = None
    # The last cutover: verified or not, attempts, time until readers saw it.
    cutover: dict[str, Any] | None = None
    # The live collection against its reference taken at promotion.
    drift: dict[str, Any] | None = None
    # When Milvus stopped answering, while it does not (kept across passes).
    unavailable_since: str | None = None

    def condition(self, type_: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == type_), None)

    def to_dict(self) -> dict[str, Any]:
        """camelCase, as it appears in a CR's status or `embrel status -o json`."""
        out: dict[str, Any] = _camel(asdict(self))
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ReleaseStatus:
        d = _snake(data)
        return cls(
            phase=Phase(d.get("phase", Phase.PENDING)),
            message=d.get("message", ""),
            observed_generation=d.get("observed_generation", 0),
            spec_hash=d.get("spec_hash", ""),
            conditions=[Condition(**c) for c in d.get("conditions", [])],
            live=d.get("live"),
            candidate=d.get("candidate"),
            validation=d.get("validation"),
            history=[HistoryEntry(**h) for h in d.get("history", [])],
            build=d.get("build"),
            cutover=d.get("cutover"),
            drift=d.get("drift"),
            unavailable_since=d.get("unavailable_since"),
        )


def conditions_for(
    phase: Phase,
    reason: str,
    message: str,
    generation: int,
    now: str,
    previous: list[Condition],
) -> list[Condition]:
    """Ready / Reconciling / Stalled for a phase, keeping unchanged transition times."""
    ready = phase == Phase.LIVE
    wanted = [
        ("Ready", ready),
        ("Reconciling", phase in IN_PROGRESS),
        ("Stalled", phase in NEEDS_HUMAN),
    ]
    by_type = {c.type: c for c in previous}
    out = []
    for type_, truth in wanted:
        status = "True" if truth else "False"
        old = by_type.get(type_)
        since = old.last_transition_time if old and old.status == status else now
        out.append(Condition(type_, status, reason, message, generation, since))
    return out


def with_phase(
    status: ReleaseStatus, phase: Phase, reason: str, message: str, now: str
) -> ReleaseStatus:
    """A copy of ``status`` in ``phase``, with conditions recomputed."""
    conds = conditions_for(
        phase, reason, message, status.observed_generation, now, status.conditions
    )
    return replace(status, phase=phase, message=message, conditions=conds)


def temporarily_failed(
    status: ReleaseStatus, reason: str, message: str, now: str, unavailable_since: str | None
) -> ReleaseStatus:
    """A pass stopped by an error worth retrying: the phase stays. While Milvus does not
    answer, the message says since when (``unavailable_since``, from the previous status,
    so that it survives every failed pass until one gets through)."""
    if reason != Reason.MILVUS_UNAVAILABLE:
        status = with_phase(status, status.phase, reason, message, now)
        return replace(status, unavailable_since=None)
    since = unavailable_since or now
    status = with_phase(
        status, status.phase, reason, f"waiting for Milvus since {since}: {message}", now
    )
    return replace(status, unavailable_since=since)


def _camel(value: Any) -> Any:
    if isinstance(value, dict):
        return {_to_camel(k): _camel(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_camel(v) for v in value]
    return value


def _snake(value: Any) -> Any:
    if isinstance(value, dict):
        return {_to_snake(k): _snake(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_snake(v) for v in value]
    return value


def _to_camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.title() for p in rest)


def _to_snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name)
