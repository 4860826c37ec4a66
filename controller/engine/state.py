"""What the engine observes: collections of a track, their properties, the alias.

This module is the one owner of the property names embrel records on each
collection (Milvus Lite drops descriptions, so everything lives in properties).
Whatever must survive a crash is one of these keys: a controller killed at any
instant resumes from Milvus alone.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from controller.validation.results import Check, format_number

OWNER_VALUE = "embrel"
MMAP_PROPERTY = "mmap.enabled"  # Milvus' own collection property (2.4 and later)
P_OWNER = "embrel.owner"
P_TRACK = "embrel.track"
P_ALIAS = "embrel.alias"
P_VERSION = "embrel.version"
P_BUILD_HASH = "embrel.buildHash"
P_SPEC_HASH = "embrel.specHash"
P_MODEL = "embrel.model"
P_CREATED_AT = "embrel.createdAt"
P_SOURCE_ROWS = "embrel.sourceRows"  # set only once every row is in and flushed
P_VALIDATION = "embrel.validation"  # "passed" | "failed" | "inconclusive" | "accepted"
P_CHECKS = "embrel.checks"  # JSON list of Check
P_VALIDATED_HASH = "embrel.validatedHash"  # spec.validation the checks were run against
P_REPORT = "embrel.report"  # where the validation report was written
P_ACCEPTED_AT = "embrel.acceptedAt"  # a person promoted an Inconclusive validation
P_PROMOTED_AT = "embrel.promotedAt"
P_RETIRED_AT = "embrel.retiredAt"
P_ROLLED_BACK_AT = "embrel.rolledBackAt"
P_ABORTED_AT = "embrel.abortedAt"
P_ROLLBACK_REASON = "embrel.rollbackReason"  # why the post-promotion guard rolled back
# Proven cutover.
P_FINGERPRINT = "embrel.fingerprint"  # probes telling this collection from the one it replaces
P_CUTOVER = "embrel.cutover"  # JSON: how the last flip to this collection was proven
P_FLIP_UNVERIFIED = "embrel.flipUnverified"  # when a flip to it could not be proven
# Drift monitoring.
P_REFERENCE_AT = "embrel.referenceAt"  # when the drift reference was captured
P_DRIFT = "embrel.drift"  # JSON: last drift values and breaches
P_DRIFT_AT = "embrel.driftAt"
# Incremental builds.
P_BASE = "embrel.base"  # the collection a delta or documents build started from
P_BUILD = "embrel.build"  # JSON: status.build, the counts of how it was built
# Adoption: the foreign collection (spec.adopt) this one replaced behind the alias. The
# mark lives here, never on the adopted collection: embrel does not write to what it
# did not create.
P_ADOPTED = "embrel.adopted"
# Model changes: how queries are embedded for a collection, and what comes next.
P_ENCODER = "embrel.encoder"  # descriptor JSON of the encoder (controller.embedding.descriptor)
# The vector field queries search (spec.collection.searchField); absent means "vector",
# so collections of releases that never set it read as they always did.
P_SEARCH_FIELD = "embrel.searchField"
# On the live collection while a candidate is validated, until the flip (or abort):
# JSON {"version", "collection", "encoder": descriptor or null}, so clients can preload it.
P_NEXT = "embrel.next"
# Webhooks: the postPromotion webhooks' checks for a live period, JSON
# {"at": its promotedAt, "checks": [Check]}; the prePromotion ones are in embrel.checks.
P_POST_PROMOTION = "embrel.postPromotion"
# Properties cannot be deleted portably (2.3.5), so "unset" is the empty string.
UNSET = ""
PASSED, FAILED, INCONCLUSIVE, ACCEPTED = "passed", "failed", "inconclusive", "accepted"
PROMOTABLE = (PASSED, ACCEPTED)  # invariant 1: validated, or a person's explicit call

REVERIFY_SECONDS = 30.0  # between probes of a Degraded (unproven) flip


@dataclass(frozen=True)
class CollectionState:
    name: str
    props: dict[str, str]
    loaded: bool
    index: tuple[int, int] | None
    aliases: tuple[str, ...] = ()

    def get(self, key: str) -> str:
        return self.props.get(key, UNSET)

    @property
    def version(self) -> str:
        return self.get(P_VERSION)

    @property
    def complete(self) -> bool:
        return self.get(P_SOURCE_ROWS) != UNSET

    @property
    def indexed(self) -> bool:
        return self.index is not None and self.index[0] >= self.index[1]

    @property
    def was_live(self) -> bool:
        return self.get(P_PROMOTED_AT) != UNSET

    @property
    def owned_by_embrel(self) -> bool:
        return self.get(P_OWNER) == OWNER_VALUE

    def checks(self) -> list[Check]:
        """The validation checks recorded on this collection (none before validation)."""
        raw = self.get(P_CHECKS)
        return [Check.from_dict(d) for d in json.loads(raw)] if raw else []

    def post_promotion_checks(self) -> list[Check] | None:
        """The postPromotion webhooks' checks of the current live period; None until
        they ran in it (each live period calls them once)."""
        raw = self.get(P_POST_PROMOTION)
        record = json.loads(raw) if raw else {}
        if not isinstance(record, dict) or record.get("at") != self.get(P_PROMOTED_AT):
            return None
        return [Check.from_dict(d) for d in record.get("checks", [])]


@dataclass(frozen=True)
class Observation:
    """One snapshot of Milvus as it concerns a track."""

    alias_target: str | None
    # Collections owned by this track, plus the alias target whoever owns it.
    collections: dict[str, CollectionState]
    now: float = field(default_factory=time.time)  # epoch seconds of the snapshot
    steps_done: frozenset[str] = frozenset()  # steps already run in this pass
    can_monitor: bool = True  # a drift reference store is configured
    reverify_after: float = REVERIFY_SECONDS  # seconds between probes of an unproven flip
    # Steps after a proven flip that failed in this pass, by (step name, target): their
    # error text. They are reported as warnings and not tried again in the pass.
    failed_steps: Mapping[tuple[str, str], str] = field(default_factory=dict)
    alias_is_collection: bool = False  # a collection already bears the alias's name

    def owned(self, track: str) -> list[CollectionState]:
        return [
            c for c in self.collections.values() if c.owned_by_embrel and c.get(P_TRACK) == track
        ]

    @property
    def live(self) -> CollectionState | None:
        """The collection the alias points to, when there is one."""
        return self.collections.get(self.alias_target or "")


def utc_now() -> str:
    """A timestamp as embrel records it in properties and status."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def epoch(stamp: str) -> float | None:
    """Seconds since the epoch of a ``utc_now()`` stamp; None when unset."""
    try:
        return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
    except ValueError:  # unset, or edited by hand: treat as unknown
        return None


def summarise(c: Check) -> str:
    """One check as it reads in an event or a status message."""
    value = "—" if c.value is None else format_number(c.value)
    if c.threshold is None or c.value is None:
        return f"{c.name}={value} ({c.outcome})"
    return f"{c.name}={value} ({c.comparison} {format_number(c.threshold)}: {c.outcome})"
