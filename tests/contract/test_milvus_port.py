"""The MilvusPort contract: what the engine relies on, checked on every implementation.

The same checks run against the in-memory fake (tests/support/fake_milvus.py), the
gateway on Milvus Lite and the gateway on the real Milvus 2.3.5 server. The scenarios
run on the fake in the default suite, so this is the test that fails when the fake
drifts from the real backends. Where Milvus Lite is laxer than the server, the fake
follows the server and the check says so.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from controller.errors import MilvusRejected, MilvusUnavailable, NotFound
from controller.milvus import MilvusGateway, RetryPolicy
from controller.ports import ImportJob, MilvusPort
from controller.schema import Schema, VectorField, VectorIndex
from controller.sources.base import VectorBatch
from controller.sources.staging import ParquetStaging
from controller.spec import FieldSpec
from tests.support.fake_milvus import FakeMilvus
from tests.support.milvus_server import MilvusServer, drop_alias_collections

DIM, ROWS = 8, 300
FIELDS = [FieldSpec(name="title", type="VARCHAR", max_length=32), FieldSpec(name="n", type="INT64")]
SCHEMA = Schema(DIM, tuple(FIELDS))
# One attempt: a refused call must surface at once, not after the gateway's back-off.
ONCE = RetryPolicy(attempts=1, max_wait=1.0, timeout=30.0)


@dataclass
class Subject:
    """One implementation of the port, plus what Milvus does behind the gateway's back."""

    kind: str  # "fake" | "lite" | "server"
    port: MilvusPort
    raw_drop: Callable[[str], None]  # drop_collection without the gateway's alias check
    prefix: str

    def name(self, what: str) -> str:
        return f"{self.prefix}{what}_{uuid.uuid4().hex[:6]}"


def _gateway_subject(kind: str, uri: str, prefix: str) -> Iterator[Subject]:
    from pymilvus import MilvusClient

    gateway = MilvusGateway(uri, policy=ONCE)
    raw = MilvusClient(uri=uri)  # a second client in this process; Lite allows that
    try:
        yield Subject(kind, gateway, raw.drop_collection, prefix)
    finally:
        raw.close()
        gateway.close()


@pytest.fixture(
    scope="module",
    params=[
        "fake",
        "lite",
        pytest.param("server", marks=[pytest.mark.server, pytest.mark.real]),
    ],
)
def subject(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Subject]:
    """One connection per backend for the module; each test uses its own collections."""
    prefix = f"k{uuid.uuid4().hex[:8]}__"
    if request.param == "fake":
        fake = FakeMilvus()
        yield Subject("fake", fake, fake.drop_unchecked, prefix)
    elif request.param == "lite":
        uri = str(tmp_path_factory.mktemp("contract") / "milvus.db")
        yield from _gateway_subject("lite", uri, prefix)
    else:
        server: MilvusServer = request.getfixturevalue("milvus_server")
        yield from _gateway_subject("server", server.uri, prefix)
        drop_alias_collections(server.uri, prefix.removesuffix("__"))


def vectors(seed: int, n: int = ROWS, dim: int = DIM) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)


def batch(ids: np.ndarray, vecs: np.ndarray) -> VectorBatch:
    fields: dict[str, list[object]] = {
        "title": [f"t{i}" for i in ids.tolist()],
        "n": [int(i) * 10 for i in ids.tolist()],
    }
    return VectorBatch(ids.astype(np.int64), vecs, fields, "contract", 0)


def built(
    s: Subject,
    what: str,
    seed: int = 1,
    index: str = "FLAT",
    metric: str = "COSINE",
    params: dict[str, object] | None = None,
) -> tuple[str, np.ndarray]:
    """A collection of ROWS rows (ids 0..ROWS-1), flushed, indexed, loaded."""
    name, vecs = s.name(what), vectors(seed)
    s.port.create_collection(name, SCHEMA, {"embrel.version": what})
    s.port.insert(name, batch(np.arange(ROWS), vecs))
    assert s.port.row_count(name, flush=True) == ROWS
    s.port.ensure_index(name, index, metric, params or {})
    wait_indexed(s.port, name, ROWS)
    s.port.load(name)
    return name, vecs


def wait_indexed(port: MilvusPort, name: str, rows: int, timeout: float = 60) -> None:
    """The server builds indexes in the background; the others finish at once."""
    deadline = time.monotonic() + timeout
    while (progress := port.index_progress(name)) != (rows, rows):
        assert time.monotonic() < deadline, f"index of {name} stuck at {progress}"
        time.sleep(0.2)


def exact_top_k(metric: str, data: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    if metric == "L2":
        worse = ((queries[:, None, :] - data[None, :, :]) ** 2).sum(axis=2)
    else:
        if metric == "COSINE":
            data = data / np.linalg.norm(data, axis=1, keepdims=True)
            queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
        worse = -(queries @ data.T)
    return np.argsort(worse, axis=1, kind="stable")[:, :k]


# -- collections, properties, schema ----------------------------------------------


def test_create_with_properties_and_schema(subject: Subject) -> None:
    port, name = subject.port, subject.name("created")
    port.create_collection(name, SCHEMA, {"embrel.track": "test/products", "a": "1"})
    assert name in port.list_collections()
    assert port.properties(name) == {"embrel.track": "test/products", "a": "1"}
    assert port.collection_schema(name) == SCHEMA

    port.set_properties(name, {"a": "2", "b": "3"})  # merged: never deleted
    assert port.properties(name) == {"embrel.track": "test/products", "a": "2", "b": "3"}
    port.drop(name)
    assert name not in port.list_collections()


def test_features_name_the_backend(subject: Subject) -> None:
    features = subject.port.features()
    expected = {"fake": "fake", "lite": "Milvus Lite 3.", "server": "Milvus 2.3.5"}
    assert expected[subject.kind] in features.backend
    # What the suite's backends differ in: 2.3.5 predates nullable fields and INVERTED.
    assert features.nullable is (subject.kind != "server")
    assert ("INVERTED" in features.scalar_indexes) is (subject.kind != "server")


def test_a_production_schema_round_trips(subject: Subject) -> None:
    """Partition key, dynamic field, scalar indexes (and nullable fields with defaults
    where the backend has them): described back as they were created."""
    port, name = subject.port, subject.name("rich")
    features = port.features()
    scalar = "INVERTED" if "INVERTED" in features.scalar_indexes else "STL_SORT"
    fields = [
        FieldSpec(name="tenant", type="VARCHAR", max_length=16, partition_key=True),
        FieldSpec(name="n", type="INT64", index=scalar),
    ]
    if features.nullable:
        fields.append(FieldSpec(name="price", type="FLOAT", nullable=True, default=1.5))
    schema = Schema(DIM, tuple(fields), dynamic_field=True)
    port.create_collection(name, schema, {}, num_partitions=4)
    ids = np.arange(10)
    columns: dict[str, list[object]] = {"tenant": [f"t{i % 3}" for i in ids], "n": list(ids)}
    if features.nullable:
        columns["price"] = [None, *[float(i) for i in ids[1:]]]  # null: the default, 1.5
    port.insert(name, VectorBatch(ids, vectors(7, n=10), columns, "contract", 0))
    assert port.row_count(name) == 10
    port.ensure_index(name, "FLAT", "COSINE", {}, schema.scalar_indexes)
    wait_indexed(port, name, 10)
    assert port.collection_schema(name) == schema
    port.ensure_index(name, "FLAT", "COSINE", {}, schema.scalar_indexes)  # kept, no error
    assert port.collection_schema(name) == schema
    port.load(name)  # read back by pages: strings, and nulls where the backend has them
    pages = list(port.iterate_rows(name, 4, list(columns)))
    stored = {**columns, "price": [1.5, *columns["price"][1:]]} if features.nullable else columns
    assert {f: [v for p in pages for v in p.fields[f]] for f in columns} == stored


def test_several_vector_fields_round_trip_where_the_backend_has_them(subject: Subject) -> None:
    """A second vector field is created, filled, indexed with its own metric, described
    back and searched on its own; Milvus 2.3.5 refuses the collection."""
    port, name = subject.port, subject.name("multivec")
    schema = Schema(DIM, (FieldSpec(name="n", type="INT64"),), vectors=(VectorField("image", 3),))
    if port.features().max_vector_fields == 1:
        assert subject.kind == "server"
        with pytest.raises(MilvusRejected):
            port.create_collection(name, schema, {})
        assert name not in port.list_collections()
        return
    port.create_collection(name, schema, {})
    ids, main = np.arange(20), vectors(9, n=20)
    images = [[float(i), 1.0, 0.5] for i in ids.tolist()]
    columns: dict[str, list[object]] = {"n": ids.tolist(), "image": list(images)}
    port.insert(name, VectorBatch(ids, main, columns, "contract", 0))
    assert port.row_count(name) == 20
    image_index = {"image": VectorIndex("FLAT", "L2")}
    port.ensure_index(name, "FLAT", "COSINE", {}, None, image_index)
    wait_indexed(port, name, 20)
    assert port.collection_schema(name) == schema
    port.load(name)
    near = port.search_ids(
        name, np.asarray([[3.2, 1.0, 0.5]], dtype=np.float32), 2, {}, field="image"
    )
    assert near.tolist() == [[3, 4]]  # by L2 on image: 3 (0.04) before 4 (0.64) and 2 (1.44)
    assert port.search_ids(name, main[5:6], 1, {}).tolist() == [[5]]  # vector, by default
    by_id = port.vectors_by_id(name, [3, 4], field="image")
    assert {i: [float(x) for x in v] for i, v in by_id.items()} == {3: images[3], 4: images[4]}
    assert port.vectors_by_id(name, [3])[3].tolist() == main[3].tolist()  # vector, by default
    with pytest.raises(MilvusRejected):
        port.vectors_by_id(name, [3], field="audio")
    stored = {
        int(i): b.fields["image"][row]
        for b in port.iterate_rows(name, 100, ["image"], vectors=False)
        for row, i in enumerate(b.ids.tolist())
    }
    assert [list(map(float, stored[i])) for i in range(20)] == images


def test_insert_counts_after_a_flush(subject: Subject) -> None:
    port, name = subject.port, subject.name("counted")
    port.create_collection(name, SCHEMA, {})
    vecs = vectors(2)
    port.insert(name, batch(np.arange(100), vecs[:100]))
    port.insert(name, batch(np.arange(100, ROWS), vecs[100:]))
    assert port.row_count(name, flush=False) <= ROWS  # unflushed rows may not count yet
    assert port.row_count(name, flush=True) == ROWS
    assert port.row_count(name, flush=False) == ROWS  # sealed now


# -- bulk import ---------------------------------------------------------------------


def finished(port: MilvusPort, jobs: list[int], timeout: float = 120) -> list[ImportJob]:
    """Every job's state once none is pending or running."""
    deadline = time.monotonic() + timeout
    while True:
        states = [port.import_job(j) for j in jobs]
        if all(s.state in ("completed", "failed") for s in states):
            return states
        assert all(0 <= s.percent <= 100 for s in states)
        assert time.monotonic() < deadline, f"import jobs stuck: {states}"
        time.sleep(0.5)


def staged(tmp_path: Path, name: str, rows_per_file: int, vecs: np.ndarray) -> list[str]:
    """ROWS rows staged as Parquet, where a server on this machine reads them."""
    staging = ParquetStaging(tmp_path, str(tmp_path.resolve()), rows_per_file)
    return staging.stage(name, FIELDS, [batch(np.arange(ROWS), vecs)])


def test_bulk_import_of_staged_parquet(subject: Subject, tmp_path: Path) -> None:
    port, name = subject.port, subject.name("imported")
    port.create_collection(name, SCHEMA, {})
    vecs = vectors(8)
    files = staged(tmp_path, name, 100, vecs)
    if subject.kind == "lite":  # Milvus Lite has no Import RPC: refused, nothing written
        assert not port.supports_bulk_import()
        with pytest.raises(MilvusRejected, match="Milvus Lite"):
            port.bulk_import(name, files)
        assert port.row_count(name) == 0
        return
    assert port.supports_bulk_import()
    jobs = port.bulk_import(name, files)
    assert len(jobs) == len(files) == 3  # one job per file
    states = finished(port, jobs)
    assert [(s.state, s.percent, s.reason) for s in states] == [("completed", 100, "")] * 3
    assert sum(s.rows for s in states) == ROWS
    assert port.row_count(name) == ROWS
    port.ensure_index(name, "FLAT", "L2", {})
    wait_indexed(port, name, ROWS)
    port.load(name)
    got = port.vectors_by_id(name, [0, 150, ROWS - 1])
    assert all(np.allclose(got[i], vecs[i]) for i in (0, 150, ROWS - 1))
    scalars = {
        int(i): (t, n)
        for page in port.iterate_rows(name, 100, fields=["title", "n"], vectors=False)
        for i, t, n in zip(page.ids, page.fields["title"], page.fields["n"], strict=True)
    }
    assert len(scalars) == ROWS and scalars[150] == ("t150", 1500)


def test_a_corrupt_file_fails_its_job_and_only_its_job(subject: Subject, tmp_path: Path) -> None:
    if subject.kind == "lite":
        pytest.skip("Milvus Lite has no import (test_bulk_import_of_staged_parquet)")
    port, name = subject.port, subject.name("corrupt")
    port.create_collection(name, SCHEMA, {})
    files = staged(tmp_path, name, 100, vectors(9))
    middle = Path(files[1])
    middle.write_bytes(middle.read_bytes()[:100])  # truncated: not a Parquet file anymore
    states = finished(port, port.bulk_import(name, files))
    assert [s.state for s in states] == ["completed", "failed", "completed"]
    assert states[1].reason  # Milvus says why
    assert port.row_count(name) == ROWS - 100  # the good files' rows: a partial import


# -- index and load ------------------------------------------------------------------


def test_index_progress_load_and_release(subject: Subject) -> None:
    port, name = subject.port, subject.name("indexed")
    port.create_collection(name, SCHEMA, {})
    port.insert(name, batch(np.arange(ROWS), vectors(3)))
    assert port.row_count(name) == ROWS
    assert port.index_progress(name) is None
    port.ensure_index(name, "HNSW", "COSINE", {"M": 8, "efConstruction": 64})
    port.ensure_index(name, "FLAT", "L2", {})  # an existing index is kept, not an error
    wait_indexed(port, name, ROWS)

    port.load(name)
    assert port.is_loaded(name)
    port.release(name)
    assert not port.is_loaded(name)
    port.load(name)
    assert port.is_loaded(name)


def test_reads_of_a_released_collection_are_refused(subject: Subject) -> None:
    if subject.kind == "lite":
        pytest.skip("Milvus Lite answers reads of a released collection; the fake follows 2.3.5")
    name, vecs = built(subject, "released")
    subject.port.release(name)
    with pytest.raises(MilvusRejected):
        subject.port.search_ids(name, vecs[:2], 5, {})
    with pytest.raises(MilvusRejected):
        subject.port.vectors_by_id(name, [1, 2])


# -- search and reads ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("index", "metric", "params", "search"),
    [
        ("FLAT", "COSINE", {}, {}),
        ("FLAT", "IP", {}, {}),
        ("FLAT", "L2", {}, {}),
        ("HNSW", "COSINE", {"M": 16, "efConstruction": 200}, {"ef": 300}),
    ],
)
def test_search_is_exact_on_a_small_set(
    subject: Subject,
    index: str,
    metric: str,
    params: dict[str, object],
    search: dict[str, object],
) -> None:
    name, vecs = built(subject, f"search_{metric.lower()}", 4, index, metric, params)
    queries = vectors(5, n=20)
    got = subject.port.search_ids(name, queries, 10, search)
    assert got.shape == (20, 10) and got.dtype == np.int64
    assert got.tolist() == exact_top_k(metric, vecs, queries, 10).tolist()

    # More than the collection holds: every row once, then -1 padding.
    wide = subject.port.search_ids(name, queries[:1], ROWS + 5, {"ef": ROWS + 5})
    assert sorted(wide[0, :ROWS].tolist()) == list(range(ROWS))
    assert wide[0, ROWS:].tolist() == [-1] * 5


def test_vectors_by_id_returns_stored_vectors(subject: Subject) -> None:
    name, vecs = built(subject, "vectors")
    got = subject.port.vectors_by_id(name, [3, 7, ROWS + 10])
    assert sorted(got) == [3, 7], "a missing id is left out"
    for i in (3, 7):
        assert got[i].dtype == np.float32
        assert np.array_equal(got[i], vecs[i]), "stored as written, not normalised"


def test_sample_ids_is_the_seeded_reservoir(subject: Subject) -> None:
    name, _ = built(subject, "sampled")
    rng, reservoir = np.random.default_rng(42), list[int]()
    for seen, i in enumerate(range(ROWS), start=1):
        if len(reservoir) < 50:
            reservoir.append(i)
        elif (slot := int(rng.integers(seen))) < 50:
            reservoir[slot] = i
    assert subject.port.sample_ids(name, 50, 42).tolist() == sorted(reservoir)
    assert subject.port.sample_ids(name, ROWS + 1, 1).tolist() == list(range(ROWS))


def test_iterate_rows_reads_every_row_by_id_in_bounded_batches(subject: Subject) -> None:
    name, vecs = built(subject, "iterated")
    batches = list(subject.port.iterate_rows(name, 64, fields=["title", "n"]))
    assert all(len(b.ids) <= 64 for b in batches)
    assert [b.first_row for b in batches] == list(range(0, ROWS, 64))
    ids = np.concatenate([b.ids for b in batches])
    assert ids.tolist() == list(range(ROWS))
    assert np.array_equal(np.concatenate([b.vectors for b in batches]), vecs)
    titles = [t for b in batches for t in b.fields["title"]]
    assert titles == [f"t{i}" for i in range(ROWS)]
    assert [int(n) for b in batches for n in b.fields["n"]] == [i * 10 for i in range(ROWS)]

    bare = list(subject.port.iterate_rows(name, 1000, vectors=False))
    assert [b.vectors.shape for b in bare] == [(ROWS, 0)] and bare[0].fields == {}


def test_iterate_rows_pages_by_id_across_segments_written_out_of_order(subject: Subject) -> None:
    """Pages continue after the last id read, so every segment must give its smallest
    ids first: rows written in shuffled order over three flushed segments come back
    once each, by id."""
    port, name = subject.port, subject.name("shuffled")
    port.create_collection(name, SCHEMA, {})
    vecs = vectors(4)
    for part in np.array_split(np.random.default_rng(5).permutation(ROWS), 3):
        port.insert(name, batch(part, vecs[part]))
        port.row_count(name, flush=True)  # seals a segment
    port.ensure_index(name, "FLAT", "COSINE", {})
    wait_indexed(port, name, ROWS)
    port.load(name)
    pages = list(port.iterate_rows(name, 7, fields=["title"]))
    assert np.concatenate([p.ids for p in pages]).tolist() == list(range(ROWS))
    assert np.array_equal(np.concatenate([p.vectors for p in pages]), vecs)
    assert [t for p in pages for t in p.fields["title"]] == [f"t{i}" for i in range(ROWS)]


# -- aliases -------------------------------------------------------------------------


def test_alias_create_move_and_drop(subject: Subject) -> None:
    port = subject.port
    blue, blue_vecs = built(subject, "blue", seed=6)
    green, green_vecs = built(subject, "green", seed=7)
    alias = subject.name("alias")
    assert port.alias_target(alias) is None

    port.point_alias(alias, blue)
    assert port.alias_target(alias) == blue
    assert port.aliases_of(blue) == [alias] and port.aliases_of(green) == []
    assert np.array_equal(port.vectors_by_id(alias, [5])[5], blue_vecs[5])
    query = blue_vecs[:3]
    assert port.search_ids(alias, query, 1, {})[:, 0].tolist() == [0, 1, 2]

    port.point_alias(alias, green)  # a move: one call
    assert port.alias_target(alias) == green
    assert port.aliases_of(blue) == [] and port.aliases_of(green) == [alias]
    # A Strong get through the alias reaches the new target (it refreshes the proxy's cache).
    assert np.array_equal(port.vectors_by_id(alias, [5])[5], green_vecs[5])
    assert port.properties(alias) == port.properties(green)  # describe resolves the alias

    with pytest.raises(MilvusRejected, match="alias"):
        port.drop(green)  # the gateway refuses while an alias points at it
    assert green in port.list_collections()
    port.drop_alias(alias)
    assert port.alias_target(alias) is None and port.aliases_of(green) == []
    port.drop_alias(alias)  # already gone: not an error
    port.drop(green)
    assert green not in port.list_collections()
    with pytest.raises(NotFound):
        port.point_alias(alias, green)


def test_an_aliased_collection_dropped_behind_the_gateway_takes_its_alias(
    subject: Subject,
) -> None:
    """Milvus Lite and 2.3.5 drop an aliased collection; the alias silently disappears."""
    name, _ = built(subject, "dropped")
    alias = subject.name("gone")
    subject.port.point_alias(alias, name)
    subject.raw_drop(name)
    assert name not in subject.port.list_collections()
    assert subject.port.alias_target(alias) is None
    subject.port.create_collection(name, SCHEMA, {})
    assert subject.port.aliases_of(name) == []


def test_a_fresh_connection_sees_the_same_milvus(subject: Subject) -> None:
    name, _ = built(subject, "shared")
    alias = subject.name("fresh")
    other = subject.port.fresh()
    try:
        subject.port.point_alias(alias, name)
        assert other.alias_target(alias) == name
        assert other.row_count(name, flush=False) == ROWS
    finally:
        other.close()
    assert subject.port.alias_target(alias) == name, "closing a fresh one leaves this open"
    subject.port.drop_alias(alias)


# -- errors --------------------------------------------------------------------------


def test_a_missing_collection_is_not_found(subject: Subject) -> None:
    port, missing = subject.port, subject.name("missing")
    queries = vectors(8, n=1)
    calls: list[Callable[[], object]] = [
        lambda: port.properties(missing),
        lambda: port.set_properties(missing, {"a": "1"}),
        lambda: port.insert(missing, batch(np.arange(2), queries.repeat(2, axis=0))),
        lambda: port.row_count(missing),
        lambda: port.collection_schema(missing),
        lambda: port.ensure_index(missing, "FLAT", "L2", {}),
        lambda: port.index_progress(missing),
        lambda: port.load(missing),
        lambda: port.release(missing),
        lambda: port.search_ids(missing, queries, 3, {}),
        lambda: port.vectors_by_id(missing, [1]),
        lambda: port.sample_ids(missing, 3, 1),
        lambda: list(port.iterate_rows(missing, 10)),
    ]
    for call in calls:
        with pytest.raises(NotFound):
            call()
    if subject.kind == "lite":  # laxer than 2.3.5, which the fake follows
        assert port.aliases_of(missing) == []
        port.drop(missing)
    else:
        with pytest.raises(NotFound):
            port.aliases_of(missing)
        with pytest.raises(NotFound):
            port.drop(missing)  # the gateway asks for its aliases first
    assert not port.is_loaded(missing)


def test_another_dimension_is_refused(subject: Subject) -> None:
    name, _ = built(subject, "dimension")
    with pytest.raises(MilvusRejected, match="dim"):
        subject.port.insert(name, batch(np.arange(ROWS, ROWS + 2), np.ones((2, 4), np.float32)))
    # A search with another dimension fails inside Milvus ("vector dimension mismatch:
    # service internal error" on 2.3.5, a numpy error on Lite): the gateway reads both as
    # MilvusUnavailable, so the fake raises that too.
    with pytest.raises(MilvusUnavailable):
        subject.port.search_ids(name, np.ones((1, 4), np.float32), 3, {})


def test_fake_is_a_milvus_port(tmp_path: Path) -> None:
    port: MilvusPort = FakeMilvus()  # mypy: the fake implements the whole protocol
    assert port.list_collections() == []
