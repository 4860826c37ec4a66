"""Analysis from Prometheus (``spec.analysis``): query templates, conditions, and how
measurements become a gate check. Pure: the queries go through ``MetricQueryPort``
(``controller.prometheus``) and the measuring loop is ``engine/steps/analysis.py``.

As in Argo Rollouts, each metric takes ``count`` measurements ``interval`` apart. A
measurement is Successful, Failed, Inconclusive (a failureCondition is given and
neither condition holds) or an Error (the query failed or returned no number). The
metric fails when its failed measurements exceed ``failureLimit`` or its consecutive
errors exceed ``consecutiveErrorLimit``, is Inconclusive when its inconclusive ones
exceed ``inconclusiveLimit`` or when every measurement was an error, and passes
otherwise. A ``dryRun`` metric is measured
and reported, and never decides anything.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from controller.validation.results import Check, Outcome

CHECK_PREFIX = "analysis/"
# What a query template may name, as {{name}}; values are filled in per release.
VARIABLES = ("alias", "version", "track", "namespace", "name", "candidate", "live", "liveVersion")
_VARIABLE = re.compile(r"\{\{\s*([A-Za-z]+)\s*\}\}")
_CONDITION = re.compile(
    r"^\s*result(?:\[0\])?\s*(<=|>=|==|!=|<|>)\s*(-?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$"
)
_OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}


class QueryFailed(Exception):
    """A query that gave no number: Prometheus unreachable, an error, no series."""


@dataclass(frozen=True)
class Condition:
    """``result <op> <number>``: the one form a condition takes."""

    op: str
    threshold: float

    def holds(self, value: float) -> bool:
        """NaN satisfies no condition (``result != 1`` included): it is never a pass."""
        return not math.isnan(value) and _OPERATORS[self.op](value, self.threshold)


def parse_condition(text: str) -> Condition:
    """``"result < 0.05"`` (or ``result[0] < 0.05``, as Argo writes it) -> Condition."""
    match = _CONDITION.match(text)
    if match is None:
        raise ValueError(
            f"condition {text[:80]!r} must read `result <op> <number>` with <op> one of "
            "<, <=, >, >=, ==, != (e.g. `result < 0.05`)"
        )
    return Condition(match.group(1), float(match.group(2)))


def template_variables(query: str) -> list[str]:
    """The variables a query template names that embrel does not fill in."""
    return sorted({v for v in _VARIABLE.findall(query) if v not in VARIABLES})


def render_query(query: str, values: Mapping[str, str]) -> str:
    """The template with each ``{{variable}}`` replaced by its value for this release."""
    return _VARIABLE.sub(lambda m: values.get(m.group(1), ""), query)


class Measured(StrEnum):
    SUCCESSFUL = "Successful"
    FAILED = "Failed"
    INCONCLUSIVE = "Inconclusive"
    ERROR = "Error"


@dataclass(frozen=True)
class Measurement:
    value: float | None  # None for an Error
    outcome: Measured
    detail: str = ""


def judge_value(value: float, success: str | None, failure: str | None) -> Measured:
    """One number against the metric's conditions (failure wins when both hold)."""
    if failure is not None and parse_condition(failure).holds(value):
        return Measured.FAILED
    if success is None:
        return Measured.SUCCESSFUL
    if parse_condition(success).holds(value):
        return Measured.SUCCESSFUL
    return Measured.FAILED if failure is None else Measured.INCONCLUSIVE


@dataclass(frozen=True)
class Limits:
    """The limits of one metric (``spec.analysis.metrics[]``)."""

    failure_limit: int
    inconclusive_limit: int
    consecutive_error_limit: int


def verdict(measurements: Sequence[Measurement], limits: Limits) -> Outcome | None:
    """The metric's outcome once it is decided, else None (measure on)."""
    failed = sum(m.outcome == Measured.FAILED for m in measurements)
    if failed > limits.failure_limit:
        return Outcome.FAILED
    if consecutive_errors(measurements) > limits.consecutive_error_limit:
        return Outcome.FAILED
    inconclusive = sum(m.outcome == Measured.INCONCLUSIVE for m in measurements)
    if inconclusive > limits.inconclusive_limit:
        return Outcome.INCONCLUSIVE
    return None


def consecutive_errors(measurements: Sequence[Measurement]) -> int:
    count = 0
    for m in reversed(measurements):
        if m.outcome != Measured.ERROR:
            break
        count += 1
    return count


def summarise(
    name: str, measurements: Sequence[Measurement], limits: Limits, dry_run: bool
) -> Check:
    """A metric's measurements as a gate check named ``analysis/<name>``.

    Errors within ``consecutiveErrorLimit`` do not fail a metric (Prometheus may blink),
    but a metric whose every measurement was an error measured nothing: Inconclusive,
    never Passed (Argo Rollouts would pass it).
    """
    measured_nothing = all(m.outcome == Measured.ERROR for m in measurements)
    decided = verdict(measurements, limits) or (
        Outcome.INCONCLUSIVE if measured_nothing else Outcome.PASSED
    )
    counts = {k: float(sum(m.outcome == k for m in measurements)) for k in Measured}
    values = [m.value for m in measurements if m.value is not None]
    shown = ", ".join(_shown(m) for m in measurements)
    detail = f"{len(measurements)} measurement(s): {shown}"
    outcome = decided
    if dry_run:
        outcome = Outcome.REPORTED
        detail += f"; dryRun (would be {decided})"
    metrics = {"measurements": float(len(measurements))} | {k.lower(): v for k, v in counts.items()}
    return Check(
        CHECK_PREFIX + name, values[-1] if values else None, None, outcome, detail, "", metrics
    )


def _shown(m: Measurement) -> str:
    if m.value is None:
        return f"error ({m.detail})"
    return f"{m.value:.4g} {m.outcome.lower()}"
