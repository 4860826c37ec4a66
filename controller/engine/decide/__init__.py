"""The pure decision: desired spec + one snapshot -> the next step.

``decide`` asks its rules in order (``RULES``); the first with something to say
wins. Conflicts come first, then what is live (re-load it, a rollback request, an
unproven flip, retention and monitoring), then a candidate that will not serve
(aborted, failed), then getting the candidate ready (build, index, load, validate)
and promotion. `embrel validate` (``Intents.hold``) never runs a step that changes
what serves; a settled pass names any step after the flip that failed (a warning,
never an error). Reads nothing, changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable

from controller.engine.decide import rules
from controller.engine.decide.situation import Situation
from controller.engine.decide.targets import (
    adopted,
    adopted_names,
    base_identity,
    build_conflict,
    delta_base,
    drain_left,
    interrupted,
    kept_previous,
    retention_plan,
    rollback_targets,
    serving_before,
    unproven,
)
from controller.engine.state import Observation
from controller.engine.step import Intents, Step
from controller.spec import EmbeddingRelease

Rule = Callable[[Situation], Step | None]

RULES: tuple[Rule, ...] = (
    rules.alias_names_a_collection,
    rules.alias_owned_by_another_track,
    rules.alias_held_by_a_foreign_collection,
    rules.version_built_differently,
    rules.collection_not_ours,
    rules.suspended,
    rules.reload_live,
    rules.rollback_request,
    rules.unproven_flip,
    rules.interrupted_flip,
    rules.desired_is_live,
    rules.already_aborted,
    rules.abort_request,
    rules.build,
    rules.discard_incomplete,
    rules.validation_failed,
    rules.index,
    rules.load,
    rules.validate,
    rules.inconclusive,
    rules.rolled_back,
    rules.revert_to_kept,
    rules.hold,
    rules.manual_promotion,
)


def decide(release: EmbeddingRelease, obs: Observation, intents: Intents) -> Step:
    """The next step for this snapshot. Pure: reads nothing, changes nothing."""
    situation = Situation.of(release, obs, intents)
    step = next(filter(None, (rule(situation) for rule in RULES)), None)
    step = step or rules.promote(situation)
    if intents.hold and step.name in rules.NOT_WHILE_VALIDATING:
        step = rules.held(situation, step)
    return rules.with_warnings(step, obs)


__all__ = [
    "RULES",
    "Rule",
    "Situation",
    "adopted",
    "adopted_names",
    "base_identity",
    "build_conflict",
    "decide",
    "delta_base",
    "drain_left",
    "interrupted",
    "kept_previous",
    "retention_plan",
    "rollback_targets",
    "serving_before",
    "unproven",
]
