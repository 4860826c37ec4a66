"""What every step function receives: the ports, the settings, the clock."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field

from controller.engine.state import Observation
from controller.engine.step import Step
from controller.ports import (
    Advance,
    DataPort,
    EmbedderFactory,
    EmbeddingCachePort,
    Fence,
    ImportStagingPort,
    MetricQueryPort,
    MilvusPort,
    NotifierPort,
    NullCache,
    NullTelemetry,
    ReferenceStore,
    Reporter,
    ReportSink,
    Telemetry,
    Unfenced,
    WebhookPort,
)
from controller.spec import EmbeddingRelease


@dataclass(frozen=True)
class Settings:
    batch_size: int = 5000
    index_timeout: float = 3600.0
    load_timeout: float = 600.0
    import_timeout: float = 3600.0  # a bulk import, all its jobs
    poll_interval: float = 0.5
    # Verified flip: probe through the alias this long before re-issuing alter_alias,
    # at most this many times, then the release is Degraded.
    verify_window: float = 0.4
    flip_attempts: int = 3


Progress = Callable[[str, int | None], AbstractContextManager[Advance]]


@dataclass(frozen=True)
class StepContext:
    """The ports and settings a step runs against; no step keeps state of its own."""

    milvus: MilvusPort
    data: DataPort
    reporter: Reporter
    clock: Callable[[], str]
    settings: Settings = Settings()
    telemetry: Telemetry = field(default_factory=NullTelemetry)
    reports: ReportSink | None = None
    references: ReferenceStore | None = None
    embedders: EmbedderFactory | None = None  # source.documents: one per spec.embedder
    cache: EmbeddingCachePort = field(default_factory=NullCache)
    webhooks: WebhookPort | None = None  # spec.promotion.webhooks: the gates' HTTP calls
    notifier: NotifierPort | None = None  # spec.notifications: phase changes
    metric_query: MetricQueryPort | None = None  # spec.analysis: Prometheus queries
    sleep: Callable[[float], None] = time.sleep  # between analysis measurements
    # Asked right before every alter_alias: may this controller act (leadership)?
    fence: Fence = field(default_factory=Unfenced)
    staging: ImportStagingPort | None = None  # milvus.importStaging: bulk imports

    def progress(self, track: str) -> Progress:
        """The reporter's progress bar, mirrored into telemetry (build progress gauges)."""

        @contextmanager
        def mirrored(stage: str, total: int | None) -> Iterator[Advance]:
            count = 0
            with self.reporter.progress(stage, total) as advance:

                def both(n: int) -> None:
                    nonlocal count
                    count += n
                    advance(n)
                    self.telemetry.progress(track, stage, count, total)

                yield both

        return mirrored


StepFunction = Callable[[StepContext, EmbeddingRelease, Step, Observation], None]
