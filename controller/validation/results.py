"""What a validation produces: gate outcomes plus the raw numbers behind the plots,
and ``format_number``, the one way every value is shown to a reader.

Imports no numpy at module level: the CLI's formatters use ``format_number`` and
`embrel status` must not pay for numpy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from controller.validation.metrics import PairedDifference

DASH = "—"
# Whole numbers up to here are shown digit for digit (row counts, ids, k); beyond it a
# float no longer holds every digit, so the digits shown would be made up.
_EXACT_LIMIT = 2**53


def format_number(value: float | None) -> str:
    """A value as a person reads it: whole numbers in full with thousands separators
    (``200,000``, so counts that differ by one never print alike), other values with
    4 significant digits (``0.9123``, ``1.235e-05``), ``NaN``/``inf``/``-inf`` spelled
    out, None as an em dash."""
    if value is None:
        return DASH
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"  # exact, however large
    number = float(value)
    if math.isnan(number):
        return "NaN"
    if math.isinf(number):
        return "inf" if number > 0 else "-inf"
    if number.is_integer() and abs(number) < _EXACT_LIMIT:
        return f"{int(number):,}"
    if 1e4 <= abs(number) < _EXACT_LIMIT:
        return f"{number:,.0f}"  # 12,346 rather than 1.235e+04
    return f"{number:.4g}"


def _empty_series() -> np.ndarray:
    import numpy as np

    return np.empty(0)


class Outcome(StrEnum):
    PASSED = "Passed"
    FAILED = "Failed"
    NOT_APPLICABLE = "NotApplicable"  # e.g. no live collection yet, or a model change
    INCONCLUSIVE = "Inconclusive"  # could not be measured: a person decides
    REPORTED = "Reported"  # measured for the record, no threshold


@dataclass(frozen=True)
class Check:
    """One gate: its headline value against its threshold, and the numbers around it."""

    name: str
    value: float | None
    threshold: float | None
    outcome: Outcome
    detail: str = ""
    comparison: str = ">="  # how value must relate to threshold to pass
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.outcome not in (Outcome.FAILED, Outcome.INCONCLUSIVE)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"outcome": str(self.outcome), "passed": self.passed}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Check:
        return cls(
            name=d["name"],
            value=d.get("value"),
            threshold=d.get("threshold"),
            outcome=Outcome(d.get("outcome", Outcome.PASSED)),
            detail=d.get("detail", ""),
            comparison=d.get("comparison", ">="),
            metrics=dict(d.get("metrics", {})),
        )


def any_failed(checks: Sequence[Check]) -> bool:
    return any(c.outcome == Outcome.FAILED for c in checks)


def not_run(names: Sequence[str], why: str) -> list[Check]:
    """Gates that were not measured or asked (a gate before them failed): one
    NotApplicable check each, so that status still lists every gate the spec names."""
    return [Check(name, None, None, Outcome.NOT_APPLICABLE, why, "") for name in names]


def judge(
    name: str,
    value: float,
    threshold: float | None,
    comparison: str = ">=",
    detail: str = "",
    metrics: dict[str, float] | None = None,
) -> Check:
    """A Check from a measured value: Reported without a threshold; NaN never passes."""
    if threshold is None:
        outcome = Outcome.REPORTED
    elif math.isnan(value):
        outcome = Outcome.FAILED
    elif comparison == ">=":
        outcome = Outcome.PASSED if value >= threshold else Outcome.FAILED
    else:
        outcome = Outcome.PASSED if value <= threshold else Outcome.FAILED
    clean = {k: round(float(v), 6) for k, v in (metrics or {}).items()}
    return Check(name, round(float(value), 6), threshold, outcome, detail, comparison, clean)


def judge_drop(
    name: str,
    diff: PairedDifference,
    max_drop: float,
    candidate: float,
    live: float,
) -> Check:
    """A relative gate: may the candidate score below live, and by how much?

    ``diff`` is the bootstrap interval of candidate minus live over the same queries.
    Failed only when the candidate is worse than live by more than ``max_drop`` with
    the interval's confidence (the whole interval below ``-max_drop``); Passed when the
    whole interval is at or above it; Inconclusive when it straddles the threshold (a
    person decides, rather than a coin flip of which queries were sampled). No scored
    query at all fails: NaN never passes.
    """
    if diff.queries == 0 or math.isnan(diff.mean) or diff.high < -max_drop:
        outcome = Outcome.FAILED
    elif diff.low >= -max_drop:
        outcome = Outcome.PASSED
    else:
        outcome = Outcome.INCONCLUSIVE
    pct = f"{diff.confidence:.0%}"
    detail = (
        f"candidate {candidate:.4f} vs live {live:.4f}: {diff.mean:+.4f} "
        f"({pct} interval {diff.low:+.4f}..{diff.high:+.4f}) over {diff.queries} queries; "
        f"{diff.wins} better, {diff.losses} worse"
    )
    metrics = {
        "candidate": candidate,
        "live": live,
        "low": diff.low,
        "high": diff.high,
        "queries": diff.queries,
        "wins": diff.wins,
        "losses": diff.losses,
    }
    clean = {k: round(float(v), 6) for k, v in metrics.items()}
    return Check(name, round(float(diff.mean), 6), -max_drop, outcome, detail, ">=", clean)


def verdict(checks: list[Check]) -> Outcome:
    """Failed if any gate failed; else Inconclusive if any could not be measured."""
    outcomes = {c.outcome for c in checks}
    if Outcome.FAILED in outcomes:
        return Outcome.FAILED
    if Outcome.INCONCLUSIVE in outcomes:
        return Outcome.INCONCLUSIVE
    return Outcome.PASSED


@dataclass
class ValidationRun:
    """Everything one validation measured, for status, events and the report."""

    release: str  # track
    version: str
    candidate: str  # collection
    live: str | None  # collection the alias pointed to, if any
    live_version: str | None
    checks: list[Check]
    query_set: str  # where the queries came from (file, or seeded source sample)
    search_params: dict[str, Any]
    # Raw series for plots; empty when the gate did not run.
    cosines: np.ndarray = field(default_factory=_empty_series)
    # "candidate"/"live" -> recall@1..K on the golden set
    recall_curve: dict[str, list[float]] = field(default_factory=dict)
    # "candidate"/"live" -> single-query search latencies
    latencies_ms: dict[str, list[float]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)  # time spent per gate

    @property
    def outcome(self) -> Outcome:
        return verdict(self.checks)
