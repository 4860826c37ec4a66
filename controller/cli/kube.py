"""The Kubernetes commands: `embrel controller`, and `--kube` on the verbs.

``kubectl embrel VERB`` (the ``kubectl-embrel`` executable) is the same CLI with
``--kube`` implied: promote, abort and rollback set the request annotations on the
EmbeddingRelease and wait for the controller to carry them out; status and history
read ``.status``. The Kubernetes client is imported only by these commands.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from controller.cli.options import port_number
from controller.cli.output import (
    ExitCode,
    format_history,
    format_status,
    print_json,
    print_outcome,
    stop_on_sigterm,
)
from controller.errors import UsageError
from controller.status import Phase, ReleaseStatus

if TYPE_CHECKING:
    from controller.config import ControllerConfig
    from controller.kube import KubeGateway

READ_VERBS = ("status", "history")
REQUEST_VERBS = ("promote", "abort", "rollback")


def register(sub: argparse._SubParsersAction[Any], kube: bool) -> None:
    """`embrel controller`, and ``--kube`` (default ``kube``) on the verbs registered
    before by controller.cli.local: with it, they act on the EmbeddingRelease."""
    for name in READ_VERBS:
        verb = sub.choices[name]
        _add_kube_options(verb, kube)
        verb.set_defaults(kube_handler=cmd_status)
    for name in REQUEST_VERBS:
        verb = sub.choices[name]
        _add_kube_options(verb, kube)
        _add_wait_options(verb)
        verb.set_defaults(kube_handler=cmd_request)
    _register_controller(sub)


def _add_kube_options(parser: argparse.ArgumentParser, kube: bool) -> None:
    group = parser.add_argument_group("Kubernetes (EmbeddingRelease objects)")
    group.add_argument(
        "--kube",
        action="store_true",
        default=kube,
        help="act on the EmbeddingRelease in the cluster (implied by `kubectl embrel`)",
    )
    group.add_argument("-n", "--namespace", help="namespace (default: the kubeconfig context's)")
    group.add_argument("--kubeconfig", type=Path, help="kubeconfig file (default: $KUBECONFIG)")
    group.add_argument("--context", help="kubeconfig context")


def _add_wait_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--timeout",
        type=float,
        default=120.0,
        metavar="SECONDS",
        help="with --kube: how long to wait for the controller to act (default 120)",
    )
    parser.add_argument(
        "--no-wait", action="store_true", help="with --kube: set the request and return"
    )


def _register_controller(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser(
        "controller", help="run the Kubernetes controller: reconcile EmbeddingRelease objects"
    )
    p.add_argument(
        "--namespace",
        action="append",
        metavar="NS",
        help="watch this namespace (repeatable; default: every namespace)",
    )
    p.add_argument(
        "--leader-elect",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="only the holder of a coordination.k8s.io Lease acts (default: on)",
    )
    p.add_argument("--lease-name", default="embrel-controller")
    p.add_argument(
        "--lease-namespace", help="where the Lease lives (default: the pod's or context's)"
    )
    p.add_argument(
        "--lease-duration",
        type=_positive,
        default=15,
        metavar="SECONDS",
        help="a standby takes over this long after the leader stops renewing (default 15)",
    )
    p.add_argument("--workers", type=_positive, default=4, help="releases reconciled at once")
    p.add_argument(
        "--metrics-port",
        type=port_number(-1, "0: any free port; -1: off"),
        default=8080,
        metavar="PORT",
        help="serve /metrics, /healthz and /readyz here (0: any free port; -1: off)",
    )
    p.add_argument("--metrics-address", default="0.0.0.0", metavar="HOST")
    p.add_argument(
        "--kubeconfig",
        type=Path,
        help="kubeconfig file (default: in-cluster config when run in a pod, else $KUBECONFIG)",
    )
    p.add_argument("--context", help="kubeconfig context")
    p.set_defaults(handler=cmd_controller)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


# -- commands ----------------------------------------------------------------------


def cmd_controller(args: argparse.Namespace, config: ControllerConfig) -> int:
    from controller.drivers.kube import KubeController, KubeOptions
    from controller.kube import KubeGateway
    from controller.metrics import PrometheusTelemetry, serve_http

    stop_on_sigterm()  # a pod stopping: workers finish their step, the Lease is released
    kube = KubeGateway.connect(args.kubeconfig, args.context)
    options = KubeOptions(
        namespaces=tuple(args.namespace or ()),
        workers=args.workers,
        leader_elect=args.leader_elect,
        lease_name=args.lease_name,
        lease_namespace=args.lease_namespace,
        lease_duration=args.lease_duration,
        resync_seconds=config.reconcile.resync_seconds,
    )
    telemetry = PrometheusTelemetry()
    controller = KubeController(kube, config, options, telemetry)
    server = None
    if args.metrics_port >= 0:
        try:
            server = serve_http(args.metrics_port, controller.ready, args.metrics_address)
        except OSError as exc:
            raise UsageError(
                f"--metrics-port: cannot listen on {args.metrics_port}: {exc}"
            ) from exc
    where = ", ".join(options.namespaces) or "all namespaces"
    port = f"; metrics on port {server.port}" if server else ""
    print(
        f"embrel controller {options.identity}: watching EmbeddingReleases in {where} "
        f"at {kube.info.host}{port}",
        flush=True,
    )
    try:
        controller.run()
    except KeyboardInterrupt:
        print("stopping", flush=True)
    finally:
        controller.shutdown()
        if server is not None:
            server.close()
        kube.close()
    return ExitCode.OK


def _connect(args: argparse.Namespace) -> KubeGateway:
    from controller.kube import KubeGateway

    return KubeGateway.connect(args.kubeconfig, args.context)


def _status_of(obj: dict[str, Any]) -> ReleaseStatus:
    return ReleaseStatus.from_dict(obj.get("status") or {})


def cmd_status(args: argparse.Namespace, config: ControllerConfig) -> int:
    """`embrel status|history NAME --kube`: the object's .status."""
    history = args.command == "history"
    kube = _connect(args)
    namespace = args.namespace or kube.default_namespace
    obj = kube.get_release(namespace, args.track)
    raw = obj.get("status") or {}
    if args.output == "json":
        print_json(raw.get("history", []) if history else raw)
        return ExitCode.OK
    if history:
        print(format_history(raw.get("history", [])))
        return ExitCode.OK
    st = _status_of(obj)
    print(format_status(st, f"EmbeddingRelease {namespace}/{args.track}"))
    generation = obj["metadata"].get("generation")
    print(f"Generation: {generation} (observed {st.observed_generation})")
    if progress := raw.get("progress"):
        total = f"/{progress['total']}" if "total" in progress else ""
        print(f"Progress:   {progress.get('stage')}: {progress.get('done')}{total}")
    return ExitCode.OK


def cmd_request(args: argparse.Namespace, config: ControllerConfig) -> int:
    """`embrel promote|abort|rollback NAME --kube`: annotate, then wait for the controller."""
    from controller.drivers.kube import ANNOTATIONS, request_intent, wait_for_intent

    kube = _connect(args)
    namespace = args.namespace or kube.default_namespace
    value = (getattr(args, "to", None) or "true") if args.intent == "rollback" else "true"
    request_intent(kube, namespace, args.track, args.intent, value)
    print(
        f"Requested {args.intent} of {namespace}/{args.track} ({ANNOTATIONS[args.intent]}={value})"
    )
    if args.no_wait:
        return ExitCode.OK
    obj = wait_for_intent(kube, namespace, args.track, args.intent, args.timeout)
    if obj is None:
        print(
            f"error: no controller carried out the request within {args.timeout:.0f}s "
            "(is one running? `kubectl get lease embrel-controller`); the annotation stays",
            file=sys.stderr,
        )
        return ExitCode.UNAVAILABLE
    st = _status_of(obj)
    print_outcome(st)
    return (
        ExitCode.OK if carried_out(args.intent, st, getattr(args, "to", None)) else ExitCode.FAILED
    )


def carried_out(intent: str, st: ReleaseStatus, wanted: str | None = None) -> bool:
    """Whether the controller's status shows the request done (the annotation is gone)."""
    if intent == "promote":
        return st.phase == Phase.LIVE
    if intent == "abort":
        ready = next((c for c in st.conditions if c.type == "Ready"), None)
        return ready is not None and ready.reason == "Aborted"
    live = st.live or {}
    return st.phase == Phase.ROLLED_BACK or bool(wanted and live.get("version") == wanted)
