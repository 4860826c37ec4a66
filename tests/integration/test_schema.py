"""The collection's whole schema: what production collections have (partition key,
dynamic field, scalar indexes, nullable fields with defaults) is built as the spec
says; a candidate that would break the live collection's queries is refused with the
field named; a feature the backend lacks is a spec error naming the backend. Both
refusals come before anything is created in Milvus."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from controller.cli.output import ExitCode
from controller.schema import Schema, VectorField, features_of
from controller.spec import FieldSpec
from tests.conftest import (
    ON_LITE_TOO,
    REAL,
    Backend,
    Corpus,
    embrel,
    release_yaml,
    write_release,
)


def _image(i: int) -> list[float]:
    """Row ``i``'s second vector: nearest to row i's own by L2, whatever the corpus."""
    return [float(i), 1.0, 0.5, -1.0]


def _rich_source(
    path: Path, corpus: Corpus, version: str, nullable: bool, images: bool = False
) -> Path:
    """The corpus' vectors with a tenant, a number, (when nullable) a price with gaps and
    (with ``images``) a second vector column ``image``."""
    ids = corpus.ids
    vectors = corpus.vectors[version]
    columns: dict[str, Any] = {
        "id": pa.array(ids, pa.int64()),
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), vectors.shape[1]),
        "tenant": pa.array([f"t{i % 5}" for i in ids.tolist()]),
        "n": pa.array(ids * 10, pa.int64()),
    }
    if nullable:
        columns["price"] = pa.array([None if i % 7 == 0 else float(i) for i in ids.tolist()])
    if images:
        columns["image"] = pa.array([_image(i) for i in ids.tolist()], pa.list_(pa.float32()))
    pq.write_table(pa.table(columns), path)
    return path


def _fields(backend: Backend, nullable: bool) -> list[dict[str, object]]:
    # 2.3.5 has STL_SORT and TRIE scalar indexes; Lite and 2.4+ have INVERTED.
    index = "STL_SORT" if backend.kind == "server" else "INVERTED"
    fields: list[dict[str, object]] = [
        {"name": "tenant", "type": "VARCHAR", "maxLength": 16, "partitionKey": True},
        {"name": "n", "type": "INT64", "index": index},
    ]
    if nullable:
        fields.append({"name": "price", "type": "DOUBLE", "nullable": True, "default": -1.0})
    return fields


def _release(
    tmp_path: Path,
    backend: Backend,
    corpus: Corpus,
    version: str,
    fields: list[dict[str, object]],
    **collection: object,
) -> Path:
    nullable = any(f.get("nullable") for f in fields)
    images = bool(collection.get("vectors"))
    source = _rich_source(tmp_path / f"{version}.parquet", corpus, version, nullable, images)
    doc = release_yaml(backend, version, source)
    spec = doc["spec"]
    assert isinstance(spec, dict)
    spec["collection"] |= {"fields": fields, "dynamicField": True} | collection
    return write_release(tmp_path / f"{version}.yaml", doc)


def _apply(tmp_path: Path, spec: Path) -> tuple[int, str]:
    r = embrel("--state-dir", str(tmp_path / "state"), "apply", "-f", str(spec), cwd=tmp_path)
    assert "Traceback" not in r.stderr, r.stderr
    return r.returncode, r.stdout + r.stderr


@ON_LITE_TOO
def test_a_production_schema_is_built_as_the_spec_says(
    tmp_path: Path, backend: Backend, corpus: Corpus
) -> None:
    nullable = backend.kind != "server"  # nullable fields came with Milvus 2.5
    fields = _fields(backend, nullable)
    code, out = _apply(tmp_path, _release(tmp_path, backend, corpus, "v1", fields))
    assert code == 0, out
    with backend.port() as port:
        schema = port.collection_schema(f"{backend.alias}__v1")
        expected = Schema(32, tuple(FieldSpec.model_validate(f) for f in fields), True)
        assert schema == expected
        if nullable:  # a missing price is stored as the default
            port.load(f"{backend.alias}__v1")  # Lite releases it when the controller exits
            rows = dict(
                (b.ids[i], b.fields["price"][i])
                for b in port.iterate_rows(f"{backend.alias}__v1", 1000, ["price"], vectors=False)
                for i in range(len(b.ids))
            )
            assert rows[0] == -1.0 and rows[1] == 1.0


@ON_LITE_TOO
def test_a_candidate_that_breaks_the_live_schema_is_refused_unless_allowed(
    tmp_path: Path, backend: Backend, corpus: Corpus
) -> None:
    fields = _fields(backend, nullable=False)
    assert _apply(tmp_path, _release(tmp_path, backend, corpus, "v1", fields))[0] == 0
    before = backend.inspect()

    dropped = _release(tmp_path, backend, corpus, "v2", fields[:1], dynamicField=False)
    code, out = _apply(tmp_path, dropped)
    assert code == ExitCode.FAILED and "invalid release spec" in out, out
    assert "field 'n' (INT64) is missing" in out and "dynamic field is dropped" in out
    assert f"live collection {backend.alias}__v1" in out and "allowSchemaChange" in out
    after = backend.inspect()
    assert after["alias_target"] == before["alias_target"] == f"{backend.alias}__v1"
    assert sorted(after["collections"]) == sorted(before["collections"])  # nothing built

    allowed = _release(
        tmp_path, backend, corpus, "v2", fields[:1], dynamicField=False, allowSchemaChange=True
    )
    code, out = _apply(tmp_path, allowed)
    assert code == 0, out
    assert backend.alias_target() == f"{backend.alias}__v2"


@pytest.mark.parametrize(
    "backend",
    ["fake", pytest.param("server", marks=[pytest.mark.server, REAL])],
    indirect=True,
)
def test_a_feature_the_backend_lacks_is_a_spec_error_naming_it(
    tmp_path: Path, backend: Backend, corpus: Corpus
) -> None:
    if backend.fake is not None:  # the fake answers as the 2.3.5 server does
        backend.fake.features = features_of("v2.3.5", lite=False)
    fields = _fields(backend, nullable=True)
    fields[1]["index"] = "INVERTED"
    code, out = _apply(tmp_path, _release(tmp_path, backend, corpus, "v1", fields, vectors=IMAGE))
    assert code == ExitCode.FAILED and "invalid release spec" in out, out
    assert "spec.collection.fields[2]" in out and "Milvus 2.3.5 does not support nullable" in out
    assert "spec.collection.fields[1].index" in out and "INVERTED" in out
    assert "spec.collection.vectors" in out
    assert "Milvus 2.3.5 does not support several vector fields" in out
    assert backend.inspect()["collections"] == {}  # refused before anything was created


IMAGE = [{"name": "image", "dimension": 4, "metric": "L2", "index": {"type": "FLAT"}}]


@pytest.mark.parametrize("backend", ["fake", "lite"], indirect=True)
def test_a_second_vector_field_is_released_and_searchable_on_its_own(
    tmp_path: Path, backend: Backend, corpus: Corpus
) -> None:
    """Milvus 2.3.5 refuses several vector fields (the test above); the fake and Lite
    build them: each row's image is stored, indexed with its own metric and searched."""
    fields = _fields(backend, nullable=False)
    code, out = _apply(tmp_path, _release(tmp_path, backend, corpus, "v1", fields, vectors=IMAGE))
    assert code == 0, out
    assert backend.alias_target() == f"{backend.alias}__v1"
    name = f"{backend.alias}__v1"
    with backend.port() as port:
        schema = port.collection_schema(name)
        assert schema.vectors == (VectorField("image", 4),)
        assert schema.fields == tuple(FieldSpec.model_validate(f) for f in fields)
        port.load(name)  # Lite releases it when the controller exits
        ids = corpus.ids.tolist()
        stored = {
            int(i): [float(x) for x in b.fields["image"][row]]
            for b in port.iterate_rows(name, 1000, ["image"], vectors=False)
            for row, i in enumerate(b.ids.tolist())
        }
        assert stored == {i: _image(i) for i in ids}
        queries = np.asarray([_image(i) for i in ids[:5]], dtype=np.float32) + 0.1
        found = port.search_ids(name, queries, 1, {}, field="image")
        assert found[:, 0].tolist() == ids[:5]


@pytest.mark.parametrize("backend", ["fake", pytest.param("lite", marks=REAL)], indirect=True)
def test_a_release_without_the_second_vector_is_refused_as_breaking(
    tmp_path: Path, corpus: Corpus, backend: Backend
) -> None:
    """The live collection's image vectors are what some readers search: dropping them
    (or changing their dimension) is a breaking change."""
    fields = _fields(backend, nullable=False)
    assert (
        _apply(tmp_path, _release(tmp_path, backend, corpus, "v1", fields, vectors=IMAGE))[0] == 0
    )
    code, out = _apply(tmp_path, _release(tmp_path, backend, corpus, "v2", fields))
    assert code == ExitCode.FAILED and "invalid release spec" in out, out
    assert "spec.collection.vectors" in out and "vector field 'image'" in out and "missing" in out
    assert backend.alias_target() == f"{backend.alias}__v1"


# The refusal is the engine's, before Milvus is asked: the fake is enough.
@pytest.mark.parametrize("backend", ["fake"], indirect=True)
def test_a_delta_over_a_base_with_a_second_vector_is_refused(
    tmp_path: Path, corpus: Corpus, backend: Backend
) -> None:
    """A delta copies its base's rows with the one vector field: refused, named, before
    anything is built, rather than a candidate without the image vectors."""
    fields = _fields(backend, nullable=False)
    assert (
        _apply(tmp_path, _release(tmp_path, backend, corpus, "v1", fields, vectors=IMAGE))[0] == 0
    )
    upserts = _rich_source(tmp_path / "upserts.parquet", corpus, "v1", nullable=False)
    doc = release_yaml(backend, "v2", upserts)
    spec = doc["spec"]
    assert isinstance(spec, dict)
    spec["collection"] |= {"fields": fields, "dynamicField": True}
    spec["source"] = {"delta": {"base": "live", "upserts": {"uri": str(upserts)}}}
    before = backend.inspect()["collections"]
    code, out = _apply(tmp_path, write_release(tmp_path / "v2.yaml", doc))
    assert code == ExitCode.FAILED, out
    assert "vector fields 'image' besides vector, which a delta does not copy" in out, out
    assert backend.inspect()["collections"] == before
