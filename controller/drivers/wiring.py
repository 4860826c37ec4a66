"""What both drivers build an engine from, and how a pass that could not run ends.

``EngineFactory`` holds what a controller process makes once and shares across
releases (and, in the Kubernetes driver, across worker threads): a Milvus gateway
per (uri, db, credentials), one embedder per ``spec.embedder``, the embedding cache,
the telemetry and the state folder's report and reference folders. Each driver keeps
only what is its own: where credentials come from, where status goes.

``connect_milvus`` is looked up at call time, so a test that replaces it puts an
in-memory ``MilvusPort`` behind every release of both drivers.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from controller.config import ControllerConfig, Credentials, RetryPolicy
from controller.drivers.folders import ReferenceFolder, ReportFolder
from controller.embedding.cache import EmbeddingCache
from controller.embedding.encoders import make_encoder
from controller.engine import Engine, ReconcileResult, Settings
from controller.errors import EmbrelError, TemporaryError
from controller.ports import (
    EmbedderFactory,
    EmbedderPort,
    Fence,
    MilvusPort,
    NullTelemetry,
    Reporter,
    Telemetry,
)
from controller.prometheus import PrometheusQuery
from controller.secrets import SecretSource, env_secrets
from controller.sources import LocalFiles
from controller.sources.location import StorageSettings
from controller.sources.staging import ParquetStaging
from controller.spec import EmbedderSpec, MilvusRef
from controller.status import Phase, ReleaseStatus, temporarily_failed, with_phase
from controller.webhooks import Notifier, WebhookClient

MilvusObserver = Callable[[str, float, str | None], None]
StatusHook = Callable[[ReleaseStatus], None]


def connect_milvus(
    uri: str,
    db: str,
    credentials: Credentials,
    policy: RetryPolicy,
    observer: MilvusObserver | None = None,
) -> MilvusPort:
    """A connection to the Milvus at ``uri`` (a server URL or a Milvus Lite file)."""
    from controller.milvus import MilvusGateway  # pymilvus: only once a release needs Milvus

    return MilvusGateway(uri, db, credentials, policy, observer=observer)


# -- settings from the controller config ---------------------------------------------


def engine_settings(config: ControllerConfig) -> Settings:
    """The engine's settings from the controller config."""
    build = config.build
    return Settings(
        batch_size=build.batch_size,
        index_timeout=build.index_timeout_seconds,
        load_timeout=build.load_timeout_seconds,
        import_timeout=build.import_timeout_seconds,
    )


def import_staging(config: ControllerConfig) -> ParquetStaging | None:
    """Where bulk imports stage their files; None when ``milvus.importStaging`` is unset."""
    opts = config.milvus.import_staging
    if opts is None:
        return None
    return ParquetStaging(opts.path, opts.remote(), opts.rows_per_file)


def retry_policy(config: ControllerConfig) -> RetryPolicy:
    opts = config.milvus
    return RetryPolicy(
        opts.retry_attempts,
        opts.retry_max_wait_seconds,
        opts.timeout_seconds,
        opts.call_timeout_seconds,
    )


def open_embedding_cache(config: ControllerConfig) -> EmbeddingCache | None:
    """The embedding cache of ``config.embeddingCache``; None when it is disabled."""
    opts = config.embedding_cache
    if not opts.enabled:
        return None
    return EmbeddingCache(opts.path or config.state_dir / "embedding-cache.sqlite", opts.max_bytes)


def milvus_uri(ref: MilvusRef, base_dir: Path) -> str:
    """The URI to connect to; a Milvus Lite path is relative to ``base_dir`` (created)."""
    uri = ref.uri.removeprefix("file://")
    if ref.is_lite:
        uri = str((base_dir / uri).resolve())
        Path(uri).parent.mkdir(parents=True, exist_ok=True)
    return uri


# -- the engine factory --------------------------------------------------------------


class EngineFactory:
    """Engines for one controller process; safe to use from several threads."""

    def __init__(
        self,
        config: ControllerConfig,
        telemetry: Telemetry | None = None,
        embedders: EmbedderFactory | None = None,
        report_urls: bool = False,
        hook_secrets: SecretSource | None = None,
    ) -> None:
        self.config = config
        self.telemetry: Telemetry = telemetry or NullTelemetry()
        # Webhook gates and notifications: one HTTP client, one delivery thread, shared
        # by every release; secrets from the driver (the environment, or Secrets).
        secrets = hook_secrets or env_secrets()
        self.webhooks = WebhookClient(secrets)
        self.notifier = Notifier(self.webhooks, self.telemetry)
        self.prometheus = PrometheusQuery(secrets)  # spec.analysis
        self.settings = engine_settings(config)
        # status.validation.report: a file path, or (report_urls) the path served over HTTP
        self.reports = ReportFolder(config.state_dir / "reports", urls=report_urls)
        self.references = ReferenceFolder(config.state_dir / "references")
        self._embedders = embedders  # tests and benchmarks count what is embedded
        self._lock = threading.Lock()  # guards the dictionaries and the cache below
        self._gateways: dict[tuple[str, str, str], MilvusPort] = {}
        self._connecting: dict[tuple[str, str, str], threading.Lock] = {}
        self._models: dict[tuple[str, str], EmbedderPort] = {}
        self._cache: EmbeddingCache | None = None

    def engine(
        self,
        milvus: MilvusPort,
        base_dir: Path,
        reporter: Reporter,
        on_status: StatusHook | None = None,
        storage: StorageSettings | None = None,
        fence: Fence | None = None,
    ) -> Engine:
        """An engine for one pass; paths in the spec are relative to ``base_dir``, object
        storage uris are read with ``storage`` (else the environment).

        ``fence``: asked right before every alias flip (the Kubernetes driver's leader
        election); without one the engine may always act (the local driver's flock).
        """
        return Engine(
            milvus,
            LocalFiles(base_dir, storage),
            reporter,
            self.settings,
            reports=self.reports,
            telemetry=self.telemetry,
            references=self.references,
            embedders=self.embedder_factory(base_dir),
            cache=self.embedding_cache(),
            on_status=on_status,
            webhooks=self.webhooks,
            notifier=self.notifier,
            metric_query=self.prometheus,
            fence=fence,
            staging=import_staging(self.config),
        )

    def observer(self, milvus: MilvusPort, base_dir: Path, reporter: Reporter) -> Engine:
        """An engine that only observes Milvus (deletion): no model, cache or telemetry."""
        return Engine(milvus, LocalFiles(base_dir), reporter, self.settings)

    def gateway(self, ref: MilvusRef, base_dir: Path, credentials: Credentials) -> MilvusPort:
        """The gateway for (uri, db, credentials), connected on first use and then reused."""
        uri = milvus_uri(ref, base_dir)  # a Lite path is relative to the spec's folder
        key = (uri, ref.db, _fingerprint(credentials))
        with self._lock:
            connecting = self._connecting.setdefault(key, threading.Lock())
        # One connection per key at a time (Milvus Lite opens its file once per process);
        # connections to other Milvus instances, for other releases, go on meanwhile.
        with connecting:
            if key not in self._gateways:
                self._gateways[key] = connect_milvus(
                    uri,
                    ref.db,
                    credentials,
                    retry_policy(self.config),
                    observer=self.telemetry.milvus_call,
                )
            return self._gateways[key]

    def embedder_factory(self, base_dir: Path) -> EmbedderFactory:
        """One encoder per ``spec.embedder``, reused across releases (models load once)."""
        if self._embedders is not None:
            return self._embedders

        def make(spec: EmbedderSpec) -> EmbedderPort:
            key = (spec.model_dump_json(), str(base_dir))
            with self._lock:  # the model loads lazily, so holding the lock here is cheap
                if key not in self._models:
                    self._models[key] = make_encoder(spec, base_dir)
                return self._models[key]

        return make

    def embedding_cache(self) -> EmbeddingCache | None:
        with self._lock:
            if self._cache is None:  # the file is opened on first use
                self._cache = open_embedding_cache(self.config)
            return self._cache

    def close(self) -> None:
        self.notifier.close()  # what is queued is delivered (or counted) first
        self.webhooks.close()
        self.prometheus.close()
        with self._lock:
            gateways, self._gateways = list(self._gateways.values()), {}
            cache, self._cache = self._cache, None
        for gateway in gateways:
            gateway.close()
        if cache is not None:
            cache.close()


def _fingerprint(credentials: Credentials) -> str:
    """A cache key for credentials that does not hold the secret itself."""
    raw = f"{credentials.token}\0{credentials.user}\0{credentials.password}"
    return hashlib.sha256(raw.encode()).hexdigest()


# -- a pass the engine could not run --------------------------------------------------


def failed_pass(
    previous: ReleaseStatus, exc: EmbrelError, generation: int, now: str
) -> ReconcileResult:
    """The result of a pass that raised before the engine could settle it.

    A temporary error keeps the phase and asks to be retried after ``exc.delay``; a
    permanent one fails the release until something changes. Either way the status
    names the error's own reason (``exc.reason``).
    """
    status = replace(previous, observed_generation=generation)
    if isinstance(exc, TemporaryError):
        status = temporarily_failed(status, exc.reason, str(exc), now, previous.unavailable_since)
        return ReconcileResult(status, False, exc, exc.delay)
    status = with_phase(status, Phase.FAILED, exc.reason, str(exc), now)
    return ReconcileResult(status, True, exc)
