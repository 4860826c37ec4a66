"""Pure queries over a snapshot: what retention keeps, where a rollback or a delta goes."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import replace

from controller.engine.state import (
    P_ADOPTED,
    P_BASE,
    P_BUILD_HASH,
    P_CUTOVER,
    P_FLIP_UNVERIFIED,
    P_PROMOTED_AT,
    P_RETIRED_AT,
    P_SPEC_HASH,
    P_TRACK,
    P_VALIDATION,
    PROMOTABLE,
    UNSET,
    CollectionState,
    Observation,
    epoch,
)
from controller.engine.step import RetainVerb
from controller.errors import SourceError
from controller.spec import EmbeddingRelease


def rollback_targets(release: EmbeddingRelease, obs: Observation) -> list[CollectionState]:
    """Retained collections that were live before, most recently retired first: this
    track's own, and a collection it adopted (``spec.adopt``)."""
    return sorted(
        [*kept_previous(release, obs), *adopted(release, obs)],
        key=lambda c: c.get(P_RETIRED_AT),
        reverse=True,
    )


def kept_previous(release: EmbeddingRelease, obs: Observation) -> list[CollectionState]:
    """This track's own formerly-live, validated collections (what retention keeps)."""
    kept = [
        c
        for c in obs.owned(release.track)
        if c.was_live and c.name != obs.alias_target and c.get(P_VALIDATION) in PROMOTABLE
    ]
    return sorted(kept, key=lambda c: c.get(P_RETIRED_AT), reverse=True)


def adopted_names(release: EmbeddingRelease, states: Iterable[CollectionState]) -> set[str]:
    """Collections this track adopted: ``spec.adopt``, and those its collections record
    having replaced (the spec may have dropped ``adopt`` since)."""
    names = {c.get(P_ADOPTED) for c in states if c.get(P_TRACK) == release.track}
    return (names | {release.spec.adopt or UNSET}) - {UNSET}


def adopted(release: EmbeddingRelease, obs: Observation) -> list[CollectionState]:
    """Adopted collections that could serve again (not live, not ours), as rollback
    targets. They carry no embrel marks (embrel never writes to them): their
    ``retiredAt`` here is when the alias last left them, from the cutover records."""
    found = []
    for name in sorted(adopted_names(release, obs.collections.values())):
        c = obs.collections.get(name)
        if c is None or c.owned_by_embrel or name == obs.alias_target:
            continue
        left = [_cutover(o) for o in obs.owned(release.track)]
        at = max((str(d.get("at", "")) for d in left if d.get("from") == name), default=UNSET)
        found.append(replace(c, props=c.props | {P_RETIRED_AT: at}))
    return found


def _cutover(c: CollectionState) -> dict[str, object]:
    try:
        record = json.loads(c.get(P_CUTOVER) or "{}")
    except ValueError:  # edited by hand: no cutover known
        return {}
    return record if isinstance(record, dict) else {}


def retention_plan(
    release: EmbeddingRelease, obs: Observation, live: str
) -> list[tuple[str, RetainVerb]]:
    """(collection, "release" | "drop" | "load") actions that retention still needs.

    Keeps ``keepPrevious`` formerly-live collections (``keepLoaded`` of them loaded),
    drops other owned collections that are neither live nor desired, and never
    touches a collection an alias points to or one embrel does not own (invariant 3).
    """
    keep = release.spec.retention
    desired = release.collection_name()
    actions: list[tuple[str, RetainVerb]] = []
    previous = kept_previous(release, obs)  # never an adopted collection: not ours
    for rank, c in enumerate(previous):
        if rank < keep.keep_loaded and not c.loaded:
            actions.append((c.name, "load"))
        elif keep.keep_loaded <= rank < keep.keep_previous and c.loaded:
            actions.append((c.name, "release"))
        elif rank >= keep.keep_previous:
            actions.append((c.name, "drop"))
    kept = {c.name for c in previous}
    for c in obs.owned(release.track):
        if c.name not in kept and c.name not in (live, desired):
            actions.append((c.name, "drop"))
    return [(n, v) for n, v in actions if not (v == "drop" and obs.collections[n].aliases)]


def drain_left(release: EmbeddingRelease, obs: Observation, name: str) -> float:
    """Seconds until a retired collection may be released or dropped (drainSeconds)."""
    retired = epoch(obs.collections[name].get(P_RETIRED_AT))
    if retired is None:
        return 0.0
    return max(0.0, retired + release.spec.promotion.drain_seconds - obs.now)


def interrupted(release: EmbeddingRelease, obs: Observation) -> CollectionState | None:
    """Where the alias points, when that is a collection of this track whose current live
    period was never recorded: its flip took effect, but Milvus went away (or the
    controller stopped) before the proof and the marks that follow it."""
    live = obs.live
    if live is None or not live.owned_by_embrel or live.get(P_TRACK) != release.track:
        return None
    return None if _live_period_open(live) else live


def serving_before(release: EmbeddingRelease, obs: Observation, target: str) -> str | None:
    """The collection of this track whose live period is open, other than ``target``:
    where the alias pointed before an interrupted flip to ``target``."""
    periods = [
        (c.get(P_PROMOTED_AT), c.name)
        for c in obs.owned(release.track)
        if c.name != target and _live_period_open(c)
    ]
    return max(periods)[1] if periods else None


def _live_period_open(c: CollectionState) -> bool:
    """Promoted, and not retired since (a rollback target was retired before)."""
    if c.get(P_PROMOTED_AT) == UNSET:
        return False
    promoted, retired = epoch(c.get(P_PROMOTED_AT)), epoch(c.get(P_RETIRED_AT))
    return promoted is None or retired is None or promoted >= retired


def unproven(release: EmbeddingRelease, obs: Observation) -> CollectionState | None:
    """The collection of a flip that probes could not confirm, if there is one."""
    return next((c for c in obs.owned(release.track) if c.get(P_FLIP_UNVERIFIED) != UNSET), None)


# -- incremental builds (controller.incremental) ---------------------------------


def delta_base(release: EmbeddingRelease, obs: Observation) -> CollectionState:
    """The collection a delta applies to: where the alias points now, or a kept version."""
    delta = release.spec.source.delta
    assert delta is not None
    if delta.base == "live":
        live = obs.live
        if live is None or live.name == release.collection_name():
            raise SourceError(
                f"source.delta.base is live, but alias {release.spec.alias} points to no "
                "collection yet; the first release needs source.files or source.documents"
            )
        return live
    found = [c for c in obs.owned(release.track) if c.version == delta.base and c.complete]
    if not found:
        kept = sorted(c.version for c in obs.owned(release.track) if c.complete)
        raise SourceError(
            f"source.delta.base: version {delta.base!r} of track {release.track} is not in "
            f"Milvus (versions kept: {', '.join(kept) or 'none'}); name a kept version or live"
        )
    return found[0]


def base_identity(base: CollectionState) -> str:
    """What a delta's build hash records of its base: its name and its content's hash."""
    return f"{base.name}#{base.get(P_BUILD_HASH)}"


def build_conflict(release: EmbeddingRelease, obs: Observation, cand: CollectionState) -> str:
    """Why this version's complete collection is not what the spec builds ("" when it is).

    A delta's identity includes its base (``P_BASE``). Until the candidate has served,
    the base the spec names now must still be the one it was built on; once it has
    served, the recorded base is part of what it is (a revert flips, invariant 5).
    """
    spec = release.spec
    built_on = cand.get(P_BASE)
    delta = spec.source.delta
    if not same_content(release, obs, cand, built_on if delta is not None else ""):
        return (
            f"version {spec.version} was already built as {cand.name} from a different "
            "model, collection or source; give the new content a new spec.version"
        )
    if delta is None or cand.was_live or cand.name == obs.alias_target:
        return ""
    try:
        now = base_identity(delta_base(release, obs))
    except SourceError:
        return ""  # the base is gone: the candidate stands on what it was built from
    if now == built_on:
        return ""
    return (
        f"version {spec.version} was built as {cand.name} on {built_on.split('#')[0]}, but "
        f"source.delta.base ({delta.base}) is now {now.split('#')[0]}; give a delta on "
        "another base a new spec.version"
    )


def same_content(
    release: EmbeddingRelease, obs: Observation, cand: CollectionState, base: str
) -> bool:
    """Whether ``cand`` holds what the spec builds (``EmbeddingRelease.build_hash``).

    The build hash identifies the source by its files' content, wherever the spec
    names them from. A collection built before that records the hash of the URIs'
    text, still recognised. When the files cannot be read, the content cannot be
    compared: a collection that served, or one built from this very spec, stands.
    """
    recorded = cand.get(P_BUILD_HASH)
    if recorded in (release.build_hash(base), release.legacy_build_hash(base)):
        return True
    if release.source_identity is not None:
        return False
    served = cand.was_live or cand.name == obs.alias_target
    return served or cand.get(P_SPEC_HASH) == release.spec_hash()
