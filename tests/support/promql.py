"""Which metrics and labels a PromQL expression refers to, checked against the exporter.

A small scanner, not a parser: string literals are blanked first, then every
``embrel_*`` / ``embrel:*`` name (and ``up``) is read with its ``{...}`` matchers, and
every label list of ``by``/``on``/``without``/``ignoring``/``group_left``/``group_right``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from prometheus_client import CollectorRegistry

from controller.metrics import PrometheusTelemetry

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_SELECTOR = re.compile(r"(?<![\w:])(embrel[_:][A-Za-z0-9_:]*|up)\b\s*(\{[^}]*\})?")
_MATCHER = re.compile(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)")
_GROUPING = re.compile(r"\b(?:by|on|without|ignoring|group_left|group_right)\s*\(([^)]*)\)")
# Labels Prometheus adds to every scraped series.
TARGET_LABELS = frozenset({"job", "instance"})


@dataclass(frozen=True)
class Ref:
    metric: str
    labels: frozenset[str]


def refs(expr: str) -> list[Ref]:
    text = _STRING.sub('""', expr)
    return [
        Ref(m.group(1), frozenset(_MATCHER.findall(m.group(2) or "")))
        for m in _SELECTOR.finditer(text)
    ]


def grouping_labels(expr: str) -> set[str]:
    text = _STRING.sub('""', expr)
    return {
        label.strip()
        for group in _GROUPING.findall(text)
        for label in group.split(",")
        if label.strip()
    }


def exported() -> dict[str, frozenset[str]]:
    """Series names the controller exports, with their label names (plus target labels)."""
    names = PrometheusTelemetry(CollectorRegistry()).series_names()
    return {name: labels | TARGET_LABELS for name, labels in names.items()}


def problems(
    expr: str,
    where: str,
    extra: dict[str, frozenset[str]] | None = None,
    new_labels: frozenset[str] = frozenset(),
) -> list[str]:
    """What in ``expr`` the controller does not export: unknown metrics or labels.

    ``extra``: names defined elsewhere (recording rules, ``up``); ``new_labels``: labels
    the expressions create themselves (``label_replace``).
    """
    known = exported() | {"up": TARGET_LABELS} | (extra or {})
    all_labels = set().union(*known.values()) | set(new_labels)
    out = []
    found = refs(expr)
    if not found:
        out.append(f"{where}: refers to no embrel metric: {expr}")
    for ref in found:
        if ref.metric not in known:
            out.append(f"{where}: {ref.metric} is not exported by the controller")
        elif not ref.labels <= known[ref.metric]:
            out.append(
                f"{where}: {ref.metric} has no label {sorted(ref.labels - known[ref.metric])}"
            )
    for label in grouping_labels(expr) - all_labels:
        out.append(f"{where}: no exported metric has the label {label!r}")
    return out
