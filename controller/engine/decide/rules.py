"""The rules of ``decide``, in the order it asks them; each returns a Step or None.

A rule that returns None has nothing to say about the snapshot and hands over to
the next. The invariants they serve:

1. The alias only ever points to a collection that is fully loaded, indexed,
   flushed, row-count-verified and validated.
2. A failed or aborted release never changes what the alias points to.
3. embrel only drops collections it created, and never one an alias points to.
4. Rollback is one alias flip: previous collections stay loaded, no rebuild.
5. Reverting the spec to a retained version is an instant flip, not a rebuild.
"""

from __future__ import annotations

from dataclasses import replace

from controller.engine.decide import live as live_rules
from controller.engine.decide.situation import Situation
from controller.engine.decide.targets import (
    adopted_names,
    build_conflict,
    interrupted,
    rollback_targets,
    unproven,
)
from controller.engine.state import (
    FAILED,
    INCONCLUSIVE,
    OWNER_VALUE,
    P_ABORTED_AT,
    P_OWNER,
    P_RETIRED_AT,
    P_ROLLBACK_REASON,
    P_ROLLED_BACK_AT,
    P_TRACK,
    P_VALIDATION,
    PROMOTABLE,
    UNSET,
    CollectionState,
    Observation,
)
from controller.engine.state import summarise as summarise_check
from controller.engine.step import Step, StepName, done
from controller.status import Phase, Reason
from controller.validation.results import Outcome

# -- conflicts: refuse before touching anything ----------------------------------


def alias_names_a_collection(s: Situation) -> Step | None:
    """Refuse up front what the flip would refuse after the whole build: Milvus gives
    no alias the name of a collection."""
    if not s.obs.alias_is_collection:
        return None
    alias = s.release.spec.alias
    return done(
        Phase.FAILED,
        Reason.ALIAS_CONFLICT,
        f"spec.alias {alias} is the name of an existing collection, and Milvus cannot "
        f"give an alias a collection's name; choose another spec.alias (to take over the "
        f"readers of collection {alias}, point them at the new alias). Nothing was created",
    )


def alias_owned_by_another_track(s: Situation) -> Step | None:
    """One alias, one track: never flip an alias another release track manages."""
    other = s.live
    if other is None or other.get(P_OWNER) != OWNER_VALUE:
        return None
    if other.get(P_TRACK) == s.release.track:
        return None
    return done(
        Phase.FAILED,
        Reason.ALIAS_CONFLICT,
        f"alias {s.release.spec.alias} points to {other.name}, which belongs to release track "
        f"{other.get(P_TRACK)}; one alias can only be managed by one track",
    )


def alias_held_by_a_foreign_collection(s: Situation) -> Step | None:
    """Invariant 3: an alias that serves a collection embrel did not create is taken
    over only when the spec adopts that collection (``spec.adopt``)."""
    other = s.live
    if other is None or other.owned_by_embrel:
        return None
    if other.name in adopted_names(s.release, s.obs.collections.values()):
        return None
    return done(
        Phase.FAILED,
        Reason.ALIAS_CONFLICT,
        f"alias {s.release.spec.alias} points to {other.name}, which embrel did not create; "
        f"set spec.adopt: {other.name} to take the alias over (embrel keeps {other.name} "
        "as a rollback target and never drops or modifies it). Nothing was changed",
    )


def version_built_differently(s: Situation) -> Step | None:
    """A version names one content: a complete collection built otherwise is a conflict."""
    if s.cand is None or not s.cand.complete:
        return None
    conflict = build_conflict(s.release, s.obs, s.cand)
    return done(Phase.FAILED, Reason.VERSION_CONFLICT, conflict) if conflict else None


def collection_not_ours(s: Situation) -> Step | None:
    """Invariant 3: embrel never modifies a collection it did not create."""
    if s.cand is None or s.cand.get(P_OWNER) == OWNER_VALUE:
        return None
    return done(
        Phase.FAILED,
        Reason.VERSION_CONFLICT,
        f"collection {s.desired} exists but was not created by embrel; "
        "embrel never modifies collections it does not own",
    )


# -- a suspended release -------------------------------------------------------------


def suspended(s: Situation) -> Step | None:
    """spec.suspend: nothing is built, validated, flipped, retained or measured. A
    person's rollback and abort still act (the ways out); promote waits for a resume."""
    if not s.release.spec.suspend:
        return None
    if s.intents.rollback and (step := rollback_request(s)) is not None:
        return step
    if s.intents.abort and s.obs.alias_target != s.desired and not already_aborted(s):
        return abort_request(s)
    if s.intents.promote:
        return refuse(
            "promote",
            Reason.SUSPENDED,
            f"{s.name} is suspended (spec.suspend: true); set it to false to promote. "
            "Nothing was changed",
        )
    serving = f"{s.live.version or s.live.name} serves" if s.live else "the alias serves nothing"
    return done(
        Phase.SUSPENDED,
        Reason.SUSPENDED,
        f"suspended (spec.suspend: true): nothing is built, validated or promoted; {serving}",
    )


# -- what is live comes first ------------------------------------------------------


def reload_live(s: Situation) -> Step | None:
    """Applications need the live collection loaded, always (Milvus Lite forgets load
    state on restart)."""
    if s.live is None or not s.live.owned_by_embrel or s.live.loaded:
        return None
    phase = Phase.LIVE if s.live.name == s.desired else Phase.PENDING
    return Step(StepName.LOAD, s.live.name, phase, Reason.LOADING, "re-loading the live collection")


def rollback_request(s: Situation) -> Step | None:
    """Invariant 4: a rollback is one flip to a kept version (loaded first if it must be).

    None when no rollback is asked for, or the requested version is already live.
    """
    intents = s.intents
    if not intents.rollback:
        return None
    wanted = intents.rollback_to
    if wanted is not None and s.live is not None and s.live.version == wanted:
        return None
    targets = rollback_targets(s.release, s.obs)
    kept = [c for c in targets if wanted is None or wanted in (c.version, c.name)]
    if not kept:
        asked = f"version {wanted}" if wanted else "a previous version"
        all_kept = [c.version or c.name for c in targets]
        return refuse(
            "rollback",
            Reason.NO_ROLLBACK_TARGET,
            f"cannot roll back to {asked}: no retained, validated collection of this track "
            f"(kept: {', '.join(all_kept) or 'none'}); nothing was changed",
        )
    target = kept[0]
    if not target.loaded:  # keepLoaded was exceeded, or Milvus Lite restarted
        return Step(
            StepName.LOAD,
            target.name,
            Phase.PROMOTING,
            Reason.LOADING,
            f"loading {target.version} to roll back",
        )
    return Step(
        StepName.FLIP,
        target.name,
        Phase.PROMOTING,
        Reason.ROLLED_BACK,
        f"rolling back to {target.version}",
        rollback=True,
    )


def unproven_flip(s: Situation) -> Step | None:
    """Invariant 3 while a flip is unproven: nothing is released or dropped; probe again."""
    target = unproven(s.release, s.obs)
    return live_rules.unverified(s.release, s.obs, target) if target is not None else None


def interrupted_flip(s: Situation) -> Step | None:
    """A flip to this release's version that took effect but was never proven nor
    recorded (Milvus went away in between): prove it now, then record its live period;
    nothing is dropped before. Only the spec's own version: an alias on another version
    of the track may be another controller's flip in progress, which it records itself."""
    target = interrupted(s.release, s.obs)
    if target is None or target.name != s.desired:
        return None
    alias, judged = s.release.spec.alias, target.get(P_VALIDATION)
    # Only a validated collection is ever flipped to; Milvus 2.3 can lose the latest
    # property updates in a crash, the validation's among them: judge it again.
    if judged == UNSET and StepName.VALIDATE not in s.obs.steps_done:
        return Step(
            StepName.VALIDATE,
            target.name,
            Phase.PROMOTING,
            Reason.VALIDATING,
            f"alias {alias} points at {target.name}, whose validation record Milvus lost; "
            "validating it again",
        )
    if judged not in PROMOTABLE:
        return done(
            Phase.DEGRADED,
            Reason.VALIDATION_FAILED,
            f"alias {alias} points at {target.name}, which did not pass validation again "
            "after Milvus lost its record; `embrel rollback` to go back",
        )
    if StepName.VERIFY_FLIP in s.obs.steps_done:  # tried in this pass: not again in it
        return done(
            Phase.DEGRADED,
            Reason.FLIP_UNVERIFIED,
            f"alias {alias} points at {target.name}, a flip not proven yet; "
            "nothing is released or dropped until it is",
            requeue_after=s.obs.reverify_after,
        )
    return Step(
        StepName.VERIFY_FLIP,
        target.name,
        Phase.PROMOTING,
        Reason.FLIP_UNVERIFIED,
        f"the flip of alias {alias} to {target.name} was never proven; probing the alias",
        rollback=target.get(P_RETIRED_AT) != UNSET,  # it served before: going back to it
    )


def desired_is_live(s: Situation) -> Step | None:
    """The spec's version serves: retention, drift monitoring and the guard take over."""
    if s.cand is None or s.obs.alias_target != s.desired:
        return None
    return live_rules.settle_live(s.release, s.obs, s.cand)


# -- a candidate that will not serve (invariant 2) ---------------------------------


def already_aborted(s: Situation) -> Step | None:
    """Invariant 2: an aborted release stays aborted; it never changes the alias."""
    if s.cand is None or s.cand.get(P_ABORTED_AT) == UNSET:
        return None
    return finish_stopped(s, s.cand, Reason.ABORTED, f"release of {s.version} was aborted")


def abort_request(s: Situation) -> Step | None:
    """Invariant 2: a person's abort stops the release before its flip."""
    if not s.intents.abort:
        return None
    if s.cand is not None and s.cand.get(P_VALIDATION) == FAILED and not s.stale(s.cand):
        return refuse(
            "abort",
            Reason.VALIDATION_FAILED,
            f"nothing to abort: {s.version} already failed validation, and its outcome "
            "stays as recorded; nothing was changed",
        )
    return Step(StepName.ABORT, s.desired, Phase.FAILED, Reason.ABORTED, "aborting")


def validation_failed(s: Situation) -> Step | None:
    """Invariant 2: a failed validation never changes what the alias points to."""
    cand = s.cand
    if cand is None or cand.get(P_VALIDATION) != FAILED or s.stale(cand):
        return None
    return finish_stopped(s, cand, Reason.VALIDATION_FAILED, failed_message(cand))


# -- getting the candidate ready (invariant 1) -------------------------------------


def build(s: Situation) -> Step | None:
    """No collection for this version yet: build it."""
    if s.cand is not None:
        return None
    return Step(
        StepName.BUILD, s.desired, Phase.BUILDING, Reason.BUILDING, "building the candidate"
    )


def discard_incomplete(s: Situation) -> Step | None:
    """Invariant 1: a build a crash interrupted is dropped and rebuilt, never served."""
    if s.cand is None or s.cand.complete:
        return None
    return Step(
        StepName.DISCARD_INCOMPLETE,
        s.desired,
        Phase.BUILDING,
        Reason.BUILDING,
        "discarding an incomplete candidate left by an interrupted build",
    )


def index(s: Situation) -> Step | None:
    """Invariant 1: the alias only points to a fully indexed collection."""
    if s.cand is None or s.cand.indexed:
        return None
    return Step(StepName.INDEX, s.desired, Phase.INDEXING, Reason.INDEXING, "building the index")


def load(s: Situation) -> Step | None:
    """Invariant 1: the alias only points to a loaded collection."""
    if s.cand is None or s.cand.loaded:
        return None
    return Step(StepName.LOAD, s.desired, Phase.INDEXING, Reason.LOADING, "loading the candidate")


def validate(s: Situation) -> Step | None:
    """Invariant 1: the alias only points to a validated collection (judged again when
    the thresholds changed)."""
    cand = s.cand
    if cand is None:
        return None
    if cand.get(P_VALIDATION) in (*PROMOTABLE, INCONCLUSIVE) and not s.stale(cand):
        return None
    return Step(StepName.VALIDATE, s.desired, Phase.VALIDATING, Reason.VALIDATING, "validating")


def inconclusive(s: Situation) -> Step | None:
    """Invariant 1: an Inconclusive validation is promoted only by a person's call."""
    if s.cand is None or s.cand.get(P_VALIDATION) != INCONCLUSIVE:
        return None
    if s.intents.promote:
        return Step(
            StepName.ACCEPT, s.desired, Phase.PROMOTING, Reason.PROMOTING, "promoted by a person"
        )
    return done(
        Phase.AWAITING_PROMOTION,
        Reason.INCONCLUSIVE,
        f"validation of {s.version} was inconclusive ({inconclusive_checks(s.cand)}); "
        f"run `embrel promote {s.name}` or `embrel abort {s.name}`",
    )


# -- promotion -----------------------------------------------------------------------


def rolled_back(s: Situation) -> Step | None:
    """A version that was rolled back stays so until a person promotes it again."""
    if s.cand is None or s.cand.get(P_ROLLED_BACK_AT) == UNSET or s.intents.promote:
        return None
    why = s.cand.get(P_ROLLBACK_REASON)
    by_guard = f" by the post-promotion guard ({why})" if why else ""
    return done(
        Phase.ROLLED_BACK,
        Reason.AUTO_ROLLED_BACK if why else Reason.ROLLED_BACK,
        f"{s.version} was rolled back{by_guard}; the alias points to {s.obs.alias_target}. "
        "Run `embrel promote` to go forward again, or apply another version",
    )


def revert_to_kept(s: Situation) -> Step | None:
    """Invariant 5: returning to a retained version is an instant flip, no rebuild."""
    if s.cand is None or not s.cand.was_live:
        return None
    return Step(
        StepName.FLIP, s.desired, Phase.PROMOTING, Reason.PROMOTING, "returning to a kept version"
    )


def hold(s: Situation) -> Step | None:
    """`embrel validate`: stop before the flip; a later apply reuses the candidate."""
    if not s.intents.hold:
        return None
    return done(
        Phase.AWAITING_PROMOTION,
        Reason.VALIDATED,
        f"{s.version} passed validation; not promoted (embrel validate)",
    )


def manual_promotion(s: Situation) -> Step | None:
    """promotion.mode manual: a validated candidate waits for `embrel promote`."""
    if s.release.spec.promotion.mode != "manual" or s.intents.promote:
        return None
    return done(
        Phase.AWAITING_PROMOTION,
        Reason.AWAITING_PROMOTION,
        f"{s.version} passed validation; run `embrel promote {s.name}`",
    )


def promote(s: Situation) -> Step:
    """Every rule before agreed: the candidate is complete, indexed, loaded and validated."""
    return Step(StepName.FLIP, s.desired, Phase.PROMOTING, Reason.PROMOTING, "promoting")


# -- what no rule may do -------------------------------------------------------------

# Steps that change what serves, or what the track records of it: never run by
# `embrel validate`, which builds and validates the candidate only.
NOT_WHILE_VALIDATING = frozenset(
    {
        StepName.ACCEPT,
        StepName.ABORT,
        StepName.FLIP,
        StepName.VERIFY_FLIP,
        StepName.RETAIN,
        StepName.CLEAR_ROLLBACK,
        StepName.CAPTURE_REFERENCE,
        StepName.MONITOR,
        StepName.POST_PROMOTION,
    }
)


def held(s: Situation, step: Step) -> Step:
    """`embrel validate` settles where an apply would go on with ``step``."""
    if s.obs.alias_target == s.desired:
        return done(
            Phase.LIVE,
            Reason.VALIDATED,
            f"{s.version} is live as {s.desired}; its validation is as recorded, and "
            "embrel validate changes nothing",
        )
    return done(
        Phase.AWAITING_PROMOTION,
        Reason.VALIDATED,
        f"{s.version} is ready; not promoted (embrel validate; an apply would go on with: "
        f"{step.message})",
    )


def refuse(request: str, reason: Reason, message: str) -> Step:
    """A person's request that cannot be carried out; it changes nothing."""
    return Step(
        StepName.DONE,
        phase=Phase.FAILED,
        reason=reason,
        message=message,
        terminal=True,
        refused=request,
    )


def with_warnings(step: Step, obs: Observation) -> Step:
    """A settled pass names what failed after the flip; the phase stays as decided."""
    if not step.terminal or not obs.failed_steps:
        return step
    warnings = "; ".join(obs.failed_steps.values())
    return replace(step, message=f"{step.message}; warning: {warnings}")


# -- helpers -----------------------------------------------------------------------


def finish_stopped(s: Situation, cand: CollectionState, reason: Reason, message: str) -> Step:
    """A candidate that will never serve: free its memory, then settle Failed.

    Milvus Lite reports a collection without an index as loaded, though nothing was
    ever loaded.
    """
    tried = (StepName.RELEASE, cand.name) in s.obs.failed_steps
    if cand.loaded and cand.index is not None and not tried:
        return Step(
            StepName.RELEASE,
            cand.name,
            Phase.FAILED,
            reason,
            f"releasing {cand.name}: it will not serve",
        )
    return done(Phase.FAILED, reason, message)


def inconclusive_checks(cand: CollectionState) -> str:
    return "; ".join(
        f"{c.name}: {c.detail}" for c in cand.checks() if c.outcome == Outcome.INCONCLUSIVE
    )


def failed_message(cand: CollectionState) -> str:
    failed = [c for c in cand.checks() if not c.passed]
    parts = [f"{summarise_check(c)} {c.detail}".strip() for c in failed]
    return f"validation failed: {'; '.join(parts) or 'see checks'}; the live alias was not changed"
