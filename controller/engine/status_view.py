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
    P_CREATED_AT,
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


def observed_live(
    release: EmbeddingRelease, obs: Observation, status: ReleaseStatus
) -> ReleaseStatus:
    """``status`` with live and candidate as ``obs`` sees them: what the alias serves."""
    cand = obs.collections.get(release.collection_name())
    return replace(
        status,
        live=describe(obs.live, obs.alias_target),
        candidate=describe(cand, release.collection_name())
        if cand and cand.name != obs.alias_target
        else None,
    )


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
    checks = c.checks() + (c.post_promotion_checks() or [])  # webhooks' checks too
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
    """One entry per version, with its latest outcome, in the order things happened.

    A version that went live is placed by when it last went live; a failed or aborted
    attempt by when its collection was created. Versions retention has dropped come
    from the previous status, where they keep their place.
    """
    # collection -> (when, new in this pass, entry). Stamps have one-second steps: within
    # a second, a live period or an attempt first seen now comes after those recorded.
    latest: dict[str, tuple[str, bool, HistoryEntry]] = {}
    recorded = {h.collection: h.promoted_at for h in before}
    when = ""
    for h in before:  # dropped attempts keep the place they had
        c = obs.collections.get(h.collection)
        when = _when(h, c) or when
        latest[h.collection] = (when, False, _settle(h, obs))
    for c in obs.owned(release.track):
        entry = _entry(c, obs)
        if entry is None:
            latest.pop(c.name, None)  # judged again since (a new validation pending)
        else:
            new = c.name not in recorded or recorded[c.name] != entry.promoted_at
            latest[c.name] = (_when(entry, c) or when, new, entry)
    ordered = sorted(latest.values(), key=lambda item: item[:2])  # stable: ties keep order
    entries = [entry for _, _, entry in ordered]
    return bounded_history(entries, release.spec.history_limit, obs.alias_target)


def bounded_history(
    entries: list[HistoryEntry], limit: int, live: str | None
) -> list[HistoryEntry]:
    """The newest ``limit`` entries (spec.historyLimit), oldest dropped first; the entry
    of what is live stays, in its place, even when it is older than the rest."""
    if len(entries) <= limit:
        return entries
    serving = [i for i, h in enumerate(entries) if h.collection == live and h.outcome == "Live"]
    keep = set(range(len(entries) - limit, len(entries)))
    if serving and serving[-1] not in keep:
        keep = {serving[-1], *range(len(entries) - limit + 1, len(entries))}
    return [h for i, h in enumerate(entries) if i in keep]


def _entry(c: CollectionState, obs: Observation) -> HistoryEntry | None:
    """The latest outcome of one collection of the track, None while it has none."""
    if c.get(P_ABORTED_AT):
        return HistoryEntry(c.version, c.name, "Aborted")
    if c.was_live:
        live = HistoryEntry(c.version, c.name, "Live", c.get(P_PROMOTED_AT))
        return _settle(live, obs)
    if c.get(P_VALIDATION) == FAILED:
        return HistoryEntry(c.version, c.name, "Failed")
    return None


def _when(h: HistoryEntry, c: CollectionState | None) -> str:
    """When an entry happened: its live period's start, else its collection's creation."""
    if h.promoted_at:
        return h.promoted_at
    return c.get(P_CREATED_AT) if c is not None else ""


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
