"""`embrel`: apply, watch and operate embedding releases from the command line.

Exit codes: 0 the version is live (or the verb succeeded); 1 the release failed
(validation rejected it, bad data, a conflict); 2 invalid input (spec, config,
arguments); 3 waiting for a person (awaiting promotion, rolled back); 4 Milvus
stayed unavailable after the configured retries.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tqdm import tqdm

from controller import cli_kube
from controller.config import ControllerConfig, load_config
from controller.drivers.local import (
    ControllerBusy,
    LocalController,
    StateStore,
    controller_lock,
    read_spec,
)
from controller.engine import ReconcileResult
from controller.errors import EmbrelError, PermanentError, SpecError, TemporaryError
from controller.metrics import PrometheusTelemetry, serve_http
from controller.ports import Advance
from controller.status import Phase, ReleaseStatus

EXIT_OK, EXIT_FAILED, EXIT_INVALID, EXIT_WAITING, EXIT_UNAVAILABLE = 0, 1, 2, 3, 4
HANDOFF_TIMEOUT = 600.0
EVENTS = logging.getLogger("controller.events")


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
        # disable=None: tqdm switches itself off when stderr is not a terminal (CI, pipes).
        with tqdm(
            total=total, desc=f"{self.indent}{stage}", unit="rows", disable=None, leave=False
        ) as bar:

            def advance(rows: int) -> None:
                bar.update(rows)

            yield advance


def main(argv: Sequence[str] | None = None, kube: bool = False) -> int:
    args = _parser(kube).parse_args(argv)
    try:
        config = load_config(args.config)
        if args.state_dir is not None:
            config = config.model_copy(update={"state_dir": args.state_dir})
        setup_logging(config)
        code: int = args.handler(args, config)
        return code
    except SpecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except ControllerBusy as exc:
        print(f"error: {exc}; stop it or let it pick up the file", file=sys.stderr)
        return EXIT_FAILED
    except TemporaryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except EmbrelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def kubectl_main() -> int:
    """`kubectl embrel ...` (the kubectl-embrel executable): the CLI with --kube implied."""
    return main(sys.argv[1:], kube=True)


def _parser(kube: bool = False) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="kubectl embrel" if kube else "embrel",
        description="Blue/green releases of embeddings in Milvus.",
    )
    p.add_argument("--config", type=Path, help="controller config file (see config.example.yaml)")
    p.add_argument("--state-dir", type=Path, help="override stateDir from the config")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    apply = sub.add_parser("apply", help="reconcile a release YAML to completion")
    apply.add_argument("-f", "--filename", type=Path, required=True)
    _metrics_option(apply)
    apply.set_defaults(handler=cmd_apply, hold=False)

    validate = sub.add_parser(
        "validate", help="build (or reuse) the candidate and run every gate; never promote"
    )
    validate.add_argument("-f", "--filename", type=Path, required=True)
    _metrics_option(validate)
    validate.set_defaults(handler=cmd_apply, hold=True)

    run = sub.add_parser("run", help="keep reconciling every release YAML in a folder")
    run.add_argument("--watch", type=Path, required=True, metavar="DIR")
    run.add_argument("--once", action="store_true", help="one pass over the folder, then exit")
    _metrics_option(run)
    run.set_defaults(handler=cmd_run)

    for name, handler, text in (
        ("status", cmd_status, "show a release's phase, live and candidate versions, checks"),
        ("history", cmd_history, "every version of a track: collection, when live, when retired"),
    ):
        verb = sub.add_parser(name, help=text)
        verb.add_argument("track", metavar="TRACK", help="the release's metadata.name")
        verb.add_argument("-o", "--output", choices=["text", "json"], default="text")
        cli_kube.add_kube_options(verb, kube)
        verb.set_defaults(handler=handler)

    for name, text in (
        ("promote", "promote a release waiting for manual promotion (or one rolled back)"),
        ("abort", "abort an in-progress release; the live alias is not changed"),
        ("rollback", "point the alias back at a retained previous version"),
    ):
        verb = sub.add_parser(name, help=text)
        verb.add_argument("track", metavar="TRACK")
        if name == "rollback":
            verb.add_argument(
                "--to", metavar="VERSION", help="a retained version (default: the previous one)"
            )
        cli_kube.add_kube_options(verb, kube)
        cli_kube.add_wait_options(verb)
        verb.set_defaults(handler=cmd_request, intent=name)

    cli_kube.add_controller_parser(sub)

    demo = sub.add_parser("demo", help="v1 -> v2 -> rejected v3 -> rollback on Milvus Lite")
    demo.add_argument("--workdir", type=Path, default=Path(".demo"))
    demo.add_argument("--examples", type=Path, default=None, help="examples/demo folder")
    demo.set_defaults(handler=cmd_demo)
    return p


def _metrics_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--metrics-port",
        type=int,
        metavar="PORT",
        help="serve Prometheus /metrics, /healthz and /readyz on this port (0: any free port)",
    )
    parser.add_argument(
        "--metrics-address", default="0.0.0.0", metavar="HOST", help="address to listen on"
    )


@contextmanager
def serving_metrics(args: argparse.Namespace) -> Iterator[PrometheusTelemetry | None]:
    """PrometheusTelemetry served over HTTP while the verb runs, when --metrics-port is set."""
    if args.metrics_port is None:
        yield None
        return
    telemetry = PrometheusTelemetry()
    try:
        server = serve_http(args.metrics_port, telemetry.is_leader, args.metrics_address)
    except OSError as exc:
        raise SpecError(
            "--metrics-port",
            [("", f"cannot listen on {args.metrics_address}:{args.metrics_port}: {exc.strerror}")],
        ) from exc
    print(f"Metrics on http://{args.metrics_address}:{server.port}/metrics", flush=True)
    try:
        yield telemetry
    finally:
        telemetry.set_leader(False)
        server.close()


# -- verbs -----------------------------------------------------------------------


def cmd_apply(args: argparse.Namespace, config: ControllerConfig) -> int:
    text, release = read_spec(args.filename)
    verb = "Validating" if args.hold else "Applying"
    print(f"{verb} {release.track} version {release.spec.version} (alias {release.spec.alias})")
    with serving_metrics(args) as telemetry:
        controller = LocalController(config, ConsoleReporter(), telemetry)
        try:
            with controller_lock(config.state_dir):
                _lead(telemetry)
                controller.record_spec(args.filename, text, release)
                result = controller.reconcile_track(release.track, hold=args.hold)
        finally:
            controller.close()
    if args.hold:
        return report_validation(result.status)
    return report_outcome(result.status, result)


def cmd_run(args: argparse.Namespace, config: ControllerConfig) -> int:
    from controller.drivers.watch import watch_folder

    # Stop on SIGTERM (systemd, kubectl delete) as on Ctrl-C: between passes, locks released.
    signal.signal(signal.SIGTERM, _interrupt)

    if not args.watch.is_dir():
        raise SpecError(str(args.watch), [("", "not a folder")])
    with serving_metrics(args) as telemetry:
        controller = LocalController(config, ConsoleReporter(), telemetry)
        try:
            with controller_lock(config.state_dir):
                _lead(telemetry)
                watch_folder(controller, args.watch, config.reconcile, once=args.once)
        finally:
            controller.close()
    return EXIT_OK


def _lead(telemetry: PrometheusTelemetry | None) -> None:
    """Holding the state folder's lock makes this process the acting controller."""
    if telemetry is not None:
        telemetry.set_leader(True)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def cmd_status(args: argparse.Namespace, config: ControllerConfig) -> int:
    if args.kube:
        return cli_kube.status(args)
    store = StateStore(config.state_dir)
    record = store.load(store.find(args.track))
    assert record is not None
    if args.output == "json":
        print(json.dumps(record.status.to_dict(), indent=2))
    else:
        print(format_status(record.status, record.spec_path))
    return EXIT_OK


def cmd_history(args: argparse.Namespace, config: ControllerConfig) -> int:
    if args.kube:
        return cli_kube.status(args, history=True)
    store = StateStore(config.state_dir)
    record = store.load(store.find(args.track))
    assert record is not None
    history = record.status.to_dict().get("history", [])
    if args.output == "json":
        print(json.dumps(history, indent=2))
        return EXIT_OK
    rows = [("VERSION", "COLLECTION", "LIVE SINCE", "RETIRED", "OUTCOME")]
    rows += [
        (
            h["version"],
            h["collection"],
            h.get("promotedAt", "-"),
            h.get("retiredAt", "-"),
            h["outcome"],
        )
        for h in history
    ]
    print(_table(rows))
    return EXIT_OK


def cmd_request(args: argparse.Namespace, config: ControllerConfig) -> int:
    """promote / abort / rollback: leave the request, then act on it or let the running controller."""
    if args.kube:
        return cli_kube.request(args)
    store = StateStore(config.state_dir)
    track = store.find(args.track)
    value: object = {"to": args.to} if args.intent == "rollback" else True
    store.update_intents(track, lambda intents: intents.__setitem__(args.intent, value))
    controller = LocalController(config, ConsoleReporter())
    try:
        with controller_lock(config.state_dir):
            result = controller.reconcile_track(track)
        status, applied = result.status, set(result.applied)
    except ControllerBusy as busy:
        print(f"Handed to the running controller (pid {busy.pid}); waiting for it to act...")
        status, handed = _wait_for_handoff(store, track, args.intent)
        applied = set(handed)
        result = None
    finally:
        controller.close()
    if args.intent == "promote":
        return report_outcome(status, result)
    live = status.live or {}
    if args.intent in applied:
        done = "Rolled back" if args.intent == "rollback" else "Aborted"
        print(f"{done}: alias -> {live.get('collection')} (version {live.get('version')})")
        return EXIT_OK
    print(f"Nothing to {args.intent}: {status.phase}: {status.message}")
    return EXIT_FAILED


def _wait_for_handoff(
    store: StateStore, track: str, intent: str
) -> tuple[ReleaseStatus, list[str]]:
    deadline = time.monotonic() + HANDOFF_TIMEOUT
    while time.monotonic() < deadline:
        record = store.load(track)
        assert record is not None
        if intent not in record.intents:
            return record.status, record.applied
        time.sleep(0.5)
    raise TemporaryError(
        f"the running controller did not act on {intent} within {HANDOFF_TIMEOUT:.0f}s"
    )


def cmd_demo(args: argparse.Namespace, config: ControllerConfig) -> int:
    from controller.demo import run_demo

    return run_demo(args.workdir, args.examples)


# -- output ----------------------------------------------------------------------


def report_outcome(status: ReleaseStatus, result: ReconcileResult | None) -> int:
    live = status.live or {}
    print(f"{status.phase}: {status.message}")
    if live:
        print(f"  alias -> {live.get('collection')} (version {live.get('version') or 'unknown'})")
    if result is not None and isinstance(result.error, TemporaryError):
        return EXIT_UNAVAILABLE
    if (
        result is not None
        and isinstance(result.error, PermanentError)
        and status.phase != Phase.FAILED
    ):
        return EXIT_FAILED
    return {
        Phase.LIVE: EXIT_OK,
        Phase.FAILED: EXIT_FAILED,
        Phase.AWAITING_PROMOTION: EXIT_WAITING,
        Phase.ROLLED_BACK: EXIT_WAITING,
        Phase.DEGRADED: EXIT_FAILED,  # switched but not proven: a person should look
    }.get(status.phase, EXIT_UNAVAILABLE)


def report_validation(status: ReleaseStatus) -> int:
    """`embrel validate`: 0 when every gate passed, 1 when one failed, 3 when inconclusive."""
    print(format_status(status, ""))
    outcome = (status.validation or {}).get("outcome")
    if status.live and status.live.get("version") and not status.candidate:
        print("This version is live; its validation is shown as recorded.")
    return {"passed": EXIT_OK, "accepted": EXIT_OK, "inconclusive": EXIT_WAITING}.get(
        str(outcome), EXIT_FAILED
    )


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
        counts = ", ".join(f"{k} {v}" for k, v in build.items() if k not in ("source", "base"))
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
        values = ", ".join(f"{k} {v:.4g}" for k, v in drift.get("values", {}).items())
        lines.append(f"Drift:      {values or 'not measured yet'} (at {drift.get('measuredAt')})")
        lines += [f"  breach: {b}" for b in drift.get("breaches", [])]
    lines.append("Conditions:")
    for cond in status.conditions:
        lines.append(
            f"  {cond.type:<12} {cond.status:<6} {cond.reason:<18} since {cond.last_transition_time}"
        )
    return "\n".join(lines)


def _check_line(c: dict[str, Any]) -> str:
    value = "—" if c.get("value") is None else f"{c['value']:.4g}"
    bound = (
        "" if c.get("threshold") is None else f"{c.get('comparison', '>=')} {c['threshold']:.4g}"
    )
    return (
        f"{c.get('outcome', '?'):<13} {c['name']:<22} {value:<10} {bound:<12} {c.get('detail', '')}"
    )


def format_history(status: ReleaseStatus) -> str:
    rows = [("VERSION", "COLLECTION", "LIVE SINCE", "RETIRED", "OUTCOME")]
    rows += [
        (h.version, h.collection, h.promoted_at or "-", h.retired_at or "-", h.outcome)
        for h in status.history
    ]
    return _table(rows)


def _table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(str(v).ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )


if __name__ == "__main__":
    sys.exit(main())
