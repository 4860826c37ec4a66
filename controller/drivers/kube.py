"""The Kubernetes driver: EmbeddingRelease objects in, Milvus releases out.

    Informer (list + watch per namespace) --key--> WorkQueue --key--> worker threads
         cache of objects, relist on 410          one worker per key      Engine.reconcile
         (drivers/informer.py)                    backoff per key         status, Events,
                                                  (drivers/workqueue.py)  finalizer
    LeaderElector (a coordination.k8s.io Lease, drivers/leader.py): only the leader
    runs workers

It only wraps the engine: the engine is level-triggered, so resuming a release after
a restart or a failover is reconciling it again. What Kubernetes adds:

* intents from annotations (``embrel.dev/promote``, ``/abort``, ``/rollback``), read
  again before every step and removed once the engine reports them applied (or the
  release settled without needing them, so a stale request never acts later);
* status written only through the status subresource, with the resourceVersion that
  was read (a 409 is retried on the freshly read object), between steps and, for
  long loads and index builds, with progress at a bounded rate;
* engine events as core/v1 Events on the object (repeats bump ``count``);
* the finalizer ``embrel.dev/finalizer``: ``deletionPolicy: Retain`` leaves Milvus as
  it is; ``Delete`` drops the collections this track owns, the alias last;
* Milvus credentials from the Secret in ``spec.milvus.secretRef`` (over the env vars),
  never copied into status, Events or logs.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from controller.config import ControllerConfig, Credentials, credentials_from_env
from controller.drivers import wiring
from controller.drivers.informer import Informer, needs_reconcile, track_key
from controller.drivers.leader import LeaderElector, micro_time
from controller.drivers.workqueue import WorkQueue
from controller.engine import Intents, Observation, ReconcileResult, utc_now
from controller.errors import (
    EmbrelError,
    KubeConflict,
    KubeGone,
    KubeNotFound,
    PermanentError,
    SpecError,
    TemporaryError,
)
from controller.kube import KubeGateway
from controller.metrics import error_reason
from controller.ports import Advance, MilvusPort, Telemetry
from controller.secrets import MissingSecret, SecretHolder, env_secrets, storage_settings
from controller.spec import EmbeddingRelease, release_from_dict
from controller.status import Phase, Reason, ReleaseStatus, with_phase

log = logging.getLogger(__name__)

FINALIZER = "embrel.dev/finalizer"
ANNOTATIONS = {
    "promote": "embrel.dev/promote",
    "abort": "embrel.dev/abort",
    "rollback": "embrel.dev/rollback",  # "true" (the previous version) or a version
}
COMPONENT = "embrel-controller"
# Repeats of one Event (same object, reason, message) within this window bump its count.
EVENT_REPEAT_WINDOW = 600.0
MAX_EVENT_MESSAGE = 1024  # what kube-apiserver accepts for an Event's message
STATUS_ATTEMPTS = 5


# -- Events and status -------------------------------------------------------------------


class Redactor:
    """Replaces every secret value this process has read with ``<redacted>``."""

    def __init__(self) -> None:
        self._secrets: set[str] = set()
        self._lock = threading.Lock()

    def add(self, values: list[str]) -> None:
        # Also as escaped inside JSON: the status is redacted as JSON text.
        forms = {f for v in values if len(v) >= 4 for f in (v, json.dumps(v)[1:-1])}
        with self._lock:
            self._secrets.update(forms)

    def __call__(self, text: str) -> str:
        with self._lock:
            secrets = sorted(self._secrets, key=len, reverse=True)
        for secret in secrets:
            text = text.replace(secret, "<redacted>")
        return text


_CAMEL = re.compile(r"^[A-Z][A-Za-z0-9]*$")


def camel_reason(reason: str) -> str:
    """Event reasons are CamelCase (API conventions); anything else is made so."""
    if _CAMEL.match(reason):
        return reason
    words = re.split(r"[^A-Za-z0-9]+", reason)
    return "".join(w[:1].upper() + w[1:] for w in words if w) or "Progress"


class EventRecorder:
    """core/v1 Events on EmbeddingReleases. Best effort: a failed write is only logged."""

    def __init__(self, kube: KubeGateway, instance: str, redact: Callable[[str], str]) -> None:
        self.kube = kube
        self.instance = instance
        self.redact = redact
        self._seen: dict[tuple[str, str, str, str], tuple[str, int, float]] = {}
        self._lock = threading.Lock()

    def record(
        self, obj: Mapping[str, Any], reason: str, message: str, warning: bool = False
    ) -> None:
        meta = obj["metadata"]
        namespace = meta.get("namespace", "default")
        kind = "Warning" if warning else "Normal"
        reason = camel_reason(reason)
        message = self.redact(message)[:MAX_EVENT_MESSAGE]
        key = (str(meta.get("uid", "")), kind, reason, message)
        now = micro_time()
        with self._lock:
            seen = self._seen.get(key)
        try:
            if seen and time.monotonic() - seen[2] < EVENT_REPEAT_WINDOW:
                name, count = seen[0], seen[1] + 1
                self.kube.patch_event(namespace, name, {"count": count, "lastTimestamp": now})
            else:
                name, count = f"{meta['name']}.{uuid.uuid4().hex[:16]}", 1
                self.kube.create_event(namespace, self._body(obj, name, kind, reason, message, now))
        except EmbrelError as exc:
            log.warning("could not record Event %s on %s: %s", reason, track_key(obj), exc)
            return
        with self._lock:
            if len(self._seen) > 2000:
                self._seen.clear()
            self._seen[key] = (name, count, time.monotonic())

    def _body(
        self, obj: Mapping[str, Any], name: str, kind: str, reason: str, message: str, now: str
    ) -> dict[str, Any]:
        meta = obj["metadata"]
        return {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": meta.get("namespace", "default")},
            "involvedObject": {
                "apiVersion": obj.get("apiVersion", "embrel.dev/v1alpha1"),
                "kind": obj.get("kind", "EmbeddingRelease"),
                "name": meta["name"],
                "namespace": meta.get("namespace", "default"),
                "uid": meta.get("uid"),
                "resourceVersion": meta.get("resourceVersion"),
            },
            "reason": reason,
            "message": message,
            "type": kind,
            "count": 1,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "source": {"component": COMPONENT},
            "reportingComponent": "embrel.dev/controller",
            "reportingInstance": self.instance,
        }


class StatusWriter:
    """Writes one release's status through the status subresource.

    Every write is a PUT carrying the resourceVersion last read; a 409 re-reads the
    object and writes again on the fresh one. Between steps the status is written
    when it changed; progress of a long step at most every ``interval`` seconds.
    """

    def __init__(
        self,
        kube: KubeGateway,
        obj: dict[str, Any],
        redact: Callable[[str], str],
        interval: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.kube = kube
        self.obj = obj
        self.redact = redact
        self.interval = interval
        self.clock = clock
        self.current: dict[str, Any] = dict(obj.get("status") or {})
        self._last_write = float("-inf")
        self.writes = 0
        self.conflicts = 0

    def status(self, status: ReleaseStatus) -> None:
        """Between steps (the engine's ``on_status``): write what changed."""
        body = self._render(status)
        if (self.current.get("phase"), self.current.get("message")) == (
            body.get("phase"),
            body.get("message"),
        ):
            return
        try:
            self.write(body)
        except EmbrelError as exc:  # the status after the pass is the one that counts
            log.warning("could not write the status of %s: %s", track_key(self.obj), exc)

    def progress(self, stage: str, done: int, total: int | None, force: bool = False) -> None:
        if not force and self.clock() - self._last_write < self.interval:
            return
        progress = {"stage": stage, "done": done, "updatedAt": utc_now()}
        if total is not None:
            progress["total"] = total
        self.write({**self.current, "progress": progress})

    def final(self, status: ReleaseStatus) -> None:
        self.write(self._render(status))

    def _render(self, status: ReleaseStatus) -> dict[str, Any]:
        body: dict[str, Any] = json.loads(self.redact(json.dumps(status.to_dict())))
        return body

    def write(self, body: dict[str, Any]) -> None:
        self.current = body
        if body == (self.obj.get("status") or {}):
            return
        meta = self.obj["metadata"]
        for _ in range(STATUS_ATTEMPTS):
            try:
                self.obj = self.kube.replace_status({**self.obj, "status": body})
                self.writes += 1
                self._last_write = self.clock()
                return
            except KubeConflict:
                self.conflicts += 1  # someone else wrote: re-read, write on the fresh object
                self.obj = self.kube.get_release(meta["namespace"], meta["name"])
        raise KubeConflict(
            f"status of {track_key(self.obj)} kept changing under us "
            f"({STATUS_ATTEMPTS} conflicts in a row); will retry"
        )


class KubeReporter:
    """The engine's Reporter for one pass: Events on the object, progress into status."""

    def __init__(
        self,
        recorder: EventRecorder,
        obj: Callable[[], Mapping[str, Any]],
        writer: StatusWriter,
        track: str = "",
    ) -> None:
        self.recorder = recorder
        self.obj = obj
        self.writer = writer
        self.track = track

    def event(self, reason: str, message: str, warning: bool = False) -> None:
        level = logging.WARNING if warning else logging.INFO
        log.log(level, "%s: %s: %s", self.track, reason, self.recorder.redact(message))
        self.recorder.record(self.obj(), reason, message, warning)

    @contextmanager
    def progress(self, stage: str, total: int | None) -> Iterator[Advance]:
        done = 0

        def advance(rows: int) -> None:
            nonlocal done
            done += rows
            try:
                self.writer.progress(stage, done, total)
            except EmbrelError as exc:  # progress is best effort; the pass goes on
                log.warning("could not write progress of %s: %s", self.track, exc)

        try:
            self.writer.progress(stage, 0, total, force=True)
        except EmbrelError as exc:
            log.warning("could not write progress of %s: %s", self.track, exc)
        yield advance


# -- intents ----------------------------------------------------------------------------


def intents_of(obj: Mapping[str, Any] | None) -> Intents:
    """Requests from the annotations: promote/abort "true", rollback "true" or a version."""
    annotations = ((obj or {}).get("metadata") or {}).get("annotations") or {}
    rollback = str(annotations.get(ANNOTATIONS["rollback"], "")).strip()
    return Intents(
        promote=_truthy(annotations.get(ANNOTATIONS["promote"])),
        abort=_truthy(annotations.get(ANNOTATIONS["abort"])),
        rollback=bool(rollback) and rollback.lower() != "false",
        rollback_to=None if rollback.lower() in ("", "true", "false") else rollback,
    )


def _truthy(value: Any) -> bool:
    return str(value or "").strip().lower() == "true"


def requested(intents: Intents) -> set[str]:
    return {n for n in ("promote", "abort", "rollback") if getattr(intents, n)}


# -- deletion ---------------------------------------------------------------------------


def deletion_plan(release: EmbeddingRelease, obs: Observation) -> list[tuple[str, str]]:
    """What ``deletionPolicy: Delete`` does: (action, name) with action "drop" or
    "drop_alias", in order. Only collections this track owns (invariant 3), and none
    that another alias points to; the alias goes last (when it points at a collection
    of this track), right before the collection behind it: Milvus would otherwise drop
    the alias with the collection, or refuse."""
    track, alias = release.track, release.spec.alias
    live = obs.alias_target
    owned = {c.name: c for c in obs.owned(track)}

    def pinned(name: str) -> bool:
        return any(a != alias for a in owned[name].aliases)

    plan = [("drop", n) for n in sorted(owned) if n != live and not pinned(n)]
    if live is not None and live in owned:
        plan.append(("drop_alias", alias))
        if not pinned(live):
            plan.append(("drop", live))
    return plan


# -- the controller ----------------------------------------------------------------------


class SecretUnavailable(TemporaryError):
    """A Secret the spec names (milvus.secretRef, storage.secretRef) does not exist (yet)."""

    reason = Reason.SECRET_UNAVAILABLE


class SecretInvalid(PermanentError):
    """A Secret the spec names lacks the keys, or may not be read."""

    reason = Reason.SECRET_UNAVAILABLE


@dataclass(frozen=True)
class KubeOptions:
    namespaces: tuple[str, ...] = ()  # empty: every namespace
    workers: int = 4
    leader_elect: bool = True
    lease_name: str = "embrel-controller"
    lease_namespace: str | None = None  # default: the pod's (or kubeconfig context's)
    lease_duration: int = 15
    resync_seconds: float = 300.0
    watch_timeout: int = 300
    progress_interval: float = 2.0
    backoff_base: float = 1.0
    backoff_max: float = 300.0
    shutdown_grace: float = 25.0  # a running step may finish (terminationGracePeriodSeconds 30)
    identity: str = field(
        default_factory=lambda: (
            os.environ.get("POD_NAME") or f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}"
        )
    )
    base_dir: Path = field(default_factory=Path.cwd)  # relative paths in specs


class KubeController:
    """Reconciles EmbeddingReleases from the API server against Milvus."""

    def __init__(
        self,
        kube: KubeGateway,
        config: ControllerConfig,
        options: KubeOptions,
        telemetry: Telemetry | None = None,  # NullTelemetry when None
        on_lost_leadership: Callable[[], None] | None = None,
    ) -> None:
        self.kube = kube
        self.config = config
        self.options = options
        # Reports are linked as /reports/... paths, served on the metrics port.
        self.engines = wiring.EngineFactory(
            config, telemetry, report_urls=True, hook_secrets=self._hook_secret
        )
        self.telemetry: Telemetry = self.engines.telemetry
        self.stop = threading.Event()
        self.queue = WorkQueue(options.backoff_base, options.backoff_max)
        self.redact = Redactor()
        self.recorder = EventRecorder(kube, options.identity, self.redact)
        self.informers = [
            Informer(kube, ns, self._on_change, self.stop, options.watch_timeout)
            for ns in (options.namespaces or (None,))
        ]
        self.elector: LeaderElector | None = None
        if options.leader_elect:
            self.elector = LeaderElector(
                kube,
                options.lease_namespace or kube.default_namespace,
                options.lease_name,
                options.identity,
                options.lease_duration,
                on_started=self._start_workers,
                on_stopped=on_lost_leadership or self._lost_leadership,
            )
        self._threads: list[threading.Thread] = []
        self._workers_started = False
        self._shut_down = False
        self.reconciles = 0

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> None:
        for informer in self.informers:
            self._spawn(informer.run, f"informer-{informer.namespace or 'all'}")
        self._spawn(self._resync_loop, "resync")
        elector = self.elector
        if elector is not None:
            self._spawn(lambda: elector.run(self.stop), "leader-election")
        else:
            self._start_workers()

    def run(self) -> None:
        """Start, then block until ``stop`` is set; then shut down in order."""
        self.start()
        try:
            while not self.stop.wait(0.5):
                pass
        finally:
            self.shutdown()

    def shutdown(self) -> None:
        if self._shut_down:
            return
        self._shut_down = True
        self.stop.set()
        self.queue.shutdown()
        workers = [t for t in self._threads if t.name.startswith("worker")]
        deadline = time.monotonic() + self.options.shutdown_grace
        for thread in workers:  # a running step finishes first
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        for thread in self._threads:
            if thread.name == "leader-election":
                thread.join(timeout=10)
        if any(t.is_alive() for t in workers):
            # Releasing now would let a standby act while our step still runs.
            log.warning("a step is still running; leaving the Lease to expire")
            return
        if self.elector is not None:
            self.elector.release()
        self.engines.close()

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _start_workers(self) -> None:
        self.telemetry.set_leader(True)
        if self._workers_started:
            return
        self._workers_started = True
        for informer in self.informers:  # a new leader looks at everything: resume in-flight
            for key in informer.known_keys():
                self.queue.add(key)
        for i in range(self.options.workers):
            self._spawn(self._worker, f"worker-{i}")

    def _lost_leadership(self) -> None:
        # A step may be running on a worker thread and cannot be interrupted safely;
        # exiting is the only way to guarantee that two replicas never act at once.
        # Kubernetes restarts the pod, which then stands by.
        log.error("lost leadership; exiting so that only one replica acts")
        logging.shutdown()
        os._exit(1)

    def synced(self) -> bool:
        return all(i.synced.is_set() for i in self.informers)

    def ready(self) -> bool:
        """Readiness: the watch is synced and this replica leads or stands by healthily."""
        if not self.synced():
            return False
        return self.elector is None or self.elector.leader or self.elector.healthy

    # -- events in ---------------------------------------------------------------

    def _on_change(self, key: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        if needs_reconcile(old, new):
            self.queue.add(key)

    def _resync_loop(self) -> None:
        while not self.stop.wait(self.options.resync_seconds):
            for informer in self.informers:
                for key in informer.known_keys():
                    self.queue.add(key)

    def _cached(self, key: str) -> dict[str, Any] | None:
        for informer in self.informers:
            if (obj := informer.get(key)) is not None:
                return obj
        return None

    # -- workers -----------------------------------------------------------------

    def _worker(self) -> None:
        while not self.stop.is_set():
            key = self.queue.get(timeout=0.5)
            if key is None:
                continue
            try:
                self._process(key)
            finally:
                self.queue.done(key)

    def _process(self, key: str) -> None:
        try:
            result = self.reconcile(key)
        except TemporaryError as exc:
            delay = self.queue.add_rate_limited(key, exc.delay)
            log.warning("%s: %s; retrying in %.1fs", key, self.redact(str(exc)), delay)
            return
        except Exception as exc:  # a bug or a permanent API refusal: back off, keep going
            delay = self.queue.add_rate_limited(key)
            log.exception("%s: %s; retrying in %.1fs", key, self.redact(str(exc)), delay)
            return
        if result is not None and result.error is not None and not result.done:
            self.queue.add_rate_limited(key, result.requeue_after or 0.0)
            return
        self.queue.forget(key)
        if result is not None and result.requeue_after:
            self.queue.add_after(key, result.requeue_after)

    def reconcile(self, key: str) -> ReconcileResult | None:
        """One pass for one release; None when there was nothing for the engine to do."""
        if self._cached(key) is None:
            return None  # gone; its finalizer ran before it went
        namespace, name = key.split("/", 1)
        try:
            # Fresh, not from the cache: our last status write may not have come back yet.
            obj = self.kube.get_release(namespace, name)
        except KubeNotFound:
            return None
        self.reconciles += 1
        meta = obj["metadata"]
        if meta.get("deletionTimestamp"):
            if FINALIZER in (meta.get("finalizers") or []):
                self._finalize(obj)
            return None
        if FINALIZER not in (meta.get("finalizers") or []):
            obj = self._add_finalizer(obj)
        try:
            release = release_of(obj)
        except SpecError as exc:
            self._invalid_spec(obj, exc)
            return None
        return self._run_engine(key, obj, release)

    def _run_engine(
        self, key: str, obj: dict[str, Any], release: EmbeddingRelease
    ) -> ReconcileResult:
        generation = int(obj["metadata"].get("generation") or 0)
        writer = StatusWriter(self.kube, obj, self.redact, self.options.progress_interval)
        reporter = KubeReporter(self.recorder, lambda: writer.obj, writer, release.track)
        previous = ReleaseStatus.from_dict(obj.get("status") or {})
        seen: set[str] = set()

        def intents() -> Intents:
            current = intents_of(self._cached(key))
            seen.update(requested(current))
            return current

        try:
            engine = self.engines.engine(
                self.gateway(release, obj),
                self.options.base_dir,
                reporter,
                writer.status,
                storage_settings(release, self._secret_data),
                fence=self.elector,  # None without leader election: one replica, always acts
            )
            result = engine.reconcile(release, intents, previous, generation)
        except (TemporaryError, PermanentError) as exc:
            # Could not even connect, no Secret yet, the Secret lacks its keys, Milvus refused.
            result = wiring.failed_pass(previous, exc, generation, utc_now())
            reporter.event(exc.reason, str(exc), warning=True)
        writer.final(result.status)
        self._clear_intents(key, writer.obj, set(result.applied) | (seen if result.done else set()))
        self._observe(release, result)
        return result

    def _observe(self, release: EmbeddingRelease, result: ReconcileResult) -> None:
        self.telemetry.observe_status(release, result.status)
        if result.error is not None:
            self.telemetry.reconcile_error(release.track, error_reason(result.error))

    def gateway(self, release: EmbeddingRelease, obj: Mapping[str, Any]) -> MilvusPort:
        """A Milvus gateway per (uri, db, credentials); the Secret wins over the env vars."""
        ref = release.spec.milvus
        if ref.secret_ref:
            creds = self._credentials(obj["metadata"].get("namespace", "default"), ref.secret_ref)
        else:
            creds = credentials_from_env()
            self.redact.add(creds.values())
        return self.engines.gateway(ref, self.options.base_dir, creds)

    def _hook_secret(self, hook: SecretHolder, namespace: str) -> str | None:
        """A webhook's HMAC secret or Prometheus' bearer token: key ``secret`` of the
        Secret in ``secretRef`` (in the release's namespace), else ``secretEnv`` from the
        environment."""
        if hook.secret_ref is None:
            return env_secrets()(hook, namespace)
        try:
            value = self.kube.read_secret_value(
                namespace, hook.secret_ref, "secret", f"secretRef of {hook.name}"
            )
        except EmbrelError as exc:
            raise MissingSecret(str(exc)) from exc
        self.redact.add([value])
        return value

    def _secret_data(self, namespace: str, name: str, field: str) -> dict[str, str]:
        """Every key of a Secret (spec.storage.secretRef), its values redacted from
        everything this driver writes."""
        try:
            data = self.kube.read_secret_data(namespace, name, field)
        except KubeNotFound as exc:
            raise SecretUnavailable(str(exc), delay=30.0) from exc
        except PermanentError as exc:
            raise SecretInvalid(str(exc)) from exc
        self.redact.add(list(data.values()))
        return data

    def _credentials(self, namespace: str, name: str) -> Credentials:
        try:
            secret = self.kube.read_credentials(namespace, name)
        except KubeNotFound as exc:
            # A Secret created later triggers no watch event here: retry on a timer.
            raise SecretUnavailable(str(exc), delay=30.0) from exc
        except PermanentError as exc:
            raise SecretInvalid(str(exc)) from exc
        self.redact.add(secret.values())
        return secret

    # -- metadata writes -----------------------------------------------------------

    def _patch_metadata(
        self,
        obj: dict[str, Any],
        change: Callable[[dict[str, Any]], dict[str, Any] | None],
    ) -> dict[str, Any]:
        """A merge patch of metadata guarded by the resourceVersion; on 409, re-read and
        recompute. ``change(metadata)`` returns the patch, or None when nothing is left."""
        meta = obj["metadata"]
        for _ in range(STATUS_ATTEMPTS):
            patch = change(obj["metadata"])
            if patch is None:
                return obj
            patch["resourceVersion"] = obj["metadata"]["resourceVersion"]
            try:
                return self.kube.patch_release(meta["namespace"], meta["name"], {"metadata": patch})
            except KubeConflict:
                obj = self.kube.get_release(meta["namespace"], meta["name"])
        raise KubeConflict(f"{track_key(obj)} kept changing under us; will retry")

    def _add_finalizer(self, obj: dict[str, Any]) -> dict[str, Any]:
        def add(meta: dict[str, Any]) -> dict[str, Any] | None:
            finalizers = list(meta.get("finalizers") or [])
            return None if FINALIZER in finalizers else {"finalizers": [*finalizers, FINALIZER]}

        return self._patch_metadata(obj, add)

    def _remove_finalizer(self, obj: dict[str, Any]) -> None:
        def remove(meta: dict[str, Any]) -> dict[str, Any] | None:
            finalizers = list(meta.get("finalizers") or [])
            if FINALIZER not in finalizers:
                return None
            return {"finalizers": [f for f in finalizers if f != FINALIZER]}

        with suppress(KubeNotFound):  # already gone
            self._patch_metadata(obj, remove)

    def _clear_intents(self, key: str, obj: dict[str, Any], names: set[str]) -> None:
        """Remove request annotations that were carried out (or are moot: the release settled)."""
        wanted = {ANNOTATIONS[n] for n in names}

        def clear(meta: dict[str, Any]) -> dict[str, Any] | None:
            present = wanted & set(meta.get("annotations") or {})
            return {"annotations": dict.fromkeys(present)} if present else None

        try:
            self._patch_metadata(obj, clear)
        except KubeNotFound:
            return
        if wanted:
            log.info("%s: cleared requests %s", key, ", ".join(sorted(wanted)))

    def _invalid_spec(self, obj: dict[str, Any], exc: SpecError) -> None:
        """Failed with the field paths; one Warning per generation, no retries."""
        generation = int(obj["metadata"].get("generation") or 0)
        previous = ReleaseStatus.from_dict(obj.get("status") or {})
        message = str(exc)
        if previous.observed_generation == generation and previous.message == message:
            return
        status = replace(previous, observed_generation=generation)
        status = with_phase(status, Phase.FAILED, Reason.INVALID_SPEC, message, utc_now())
        StatusWriter(self.kube, obj, self.redact).final(status)
        self.recorder.record(obj, Reason.INVALID_SPEC, message, warning=True)

    # -- deletion ------------------------------------------------------------------

    def _finalize(self, obj: dict[str, Any]) -> None:
        policy = (obj.get("spec") or {}).get("deletionPolicy", "Retain")
        if policy == "Delete":
            try:
                release = release_of(obj)
            except SpecError as exc:
                self.recorder.record(
                    obj,
                    Reason.DELETING,
                    f"spec is invalid, so nothing in Milvus can be identified; "
                    f"leaving Milvus as it is ({exc})",
                    warning=True,
                )
            else:
                self._delete_from_milvus(obj, release)
        else:
            self.recorder.record(
                obj,
                Reason.DELETING,
                "deletionPolicy Retain: the alias and collections stay in Milvus",
            )
        self._remove_finalizer(obj)
        self.telemetry.forget(track_key(obj))

    def _delete_from_milvus(self, obj: dict[str, Any], release: EmbeddingRelease) -> None:
        writer = StatusWriter(self.kube, obj, self.redact)
        reporter = KubeReporter(self.recorder, lambda: writer.obj, writer, release.track)
        milvus = self.gateway(release, obj)
        obs = self.engines.observer(milvus, self.options.base_dir, reporter).observe(release)
        plan = deletion_plan(release, obs)
        kept = sorted(
            {c.name for c in obs.owned(release.track)} - {n for a, n in plan if a == "drop"}
        )
        for action, name in plan:
            if action == "drop_alias":
                milvus.drop_alias(name)
            else:
                milvus.drop(name)
        dropped = [n for a, n in plan if a == "drop"]
        message = f"deletionPolicy Delete: dropped {', '.join(dropped) or 'nothing'}"
        if ("drop_alias", release.spec.alias) in plan:
            message += f" and alias {release.spec.alias}"
        if kept:
            message += f"; kept {', '.join(kept)} (another alias points to it)"
        reporter.event(Reason.DELETING, message, warning=bool(kept))


def release_of(obj: Mapping[str, Any]) -> EmbeddingRelease:
    """The engine's model of a custom resource (server-set metadata left out)."""
    meta = obj.get("metadata") or {}
    data = {
        "apiVersion": obj.get("apiVersion"),
        "kind": obj.get("kind"),
        "metadata": {
            "name": meta.get("name"),
            "namespace": meta.get("namespace", "default"),
            "labels": meta.get("labels") or {},
            "annotations": meta.get("annotations") or {},
        },
        "spec": copy.deepcopy(obj.get("spec")),
    }
    return release_from_dict(data, f"EmbeddingRelease {track_key(obj)}")


# -- verbs for people (the CLI) ------------------------------------------------------------


def request_intent(
    kube: KubeGateway, namespace: str, name: str, intent: str, value: str = "true"
) -> dict[str, Any]:
    """Set a request annotation; the controller removes it once carried out."""
    patch = {"metadata": {"annotations": {ANNOTATIONS[intent]: value}}}
    return kube.patch_release(namespace, name, patch)


def wait_for_intent(
    kube: KubeGateway, namespace: str, name: str, intent: str, timeout: float
) -> dict[str, Any] | None:
    """The object once the controller removed the annotation; None on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        obj = kube.get_release(namespace, name)
        if ANNOTATIONS[intent] not in (obj["metadata"].get("annotations") or {}):
            return obj
        time.sleep(0.5)
    return None


def release_changes(
    kube: KubeGateway, namespace: str, name: str, watch_timeout: int = 60
) -> Iterator[dict[str, Any] | None]:
    """The release now, then again after each change to it (the watch API, resumed from
    the last resourceVersion seen; relisted when that expired); None once it is deleted."""
    obj = kube.get_release(namespace, name)
    yield obj
    version = str(obj["metadata"].get("resourceVersion", ""))
    while True:
        try:
            for event in kube.watch_releases(namespace, version, watch_timeout, name=name):
                version = event.resource_version or version
                if event.type == "BOOKMARK" or event.object["metadata"].get("name") != name:
                    continue
                if event.type == "DELETED":
                    yield None
                    return
                yield event.object
        except KubeGone:  # too old to resume: read it again
            try:
                obj = kube.get_release(namespace, name)
            except KubeNotFound:
                yield None
                return
            version = str(obj["metadata"].get("resourceVersion", ""))
            yield obj
