"""What every command prints and the exit code it returns: the CLI's leaf module.

Exit codes (one table for every command):

    0  the version is live, or the verb did what was asked
    1  the release failed: validation rejected it, bad data, a conflict, a busy controller
    2  invalid input: the spec, the config, the command line (SpecError, UsageError)
    3  waiting for a person: awaiting promotion, rolled back, validation inconclusive
    4  Milvus (or the Kubernetes API) stayed unavailable after the configured retries
  141  stdout was closed by its reader (`embrel status | head`); nothing more is printed

Imports nothing heavy (no drivers, engine or third-party client) so that `embrel --help`
and the reading verbs start fast; what a formatter needs is imported by the caller.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from enum import IntEnum
from typing import TYPE_CHECKING, Any

from controller.errors import EmbrelError, PermanentError, SpecError, TemporaryError, UsageError
from controller.status import Phase, ReleaseStatus
from controller.validation.results import DASH, format_number

if TYPE_CHECKING:
    from controller.config import ControllerConfig
    from controller.ports import Advance

EVENTS = logging.getLogger("controller.events")


class ExitCode(IntEnum):
    OK = 0
    FAILED = 1
    INVALID = 2
    WAITING = 3
    UNAVAILABLE = 4
    INTERRUPTED = 130  # 128 + SIGINT, as a shell reports Ctrl-C
    BROKEN_PIPE = 141  # 128 + SIGPIPE: the reader of stdout went away (`| head`)


# Where a release ended up -> exit code; a phase not listed is still in progress, which a
# verb that ran to completion only reports when Milvus stopped it (unavailable).
PHASE_EXIT = {
    Phase.LIVE: ExitCode.OK,
    Phase.FAILED: ExitCode.FAILED,
    Phase.AWAITING_PROMOTION: ExitCode.WAITING,
    Phase.ROLLED_BACK: ExitCode.WAITING,
    Phase.DEGRADED: ExitCode.FAILED,  # switched but not proven: a person should look
    Phase.SUSPENDED: ExitCode.WAITING,  # spec.suspend: waits for a person to resume it
}
VALIDATION_EXIT = {"passed": ExitCode.OK, "accepted": ExitCode.OK, "inconclusive": ExitCode.WAITING}


# From best to worst, for a command over several releases (`apply -f DIR`): a release
# that is invalid or failed outweighs one that waits or met an unavailable Milvus.
_SEVERITY = (ExitCode.OK, ExitCode.WAITING, ExitCode.UNAVAILABLE, ExitCode.FAILED, ExitCode.INVALID)


def worst_exit_code(codes: Iterable[int]) -> int:
    """The worst of several exit codes (``_SEVERITY``; an unknown code counts as worst)."""
    rank = {int(code): i for i, code in enumerate(_SEVERITY)}
    return max(codes, key=lambda code: rank.get(code, len(_SEVERITY)), default=ExitCode.OK)


def error_exit_code(exc: EmbrelError) -> ExitCode:
    """The exit code of a command that stopped on ``exc``."""
    if isinstance(exc, SpecError | UsageError):
        return ExitCode.INVALID
    if isinstance(exc, TemporaryError):
        return ExitCode.UNAVAILABLE
    return ExitCode.FAILED


def outcome_exit_code(status: ReleaseStatus, error: EmbrelError | None = None) -> ExitCode:
    """The exit code of a reconcile that ended in ``status`` (``error``: what stopped it)."""
    if isinstance(error, TemporaryError):
        return ExitCode.UNAVAILABLE
    if isinstance(error, PermanentError) and status.phase != Phase.FAILED:
        return ExitCode.FAILED
    return PHASE_EXIT.get(status.phase, ExitCode.UNAVAILABLE)


def report_error(exc: EmbrelError) -> ExitCode:
    """One message on stderr (never a traceback); the exit code for it."""
    print(f"error: {exc}", file=sys.stderr)
    return error_exit_code(exc)


def report_os_error(exc: OSError) -> ExitCode:
    """A file embrel could not read or write, as one line naming it (never a traceback)."""
    where = f" {exc.filename}" if exc.filename else ""
    print(
        f"error: cannot use{where}: {exc.strerror or exc}; check that the state folder "
        "(--state-dir, stateDir in the config) and the files named exist and are writable",
        file=sys.stderr,
    )
    return ExitCode.FAILED


def print_outcome(status: ReleaseStatus) -> None:
    """The phase and where the alias points, two lines at most."""
    live = status.live or {}
    print(f"{status.phase}: {status.message}")
    if live:
        print(f"  alias -> {live.get('collection')} (version {live.get('version') or 'unknown'})")


def report_outcome(status: ReleaseStatus, error: EmbrelError | None = None) -> ExitCode:
    print_outcome(status)
    return outcome_exit_code(status, error)


def report_validation(status: ReleaseStatus) -> ExitCode:
    """`embrel validate`: 0 when every gate passed, 1 when one failed, 3 when inconclusive."""
    print(format_status(status, ""))
    outcome = (status.validation or {}).get("outcome")
    if status.live and status.live.get("version") and not status.candidate:
        print("This version is live; its validation is shown as recorded.")
    return VALIDATION_EXIT.get(str(outcome), ExitCode.FAILED)


# -- signals -----------------------------------------------------------------------


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def stop_on_sigterm() -> None:
    """SIGTERM (systemd, a pod stopping, kubectl delete) stops a long command as Ctrl-C does:
    between steps, with its locks and Lease released."""
    signal.signal(signal.SIGTERM, _interrupt)


# -- formatters --------------------------------------------------------------------


def print_json(data: object) -> None:
    """`-o json`."""
    print(json.dumps(data, indent=2))


def table(rows: Sequence[Sequence[object]]) -> str:
    """Columns padded to their widest cell, as kubectl prints them."""
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(str(v).ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )


NONE = "-"  # an empty cell in a table, as kubectl shows it
RELEASE_HEADER = ("NAME", "ALIAS", "VERSION", "PHASE", "LIVE", "AGE")


def format_release_table(
    items: Sequence[Mapping[str, Any]], all_namespaces: bool, now: float
) -> str:
    """EmbeddingRelease objects as `kubectl embrel list` shows them (NAMESPACE first
    with ``all_namespaces``, as kubectl does); ``now`` in seconds since the epoch."""
    rows: list[Sequence[object]] = [(("NAMESPACE",) if all_namespaces else ()) + RELEASE_HEADER]
    for obj in items:
        meta, spec, status = obj["metadata"], obj.get("spec") or {}, obj.get("status") or {}
        row = (
            meta["name"],
            spec.get("alias", NONE),
            spec.get("version", NONE),
            status.get("phase", NONE),
            (status.get("live") or {}).get("version") or NONE,
            age(meta.get("creationTimestamp"), now),
        )
        rows.append(((meta.get("namespace", ""),) if all_namespaces else ()) + row)
    return table(rows)


def age(timestamp: str | None, now: float) -> str:
    """An RFC 3339 time as kubectl's AGE column: 45s, 7m, 5h, 3d (``-`` when unknown)."""
    if not timestamp:
        return NONE
    try:
        then = datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return NONE
    seconds = max(0, int(now - then))
    for unit, size, below in (("s", 1, 120), ("m", 60, 120 * 60), ("h", 3600, 48 * 3600)):
        if seconds < below:
            return f"{seconds // size}{unit}"
    return f"{seconds // 86400}d"


HISTORY_HEADER = ("VERSION", "COLLECTION", "LIVE SINCE", "RETIRED", "OUTCOME")


def format_history(history: Sequence[Mapping[str, Any]]) -> str:
    """A track's versions (``status.history`` as stored, camelCase keys) as a table."""
    rows: list[Sequence[object]] = [HISTORY_HEADER]
    rows += [
        (
            h["version"],
            h["collection"],
            h.get("promotedAt") or "-",
            h.get("retiredAt") or "-",
            h["outcome"],
        )
        for h in history
    ]
    return table(rows)


def format_status(status: ReleaseStatus, spec_path: str) -> str:
    d = status.to_dict()
    lines = [f"Phase:      {status.phase}", f"Message:    {status.message}"]
    if spec_path:
        lines.append(f"Spec:       {spec_path}")
    for key in ("live", "candidate"):
        if part := d.get(key):
            lines.append(
                f"{key.title() + ':':<11} {part.get('version', '?')} in {part.get('collection')}"
            )
    if build := d.get("build"):
        counts = ", ".join(
            f"{k} {_shown(v)}" for k, v in build.items() if k not in ("source", "base")
        )
        base = f" on {build['base']}" if build.get("base") else ""
        lines.append(f"Build:      {build.get('source', '?')}{base}: {counts}")
    if validation := d.get("validation"):
        lines.append(f"Validation: {validation.get('outcome', '?')}")
        lines += [f"  {_check_line(c)}" for c in validation.get("checks", [])]
        if report := validation.get("report"):
            lines.append(f"Report:     {report}")
    if cutover := d.get("cutover"):
        proof = "verified" if cutover.get("verified") else "NOT verified"
        lines.append(
            f"Cutover:    {proof} by {cutover.get('method')} ({cutover.get('probes', 0)} probes, "
            f"{cutover.get('attempts')} attempt(s), {cutover.get('seconds')}s) at {cutover.get('at')}"
        )
    if drift := d.get("drift"):
        values = ", ".join(f"{k} {_shown(v)}" for k, v in drift.get("values", {}).items())
        lines.append(f"Drift:      {values or 'not measured yet'} (at {drift.get('measuredAt')})")
        lines += [f"  breach: {b}" for b in drift.get("breaches", [])]
    lines.append("Conditions:")
    for cond in status.conditions:
        lines.append(
            f"  {cond.type:<12} {cond.status:<6} {cond.reason:<18} since {cond.last_transition_time}"
        )
    return "\n".join(lines)


def _shown(value: object) -> str:
    """A recorded value: numbers through ``format_number``, anything else as it is."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return format_number(value)
    return str(value)


def _check_line(c: dict[str, Any]) -> str:
    value = DASH if c.get("value") is None else _shown(c["value"])
    bound = (
        ""
        if c.get("threshold") is None
        else f"{c.get('comparison', '>=')} {_shown(c['threshold'])}"
    )
    return (
        f"{c.get('outcome', '?'):<13} {c['name']:<22} {value:<10} {bound:<12} {c.get('detail', '')}"
    )


# -- console and logs --------------------------------------------------------------


class ConsoleReporter:
    """Events as short lines on stdout; progress bars on stderr when it is a terminal."""

    def __init__(self, indent: str = "  ", quiet: bool = False) -> None:
        self.indent = indent
        self.quiet = quiet

    def event(self, reason: str, message: str, warning: bool = False) -> None:
        # Logged at INFO whatever the outcome: stdout already shows them to a person.
        EVENTS.info(message, extra={"reason": reason, "warning": warning})
        if not self.quiet:
            mark = "!" if warning else "-"
            print(f"{self.indent}{mark} {message}", flush=True)

    @contextmanager
    def progress(self, stage: str, total: int | None) -> Iterator[Advance]:
        from tqdm import tqdm  # only a build shows progress; tqdm is not needed before

        # disable=None: tqdm switches itself off when stderr is not a terminal (CI, pipes).
        with tqdm(
            total=total, desc=f"{self.indent}{stage}", unit="rows", disable=None, leave=False
        ) as bar:

            def advance(rows: int) -> None:
                bar.update(rows)

            yield advance


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log pipelines."""

    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(
            {
                "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
                "level": record.levelname,
                "logger": record.name,
                "message": record.getMessage(),
                **{k: getattr(record, k) for k in ("reason", "warning") if hasattr(record, k)},
            }
        )


def setup_logging(config: ControllerConfig) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if config.log.format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("controller")
    root.handlers[:] = [handler]
    root.setLevel(config.log.level)
    root.propagate = False
