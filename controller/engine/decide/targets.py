"""Pure queries over a snapshot: what retention keeps, where a rollback or a delta goes."""

from __future__ import annotations

from controller.engine.state import (
    P_BASE,
    P_BUILD_HASH,
    P_FLIP_UNVERIFIED,
    P_RETIRED_AT,
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
    """Retained collections that were live before, most recently retired first."""
    kept = [
        c
        for c in obs.owned(release.track)
        if c.was_live and c.name != obs.alias_target and c.get(P_VALIDATION) in PROMOTABLE
    ]
    return sorted(kept, key=lambda c: c.get(P_RETIRED_AT), reverse=True)


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
    previous = rollback_targets(release, obs)
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
    expected = release.build_hash(built_on) if delta is not None else release.build_hash()
    if cand.get(P_BUILD_HASH) != expected:
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
