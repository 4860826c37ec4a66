"""The small interfaces the engine is written against.

Drivers pass real implementations (``controller.milvus.MilvusGateway``,
``controller.sources.LocalFiles``); the engine never imports pymilvus, Kubernetes
or a file reader itself.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np

from controller.hooks import HookAnswer
from controller.schema import Features, Schema, VectorIndex
from controller.sources.base import GoldenSet, VectorBatch, VectorSource
from controller.sources.documents import DocumentSource
from controller.sources.labelled_queries import LabelledQueries
from controller.spec import (
    AnalysisSpec,
    DocumentsSource,
    EmbedderSpec,
    EmbeddingRelease,
    FieldSpec,
    FilesSource,
    LabelledTextsSpec,
    NotificationSpec,
    SourceSpec,
    WebhookSpec,
)
from controller.status import ReleaseStatus

ImportState = Literal["pending", "running", "completed", "failed"]


@dataclass(frozen=True)
class ImportJob:
    """One bulk import job (one staged file) as Milvus reports it."""

    job_id: int
    state: ImportState
    percent: int  # 0-100, as the server estimates it
    rows: int  # rows imported; known once the job persisted its data
    reason: str = ""  # why it failed


class MilvusPort(Protocol):
    def list_collections(self) -> list[str]: ...
    def properties(self, name: str) -> dict[str, str]: ...
    def features(self) -> Features: ...  # what this backend can build
    def create_collection(
        self,
        name: str,
        schema: Schema,
        properties: Mapping[str, str],
        num_partitions: int | None = None,
    ) -> None: ...
    def set_properties(self, name: str, properties: Mapping[str, str]) -> None: ...
    def drop(self, name: str) -> None: ...
    # By id: a batch written twice is stored once (the gateway upserts).
    def insert(self, name: str, batch: VectorBatch) -> None: ...
    def row_count(self, name: str, flush: bool = True) -> int: ...
    def ensure_index(
        self,
        name: str,
        index_type: str,
        metric: str,
        params: Mapping[str, Any],
        scalar_indexes: Mapping[str, str] | None = None,  # field -> INVERTED|STL_SORT|TRIE
        vector_indexes: Mapping[str, VectorIndex] | None = None,  # other vector fields
    ) -> None: ...
    # (indexed, total) rows of the least advanced vector index; None before there is one.
    def index_progress(self, name: str) -> tuple[int, int] | None: ...
    def is_loaded(self, name: str) -> bool: ...
    def load(self, name: str, replicas: int = 1) -> None: ...
    def release(self, name: str) -> None: ...
    def alias_target(self, alias: str) -> str | None: ...
    def aliases_of(self, name: str) -> list[str]: ...
    def point_alias(self, alias: str, collection: str) -> None: ...
    def drop_alias(self, alias: str) -> None: ...
    def search_ids(
        self,
        target: str,
        queries: np.ndarray,
        k: int,
        params: Mapping[str, Any],
        consistency: str = "Strong",
        field: str = "vector",  # which vector field: spec.collection.searchField
    ) -> np.ndarray: ...
    def vectors_by_id(
        self, name: str, ids: Sequence[int], consistency: str = "Strong", field: str = "vector"
    ) -> dict[int, np.ndarray]: ...
    def sample_ids(self, name: str, n: int, seed: int) -> np.ndarray: ...
    def iterate_rows(
        self, name: str, batch_size: int, fields: Sequence[str] = (), vectors: bool = True
    ) -> Generator[VectorBatch, None, None]: ...  # every row, bounded batches, Strong, by id
    def collection_schema(self, name: str) -> Schema: ...
    # Bulk import: whether this backend has it (Milvus Lite has not), then one job per
    # staged file (paths as Milvus reads them), followed by id. MilvusRejected on Lite.
    def supports_bulk_import(self) -> bool: ...
    def bulk_import(self, name: str, files: Sequence[str]) -> list[int]: ...
    def import_job(self, job_id: int) -> ImportJob: ...
    def fresh(self) -> MilvusPort: ...  # a new connection: how a new client sees Milvus
    def close(self) -> None: ...


class ImportStagingPort(Protocol):
    """Where a bulk import's files are written for Milvus to read (``controller.sources.
    staging``): Parquet with the collection's field names, a bounded number of rows per
    file. ``stage`` returns the paths as Milvus names them; ``remove`` deletes what was
    staged for ``name`` (also what an interrupted run left)."""

    def stage(
        self, name: str, fields: Sequence[FieldSpec], batches: Iterable[VectorBatch]
    ) -> list[str]: ...
    def remove(self, name: str) -> None: ...


class DataPort(Protocol):
    """Where a release's files are read from (paths relative to the spec's folder)."""

    def open_vectors(self, files: FilesSource, extra_fields: Sequence[str]) -> VectorSource: ...
    def read_golden_set(self, uri: str) -> GoldenSet: ...
    def read_labelled_queries(self, texts: LabelledTextsSpec) -> LabelledQueries: ...
    def read_query_vectors(
        self, uri: str, vector_field: str, sample: int, seed: int
    ) -> np.ndarray: ...
    def open_documents(
        self, documents: DocumentsSource, columns: Sequence[str]
    ) -> DocumentSource: ...
    def read_ids(self, uri: str, id_field: str) -> np.ndarray: ...
    # What the source's files hold, wherever the spec names them from: part of the build
    # hash. SourceError when they cannot be found or read.
    def source_identity(self, source: SourceSpec) -> str: ...


class EmbedderPort(Protocol):
    """A release's encoder: texts into vectors of its space (``controller.embedding``).

    ``embed`` takes documents and ``embed_queries`` queries: models such as E5 prefix
    them differently (``spec.embedder.documentPrefix`` / ``queryPrefix``).
    """

    def dimension(self) -> int: ...
    def embed(self, texts: Sequence[str]) -> np.ndarray: ...  # (n, dimension) float32
    def embed_queries(self, texts: Sequence[str]) -> np.ndarray: ...  # as embed


# Drivers build one embedder per ``spec.embedder`` (and reuse it across releases).
EmbedderFactory = Callable[[EmbedderSpec], EmbedderPort]


class EmbeddingCachePort(Protocol):
    """Vectors by (model, revision, content hash) (``controller.embedding.cache``).

    ``get_many`` returns only entries that pass its integrity checks.
    """

    def get_many(
        self, model: str, revision: str, hashes: Sequence[str], dimension: int
    ) -> dict[str, np.ndarray]: ...
    def count_present(self, model: str, revision: str, hashes: Sequence[str]) -> int: ...
    def put_many(self, model: str, revision: str, vectors: Mapping[str, np.ndarray]) -> None: ...


class NullCache:
    """No cache: every lookup misses."""

    def get_many(
        self, model: str, revision: str, hashes: Sequence[str], dimension: int
    ) -> dict[str, np.ndarray]:
        return {}

    def count_present(self, model: str, revision: str, hashes: Sequence[str]) -> int:
        return 0

    def put_many(self, model: str, revision: str, vectors: Mapping[str, np.ndarray]) -> None:
        pass


class ReferenceStore(Protocol):
    """Drift references (arrays) per live collection, kept outside Milvus."""

    def save_reference(
        self, track: str, collection: str, arrays: dict[str, np.ndarray]
    ) -> None: ...
    def load_reference(self, track: str, collection: str) -> dict[str, np.ndarray] | None: ...


class ReportSink(Protocol):
    """Where validation reports go; returns where a person can open the HTML."""

    def write_report(self, track: str, version: str, files: dict[str, bytes]) -> str: ...


class WebhookPort(Protocol):
    """Calls a webhook gate (``controller.webhooks``): posts the signed payload with
    bounded retries and says how it ended; never raises for what the receiver did."""

    def call(self, track: str, hook: WebhookSpec, payload: Mapping[str, Any]) -> HookAnswer: ...


class NotifierPort(Protocol):
    """Posts a notification in the background; never blocks or fails the release."""

    def notify(
        self, track: str, notification: NotificationSpec, body: Mapping[str, Any]
    ) -> None: ...


class MetricQueryPort(Protocol):
    """Asks Prometheus (``controller.prometheus``): one instant query -> one number.
    Raises ``controller.analysis.QueryFailed`` when there is none."""

    def query(self, analysis: AnalysisSpec, namespace: str, promql: str) -> float: ...


Advance = Callable[[int], None]


class Reporter(Protocol):
    """Where the engine tells a person what it does: events and progress."""

    def event(self, reason: str, message: str, warning: bool = False) -> None: ...
    def progress(self, stage: str, total: int | None) -> AbstractContextManager[Advance]: ...


class Telemetry(Protocol):
    """Numbers for Prometheus (``controller.metrics``); ``NullTelemetry`` drops them.

    The engine calls the first group during a pass; the drivers the second, after a
    pass and around it. ``track`` is ``namespace/name``; implementations keep label
    sets bounded.
    """

    # -- the engine
    def step_finished(self, track: str, step: str, seconds: float, ok: bool) -> None: ...
    def progress(self, track: str, stage: str, done: int, total: int | None) -> None: ...
    def cutover(
        self, track: str, kind: str, seconds: float, attempts: int, verified: bool
    ) -> None: ...  # kind: "promote" | "rollback" | "auto_rollback"
    def drift(self, track: str, values: Mapping[str, float]) -> None: ...
    def cache(self, track: str, hits: int, misses: int) -> None: ...
    # A bulk import's progress, 0..1 over all its jobs; failed jobs counted as they end.
    def bulk_import(self, track: str, fraction: float, failed_jobs: int) -> None: ...
    def notification_failed(self, track: str, notification: str) -> None: ...
    def flip_refused(self, track: str, reason: str) -> None: ...  # "fenced" | "alias_moved"

    # -- the drivers
    def observe_status(self, release: EmbeddingRelease, status: ReleaseStatus) -> None: ...
    def reconcile_error(self, track: str, reason: str) -> None: ...  # reason: a short word
    def milvus_call(self, operation: str, seconds: float, error: str | None) -> None: ...
    def set_leader(self, leader: bool) -> None: ...
    def forget(self, track: str) -> None: ...  # the release is gone: drop its series


class NullTelemetry:
    """Telemetry that records nothing: no ``--metrics-port``, or a test."""

    def step_finished(self, track: str, step: str, seconds: float, ok: bool) -> None:
        pass

    def progress(self, track: str, stage: str, done: int, total: int | None) -> None:
        pass

    def cutover(self, track: str, kind: str, seconds: float, attempts: int, verified: bool) -> None:
        pass

    def drift(self, track: str, values: Mapping[str, float]) -> None:
        pass

    def cache(self, track: str, hits: int, misses: int) -> None:
        pass

    def bulk_import(self, track: str, fraction: float, failed_jobs: int) -> None:
        pass

    def notification_failed(self, track: str, notification: str) -> None:
        pass

    def flip_refused(self, track: str, reason: str) -> None:
        pass

    def observe_status(self, release: EmbeddingRelease, status: ReleaseStatus) -> None:
        pass

    def reconcile_error(self, track: str, reason: str) -> None:
        pass

    def milvus_call(self, operation: str, seconds: float, error: str | None) -> None:
        pass

    def set_leader(self, leader: bool) -> None:
        pass

    def forget(self, track: str) -> None:
        pass


@dataclass(frozen=True)
class Verdict:
    """A fence's answer: true when this controller may act; ``why`` says why not."""

    ok: bool
    why: str = ""

    def __bool__(self) -> bool:
        return self.ok


class Fence(Protocol):
    """Whether this controller may change what the alias serves, asked right before it
    does (split-brain fencing). Answers from memory: no I/O on the flip's hot path."""

    def may_act(self) -> Verdict: ...


class Unfenced:
    """The local driver's fence: its state folder's flock is held for the whole pass,
    so a pass that runs may act."""

    def may_act(self) -> Verdict:
        return Verdict(True)
