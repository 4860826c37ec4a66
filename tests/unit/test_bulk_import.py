"""Bulk import (controller/bulk_import.py, controller/sources/staging.py) on the fake.

The fake reads the staged Parquet files as the server does (tests/contract checks it
against Milvus 2.3.5), so these prove what is staged, what Milvus is asked, and that a
failed job leaves nothing staged and no complete candidate.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from controller.bulk_import import BulkImport, check_load, wants_import
from controller.errors import BuildIncomplete, SpecError
from controller.schema import Schema
from controller.sources.base import VectorBatch
from controller.sources.staging import ParquetStaging
from controller.spec import BULK_IMPORT_MIN_ROWS, FieldSpec, parse_release
from tests.support.fake_milvus import FakeMilvus, FakeState
from tests.support.specs import minimal_release

DIM = 4
FIELDS = [
    FieldSpec(name="title", type="VARCHAR", max_length=16),
    FieldSpec(name="meta", type="JSON"),
    FieldSpec(name="n", type="INT32"),
]


def batches(rows: int, size: int = 40) -> list[VectorBatch]:
    rng = np.random.default_rng(3)
    out = []
    for start in range(0, rows, size):
        ids = np.arange(start, min(rows, start + size), dtype=np.int64)
        fields: dict[str, list[Any]] = {
            "title": [f"t{i}" for i in ids],
            "meta": [{"i": int(i)} for i in ids],
            "n": [int(i) * 2 for i in ids],
        }
        vectors = rng.normal(size=(len(ids), DIM)).astype(np.float32)
        out.append(VectorBatch(ids, vectors, fields, "test", start))
    return out


def release(load: str, uri: str = "http://milvus:19530") -> Any:
    doc = minimal_release(
        namespace="search",
        milvus={"uri": uri},
        collection={"dimension": DIM},
        source={"files": {"uri": "data.parquet", "load": load}},
    )
    return parse_release(yaml.safe_dump(doc))


class Recorded:
    def __init__(self) -> None:
        self.reports: list[tuple[float, int]] = []

    def __call__(self, done: float, failed: int) -> None:
        self.reports.append((done, failed))


def quiet_progress(stage: str, total: int | None) -> Any:
    from contextlib import nullcontext

    return nullcontext(lambda n: None)


def importer(
    milvus: FakeMilvus, staging: ParquetStaging, report: Recorded, said: list[str] | None = None
) -> BulkImport:
    say = (said if said is not None else []).append
    return BulkImport(milvus, staging, quiet_progress, report, say, 30.0, 0.0, sleep=lambda s: None)


def test_staging_writes_parts_named_for_milvus_and_removes_them(tmp_path: Path) -> None:
    staging = ParquetStaging(tmp_path / "stage", "/milvus/sees/stage", rows_per_file=50)
    files = staging.stage("coll", FIELDS, batches(120))
    assert files == [f"/milvus/sees/stage/coll/part-0000{i}.parquet" for i in range(3)]
    parts = sorted((tmp_path / "stage" / "coll").iterdir())
    tables = [pq.read_table(p) for p in parts]
    assert [t.num_rows for t in tables] == [50, 50, 20]
    first = tables[0]
    assert first.column_names == ["id", "vector", "title", "meta", "n"]
    vector_type = first.schema.field("vector").type
    assert pa.types.is_list(vector_type) and vector_type.value_type == pa.float32()
    assert str(first.schema.field("n").type) == "int32"
    assert first.column("meta").to_pylist()[1] == '{"i": 1}'  # JSON fields as their text
    expected = batches(120)[0].vectors[0]
    assert np.allclose(first.column("vector").to_pylist()[0], expected)
    staging.remove("coll")
    assert not (tmp_path / "stage" / "coll").exists()


def test_a_bulk_import_fills_the_collection_and_leaves_nothing_staged(tmp_path: Path) -> None:
    milvus, report = FakeMilvus(), Recorded()
    milvus.create_collection("coll", Schema(DIM, tuple(FIELDS)), {})
    stage = tmp_path / "stage"
    staging = ParquetStaging(stage, str(stage), rows_per_file=50)
    said: list[str] = []
    assert importer(milvus, staging, report, said).load("coll", FIELDS, batches(120), 120) == 120
    assert said == [
        "importing 120 rows into coll: 3 import jobs submitted",
        "importing into coll: 100%, 3/3 jobs",
    ]
    assert milvus.row_count("coll") == 120
    rows = milvus.state.collections["coll"].rows
    vector, scalars = rows[7]
    assert np.allclose(vector, batches(120)[0].vectors[7])
    assert scalars == {"title": "t7", "meta": {"i": 7}, "n": 14}
    assert not (stage / "coll").exists()
    # polled while running (50%), then done; no job failed
    assert report.reports == [(0.5, 0), (1.0, 0)]


class CorruptingStaging(ParquetStaging):
    """Stages like ParquetStaging, then truncates one part: a file Milvus cannot read."""

    def stage(self, name: str, fields: Any, batches: Any) -> list[str]:
        files = super().stage(name, fields, batches)
        part = self.path / name / Path(files[1]).name
        part.write_bytes(part.read_bytes()[:100])
        return files


def test_a_failed_job_is_incomplete_and_cleans_up(tmp_path: Path) -> None:
    milvus, report = FakeMilvus(), Recorded()
    milvus.create_collection("coll", Schema(DIM, tuple(FIELDS)), {})
    stage = tmp_path / "stage"
    staging = CorruptingStaging(stage, str(stage), rows_per_file=50)
    with pytest.raises(BuildIncomplete, match=r"failed: 1 of 3 jobs .*rebuilt"):
        importer(milvus, staging, report).load("coll", FIELDS, batches(120), 120)
    assert not (stage / "coll").exists()
    assert report.reports[-1][1] == 1  # one failed job, counted for telemetry
    # The good files imported (as on the server): the count cannot match the source.
    assert milvus.row_count("coll") == 70


def test_load_mode_choice() -> None:
    server, lite = FakeMilvus(), FakeMilvus(FakeState(bulk_import=False))
    staging = ParquetStaging(Path("/unused"), "/unused", 10)
    many, few = BULK_IMPORT_MIN_ROWS, BULK_IMPORT_MIN_ROWS - 1
    assert wants_import(release("auto"), server, staging, many)
    assert not wants_import(release("auto"), server, staging, few)
    assert not wants_import(release("auto"), lite, staging, many)  # Lite: insert
    assert not wants_import(release("auto"), server, None, many)  # nowhere to stage
    assert not wants_import(release("insert"), server, staging, many)
    assert wants_import(release("bulkImport"), server, staging, 1)


def test_bulk_import_where_it_cannot_run_is_a_spec_error() -> None:
    # A Lite path in the spec: refused when the spec is read.
    with pytest.raises(SpecError, match=r"Milvus Lite, which has no bulk import"):
        release("bulkImport", uri="milvus.db")
    staging = ParquetStaging(Path("/unused"), "/unused", 10)
    # A server URL that turns out to be Lite: refused before the build.
    lite = FakeMilvus(FakeState(bulk_import=False))
    with pytest.raises(SpecError, match=r"spec.source.files.load: bulkImport: Milvus Lite"):
        check_load(release("bulkImport"), lite, staging)
    with pytest.raises(SpecError, match=r"no milvus.importStaging"):
        check_load(release("bulkImport"), FakeMilvus(), None)
    check_load(release("bulkImport"), FakeMilvus(), staging)
    check_load(release("auto"), lite, None)


def test_the_load_mode_is_not_part_of_the_content() -> None:
    hashes = {(r.build_hash(), r.spec_hash()) for r in map(release, ["auto", "insert"])}
    assert len(hashes) == 1
