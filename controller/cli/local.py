"""The local commands: release YAML files and a state folder, no cluster.

`apply`, `validate` and `run` reconcile release files; `status` and `history` read the
state folder; `promote`, `abort` and `rollback` leave a request there, then act on it
or let the running controller (``controller.drivers.local``). Each command imports the
driver, the engine and the metrics only when it runs, so `embrel --help` stays fast.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from controller.cli.options import STDIN, STDIN_NAME, non_empty, port_number, spec_path
from controller.cli.output import (
    ConsoleReporter,
    ExitCode,
    format_history,
    format_status,
    print_json,
    report_error,
    report_outcome,
    report_validation,
    stop_on_sigterm,
    worst_exit_code,
)
from controller.errors import EmbrelError, TemporaryError, UsageError

if TYPE_CHECKING:
    from controller.config import ControllerConfig
    from controller.drivers.local import LocalController, StateStore
    from controller.metrics import PrometheusTelemetry
    from controller.spec import EmbeddingRelease
    from controller.status import ReleaseStatus

HANDOFF_TIMEOUT = 600.0
HANDOFF_POLL = 0.05  # reading the track's small JSON file: cheap
FILENAME_HELP = (
    "the release YAML; a folder: every *.yaml and *.yml in it, in name order; "
    "-: read it from stdin (relative paths in it resolve against the current folder)"
)


def register(sub: argparse._SubParsersAction[Any]) -> None:
    """Every local command: the release files ones, then the verbs `--kube` also has."""
    register_file_commands(sub)
    register_verbs(sub)


def register_file_commands(sub: argparse._SubParsersAction[Any]) -> None:
    """apply, validate, run: release YAML files, no cluster (not in `kubectl embrel`)."""
    apply = sub.add_parser("apply", help="reconcile a release YAML to completion")
    apply.add_argument("-f", "--filename", type=spec_path, required=True, help=FILENAME_HELP)
    _add_metrics_options(apply)
    apply.set_defaults(handler=cmd_apply, hold=False)

    validate = sub.add_parser(
        "validate", help="build (or reuse) the candidate and run every gate; never promote"
    )
    validate.add_argument("-f", "--filename", type=spec_path, required=True, help=FILENAME_HELP)
    _add_metrics_options(validate)
    validate.set_defaults(handler=cmd_apply, hold=True)

    run = sub.add_parser("run", help="keep reconciling every release YAML in a folder")
    run.add_argument("--watch", type=Path, required=True, metavar="DIR")
    run.add_argument("--once", action="store_true", help="one pass over the folder, then exit")
    _add_metrics_options(run)
    run.set_defaults(handler=cmd_run)


def register_verbs(sub: argparse._SubParsersAction[Any]) -> None:
    """status, history, promote, abort, rollback: on the state folder, or with `--kube`
    (controller.cli.kube) on the EmbeddingRelease."""
    for name, text in (
        ("status", "show a release's phase, live and candidate versions, checks"),
        ("history", "every version of a track: collection, when live, when retired"),
    ):
        verb = sub.add_parser(name, help=text)
        verb.add_argument("track", metavar="TRACK", help="the release's metadata.name")
        verb.add_argument("-o", "--output", choices=["text", "json"], default="text")
        verb.set_defaults(handler=cmd_status)

    for name, text in (
        ("promote", "promote a release waiting for manual promotion (or one rolled back)"),
        ("abort", "abort an in-progress release; the live alias is not changed"),
        ("rollback", "point the alias back at a retained previous version"),
    ):
        verb = sub.add_parser(name, help=text)
        verb.add_argument("track", metavar="TRACK")
        if name == "rollback":
            verb.add_argument(
                "--to",
                type=non_empty,
                metavar="VERSION",
                help="a retained version (default: the previous one)",
            )
        verb.set_defaults(handler=cmd_request, intent=name)


def _add_metrics_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--metrics-port",
        type=port_number(),
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
    from controller.metrics import PrometheusTelemetry, serve_http

    telemetry = PrometheusTelemetry()
    try:
        server = serve_http(args.metrics_port, telemetry.is_leader, args.metrics_address)
    except OSError as exc:
        raise UsageError(
            f"--metrics-port: cannot listen on {args.metrics_address}:{args.metrics_port}: "
            f"{exc.strerror}"
        ) from exc
    print(f"Metrics on http://{args.metrics_address}:{server.port}/metrics", flush=True)
    try:
        yield telemetry
    finally:
        telemetry.set_leader(False)
        server.close()


@contextmanager
def acting_controller(
    config: ControllerConfig,
    telemetry: PrometheusTelemetry | None = None,
    wakeable: bool = False,
) -> Iterator[LocalController]:
    """A LocalController holding the state folder's lock: this process acts on it."""
    from controller.drivers.local import ControllerBusy, LocalController, controller_lock

    with ExitStack() as stack:
        controller = LocalController(config, ConsoleReporter(), telemetry)
        stack.callback(controller.close)
        try:
            stack.enter_context(controller_lock(config.state_dir, wakeable))
        except ControllerBusy as busy:
            raise EmbrelError(f"{busy}; stop it or let it pick up the file") from busy
        if telemetry is not None:
            telemetry.set_leader(True)
        yield controller


def find_track(store: StateStore, name: str) -> str:
    """The track ``name`` names; UsageError (exit 2) when it is unknown or ambiguous."""
    return store.find(name)


# -- commands ----------------------------------------------------------------------


def cmd_apply(args: argparse.Namespace, config: ControllerConfig) -> int:
    """apply / validate ``-f``: one file, stdin, or every release YAML in a folder."""
    if args.filename != STDIN and args.filename.is_dir():
        return _apply_folder(args, config, args.filename)
    spec = _read_spec(args.filename)  # a bad spec is reported before the lock is taken
    with serving_metrics(args) as telemetry, acting_controller(config, telemetry) as controller:
        return _apply_spec(args, controller, *spec)


def _read_spec(path: Path) -> tuple[Path, str, EmbeddingRelease]:
    """The spec's path (what relative paths in it resolve against), text and release."""
    from controller.drivers.local import read_spec

    if path == STDIN:
        return read_stdin_spec()
    text, release = read_spec(path)
    return path, text, release


def read_stdin_spec() -> tuple[Path, str, EmbeddingRelease]:
    """`-f -`: the spec from stdin, as if it were a file in the current folder."""
    from controller.spec import parse_release
    from controller.yaml_input import MAX_BYTES, decode

    raw = sys.stdin.buffer.read(MAX_BYTES + 1)  # one byte over: parse_release says too big
    release = parse_release(raw, STDIN_NAME)
    return Path.cwd() / STDIN_NAME, decode(raw), release


def _apply_spec(
    args: argparse.Namespace,
    controller: LocalController,
    path: Path,
    text: str,
    release: EmbeddingRelease,
) -> int:
    verb = "Validating" if args.hold else "Applying"
    print(f"{verb} {release.track} version {release.spec.version} (alias {release.spec.alias})")
    result = controller.apply_file(path, text, release, hold=args.hold)
    if args.hold:
        return report_validation(result.status)
    return report_outcome(result.status, result.error)


def release_files(folder: Path) -> list[Path]:
    """The release YAMLs of a folder, in name order (not its subfolders)."""
    found = [*folder.glob("*.yaml"), *folder.glob("*.yml")]
    return sorted((path for path in found if path.is_file()), key=lambda path: path.name)


def _apply_folder(args: argparse.Namespace, config: ControllerConfig, folder: Path) -> int:
    """Each file in turn, whatever the one before did; the exit code is the worst one."""
    files = release_files(folder)
    if not files:
        raise UsageError(f"-f {folder}: the folder holds no *.yaml or *.yml files")
    print(f"{len(files)} release file{'s' if len(files) != 1 else ''} in {folder}")
    codes: dict[Path, int] = {}
    with serving_metrics(args) as telemetry, acting_controller(config, telemetry) as controller:
        for path in files:
            print(f"\n{path}:")
            try:
                codes[path] = _apply_spec(args, controller, *_read_spec(path))
            except EmbrelError as exc:  # this file's problem: report it, go on to the next
                codes[path] = report_error(exc)
    print()
    for path, code in codes.items():
        print(f"  {path.name}: {ExitCode(code).name.lower()} (exit {code})")
    return worst_exit_code(codes.values())


def cmd_run(args: argparse.Namespace, config: ControllerConfig) -> int:
    from controller.drivers.store import WAKE_SIGNAL
    from controller.drivers.watch import watch_folder

    stop_on_sigterm()  # between passes, with the lock released
    if not args.watch.is_dir():
        raise UsageError(f"--watch {args.watch}: not a folder")
    wakeup = threading.Event()  # a verb left a request: act now, not at the next poll
    # Signal handlers belong to the main thread (an embedding application may run the
    # CLI in another); without one the watcher says so and is polled instead.
    wakeable = threading.current_thread() is threading.main_thread()
    if wakeable:
        signal.signal(WAKE_SIGNAL, lambda _signum, _frame: wakeup.set())
    with (
        serving_metrics(args) as telemetry,
        acting_controller(config, telemetry, wakeable) as controller,
    ):
        watch_folder(controller, args.watch, config.reconcile, args.once, wakeup)
    return ExitCode.OK


def cmd_status(args: argparse.Namespace, config: ControllerConfig) -> int:
    """`embrel status|history TRACK`: what the state folder recorded."""
    from controller.drivers.store import StateStore

    store = StateStore(config.state_dir)
    record = store.load(find_track(store, args.track))
    assert record is not None
    recorded = record.status.to_dict()
    history = args.command == "history"
    if args.output == "json":
        print_json(recorded.get("history", []) if history else recorded)
    elif history:
        print(format_history(recorded.get("history", [])))
    else:
        print(format_status(record.status, record.spec_path))
    return ExitCode.OK


def cmd_request(args: argparse.Namespace, config: ControllerConfig) -> int:
    """promote / abort / rollback: leave the request, then act on it or let the running controller.

    A running `embrel run --watch` is woken to act at once; this process then only
    watches the state folder, importing neither the engine nor pymilvus.
    """
    from controller.drivers.store import ControllerBusy, StateStore, controller_lock

    store = StateStore(config.state_dir)
    track = find_track(store, args.track)
    value: object = {"to": args.to} if args.intent == "rollback" else True
    store.update_intents(track, lambda intents: intents.__setitem__(args.intent, value))
    error: EmbrelError | None = None
    try:
        with controller_lock(config.state_dir):
            status, applied, error = _act_on_requests(config, track)
    except ControllerBusy as busy:
        print(f"Handed to the running controller (pid {busy.pid}); waiting for it to act...")
        busy.wake()
        status, handed = _wait_for_handoff(store, track, args.intent)
        applied = set(handed)
    if args.intent == "promote":
        return report_outcome(status, error)
    live = status.live or {}
    if args.intent in applied:
        done = "Rolled back" if args.intent == "rollback" else "Aborted"
        print(f"{done}: alias -> {live.get('collection')} (version {live.get('version')})")
        return ExitCode.OK
    print(f"Nothing to {args.intent}: {status.phase}: {status.message}")
    return ExitCode.FAILED


def _act_on_requests(
    config: ControllerConfig, track: str
) -> tuple[ReleaseStatus, set[str], EmbrelError | None]:
    """Reconcile the track in this process (the caller holds the state folder's lock)."""
    from controller.drivers.local import LocalController

    controller = LocalController(config, ConsoleReporter())
    try:
        result = controller.reconcile_track(track)
    finally:
        controller.close()
    return result.status, set(result.applied), result.error


def _wait_for_handoff(
    store: StateStore, track: str, intent: str
) -> tuple[ReleaseStatus, list[str]]:
    deadline = time.monotonic() + HANDOFF_TIMEOUT
    while time.monotonic() < deadline:
        record = store.load(track)
        assert record is not None
        if intent not in record.intents:
            return record.status, record.applied
        time.sleep(HANDOFF_POLL)
    raise TemporaryError(
        f"the running controller did not act on {intent} within {HANDOFF_TIMEOUT:.0f}s"
    )
