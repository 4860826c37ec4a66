"""The Milvus gateway: the only module that imports pymilvus.

It translates pymilvus exceptions into ``controller.errors`` at the boundary (the
original stays as ``__cause__``), retries transient failures with tenacity, and
encodes the Milvus behaviour measured on Milvus Lite and 2.3.5
(docs/architecture.md, "Milvus facts"):

* rows are invisible to ``row_count`` until flushed -> ``row_count`` flushes first;
* validation searches use ``consistency_level="Strong"``;
* some versions drop a collection that still has an alias (and the alias with it)
  -> ``drop`` refuses while any alias points at the collection;
* insert stores a primary key twice when a batch is resent -> batches are upserted.

Every call carries ``timeout=`` (``RetryPolicy.call_timeout``): a call without an answer
is ``MilvusTimedOut``, one whose connection broke ``MilvusConnectionLost``; both are
retried (docs/reliability.md).
"""

from __future__ import annotations

import fcntl
import functools
import logging
import re
import time
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from pymilvus import BulkInsertState, DataType, MilvusClient, MilvusException
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential

from controller.config import Credentials, RetryPolicy
from controller.errors import (
    EmbrelError,
    MilvusConnectionLost,
    MilvusRejected,
    MilvusTimedOut,
    MilvusUnavailable,
    NotFound,
    SpecError,
)
from controller.ports import ImportJob, ImportState
from controller.schema import Features, Schema, VectorField, VectorIndex, features_of
from controller.sources.base import VectorBatch
from controller.spec import PRIMARY_VECTOR, FieldSpec, redact_uri

log = logging.getLogger(__name__)
T = TypeVar("T")

# pymilvus logs every failed RPC at ERROR with a traceback, even those we expect and
# handle (a missing alias on first release); our own messages say what matters.
logging.getLogger("pymilvus").setLevel(logging.CRITICAL)
# Milvus Lite serves gRPC in-process and logs "Method not implemented" for AllocTimestamp,
# which pymilvus tries before a Strong search and then does without.
logging.getLogger("grpc._server").setLevel(logging.CRITICAL)
# milvus-lite logs a traceback when its folder is locked; we raise a clearer error.
logging.getLogger("milvus_lite").setLevel(logging.CRITICAL)

# Status codes from milvus-proto common.proto / pymilvus ErrorCode that mean "gone".
_NOT_FOUND_CODES = {100, 4}
# Codes that mean the server could not be reached or is not ready yet.
_UNAVAILABLE_CODES = {2, 1, 65535, 503}
# Milvus 2.3 answers a bad argument with the generic code 65535 too ("efConstruction out
# of range: [1, 2147483647]", "parameter `m` not found"): a retry cannot change these.
_BAD_ARGUMENT = re.compile(r"out of range|parameter|invalid|illegal|not supported", re.I)

_SCALAR_TYPES: dict[str, DataType] = {  # spec.collection.fields[].type -> Milvus
    "VARCHAR": DataType.VARCHAR,
    "INT64": DataType.INT64,
    "INT32": DataType.INT32,
    "INT16": DataType.INT16,
    "INT8": DataType.INT8,
    "FLOAT": DataType.FLOAT,
    "DOUBLE": DataType.DOUBLE,
    "BOOL": DataType.BOOL,
    "JSON": DataType.JSON,
}
_SCALAR_NAMES = {kind: name for name, kind in _SCALAR_TYPES.items()}
_VECTOR_TYPES: dict[str, DataType] = {"FLOAT_VECTOR": DataType.FLOAT_VECTOR}
_VECTOR_NAMES = {kind: name for name, kind in _VECTOR_TYPES.items()}

# The file milvus-lite locks inside its data folder (milvus_lite.db.LOCK_FILENAME).
LITE_LOCK_FILE = "LOCK"
# Milvus refuses larger query pages (limit) and pymilvus larger query_iterator pages.
QUERY_ITERATOR_MAX_BATCH = 16_384
ID_FIELD = "id"
VECTOR_FIELD = PRIMARY_VECTOR
# GetImportState's states, as embrel names them (Persisted: rows written, segments not
# yet handed over; only Completed rows are counted and searchable).
_IMPORT_STATES: dict[int, ImportState] = {
    BulkInsertState.ImportPending: "pending",
    BulkInsertState.ImportStarted: "running",
    BulkInsertState.ImportPersisted: "running",
    BulkInsertState.ImportCompleted: "completed",
    BulkInsertState.ImportFailed: "failed",
    BulkInsertState.ImportFailedAndCleaned: "failed",
}


# A call that got no answer: grpc's own deadline, or a connection that never became
# ready within the connect timeout ("Fail connecting").
_DEADLINE = re.compile(r"DEADLINE_EXCEEDED|deadline exceeded|fail connecting", re.I)
# A connection that broke under a call: the peer reset or closed it.
_CONNECTION_LOST = re.compile(
    r"connection reset|socket closed|broken pipe|connection refused|stream removed|goaway|"
    r"end of tcp stream|failed to connect",
    re.I,
)
# pymilvus' own retry loop giving up once the call's timeout has passed.
_TIMED_OUT = re.compile(r"retry timeout|timed? ?out", re.I)


@contextmanager
def _translated(action: str, timeout: float | None = None) -> Iterator[None]:
    """Turn pymilvus/grpc exceptions into embrel errors that say what to do.

    ``timeout`` is the call's deadline: a call that got no answer within it is a
    ``MilvusTimedOut`` that names ``action``, one whose connection broke a
    ``MilvusConnectionLost``; both are worth a retry.
    """
    try:
        yield
    except MilvusException as exc:
        code = getattr(exc, "code", None)
        message = getattr(exc, "message", str(exc))
        if lost := _no_answer(action, message, timeout):
            raise lost from exc
        unreachable = "connect" in message.lower() or "unavailable" in message.lower()
        if _BAD_ARGUMENT.search(message) and not unreachable:
            raise MilvusRejected(f"{action}: Milvus refused ({message}, code {code})") from exc
        if code in _NOT_FOUND_CODES or "not exist" in message or "not found" in message:
            raise NotFound(f"{action}: {message}") from exc
        if code in _UNAVAILABLE_CODES or unreachable:
            raise MilvusUnavailable(f"{action}: Milvus is unavailable ({message})") from exc
        raise MilvusRejected(f"{action}: Milvus refused ({message}, code {code})") from exc
    except (ConnectionError, TimeoutError, OSError) as exc:
        raise MilvusUnavailable(f"{action}: cannot reach Milvus ({exc})") from exc
    except Exception as exc:  # grpc.RpcError and friends: pymilvus does not always wrap them
        if not type(exc).__module__.startswith("grpc"):
            raise
        code_name = getattr(getattr(exc, "code", lambda: None)(), "name", "")
        detail = f"{code_name} {type(exc).__name__} {exc}"
        if lost := _no_answer(action, detail, timeout):
            raise lost from exc
        raise MilvusUnavailable(f"{action}: Milvus RPC failed ({exc})") from exc


def _no_answer(action: str, message: str, timeout: float | None) -> MilvusUnavailable | None:
    """The error for a call that got no answer in time, or whose connection broke."""
    within = f" within {timeout:g}s" if timeout is not None else ""
    if _DEADLINE.search(message):
        return MilvusTimedOut(f"Milvus did not answer {action}{within}")
    lost = _CONNECTION_LOST.search(message)
    if lost or "UNAVAILABLE" in message:
        why = lost.group(0).lower() if lost else "unavailable"
        return MilvusConnectionLost(
            f"connection to Milvus lost during {action} ({why}), no answer{within}"
        )
    if _TIMED_OUT.search(message):
        return MilvusTimedOut(f"Milvus did not answer {action}{within}")
    return None


def _lite_problem(path: Path) -> EmbrelError:
    """Why Milvus Lite could not open ``path``; pymilvus says only "Open local milvus failed".

    A folder locked by another process is worth waiting for (Milvus Lite locks its data
    folder to one process); a path that cannot hold a database, or a folder that is not
    one, is the spec's to fix.
    """

    def spec_problem(why: str) -> SpecError:
        return SpecError(str(path), [("spec.milvus.uri", why)])

    if path.exists() and not path.is_dir():
        return spec_problem(f"{path} is a file, not a Milvus Lite database folder")
    if not path.exists():
        return spec_problem(
            f"cannot create a Milvus Lite database at {path} (is {path.parent} a writable folder?)"
        )
    lock = path / LITE_LOCK_FILE
    if lock.exists():
        try:
            with lock.open("a") as fh:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(fh, fcntl.LOCK_UN)
        except BlockingIOError:
            return MilvusUnavailable(
                f"cannot open the Milvus Lite database {path}: another process holds it "
                "(is `embrel run --watch` running on it?)"
            )
        except OSError as exc:
            return spec_problem(f"cannot open the Milvus Lite database {path}: {exc.strerror}")
    return spec_problem(
        f"{path} is not a Milvus Lite database, or it is damaged (move it aside to start afresh)"
    )


def _error_kind(exc: Exception) -> str:
    """The bounded ``kind`` label of ``embrel_milvus_request_errors_total``."""
    if isinstance(exc, MilvusTimedOut):
        return "timeout"
    if isinstance(exc, MilvusConnectionLost):
        return "reset"
    if isinstance(exc, NotFound):
        return "not_found"
    if isinstance(exc, MilvusUnavailable):
        return "unavailable"
    return "rejected" if isinstance(exc, MilvusRejected) else "other"


class MilvusGateway:
    """Everything embrel asks of Milvus, in its own vocabulary."""

    def __init__(
        self,
        uri: str,
        db: str = "default",
        credentials: Credentials | None = None,
        policy: RetryPolicy | None = None,
        observer: Callable[[str, float, str | None], None] | None = None,
    ) -> None:
        self.uri = uri
        self.policy = policy or RetryPolicy()
        # Every call's deadline: a stalled connection ends as MilvusTimedOut, and retried.
        self.call_timeout = self.policy.call_timeout
        # (operation, seconds, error kind or None) per attempt: controller.metrics
        self.observer = observer
        creds = credentials or Credentials()
        self._db, self._creds = db, creds
        self._retry = retry(
            retry=retry_if_exception_type(MilvusUnavailable),
            stop=stop_after_attempt(self.policy.attempts),
            wait=wait_exponential(multiplier=0.5, max=self.policy.max_wait),
            reraise=True,
        )
        self._client = self._connect(uri, "" if db == "default" else db, creds)

    def _connect(self, uri: str, db_name: str, creds: Credentials) -> MilvusClient:
        try:
            with _translated(f"connecting to Milvus at {redact_uri(uri)}", self.policy.timeout):
                return MilvusClient(
                    uri=uri,
                    token=creds.token,
                    user=creds.user,
                    password=creds.password,
                    db_name=db_name,
                    timeout=self.policy.timeout,
                )
        except MilvusUnavailable as exc:
            if "://" in uri:
                raise
            raise _lite_problem(Path(uri)) from exc

    def close(self) -> None:
        self._client.close()

    def fresh(self) -> MilvusGateway:
        """A second gateway on its own connection, to see the alias as a new client would."""
        return MilvusGateway(self.uri, self._db, self._creds, self.policy, self.observer)

    def _call(
        self, action: str, fn: Callable[[], T], op: str | None = None, retried: bool = True
    ) -> T:
        """``fn`` with errors translated and retried (unless ``retried`` is False); ``op``
        names it for metrics (bounded)."""
        operation = op or action.split(" ", 1)[0]

        def attempt() -> T:
            started, error = time.perf_counter(), None
            try:
                with _translated(action, self.call_timeout):
                    return fn()
            except Exception as exc:
                error = _error_kind(exc)
                raise
            finally:
                if self.observer is not None:
                    self.observer(operation, time.perf_counter() - started, error)

        return self._retry(attempt)() if retried else attempt()

    # -- collections ---------------------------------------------------------

    def list_collections(self) -> list[str]:
        return self._call(
            "listing collections",
            lambda: self._client.list_collections(timeout=self.call_timeout),
            op="list_collections",
        )

    def properties(self, name: str) -> dict[str, str]:
        desc = self._call(
            f"describing {name}",
            lambda: self._client.describe_collection(name, timeout=self.call_timeout),
            op="describe_collection",
        )
        return {str(k): str(v) for k, v in (desc.get("properties") or {}).items()}

    def features(self) -> Features:
        version = self._call(
            "reading the server version",
            lambda: self._client.get_server_version(timeout=self.call_timeout),
            op="get_server_version",
        )
        return features_of(str(version), lite="://" not in self.uri)

    def create_collection(
        self,
        name: str,
        schema: Schema,
        properties: Mapping[str, str],
        num_partitions: int | None = None,
    ) -> None:
        described = MilvusClient.create_schema(
            auto_id=False, enable_dynamic_field=schema.dynamic_field
        )
        described.add_field(ID_FIELD, DataType.INT64, is_primary=True)
        described.add_field(VECTOR_FIELD, DataType.FLOAT_VECTOR, dim=schema.dimension)
        for v in schema.vectors:
            described.add_field(v.name, _VECTOR_TYPES[v.type], dim=v.dimension)
        for f in schema.fields:
            described.add_field(f.name, _SCALAR_TYPES[f.type], **_field_options(f))
        extra = {} if num_partitions is None else {"num_partitions": num_partitions}
        self._call(
            f"creating collection {name}",
            # Default (Bounded) consistency for applications; validation asks for Strong.
            lambda: self._client.create_collection(
                name,
                schema=described,
                properties=dict(properties),
                timeout=self.call_timeout,
                **extra,
            ),
            op="create_collection",
        )

    def set_properties(self, name: str, properties: Mapping[str, str]) -> None:
        # Never drop properties: drop_collection_properties fails on 2.3.5 when none exist.
        self._call(
            f"updating properties of {name}",
            lambda: self._client.alter_collection_properties(
                name, properties=dict(properties), timeout=self.call_timeout
            ),
            op="alter_collection_properties",
        )

    def drop(self, name: str) -> None:
        """Drop a collection; refused while an alias points at it (Lite and 2.3.5 would
        drop it and silently take the alias with it)."""
        if aliases := self.aliases_of(name):
            raise MilvusRejected(f"refusing to drop {name}: aliases {aliases} point at it")
        self._call(
            f"dropping {name}",
            lambda: self._client.drop_collection(name, timeout=self.call_timeout),
            op="drop_collection",
        )

    # -- data ----------------------------------------------------------------

    def insert(self, name: str, batch: VectorBatch) -> None:
        ids = batch.ids.tolist()
        rows: list[dict[str, Any]] = [
            {ID_FIELD: ids[i], VECTOR_FIELD: batch.vectors[i]} for i in range(len(ids))
        ]
        for field, values in batch.fields.items():
            for row, value in zip(rows, values, strict=True):
                row[field] = value
        # Upsert, not insert: a batch whose answer was lost (a timeout, a reset) is sent
        # again, by pymilvus itself or by our retry, and insert does not deduplicate
        # primary keys (both copies would be stored and counted by count(*)). Upsert
        # replaces rows by id, so a batch sent twice is there once. It costs no more
        # than insert on 2.3.5 (docs/reliability.md).
        self._call(
            f"inserting into {name}",
            lambda: self._client.upsert(name, rows, timeout=self.call_timeout),
            op="insert",
        )

    def row_count(self, name: str, flush: bool = True) -> int:
        """Rows in the collection; flushed first so that recent inserts are counted.

        ``flush=False`` counts what is already sealed: enough for a collection built and
        flushed before, and it avoids 0.5 s per flush on Milvus 2.3.5.
        """
        if flush:
            self._call(
                f"flushing {name}",
                lambda: self._client.flush(name, timeout=self.call_timeout),
                op="flush",
            )
        stats = self._call(
            f"counting rows of {name}",
            lambda: self._client.get_collection_stats(name, timeout=self.call_timeout),
            op="get_collection_stats",
        )
        return int(stats["row_count"])

    def vectors_by_id(
        self, name: str, ids: Sequence[int], consistency: str = "Strong", field: str = VECTOR_FIELD
    ) -> dict[int, np.ndarray]:
        rows = self._call(
            f"reading vectors from {name}",
            lambda: self._client.get(
                name,
                ids=list(ids),
                output_fields=[field],
                consistency_level=consistency,
                timeout=self.call_timeout,
            ),
            op="get",
        )
        if rows and field not in rows[0]:  # Lite leaves an unknown output field out
            raise MilvusRejected(f"reading vectors from {name}: field {field} does not exist")
        return {int(r[ID_FIELD]): np.asarray(r[field], dtype=np.float32) for r in rows}

    def sample_ids(self, name: str, n: int, seed: int, scan_limit: int = 1_000_000) -> np.ndarray:
        """A seeded uniform sample of up to ``n`` ids (reservoir over the first
        ``scan_limit`` ids, read in pages with ``query_iterator``)."""
        rng = np.random.default_rng(seed)
        reservoir: list[int] = []
        seen = 0
        # Retried: a sample bears a page read twice.
        pages = self._pages(name, f"reading ids of {name}", 10_000, [ID_FIELD])
        with closing(pages):
            for page in pages:
                for row in page:
                    seen += 1
                    if len(reservoir) < n:
                        reservoir.append(int(row[ID_FIELD]))
                    elif (slot := int(rng.integers(seen))) < n:
                        reservoir[slot] = int(row[ID_FIELD])
                if seen >= scan_limit:
                    break
        return np.asarray(sorted(reservoir), dtype=np.int64)

    def iterate_rows(
        self, name: str, batch_size: int, fields: Sequence[str] = (), vectors: bool = True
    ) -> Generator[VectorBatch, None, None]:
        """Every row of ``name`` (a physical collection, never an alias, whose target may
        move), ordered by id, in batches of at most ``batch_size``, read with Strong
        consistency. ``vectors=False`` leaves them out (the batch's vectors then have
        shape (n, 0)); ``fields`` are extra scalars.

        Each page is the rows after the last id read (the query ``query_iterator`` makes,
        with its ordered reduce), so a page read again after an error is the same page
        and is retried. Pages are decoded column by column: pymilvus' rows cost a Python
        object per float, five times the query itself on a 128-dim page."""
        size = max(1, min(batch_size, QUERY_ITERATOR_MAX_BATCH))
        first_row, after = 0, None
        while True:
            read = functools.partial(
                self._page_after, name, after, size, fields, vectors, first_row
            )
            batch = self._call(f"reading {name}", read, op="query_page")
            if batch is None:
                return
            if (after is not None and batch.ids[0] <= after) or np.any(np.diff(batch.ids) <= 0):
                raise MilvusRejected(
                    f"Milvus returned the rows of {name} out of id order after id {after}: "
                    "a copy read by pages would miss rows"
                )
            yield batch
            first_row += len(batch)
            after = int(batch.ids[-1])

    def _page_after(
        self,
        name: str,
        after: int | None,
        size: int,
        fields: Sequence[str],
        vectors: bool,
        first_row: int,
    ) -> VectorBatch | None:
        """The page of rows after id ``after``; None past the last."""
        output = [ID_FIELD, *([VECTOR_FIELD] if vectors else []), *fields]
        page = self._client.query(
            name,
            filter="" if after is None else f"{ID_FIELD} > {after}",
            limit=size,
            output_fields=output,
            consistency_level="Strong",
            timeout=self.call_timeout,
            iterator="True",  # what query_iterator asks: the smallest ids, in order
            reduce_stop_for_best="True",
        )
        if not len(page):
            return None
        columns = _page_columns(page, output)
        if columns is None:  # pymilvus decodes it, row by row
            columns = {f: [row[f] for row in page] for f in output}
        ids = np.asarray(columns[ID_FIELD], dtype=np.int64)
        if vectors:
            matrix = np.asarray(columns[VECTOR_FIELD], dtype=np.float32)
        else:
            matrix = np.empty((len(ids), 0), dtype=np.float32)
        extras = {f: columns[f] for f in fields}
        return VectorBatch(ids, matrix, extras, f"collection {name}", first_row)

    def _pages(
        self, name: str, action: str, batch_size: int, output: list[str]
    ) -> Generator[list[dict[str, Any]], None, None]:
        """The ``output`` fields of every row of ``name``, by id, in pages read with
        Strong consistency through ``query_iterator`` (closed when the generator is)."""
        size = max(1, min(batch_size, QUERY_ITERATOR_MAX_BATCH))
        it = self._call(
            action,
            lambda: self._client.query_iterator(
                name,
                batch_size=size,
                output_fields=output,
                consistency_level="Strong",
                timeout=self.call_timeout,  # the iterator keeps it for every page
            ),
            op="query_iterator",
        )
        try:
            while page := self._call(action, it.next, op="query_iterator_next"):
                yield page
        finally:
            it.close()

    def collection_schema(self, name: str) -> Schema:
        """The collection's schema as embrel describes it, scalar indexes included."""
        desc = self._call(
            f"describing {name}",
            lambda: self._client.describe_collection(name, timeout=self.call_timeout),
            op="describe_collection",
        )
        indexes = self._field_indexes(name)
        dimension, fields, vectors = 0, [], []
        for f in desc.get("fields", []):
            dim = int((f.get("params") or {}).get("dim", 0))
            if f["name"] == VECTOR_FIELD:
                dimension = dim
            elif f["type"] in _VECTOR_NAMES:
                vectors.append(VectorField(f["name"], dim, _VECTOR_NAMES[f["type"]]))
            elif f["name"] != ID_FIELD:
                fields.append(_field_spec(name, f, indexes.get(f["name"])))
        dynamic = bool(desc.get("enable_dynamic_field"))
        return Schema(dimension, tuple(fields), dynamic, tuple(vectors))

    def _field_indexes(self, name: str) -> dict[str, str]:
        """Field -> index type of every index."""
        found = {}
        for index in self._index_names(name):
            info = self._describe_index(name, index)
            found[str(info.get("field_name"))] = str(info.get("index_type"))
        return found

    def _index_names(self, name: str) -> list[str]:
        return list(
            self._call(
                f"listing indexes of {name}",
                lambda: self._client.list_indexes(name, timeout=self.call_timeout),
                op="list_indexes",
            )
        )

    def _describe_index(self, name: str, index: str) -> dict[str, Any]:
        return dict(
            self._call(
                f"describing index {index} of {name}",
                lambda: self._client.describe_index(name, index, timeout=self.call_timeout),
                op="describe_index",
            )
        )

    # -- bulk import ---------------------------------------------------------

    def supports_bulk_import(self) -> bool:
        """Milvus Lite (a local database path) has no Import RPC; servers have."""
        return "://" in self.uri and not self.uri.startswith("file://")

    def bulk_import(self, name: str, files: Sequence[str]) -> list[int]:
        """One import job per file (Milvus 2.3 takes one Parquet or JSON file per job).

        Not retried: a job submitted twice would import its rows twice.
        """
        if not self.supports_bulk_import():
            raise MilvusRejected(
                f"bulk import into {name}: Milvus Lite ({redact_uri(self.uri)}) has no import"
            )
        # MilvusClient in pymilvus 3 has no call for 2.3's Import RPC (its bulk_import is
        # the REST API of 2.4+); the ORM's utility.do_bulk_insert calls this same handler.
        handler = self._client._get_connection()

        def submit(file: str) -> int:
            return int(
                self._call(
                    f"importing {file} into {name}",
                    lambda: handler.do_bulk_insert(name, "", [file], timeout=self.call_timeout),
                    op="do_bulk_insert",
                    retried=False,
                )
            )

        return [submit(f) for f in files]

    def import_job(self, job_id: int) -> ImportJob:
        handler = self._client._get_connection()
        st = self._call(
            f"reading the state of import job {job_id}",
            lambda: handler.get_bulk_insert_state(job_id, timeout=self.call_timeout),
            op="get_bulk_insert_state",
        )
        state = _IMPORT_STATES.get(st.state, "running")
        return ImportJob(
            job_id,
            state,
            int(st.progress or 0),
            int(st.row_count or 0),
            str(st.failed_reason or "") if state == "failed" else "",
        )

    # -- index and load ------------------------------------------------------

    def ensure_index(
        self,
        name: str,
        index_type: str,
        metric: str,
        params: Mapping[str, Any],
        scalar_indexes: Mapping[str, str] | None = None,
        vector_indexes: Mapping[str, VectorIndex] | None = None,
    ) -> None:
        """The vector index, the other vector fields' and the scalar ones, each created
        unless it exists (named after its field)."""
        existing = {
            self._describe_index(name, index).get("field_name") for index in self._index_names(name)
        }
        index = self._client.prepare_index_params()
        if VECTOR_FIELD not in existing:
            index.add_index(
                field_name=VECTOR_FIELD,
                index_type=index_type,
                metric_type=metric,
                params=dict(params),
            )
        for field, vector in (vector_indexes or {}).items():
            if field not in existing:
                index.add_index(
                    field_name=field,
                    index_type=vector.type,
                    metric_type=vector.metric,
                    params=dict(vector.params),
                    index_name=field,
                )
        for field, kind in (scalar_indexes or {}).items():
            if field not in existing:
                index.add_index(field_name=field, index_type=kind, index_name=field)
        if len(index):
            self._call(
                f"creating indexes on {name}",
                lambda: self._client.create_index(name, index, timeout=self.call_timeout),
                op="create_index",
            )

    def index_progress(self, name: str) -> tuple[int, int] | None:
        """(indexed rows, total rows) of the least advanced vector index (``vector``'s and
        the other vector fields'), or None when ``vector`` has none."""
        desc = self._call(
            f"describing {name}",
            lambda: self._client.describe_collection(name, timeout=self.call_timeout),
            op="describe_collection",
        )
        vectors = {f["name"] for f in desc.get("fields", []) if f["type"] in _VECTOR_NAMES}
        found: dict[str, tuple[int, int]] = {}
        for index in self._index_names(name):
            info = self._describe_index(name, index)
            if info.get("field_name") in vectors:
                done = int(info.get("indexed_rows", 0)), int(info.get("total_rows", 0))
                found[str(info.get("field_name"))] = done
        if VECTOR_FIELD not in found:
            return None
        return min(found.values(), key=lambda done: done[0] / max(done[1], 1))

    def is_loaded(self, name: str) -> bool:
        state = self._call(
            f"reading load state of {name}",
            lambda: self._client.get_load_state(name, timeout=self.call_timeout),
            op="get_load_state",
        )
        return str(state.get("state")).endswith("Loaded") and "Not" not in str(state.get("state"))

    def load(self, name: str, replicas: int = 1) -> None:
        # pymilvus waits until loaded, up to the call's deadline; a load that takes longer
        # times out, and asking again (retried) waits for the same load to finish.
        self._call(
            f"loading {name}",
            lambda: self._client.load_collection(
                name, replica_number=replicas, timeout=self.call_timeout
            ),
            op="load_collection",
        )

    def release(self, name: str) -> None:
        self._call(
            f"releasing {name}",
            lambda: self._client.release_collection(name, timeout=self.call_timeout),
            op="release_collection",
        )

    # -- aliases -------------------------------------------------------------

    def alias_target(self, alias: str) -> str | None:
        try:
            desc = self._call(
                f"describing alias {alias}",
                lambda: self._client.describe_alias(alias, timeout=self.call_timeout),
                op="describe_alias",
            )
        except NotFound:
            return None
        return str(desc["collection_name"]) if desc else None

    def aliases_of(self, name: str) -> list[str]:
        desc = self._call(
            f"listing aliases of {name}",
            lambda: self._client.list_aliases(name, timeout=self.call_timeout),
            op="list_aliases",
        )
        return [str(a) for a in desc.get("aliases", [])]

    def point_alias(self, alias: str, collection: str) -> None:
        """Create the alias or move it: one atomic call either way."""
        if self.alias_target(alias) is None:
            self._call(
                f"creating alias {alias}",
                lambda: self._client.create_alias(collection, alias, timeout=self.call_timeout),
                op="create_alias",
            )
        else:
            self._call(
                f"moving alias {alias}",
                lambda: self._client.alter_alias(collection, alias, timeout=self.call_timeout),
                op="alter_alias",
            )

    def drop_alias(self, alias: str) -> None:
        """Remove an alias (deletionPolicy Delete); a missing one is already gone."""
        if self.alias_target(alias) is not None:
            self._call(
                f"dropping alias {alias}",
                lambda: self._client.drop_alias(alias, timeout=self.call_timeout),
                op="drop_alias",
            )

    # -- search --------------------------------------------------------------

    def search_ids(
        self,
        target: str,
        queries: np.ndarray,
        k: int,
        params: Mapping[str, Any],
        consistency: str = "Strong",
        field: str = VECTOR_FIELD,
    ) -> np.ndarray:
        """Top-k ids per query on the vector ``field``, padded with -1; shape (nq, k).

        Strong by default: validation must see every row. Latency measurements pass
        "Bounded", what applications use, since Strong waits for a fresh timestamp.
        """
        result = self._call(
            f"searching {target}",
            lambda: self._client.search(
                target,
                data=[q for q in np.asarray(queries, dtype=np.float32)],
                limit=k,
                # Named always: with several vector fields Lite searches the first.
                anns_field=field,
                output_fields=[ID_FIELD],
                search_params={"params": dict(params)},
                consistency_level=consistency,
                timeout=self.call_timeout,
            ),
            op="search",
        )
        out = np.full((len(queries), k), -1, dtype=np.int64)
        for row, hits in enumerate(result):
            ids = [int(h["id"]) for h in hits][:k]
            out[row, : len(ids)] = ids
        return out

    def wait_until(
        self, what: str, done: Callable[[], bool], timeout: float, poll: float = 0.5
    ) -> None:
        """Poll ``done`` until true; MilvusUnavailable names ``what`` when time runs out."""
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                raise MilvusUnavailable(f"timed out after {timeout:.0f}s waiting for {what}")
            time.sleep(poll)


def _field_options(f: FieldSpec) -> dict[str, Any]:
    """add_field's keyword arguments for a scalar field; only those it uses, so that a
    server without nullable fields (before 2.5) is never sent them."""
    options: dict[str, Any] = {}
    if f.type == "VARCHAR":
        options["max_length"] = f.max_length
    if f.partition_key:
        options["is_partition_key"] = True
    if f.nullable:
        options["nullable"] = True
    if f.default is not None:
        options["default_value"] = f.default
    return options


def _field_spec(collection: str, f: Mapping[str, Any], index: str | None) -> FieldSpec:
    """A described field in embrel's terms; MilvusRejected for a type embrel cannot copy."""
    kind = _SCALAR_NAMES.get(f["type"])
    if kind is None:
        raise MilvusRejected(
            f"{collection} has field {f['name']!r} of type {f['type']}, which embrel cannot copy"
        )
    length = (f.get("params") or {}).get("max_length") if kind == "VARCHAR" else None
    return FieldSpec(
        name=f["name"],
        type=kind,
        max_length=int(length) if length else None,
        partition_key=bool(f.get("is_partition_key")),
        nullable=bool(f.get("nullable")),
        default=_default_value(f.get("default_value")),
        index=index,
    )


def _default_value(value: Any) -> Any:
    """describe_collection gives a default as a protobuf ValueField (one of bool_data,
    int_data, long_data, float_data, double_data, string_data), or nothing."""
    if value is None or not hasattr(value, "WhichOneof"):
        return value
    kind = value.WhichOneof("data")
    return None if kind is None else getattr(value, kind)


def _page_columns(page: Any, output: Sequence[str]) -> dict[str, Any] | None:
    """A query page's columns from the response's field data: the scalars pymilvus has
    put in its row dicts already, the float vectors and strings it decodes per row on
    access, read whole. None where a field needs pymilvus' own decoding (nullable, JSON,
    other vector types) or the page is not pymilvus' lazy list."""
    lazy = getattr(page, "_lazy_field_data", None)
    if lazy is None:
        return None
    columns: dict[str, Any] = {}
    for data in lazy:
        if len(data.valid_data):
            return None
        if data.type == DataType.FLOAT_VECTOR and data.field_name == VECTOR_FIELD:
            flat = np.asarray(data.vectors.float_vector.data, dtype=np.float32)
            columns[data.field_name] = flat.reshape(-1, data.vectors.dim)
        elif data.type == DataType.VARCHAR:
            columns[data.field_name] = list(data.scalars.string_data.data)
        else:
            return None
    rows = [list.__getitem__(page, i) for i in range(len(page))]  # eager fields only
    for name in output:
        if name not in columns:
            columns[name] = [row[name] for row in rows]
    return columns
