"""Prometheus metrics: the ``Telemetry`` port for the engine and a small HTTP server.

``serve_http`` answers ``/metrics`` (text exposition), ``/healthz`` (200 while the
process runs) and ``/readyz`` (200 when ``ready()``, else 503) from a daemon thread.
``PrometheusTelemetry`` turns engine callbacks and release statuses into ``embrel_*``
series. Labels stay bounded: namespace, release, alias, version, plus small enums
(phase, step, gate, kind, operation, reason, metric); never ids or free text. Every
metric is listed in docs/observability.md; the dashboard and alert tests check that
they only use names defined here.

Series that describe a release's current state (info, phase, validation, drift) are
replaced as a whole on each update, so a version that went away leaves no stale series.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.metrics import MetricWrapperBase

from controller import monitoring
from controller.errors import EmbrelError
from controller.spec import EmbeddingRelease
from controller.status import Phase, ReleaseStatus

PREFIX = "embrel_"

CUTOVER_KINDS = ("promote", "rollback", "auto_rollback")
ROLLBACK_KIND = {"rollback": "manual", "auto_rollback": "auto"}
# Bucket bounds follow what each thing costs: steps run from milliseconds (a flip) to
# hours (a 100M-row build); a cutover is one alter_alias plus checks; Milvus calls are RPCs.
STEP_BUCKETS = (0.01, 0.05, 0.25, 1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 12 * 3600)
CUTOVER_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
MILVUS_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_ENUM = re.compile(r"^[A-Za-z][A-Za-z0-9_@./-]{0,63}$")


def bounded(value: str, fallback: str = "other") -> str:
    """``value`` if it looks like an enum member (a short word), else ``fallback``."""
    return value if _ENUM.match(value) else fallback


def error_reason(exc: BaseException) -> str:
    """A bounded reason for ``embrel_reconcile_errors_total``: the error's class name."""
    return type(exc).__name__ if isinstance(exc, EmbrelError) else "Unexpected"


# -- HTTP ------------------------------------------------------------------------


@dataclass(frozen=True)
class Document:
    """A file served besides the metrics (a validation report): bytes and headers."""

    body: bytes
    content_type: str
    headers: tuple[tuple[str, str], ...] = ()


DocumentSource = Callable[[str], Document | None]  # a URL path -> the document, or None
DOCUMENTS_PREFIX = "/reports/"


class MetricsServer:
    """A running ``serve_http``: ``.port`` is the bound port (useful with port 0)."""

    def __init__(self, httpd: ThreadingHTTPServer, thread: threading.Thread) -> None:
        self._httpd = httpd
        self._thread = thread

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


Response = tuple[int, bytes, str, tuple[tuple[str, str], ...]]  # code, body, type, headers
TEXT = "text/plain; charset=utf-8"


def serve_http(
    port: int,
    ready: Callable[[], bool] = lambda: True,
    host: str = "0.0.0.0",
    registry: CollectorRegistry = REGISTRY,
    documents: DocumentSource | None = None,
) -> MetricsServer:
    """Serve /metrics, /healthz and /readyz on ``host:port`` from a daemon thread; with
    ``documents``, also what it answers for paths under /reports/ (404 when None)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0].split("#", 1)[0]
            code, body, ctype, headers = _answer(path, ready, registry, documents)
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("X-Content-Type-Options", "nosniff")
            for name, value in headers:
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # a scrape every few seconds is not news

    httpd = ThreadingHTTPServer((host, port), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, name="embrel-metrics", daemon=True)
    thread.start()
    return MetricsServer(httpd, thread)


def _answer(
    path: str,
    ready: Callable[[], bool],
    registry: CollectorRegistry,
    documents: DocumentSource | None,
) -> Response:
    """What the server answers for a GET of ``path`` (the query already removed)."""
    if path.startswith(DOCUMENTS_PREFIX) and documents is not None:
        doc = _safe_document(documents, path)
        if doc is None:
            return 404, b"no such report\n", TEXT, ()
        return 200, doc.body, doc.content_type, doc.headers
    if path == "/metrics":
        return 200, generate_latest(registry), CONTENT_TYPE_LATEST, ()
    if path == "/healthz":
        return 200, b"ok\n", TEXT, ()
    if path == "/readyz":
        ok = _safe(ready)
        return (200, b"ready\n", TEXT, ()) if ok else (503, b"not ready\n", TEXT, ())
    return 404, b"not found: try /metrics, /healthz or /readyz\n", TEXT, ()


def _safe_document(documents: DocumentSource, path: str) -> Document | None:
    try:
        return documents(path)
    except Exception:  # whatever went wrong: a 404, never a traceback or a file's path
        return None


def _safe(ready: Callable[[], bool]) -> bool:
    try:
        return bool(ready())
    except Exception:  # a readiness probe that raises means "not ready", not a 500
        return False


# -- telemetry -------------------------------------------------------------------


@dataclass
class _Track:
    """What the telemetry remembers of one release track."""

    namespace: str
    release: str
    alias: str = ""
    version: str = ""
    live: str = ""  # the live collection, whose drift the gauges show
    thresholds: dict[str, float] = field(default_factory=dict)
    drift: dict[str, float] = field(default_factory=dict)
    phase: tuple[str, str] | None = None  # (phase, version) last seen
    progress: dict[str, tuple[float, int, int]] = field(default_factory=dict)
    # label values currently set, per metric name, so that they can be replaced or removed
    series: dict[str, set[tuple[str, ...]]] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.release)


class PrometheusTelemetry:
    """``Telemetry`` for the engine, plus what drivers report (status, errors, leader)."""

    def __init__(
        self,
        registry: CollectorRegistry = REGISTRY,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.registry = registry
        self._monotonic = monotonic  # for throughput; tests pass their own
        self._lock = threading.RLock()
        self._tracks: dict[str, _Track] = {}
        self._leader = False
        r, nr = ["namespace", "release"], registry

        def gauge(name: str, doc: str, labels: list[str]) -> Gauge:
            return Gauge(PREFIX + name, doc, labels, registry=nr)

        def counter(name: str, doc: str, labels: list[str]) -> Counter:
            return Counter(PREFIX + name, doc, labels, registry=nr)

        def histogram(
            name: str, doc: str, labels: list[str], buckets: tuple[float, ...]
        ) -> Histogram:
            return Histogram(PREFIX + name, doc, labels, buckets=buckets, registry=nr)

        self.release_info = gauge(
            "release_info",
            "Live and candidate versions of each release (value 1)",
            [*r, "alias", "version", "collection", "model", "role"],
        )
        self.release_phase = gauge(
            "release_phase",
            "Phase of each release, one-hot over every phase; version is spec.version",
            [*r, "version", "phase"],
        )
        self.last_transition = gauge(
            "last_transition_timestamp_seconds",
            "Unix time of the release's last phase (or version) change",
            r,
        )
        self.rows_loaded = gauge(
            "build_rows_loaded", "Rows done so far in a build stage", [*r, "stage"]
        )
        self.rows_total = gauge(
            "build_rows_total", "Rows a build stage has to do (when known)", [*r, "stage"]
        )
        self.rows_per_second = gauge(
            "build_rows_per_second", "Mean throughput of the current build stage", [*r, "stage"]
        )
        self.import_progress = gauge(
            "bulk_import_progress_ratio",
            "Progress of the running bulk import (0..1 over all its jobs)",
            r,
        )
        self.import_failures = counter(
            "bulk_import_failed_jobs", "Bulk import jobs Milvus reported failed", r
        )
        self.step_duration = histogram(
            "step_duration_seconds", "Duration of engine steps", ["step"], STEP_BUCKETS
        )
        self.step_failures = counter("step_failures", "Engine steps that raised", ["step"])
        self.validation_value = gauge(
            "validation_value", "Measured value of each validation gate", [*r, "version", "gate"]
        )
        self.validation_threshold = gauge(
            "validation_threshold", "Threshold of each validation gate", [*r, "version", "gate"]
        )
        self.validation_passed = gauge(
            "validation_passed", "1 when the gate passed, else 0", [*r, "version", "gate"]
        )
        self.cutovers = counter("cutovers", "Alias cutovers by kind", ["kind"])
        self.cutover_duration = histogram(
            "cutover_duration_seconds",
            "Time from the flip until readers saw it",
            ["kind"],
            CUTOVER_BUCKETS,
        )
        self.rollbacks = counter("rollbacks", "Rollbacks, manual or automatic", [*r, "kind"])
        self.flips_refused = counter(
            "flips_refused",
            "Flips refused right before alter_alias: fenced, or the alias moved",
            [*r, "reason"],
        )
        self.cutover_verified = gauge(
            "cutover_verified", "1 when the last cutover was verified, else 0", r
        )
        self.cutover_attempts = gauge("cutover_attempts", "Alias calls the last cutover needed", r)
        self.drift_values = {
            key: gauge(f"drift_{key}", f"Drift of the live collection: {key}", r)
            for key in monitoring.DRIFT_KEYS
        }
        self.drift_threshold = gauge(
            "drift_threshold", "Drift thresholds from spec.monitoring.thresholds", [*r, "metric"]
        )
        self.drift_breached = gauge(
            "drift_breached",
            "1 when the drift value is beyond its threshold or not a finite number",
            [*r, "metric"],
        )
        self.drift_measured = gauge(
            "drift_last_measured_timestamp_seconds", "Unix time of the last drift measurement", r
        )
        self.cache_hits = counter("embedding_cache_hits", "Embedding cache hits", r)
        self.cache_misses = counter("embedding_cache_misses", "Embedding cache misses", r)
        self.notifications_failed = counter(
            "notifications_failed",
            "Notifications (spec.notifications) not delivered after their retries",
            [*r, "notification"],
        )
        self.reconcile_errors = counter(
            "reconcile_errors", "Reconcile passes that ended in an error", [*r, "reason"]
        )
        self.milvus_duration = histogram(
            "milvus_request_duration_seconds",
            "Milvus calls (each attempt)",
            ["operation"],
            MILVUS_BUCKETS,
        )
        self.milvus_errors = counter(
            "milvus_request_errors", "Failed Milvus calls", ["operation", "kind"]
        )
        self.leader = gauge("leader", "1 while this process is the acting controller", [])
        self._metrics: dict[str, MetricWrapperBase] = {
            m._name: m
            for m in [*vars(self).values(), *self.drift_values.values()]
            if isinstance(m, MetricWrapperBase)
        }

    def series_names(self) -> dict[str, frozenset[str]]:
        """Every series name this telemetry can export, with its label names.

        Histograms export ``_bucket`` (with ``le``), ``_count`` and ``_sum``; counters
        ``_total``. The dashboard and alert tests check their expressions against this.
        """
        out: dict[str, frozenset[str]] = {}
        for name, metric in self._metrics.items():
            labels = frozenset(metric._labelnames)
            if metric._type == "histogram":
                out[f"{name}_bucket"] = labels | {"le"}
                out[f"{name}_count"] = out[f"{name}_sum"] = labels
            elif metric._type == "counter":
                out[f"{name}_total"] = labels
            else:
                out[name] = labels
        return out

    # -- Telemetry port (called by the engine) -------------------------------------

    def step_finished(self, track: str, step: str, seconds: float, ok: bool) -> None:
        name = bounded(step.lower())
        self.step_duration.labels(name).observe(seconds)
        if not ok:
            self.step_failures.labels(name).inc()

    def progress(self, track: str, stage: str, done: int, total: int | None) -> None:
        """``done`` counts rows since the stage began; the stage is reduced to its first word."""
        word = bounded(re.split(r"[^A-Za-z_]", stage.strip().lower(), maxsplit=1)[0] or "other")
        with self._lock:
            t = self._track(track)
            labels = (*t.key, word)
            now = self._monotonic()
            started, start_done, last = t.progress.get(word, (now, done, done))
            if done < last:  # the stage started over
                started, start_done = now, done
            t.progress[word] = (started, start_done, done)
            self._set(t, self.rows_loaded, labels, done)
            if total is not None:
                self._set(t, self.rows_total, labels, total)
            if now - started > 1e-3:
                self._set(t, self.rows_per_second, labels, (done - start_done) / (now - started))

    def cutover(self, track: str, kind: str, seconds: float, attempts: int, verified: bool) -> None:
        kind = kind if kind in CUTOVER_KINDS else "other"
        self.cutovers.labels(kind).inc()
        self.cutover_duration.labels(kind).observe(seconds)
        with self._lock:
            t = self._track(track)
            self._set(t, self.cutover_verified, t.key, 1.0 if verified else 0.0)
            self._set(t, self.cutover_attempts, t.key, attempts)
            if kind in ROLLBACK_KIND:
                self._count(t, self.rollbacks, (*t.key, ROLLBACK_KIND[kind]))

    def drift(self, track: str, values: Mapping[str, float]) -> None:
        with self._lock:
            t = self._track(track)
            known = {k: float(v) for k, v in values.items() if k in monitoring.DRIFT_KEYS}
            for key, value in known.items():
                self._set(t, self.drift_values[key], t.key, value)
            t.drift.update(known)
            if known:
                self._set(t, self.drift_measured, t.key, time.time())
            self._judge_drift(t)

    def cache(self, track: str, hits: int, misses: int) -> None:
        """``hits`` and ``misses`` since the previous call for this track."""
        with self._lock:
            t = self._track(track)
            self._count(t, self.cache_hits, t.key, hits)
            self._count(t, self.cache_misses, t.key, misses)

    def bulk_import(self, track: str, fraction: float, failed_jobs: int) -> None:
        with self._lock:
            t = self._track(track)
            self._set(t, self.import_progress, t.key, min(max(fraction, 0.0), 1.0))
            self._count(t, self.import_failures, t.key, failed_jobs)

    def notification_failed(self, track: str, notification: str) -> None:
        """One notification given up on; ``notification`` is its spec name (bounded)."""
        with self._lock:
            t = self._track(track)
            self._count(t, self.notifications_failed, (*t.key, bounded(notification)))

    def flip_refused(self, track: str, reason: str) -> None:
        """A flip refused by its fence; ``reason``: ``fenced`` or ``alias_moved``."""
        with self._lock:
            t = self._track(track)
            self._count(t, self.flips_refused, (*t.key, bounded(reason)))

    # -- what drivers report ------------------------------------------------------

    def observe_status(self, release: EmbeddingRelease, status: ReleaseStatus) -> None:
        """Phase, versions, validation and drift thresholds after a reconcile pass."""
        with self._lock:
            t = self._track(release.track)
            t.alias, t.version = release.spec.alias, release.spec.version
            self._info(t, status)
            self._phase(t, status)
            self._validation(t, status)
            t.thresholds = monitoring.thresholds(release.spec.monitoring.thresholds)
            self._replace(
                t, self.drift_threshold, {(*t.key, k): v for k, v in t.thresholds.items()}
            )
            live = str((status.live or {}).get("collection") or "")
            if live != t.live:  # drift is measured against the live collection's reference
                if t.live:  # a change, not the first sight of this release
                    self._clear_drift(t)
                t.live = live
            # The status holds the last measurement taken before this pass: it fills the
            # gauges after a restart, but never overwrites a newer engine callback.
            if not t.drift and (values := _drift_from_status(status.drift)):
                for key, value in values.items():
                    self._set(t, self.drift_values[key], t.key, value)
                t.drift.update(values)
            self._judge_drift(t)
            # Start the counters at 0 so that increase() sees the first rollback.
            for kind in ROLLBACK_KIND.values():
                self._count(t, self.rollbacks, (*t.key, kind), 0)

    def reconcile_error(self, track: EmbeddingRelease | str, reason: str) -> None:
        """Count a failed pass; ``reason`` is a short word such as ``error_reason(exc)``."""
        name = track if isinstance(track, str) else track.track
        with self._lock:
            t = self._track(name)
            self._count(t, self.reconcile_errors, (*t.key, bounded(reason, "Other")))

    def set_leader(self, leader: bool) -> None:
        self._leader = leader
        self.leader.set(1.0 if leader else 0.0)

    def is_leader(self) -> bool:
        """Readiness: only the acting controller is ready."""
        return self._leader

    def milvus_call(self, operation: str, seconds: float, error: str | None) -> None:
        """``MilvusGateway(observer=...)``: one call per attempt."""
        op = bounded(operation)
        self.milvus_duration.labels(op).observe(seconds)
        if error is not None:
            self.milvus_errors.labels(op, bounded(error)).inc()

    def forget(self, track: str) -> None:
        """Remove every series of a release that no longer exists."""
        with self._lock:
            t = self._tracks.pop(track, None)
            for name, label_sets in (t.series if t else {}).items():
                metric = self._metrics[name]
                for labels in label_sets:
                    metric.remove(*labels)

    # -- helpers --------------------------------------------------------------------

    def _track(self, track: str) -> _Track:
        if track not in self._tracks:
            namespace, _, name = track.rpartition("/")
            self._tracks[track] = _Track(namespace or "default", name)
        return self._tracks[track]

    def _set(self, t: _Track, metric: Gauge, labels: tuple[Any, ...], value: float) -> None:
        values = tuple(str(v) for v in labels)
        metric.labels(*values).set(value)
        t.series.setdefault(metric._name, set()).add(values)

    def _count(
        self, t: _Track, metric: Counter, labels: tuple[str, ...], amount: float = 1
    ) -> None:
        metric.labels(*labels).inc(amount)
        t.series.setdefault(metric._name, set()).add(labels)

    def _replace(self, t: _Track, metric: Gauge, values: Mapping[tuple[str, ...], float]) -> None:
        """Set exactly ``values`` for this track, removing its other series of ``metric``."""
        current = t.series.setdefault(metric._name, set())
        for gone in current - set(values):
            metric.remove(*gone)
        for labels, value in values.items():
            metric.labels(*labels).set(value)
        t.series[metric._name] = set(values)

    def _info(self, t: _Track, status: ReleaseStatus) -> None:
        info: dict[tuple[str, ...], float] = {}
        for role, part in (("live", status.live), ("candidate", status.candidate)):
            if part:
                labels = (
                    *t.key,
                    t.alias,
                    str(part.get("version") or ""),
                    str(part.get("collection") or ""),
                    str(part.get("model") or ""),
                    role,
                )
                info[labels] = 1.0
        self._replace(t, self.release_info, info)

    def _phase(self, t: _Track, status: ReleaseStatus) -> None:
        phase = str(status.phase)
        self._replace(
            t,
            self.release_phase,
            {(*t.key, t.version, str(p)): float(p == phase) for p in Phase},
        )
        if t.phase != (phase, t.version):
            # First sight after a restart: the newest condition transition is the best
            # estimate of when this phase began (conditions carry it across restarts).
            since = time.time() if t.phase is not None else _latest_transition(status)
            t.phase = (phase, t.version)
            self._set(t, self.last_transition, t.key, since)

    def _validation(self, t: _Track, status: ReleaseStatus) -> None:
        values: dict[tuple[str, ...], float] = {}
        thresholds: dict[tuple[str, ...], float] = {}
        passed: dict[tuple[str, ...], float] = {}
        for check in (status.validation or {}).get("checks", []):
            labels = (*t.key, t.version, bounded(str(check.get("name", "")), "unnamed"))
            if check.get("value") is not None:
                values[labels] = float(check["value"])
            if check.get("threshold") is not None:
                thresholds[labels] = float(check["threshold"])
            passed[labels] = 1.0 if check.get("passed", True) else 0.0
        self._replace(t, self.validation_value, values)
        self._replace(t, self.validation_threshold, thresholds)
        self._replace(t, self.validation_passed, passed)

    def _clear_drift(self, t: _Track) -> None:
        t.drift = {}
        for gauge in [*self.drift_values.values(), self.drift_measured]:
            self._replace(t, gauge, {})

    def _judge_drift(self, t: _Track) -> None:
        breached: dict[tuple[str, ...], float] = {}
        for key, threshold in t.thresholds.items():
            if key in t.drift:
                breached[(*t.key, key)] = float(monitoring.breached(key, t.drift[key], threshold))
        self._replace(t, self.drift_breached, breached)


def _drift_from_status(drift: Mapping[str, Any] | None) -> dict[str, float]:
    """Drift values the engine wrote into status (top level or under ``values``)."""
    if not drift:
        return {}
    out = {}
    for source in (drift, drift.get("values") or {}):
        if not isinstance(source, Mapping):
            continue
        for key in monitoring.DRIFT_KEYS:
            for name in (key, _camel(key)):
                value = source.get(name)
                if isinstance(value, int | float) and not isinstance(value, bool):
                    out[key] = float(value)
    return out


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.title() for p in rest)


def _latest_transition(status: ReleaseStatus) -> float:
    stamps = []
    for cond in status.conditions:
        try:
            stamps.append(datetime.fromisoformat(cond.last_transition_time).timestamp())
        except ValueError:
            continue
    return max(stamps, default=time.time())
