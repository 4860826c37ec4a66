"""The Kubernetes commands: `embrel controller`, and `--kube` on the verbs.

``kubectl embrel VERB`` (the ``kubectl-embrel`` executable) is the same CLI with
``--kube`` implied: promote, abort and rollback set the request annotations on the
EmbeddingRelease and wait for the controller to carry them out; status and history
read ``.status``. The Kubernetes client is imported only by these commands.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from controller.cli.options import port_number
from controller.cli.output import (
    ExitCode,
    format_history,
    format_release_table,
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


def register(sub: argparse._SubParsersAction[Any], kube: bool = False) -> None:
    """``--kube`` (default ``kube``) on the verbs registered before by
    controller.cli.local: with it, they act on the EmbeddingRelease; `list` and `get`,
    which only read the cluster; and `embrel controller` (not in `kubectl embrel`)."""
    for name in READ_VERBS:
        verb = sub.choices[name]
        _add_kube_options(verb, kube)
        verb.set_defaults(kube_handler=cmd_status)
    for name in REQUEST_VERBS:
        verb = sub.choices[name]
        _add_kube_options(verb, kube)
        _add_wait_options(verb)
        verb.set_defaults(kube_handler=cmd_request)
    _register_list(sub)
    _register_get(sub)
    if not kube:
        _register_controller(sub)


def _register_list(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser("list", help="the EmbeddingReleases in a namespace (or all) of the cluster")
    _add_cluster_options(p)
    p.add_argument(
        "-A", "--all-namespaces", action="store_true", help="list releases in every namespace"
    )
    p.add_argument("-o", "--output", choices=["text", "json"], default="text")
    p.set_defaults(handler=cmd_list)


def _register_get(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser(
        "get", help="one EmbeddingRelease: phase, gates, cutover (--watch: again on each change)"
    )
    p.add_argument("track", metavar="NAME", help="the EmbeddingRelease's metadata.name")
    _add_cluster_options(p)
    p.add_argument(
        "-w", "--watch", action="store_true", help="print again whenever it changes (Ctrl-C stops)"
    )
    p.add_argument("-o", "--output", choices=["text", "json"], default="text")
    p.set_defaults(handler=cmd_get)


def _add_kube_options(parser: argparse.ArgumentParser, kube: bool) -> None:
    group = _add_cluster_options(parser)
    group.add_argument(
        "--kube",
        action="store_true",
        default=kube,
        help="act on the EmbeddingRelease in the cluster (implied by `kubectl embrel`)",
    )


def _add_cluster_options(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    group = parser.add_argument_group("Kubernetes (EmbeddingRelease objects)")
    group.add_argument("-n", "--namespace", help="namespace (default: the kubeconfig context's)")
    group.add_argument("--kubeconfig", type=Path, help="kubeconfig file (default: $KUBECONFIG)")
    group.add_argument("--context", help="kubeconfig context")
    return group


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
            server = serve_http(
                args.metrics_port,
                controller.ready,
                args.metrics_address,
                documents=controller.engines.reports.document,
            )
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
    print(describe_release(obj))
    return ExitCode.OK


def describe_release(obj: dict[str, Any]) -> str:
    """`status --kube` and `get`: phase, live and candidate, gates, cutover, progress."""
    meta, raw = obj["metadata"], obj.get("status") or {}
    st = _status_of(obj)
    lines = [format_status(st, f"EmbeddingRelease {meta.get('namespace')}/{meta['name']}")]
    if (obj.get("spec") or {}).get("suspend"):
        lines.append("Suspended:  yes (spec.suspend: true)")
    lines.append(f"Generation: {meta.get('generation')} (observed {st.observed_generation})")
    if progress := raw.get("progress"):
        total = f"/{progress['total']}" if "total" in progress else ""
        lines.append(f"Progress:   {progress.get('stage')}: {progress.get('done')}{total}")
    return "\n".join(lines)


def cmd_list(args: argparse.Namespace, config: ControllerConfig) -> int:
    """`kubectl embrel list [-A]`: NAME ALIAS VERSION PHASE LIVE AGE, as kubectl prints."""
    kube = _connect(args)
    namespace = None if args.all_namespaces else (args.namespace or kube.default_namespace)
    items, _ = kube.list_releases(namespace)
    items.sort(key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]))
    if args.output == "json":
        print_json(items)
        return ExitCode.OK
    if not items:
        where = f"namespace {namespace}" if namespace else "any namespace"
        print(f"No EmbeddingReleases found in {where}.", file=sys.stderr)
        return ExitCode.OK
    print(format_release_table(items, all_namespaces=namespace is None, now=time.time()))
    return ExitCode.OK


def cmd_get(args: argparse.Namespace, config: ControllerConfig) -> int:
    """`kubectl embrel get NAME [--watch]`: the release; with --watch again on each change."""
    from controller.drivers.kube import release_changes

    kube = _connect(args)
    namespace = args.namespace or kube.default_namespace
    show = (lambda o: json.dumps(o, indent=2)) if args.output == "json" else describe_release
    if not args.watch:
        print(show(kube.get_release(namespace, args.track)))
        return ExitCode.OK
    try:
        last = None
        for obj in release_changes(kube, namespace, args.track):
            if obj is None:
                print(f"EmbeddingRelease {namespace}/{args.track} was deleted", flush=True)
                return ExitCode.OK
            if (text := show(obj)) != last:
                print(text if last is None else f"\n{text}", flush=True)
                last = text
    except KeyboardInterrupt:  # Ctrl-C is how a watch ends
        return ExitCode.OK
    return ExitCode.OK


def cmd_request(args: argparse.Namespace, config: ControllerConfig) -> int:
    """`embrel promote|abort|rollback NAME --kube`: annotate, then wait for the controller."""
    from controller.drivers.kube import ANNOTATIONS, request_intent, wait_for_intent

    kube = _connect(args)
    namespace = args.namespace or kube.default_namespace
    value = (getattr(args, "to", None) or "true") if args.intent == "rollback" else "true"
    before = _status_of(request_intent(kube, namespace, args.track, args.intent, value))
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
    done = carried_out(args.intent, st, getattr(args, "to", None), before, obj)
    return ExitCode.OK if done else ExitCode.FAILED


def carried_out(
    intent: str,
    st: ReleaseStatus,
    wanted: str | None = None,
    before: ReleaseStatus | None = None,
    obj: dict[str, Any] | None = None,
) -> bool:
    """Whether the controller's status shows the request done (the annotation is gone).

    A suspended release keeps the phase Suspended after a rollback or an abort: the
    live version moved (rollback), or the history records the version aborted."""
    if intent == "promote":
        return st.phase == Phase.LIVE
    if intent == "abort":
        ready = next((c for c in st.conditions if c.type == "Ready"), None)
        version = ((obj or {}).get("spec") or {}).get("version")
        aborted = any(h.version == version and h.outcome == "Aborted" for h in st.history)
        return (ready is not None and ready.reason == "Aborted") or aborted
    live = (st.live or {}).get("version")
    moved = before is not None and live != (before.live or {}).get("version")
    return st.phase == Phase.ROLLED_BACK or (live == wanted if wanted else moved)
