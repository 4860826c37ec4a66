"""After a flip, what no longer serves: ``release``, ``retain``, ``clear_rollback``.

``release`` frees the memory of a candidate that will never serve; ``retain``
carries out one retention action (release, drop or load a formerly-live
collection, ``retention_plan``); ``clear_rollback`` forgets an old rollback mark
once the spec comes back to the live version.
"""

from __future__ import annotations

from controller.engine.state import P_ROLLED_BACK_AT, UNSET, Observation
from controller.engine.step import Step
from controller.engine.steps.build import load_collection
from controller.engine.steps.context import StepContext
from controller.spec import EmbeddingRelease


def release_candidate(
    ctx: StepContext, release: EmbeddingRelease, step: Step, obs: Observation
) -> None:
    """Free a candidate's memory, never the live collection's."""
    if obs.alias_target != step.target:
        ctx.milvus.release(step.target)


def retain(ctx: StepContext, release: EmbeddingRelease, step: Step, obs: Observation) -> None:
    """One retention action on a formerly-live collection (``Step.verb``)."""
    if step.verb == "drop":
        ctx.milvus.drop(step.target)
    elif step.verb == "release":
        ctx.milvus.release(step.target)
    elif step.verb == "load":
        load_collection(ctx, step.target, release.spec.collection.load.replicas)
    else:
        raise ValueError(f"retain step on {step.target} without a verb")


def clear_rollback(
    ctx: StepContext, release: EmbeddingRelease, step: Step, obs: Observation
) -> None:
    ctx.milvus.set_properties(step.target, {P_ROLLED_BACK_AT: UNSET})
