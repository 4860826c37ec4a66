"""An in-memory ``MilvusPort``: what the gateway does against Milvus, without Milvus.

Kept honest by tests/contract/test_milvus_port.py, which runs the same checks against
this fake, the gateway on Milvus Lite and the gateway on the real 2.3.5 server. Where
Lite is laxer than the server (it searches unloaded collections), the fake behaves
like the server. Every connection (``FakeMilvus()``, ``fresh()``) of one ``FakeState``
sees the same collections, like clients of one server; all of it is guarded by one lock.

Searches are exact scans (any index type), so top-k ties are broken by ascending id.
Index builds finish at once. Injectable faults, shared by every connection:

* ``lose_flips(n)``: the next ``n`` moves of an alias are *lost*, as on 2.3.5: the
  call succeeds and describe_alias reports the new target, but searches and gets
  through the alias keep reaching the old one until a later flip takes effect;
* ``fail_insert_after(rows, error)``: inserts go through until ``rows`` rows more are
  written, then raise ``error`` (the rows before it stay written);
* ``unavailable(operation, calls)``: the next ``calls`` calls of a port operation
  raise MilvusUnavailable, as the gateway does once its retries are spent;
* ``before(operation, action)``: ``action`` runs once, right before the next call of a
  port operation (another writer acting at that moment, e.g. moving an alias).

Bulk import reads the staged Parquet files when a job is submitted, like the server:
a file it cannot read fails its job (with pyarrow's reason) while the others import.
A job reports ``running`` at 50% on its first poll and ``completed`` on the next.
``FakeState(bulk_import=False)`` refuses imports as the gateway does on Milvus Lite.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import numpy as np

from controller.errors import EmbrelError, MilvusRejected, MilvusUnavailable, NotFound
from controller.ports import ImportJob, MilvusPort
from controller.schema import Features, Schema, VectorIndex
from controller.sources.base import VectorBatch
from controller.spec import FieldSpec

T = TypeVar("T")
Observer = Callable[[str, float, str | None], None]

QUERY_ITERATOR_MAX_BATCH = 16_384  # the gateway's page limit (pymilvus refuses more)
SAMPLE_SCAN_LIMIT = 1_000_000  # the gateway's sample_ids default
# The pymilvus call a port operation is timed under (controller.metrics' label values).
_METRIC_OP = {
    "properties": "describe_collection",
    "features": "get_server_version",
    "collection_schema": "describe_collection",
    "set_properties": "alter_collection_properties",
    "drop": "drop_collection",
    "row_count": "get_collection_stats",
    "ensure_index": "create_index",
    "index_progress": "describe_index",
    "is_loaded": "get_load_state",
    "load": "load_collection",
    "release": "release_collection",
    "alias_target": "describe_alias",
    "aliases_of": "list_aliases",
    "point_alias": "alter_alias",
    "search_ids": "search",
    "vectors_by_id": "get",
    "sample_ids": "query_iterator",
    "iterate_rows": "query_page",
    "bulk_import": "do_bulk_insert",
    "import_job": "get_bulk_insert_state",
}


@dataclass
class _Collection:
    schema: Schema
    properties: dict[str, str]
    rows: dict[int, tuple[np.ndarray, dict[str, Any]]] = field(default_factory=dict)
    flushed: int = 0  # rows get_collection_stats counts without a flush
    metric: str | None = None  # set by the index
    vector_metrics: dict[str, str] = field(default_factory=dict)  # other vector fields' indexes
    loaded: bool = False
    _matrix: tuple[np.ndarray, np.ndarray] | None = None  # (ids, vectors) for scans

    @property
    def dimension(self) -> int:
        return self.schema.dimension

    @property
    def fields(self) -> tuple[FieldSpec, ...]:
        return self.schema.fields

    def matrix(self) -> tuple[np.ndarray, np.ndarray]:
        """Ids and the vectors searches scan (unit length for COSINE), built once per write."""
        if self._matrix is None:
            ids = np.fromiter(self.rows, dtype=np.int64, count=len(self.rows))
            data = np.stack([v for v, _ in self.rows.values()])
            if self.metric == "COSINE":
                data = data / np.maximum(np.linalg.norm(data, axis=1, keepdims=True), 1e-30)
            self._matrix = ids, data
        return self._matrix


@dataclass
class _InsertFault:
    rows_left: int
    error: EmbrelError


class FakeState:
    """What one Milvus holds; every ``FakeMilvus`` connection shares it.

    ``flips_a_second_apart``: a flip waits until the wall-clock second changes since
    the last one. embrel stamps promotions to the second and keys its history by them;
    on a real Milvus a release takes long enough that two flips never share a second.
    """

    def __init__(
        self,
        flips_a_second_apart: bool = False,
        features: Features | None = None,
        bulk_import: bool = True,
    ) -> None:
        self.flips_a_second_apart = flips_a_second_apart
        self.features = features or Features("the in-memory fake Milvus")
        self.bulk_import = bulk_import
        self.import_jobs: dict[int, ImportJob] = {}
        self.import_polls: dict[int, int] = {}
        self.last_flip = 0
        self.lock = threading.RLock()
        self.collections: dict[str, _Collection] = {}
        self.aliases: dict[str, str] = {}  # what describe_alias reports
        self.routes: dict[str, str] = {}  # where reads through an alias go (lost flips)
        self.lost_flips = 0
        self.failing: dict[str, int] = {}
        # Every call fails, as while the server restarts (tests set and clear it).
        self.down = False
        self.insert_fault: _InsertFault | None = None
        self.hooks: dict[str, list[Callable[[], None]]] = {}

    def before(self, operation: str, action: Callable[[], None]) -> None:
        if not hasattr(MilvusPort, operation):
            raise ValueError(f"{operation!r} is not a MilvusPort operation")
        with self.lock:
            self.hooks.setdefault(operation, []).append(action)

    def run_hooks(self, operation: str) -> None:
        with self.lock:
            actions = self.hooks.pop(operation, [])
        for action in actions:  # not under the lock: an action may wait on other threads
            action()

    def lose_flips(self, n: int) -> None:
        with self.lock:
            self.lost_flips = n

    def fail_insert_after(self, rows: int, error: EmbrelError | None = None) -> None:
        with self.lock:
            self.insert_fault = _InsertFault(rows, error or MilvusUnavailable("insert failed"))

    def unavailable(self, operation: str, calls: int = 1) -> None:
        if not hasattr(MilvusPort, operation):
            raise ValueError(f"{operation!r} is not a MilvusPort operation")
        with self.lock:
            self.failing[operation] = calls

    def take_fault(self, operation: str) -> None:
        with self.lock:
            if self.down:
                raise MilvusUnavailable(f"{operation}: Milvus is down (injected)", 0.0)
            if self.failing.get(operation, 0) > 0:
                self.failing[operation] -= 1
                raise MilvusUnavailable(f"{operation}: Milvus is unavailable (injected)", 0.0)


class FakeMilvus:
    """One connection to a ``FakeState`` (a new state when none is given)."""

    def __init__(self, state: FakeState | None = None, observer: Observer | None = None) -> None:
        self.state = state or FakeState()
        self.observer = observer
        self.closed = False

    def _call(self, operation: str, fn: Callable[[], T]) -> T:
        started, error = time.perf_counter(), None
        try:
            if self.closed:
                raise MilvusUnavailable(f"{operation}: the connection is closed")
            self.state.run_hooks(operation)
            self.state.take_fault(operation)
            with self.state.lock:
                return fn()
        except EmbrelError as exc:
            error = (
                "not_found"
                if isinstance(exc, NotFound)
                else "unavailable"
                if isinstance(exc, MilvusUnavailable)
                else "rejected"
            )
            raise
        finally:
            if self.observer is not None:
                op = _METRIC_OP.get(operation, operation)
                self.observer(op, time.perf_counter() - started, error)

    def _get(self, name: str, through_alias: bool = False) -> _Collection:
        """The collection ``name`` names, directly or through an alias (``through_alias``:
        where data reads go, which a lost flip leaves on the old target)."""
        st = self.state
        target = (st.routes if through_alias else st.aliases).get(name, name)
        if target not in st.collections:
            target = st.aliases.get(name, name)
        if target not in st.collections:
            raise NotFound(f"collection '{name}' does not exist")
        return st.collections[target]

    def _readable(self, name: str, through_alias: bool = False) -> _Collection:
        c = self._get(name, through_alias)
        if not c.loaded:
            raise MilvusRejected(f"collection {name} is not loaded (code 101)")
        return c

    # -- collections ---------------------------------------------------------

    def list_collections(self) -> list[str]:
        return self._call("list_collections", lambda: sorted(self.state.collections))

    def properties(self, name: str) -> dict[str, str]:
        return self._call("properties", lambda: dict(self._get(name).properties))

    def features(self) -> Features:
        return self._call("features", lambda: self.state.features)

    def create_collection(
        self,
        name: str,
        schema: Schema,
        properties: Mapping[str, str],
        num_partitions: int | None = None,
    ) -> None:
        def create() -> None:
            if name in self.state.collections:
                raise MilvusRejected(f"collection '{name}' already exists")
            most = self.state.features.max_vector_fields
            if most is not None and 1 + len(schema.vectors) > most:  # as 2.3.5 answers
                raise MilvusRejected(
                    f"creating collection {name}: Milvus refused (multiple vector fields is "
                    "not supported, code 65535)"
                )
            # Like Milvus: indexes are not part of the schema, ensure_index adds them.
            fields = tuple(f.model_copy(update={"index": None}) for f in schema.fields)
            self.state.collections[name] = _Collection(
                replace(schema, fields=fields), {**properties}
            )

        self._call("create_collection", create)

    def set_properties(self, name: str, properties: Mapping[str, str]) -> None:
        self._call("set_properties", lambda: self._get(name).properties.update(properties))

    def drop(self, name: str) -> None:
        """Refused while an alias points at it, like the gateway."""

        def drop() -> None:
            if aliases := self._aliases_of(name):
                raise MilvusRejected(f"refusing to drop {name}: aliases {aliases} point at it")
            self.drop_unchecked(name)

        self._call("drop", drop)

    def drop_unchecked(self, name: str) -> None:
        """What Milvus itself does (someone else's drop_collection): the collection goes,
        and every alias pointing at it silently goes with it."""
        with self.state.lock:
            self.state.collections.pop(name, None)
            for alias in [a for a, t in self.state.aliases.items() if t == name]:
                del self.state.aliases[alias]
                self.state.routes.pop(alias, None)

    # -- data ----------------------------------------------------------------

    def insert(self, name: str, batch: VectorBatch) -> None:
        self._call("insert", lambda: self._insert(name, batch))

    def _insert(self, name: str, batch: VectorBatch) -> None:
        c = self._get(name)
        if batch.vectors.shape[1] != c.dimension:
            raise MilvusRejected(
                f"vector field 'vector' expected dim {c.dimension}, got {batch.vectors.shape[1]}"
            )
        declared = {f.name for f in c.fields} | {v.name for v in c.schema.vectors}
        if set(batch.fields) != declared:
            raise MilvusRejected(f"insert into {name}: fields {sorted(batch.fields)} != schema")
        _check_other_vectors(c, batch)
        n, fault = len(batch.ids), self.state.insert_fault
        if fault is not None and fault.rows_left < n:
            n, error = fault.rows_left, fault.error
            self.state.insert_fault = None
        else:
            error = None
            if fault is not None:
                fault.rows_left -= n
        vectors = np.array(batch.vectors[:n], dtype=np.float32)
        defaults = {f.name: f.default for f in c.fields if f.default is not None}
        for row, i in enumerate(batch.ids[:n].tolist()):
            scalars = {f: values[row] for f, values in batch.fields.items()}
            for v in c.schema.vectors:  # stored as Milvus returns them: float32 values
                scalars[v.name] = np.asarray(scalars[v.name], dtype=np.float32).tolist()
            for f, default in defaults.items():  # Milvus stores a missing value as its default
                if scalars[f] is None:
                    scalars[f] = default
            c.rows[int(i)] = (vectors[row], scalars)
        c._matrix = None
        if error is not None:
            raise error

    def upsert(self, name: str, batch: VectorBatch) -> None:
        """Not on the port: what an application writing into a collection does."""
        self._call("insert", lambda: self._insert(name, batch))

    def row_count(self, name: str, flush: bool = True) -> int:
        def count() -> int:
            c = self._get(name)
            if flush:
                c.flushed = len(c.rows)
            return c.flushed

        return self._call("row_count", count)

    def vectors_by_id(
        self, name: str, ids: Sequence[int], consistency: str = "Strong", field: str = "vector"
    ) -> dict[int, np.ndarray]:
        def get() -> dict[int, np.ndarray]:
            c = self._readable(name, through_alias=True)
            if field != "vector" and c.schema.vector(field) is None:
                raise MilvusRejected(f"reading vectors from {name}: field {field} does not exist")
            return {int(i): _stored(c.rows[int(i)], field) for i in ids if int(i) in c.rows}

        return self._call("vectors_by_id", get)

    def sample_ids(self, name: str, n: int, seed: int) -> np.ndarray:
        """The gateway's seeded reservoir, over ids in ascending order."""

        def sample() -> np.ndarray:
            ids = sorted(self._readable(name).rows)[:SAMPLE_SCAN_LIMIT]
            rng = np.random.default_rng(seed)
            reservoir: list[int] = []
            for seen, i in enumerate(ids, start=1):
                if len(reservoir) < n:
                    reservoir.append(i)
                elif (slot := int(rng.integers(seen))) < n:
                    reservoir[slot] = i
            return np.asarray(sorted(reservoir), dtype=np.int64)

        return self._call("sample_ids", sample)

    def iterate_rows(
        self, name: str, batch_size: int, fields: Sequence[str] = (), vectors: bool = True
    ) -> Generator[VectorBatch, None, None]:
        """Every row by id, as the rows were when iteration started."""

        def snapshot() -> list[tuple[int, np.ndarray, dict[str, Any]]]:
            c = self._readable(name)
            known = {f.name for f in c.fields} | {v.name for v in c.schema.vectors}
            if unknown := set(fields) - known:
                raise MilvusRejected(f"{name} has no field {sorted(unknown)}")
            return [(i, *c.rows[i]) for i in sorted(c.rows)]

        rows = self._call("iterate_rows", snapshot)
        size = max(1, min(batch_size, QUERY_ITERATOR_MAX_BATCH))
        dimension = len(rows[0][1]) if rows else 0
        for start in range(0, len(rows), size):
            page = rows[start : start + size]
            ids = np.asarray([r[0] for r in page], dtype=np.int64)
            matrix = (
                np.asarray([r[1] for r in page], dtype=np.float32).reshape(len(page), dimension)
                if vectors
                else np.empty((len(page), 0), dtype=np.float32)
            )
            extras = {f: [r[2][f] for r in page] for f in fields}
            yield VectorBatch(ids, matrix, extras, f"collection {name}", start)

    def collection_schema(self, name: str) -> Schema:
        return self._call("collection_schema", lambda: self._get(name).schema)

    # -- bulk import ---------------------------------------------------------

    def supports_bulk_import(self) -> bool:
        return self.state.bulk_import

    def bulk_import(self, name: str, files: Sequence[str]) -> list[int]:
        def submit() -> list[int]:
            if not self.state.bulk_import:
                raise MilvusRejected(f"bulk import into {name}: Milvus Lite has no import")
            self._get(name)
            return [self._import_file(name, f) for f in files]

        return self._call("bulk_import", submit)

    def _import_file(self, name: str, path: str) -> int:
        job_id = len(self.state.import_jobs) + 1
        try:
            batch = _read_staged(path, self._get(name))
        except Exception as exc:  # what pyarrow says of a file it cannot read
            job = ImportJob(job_id, "failed", 0, 0, f"{path}: {exc}")
        else:
            self._insert(name, batch)
            job = ImportJob(job_id, "completed", 100, len(batch))
        self.state.import_jobs[job_id] = job
        return job_id

    def import_job(self, job_id: int) -> ImportJob:
        def poll() -> ImportJob:
            job = self.state.import_jobs.get(job_id)
            if job is None:
                raise NotFound(f"import job {job_id} not found")
            polls = self.state.import_polls[job_id] = self.state.import_polls.get(job_id, 0) + 1
            if job.state == "completed" and polls == 1:
                return ImportJob(job_id, "running", 50, 0)
            return job

        return self._call("import_job", poll)

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
        def index() -> None:
            c = self._get(name)
            for field_name, vector in (vector_indexes or {}).items():
                if c.schema.vector(field_name) is None:
                    raise MilvusRejected(f"{name} has no vector field {field_name!r}")
                if vector.metric not in ("COSINE", "IP", "L2"):
                    raise MilvusRejected(f"metric type {vector.metric} not supported")
                c.vector_metrics.setdefault(field_name, vector.metric)
            if c.metric is None:  # like the gateway: an existing index is kept
                if metric not in ("COSINE", "IP", "L2"):
                    raise MilvusRejected(f"metric type {metric} not supported")
                c.metric, c._matrix = metric, None
            wanted = scalar_indexes or {}
            fields = tuple(
                f.model_copy(update={"index": wanted[f.name]})
                if f.index is None and f.name in wanted
                else f
                for f in c.schema.fields
            )
            c.schema = replace(c.schema, fields=fields)

        self._call("ensure_index", index)

    def index_progress(self, name: str) -> tuple[int, int] | None:
        def progress() -> tuple[int, int] | None:
            c = self._get(name)
            return None if c.metric is None else (c.flushed, c.flushed)

        return self._call("index_progress", progress)

    def is_loaded(self, name: str) -> bool:
        def loaded() -> bool:
            c = self.state.collections.get(self.state.aliases.get(name, name))
            return c is not None and c.loaded

        return self._call("is_loaded", loaded)

    def load(self, name: str, replicas: int = 1) -> None:
        def load() -> None:
            c = self._get(name)
            if c.metric is None:
                raise MilvusRejected(f"index not found for {name} (code 700)")
            # Like the 2.4+ server (Lite loads without them): every vector field indexed.
            if missing := [v.name for v in c.schema.vectors if v.name not in c.vector_metrics]:
                raise MilvusRejected(f"there is no vector index on fields {missing} of {name}")
            c.loaded = True

        self._call("load", load)

    def release(self, name: str) -> None:
        self._call("release", lambda: setattr(self._get(name), "loaded", False))

    # -- aliases -------------------------------------------------------------

    def alias_target(self, alias: str) -> str | None:
        return self._call("alias_target", lambda: self.state.aliases.get(alias))

    def _aliases_of(self, name: str) -> list[str]:
        """Like 2.3.5: NotFound for a missing collection (Lite answers [])."""
        self._get(name)
        return sorted(a for a, t in self.state.aliases.items() if t == name)

    def aliases_of(self, name: str) -> list[str]:
        return self._call("aliases_of", lambda: self._aliases_of(name))

    def point_alias(self, alias: str, collection: str) -> None:
        while self.state.flips_a_second_apart and int(time.time()) == self.state.last_flip:
            time.sleep(0.05)

        def point() -> None:
            st = self.state
            if collection not in st.collections:
                raise NotFound(f"collection '{collection}' does not exist")
            moving = alias in st.aliases
            st.aliases[alias] = collection
            if moving and st.lost_flips > 0:
                st.lost_flips -= 1  # reads keep reaching the old target
            else:
                st.routes[alias] = collection
            st.last_flip = int(time.time())

        self._call("point_alias", point)

    def drop_alias(self, alias: str) -> None:
        def drop() -> None:
            self.state.aliases.pop(alias, None)
            self.state.routes.pop(alias, None)

        self._call("drop_alias", drop)

    # -- search --------------------------------------------------------------

    def search_ids(
        self,
        target: str,
        queries: np.ndarray,
        k: int,
        params: Mapping[str, Any],
        consistency: str = "Strong",
        field: str = "vector",
    ) -> np.ndarray:
        return self._call("search_ids", lambda: self._search(target, queries, k, field))

    def _search(self, target: str, queries: np.ndarray, k: int, field: str) -> np.ndarray:
        c = self._readable(target, through_alias=True)
        q = np.asarray(queries, dtype=np.float32)
        other = c.schema.vector(field)
        if field != "vector" and other is None:
            raise MilvusRejected(f"searching {target}: field {field} does not exist")
        dimension = c.dimension if other is None else other.dimension
        if q.ndim != 2 or q.shape[1] != dimension:  # as the gateway translates it
            raise MilvusUnavailable(
                f"searching {target}: Milvus is unavailable (vector dimension mismatch: "
                f"{q.shape[-1]} != {dimension}: service internal error)"
            )
        out = np.full((len(q), k), -1, dtype=np.int64)
        if not c.rows:
            return out
        if other is None:
            ids, data = c.matrix()
            metric = c.metric
        else:
            ids = np.fromiter(c.rows, dtype=np.int64, count=len(c.rows))
            data = np.asarray([s[field] for _, s in c.rows.values()], dtype=np.float32)
            metric = c.vector_metrics[field]
            if metric == "COSINE":
                data = data / np.maximum(np.linalg.norm(data, axis=1, keepdims=True), 1e-30)
        if metric == "L2":  # squared distances, expanded: no (nq, n, d) temporary
            worse = (q**2).sum(axis=1)[:, None] - 2 * (q @ data.T) + (data**2).sum(axis=1)
        else:
            if metric == "COSINE":
                q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-30)
            worse = -(q @ data.T)
        for row in range(len(q)):
            order = np.lexsort((ids, worse[row]))[:k]  # by score, ties by ascending id
            out[row, : len(order)] = ids[order]
        return out

    # -- connections ---------------------------------------------------------

    def fresh(self) -> FakeMilvus:
        return FakeMilvus(self.state, self.observer)

    def close(self) -> None:
        self.closed = True


def _check_other_vectors(c: _Collection, batch: VectorBatch) -> None:
    """Like Milvus: each vector field's values are vectors of its dimension."""
    for v in c.schema.vectors:
        for value in batch.fields[v.name]:
            if value is None or len(value) != v.dimension:
                got = "null" if value is None else len(value)
                raise MilvusRejected(
                    f"vector field {v.name!r} expected dim {v.dimension}, got {got}"
                )


def _read_staged(path: str, c: _Collection) -> VectorBatch:
    """A staged Parquet file as Milvus 2.3 reads one: columns named like the fields."""
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    ids = table.column("id").to_numpy().astype(np.int64)
    vectors = np.asarray(table.column("vector").to_pylist(), dtype=np.float32)
    if vectors.shape[1:] != (c.dimension,):
        raise ValueError(f"vector dimension {vectors.shape[1:]} != {c.dimension}")
    fields = {f.name: table.column(f.name).to_pylist() for f in c.fields}
    for f in c.fields:
        if f.type == "JSON":  # staged as its text, which Milvus parses
            fields[f.name] = [json.loads(v) for v in fields[f.name]]
    return VectorBatch(ids, vectors.reshape(len(ids), c.dimension), fields, path, 0)


_: MilvusPort = FakeMilvus()  # mypy checks that the fake implements the whole port


def _stored(row: tuple[np.ndarray, dict[str, Any]], field: str) -> np.ndarray:
    """One row's vector of ``field``, a copy as Milvus returns it."""
    vector, scalars = row
    if field == "vector":
        return vector.copy()
    return np.asarray(scalars[field], dtype=np.float32)
