"""Status from the snapshot and the decided step, computed in one place."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from controller.engine.decide import unproven
from controller.engine.state import (
    FAILED,
    P_ABORTED_AT,
    P_BUILD,
    P_CUTOVER,
    P_DRIFT,
    P_DRIFT_AT,
    P_MODEL,
    P_PROMOTED_AT,
    P_REFERENCE_AT,
    P_REPORT,
    P_RETIRED_AT,
    P_ROLLED_BACK_AT,
    P_SOURCE_ROWS,
    P_VALIDATION,
    PROMOTABLE,
    UNSET,
    CollectionState,
    Observation,
)
from controller.engine.step import Step
from controller.spec import EmbeddingRelease
from controller.status import HistoryEntry, ReleaseStatus, with_phase


def status_of(
    release: EmbeddingRelease, obs: Observation, step: Step, previous: ReleaseStatus, now: str
) -> ReleaseStatus:
    """The release's status after deciding ``step`` on ``obs``."""
    live = obs.live
    cand = obs.collections.get(release.collection_name())
    status = replace(
        previous,
        live=describe(live, obs.alias_target),
        candidate=describe(cand, release.collection_name())
        if cand and cand.name != obs.alias_target
        else None,
        validation=validation(cand),
        history=history(release, obs, previous.history),
        cutover=json_prop(unproven(release, obs) or live, P_CUTOVER),
        drift=drift(live),
        build=json_prop(cand, P_BUILD),
    )
    return with_phase(status, step.phase, step.reason, step.message, now)


def describe(c: CollectionState | None, name: str | None) -> dict[str, Any] | None:
    if name is None:
        return None
    if c is None:
        return {"collection": name}
    out: dict[str, Any] = {
        "version": c.version or None,
        "collection": c.name,
        "model": c.get(P_MODEL) or None,
    }
    if c.complete:
        out["rows"] = int(c.get(P_SOURCE_ROWS))
    if c.index is not None:
        out["indexed_rows"], out["total_rows"] = c.index
    return out


def json_prop(c: CollectionState | None, key: str) -> dict[str, Any] | None:
    raw = c.get(key) if c else UNSET
    return dict(json.loads(raw)) if raw else None


def drift(live: CollectionState | None) -> dict[str, Any] | None:
    measured = json_prop(live, P_DRIFT)
    if live is None or live.get(P_REFERENCE_AT) == UNSET:
        return measured
    return (measured or {}) | {
        "referenceAt": live.get(P_REFERENCE_AT),
        "measuredAt": live.get(P_DRIFT_AT) or None,
    }


def validation(c: CollectionState | None) -> dict[str, Any] | None:
    if c is None or c.get(P_VALIDATION) == UNSET:
        return None
    checks = c.checks()
    recall = next((x.value for x in checks if x.name.startswith("recall@")), None)
    if recall is None:
        recall = next((x.value for x in checks if x.name == "minAnnRecall"), None)
    return {
        "outcome": c.get(P_VALIDATION),
        "passed": c.get(P_VALIDATION) in PROMOTABLE,
        # Golden-set recall (else ANN recall): `kubectl get er` shows it as RECALL.
        "recall": recall,
        "checks": [check.to_dict() for check in checks],
        "report": c.get(P_REPORT) or None,
    }


def history(
    release: EmbeddingRelease, obs: Observation, before: list[HistoryEntry]
) -> list[HistoryEntry]:
    """One entry per time a version went live (plus failed and aborted attempts).

    Milvus keeps only the latest promotedAt/retiredAt per collection, so earlier live
    periods, and versions retention has dropped, come from the previous status.
    """
    entries = {(h.collection, h.promoted_at): h for h in before}
    for c in obs.owned(release.track):
        if c.get(P_ABORTED_AT) or c.get(P_VALIDATION) == FAILED:
            outcome = "Aborted" if c.get(P_ABORTED_AT) else "Failed"
            entries[(c.name, None)] = HistoryEntry(c.version, c.name, outcome)
        elif c.was_live:
            key = (c.name, c.get(P_PROMOTED_AT))
            entries.setdefault(key, HistoryEntry(c.version, c.name, "Live", key[1]))
    return sorted(
        (_settle(h, obs) for h in entries.values()),
        key=lambda h: (h.promoted_at or "~", h.collection),
    )


def _settle(h: HistoryEntry, obs: Observation) -> HistoryEntry:
    """Bring a live period's end and outcome up to date with the snapshot."""
    if h.promoted_at is None or h.outcome not in ("Live",):
        return h
    c = obs.collections.get(h.collection)
    if c is None:
        return replace(h, outcome="Dropped")
    if c.name == obs.alias_target and c.get(P_PROMOTED_AT) == h.promoted_at:
        return h
    retired = c.get(P_RETIRED_AT)
    if retired < h.promoted_at:
        return h  # retirement not recorded yet
    outcome = "RolledBack" if c.get(P_ROLLED_BACK_AT) == retired else "Retired"
    return replace(h, retired_at=retired, outcome=outcome)
