"""Delta releases through the real CLI, on both backends.

One live track of 10,000 rows; bad deltas against it are refused with Milvus
untouched; then a delta of 1% upserts (half replacing, half new) and 0.5% deletes
is validated, checked row by row with pymilvus in another process, promoted, and
rolled back.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tests.conftest import Backend, embrel, release_yaml, unit_vectors, write_release
from tests.conftest import write_vectors as write_parquet

ROWS, DIM = 10_000, 16
GATES = {"gates": {"minAnnRecall": {"k": 10, "min": 0.9, "sample": 50}}}


def dump(backend: Backend, collection: str, out: Path) -> dict[str, np.ndarray]:
    """ids and vectors of a collection, read with pymilvus in a separate process (from
    the fake's memory on the fake)."""
    return backend.read(collection, [], in_process=False)


def delta_doc(backend: Backend, version: str, delta: dict[str, object]) -> dict[str, object]:
    doc = release_yaml(backend, version, Path("unused"), dimension=DIM, validation=GATES)
    spec = doc["spec"]
    assert isinstance(spec, dict)
    spec["source"] = {"delta": delta}
    return doc


def write_ids(path: Path, ids: np.ndarray) -> Path:
    pq.write_table(pa.table({"id": pa.array(ids, pa.int64())}), path)
    return path


def test_delta_release_validate_promote_rollback(tmp_path: Path, backend: Backend) -> None:
    rng = np.random.default_rng(11)
    state = ("--state-dir", str(tmp_path / "state"))
    ids = np.arange(ROWS, dtype=np.int64)
    base = unit_vectors(rng, ROWS, DIM)
    doc = release_yaml(
        backend, "v1", write_parquet(tmp_path / "v1.parquet", ids, base), dimension=DIM
    )
    r = embrel(*state, "apply", "-f", str(write_release(tmp_path / "v1.yaml", doc)), cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    v1 = f"{backend.alias}__v1"
    holdings = backend.inspect()

    # 1% upserts: 50 replace existing rows, 50 are new; 0.5% deletes, plus 3 unknown ids.
    picked = rng.choice(ROWS, 100, replace=False)
    replaced, deleted = np.sort(picked[:50]), np.sort(picked[50:])
    new_ids = np.arange(ROWS, ROWS + 50, dtype=np.int64)
    up_ids = np.concatenate([replaced, new_ids])
    up_vectors = unit_vectors(rng, 100, DIM)
    upserts = write_parquet(tmp_path / "upserts.parquet", up_ids, up_vectors)
    deletes = write_ids(
        tmp_path / "deletes.parquet", np.concatenate([deleted, [10**9, -5, 777_777]])
    )
    delta = {"base": "live", "upserts": {"uri": str(upserts)}, "deletes": {"uri": str(deletes)}}

    _bad_deltas_leave_milvus_untouched(tmp_path, backend, delta, holdings)

    spec = write_release(tmp_path / "v2.yaml", delta_doc(backend, "v2", delta))
    r = embrel(*state, "validate", "-f", str(spec), cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "copied 9900, upserted 100 (50 replaced, 50 new), deleted 50" in r.stdout, r.stdout
    assert backend.alias_target() == v1, "validated, not promoted: the alias stays on the base"

    expected = dict(zip(ids.tolist(), base, strict=True))
    for i in deleted:
        del expected[int(i)]
    expected |= dict(zip(up_ids.tolist(), up_vectors, strict=True))
    got = dump(backend, f"{backend.alias}__v2", tmp_path / "v2.npz")
    assert got["ids"].tolist() == sorted(expected)
    assert np.array_equal(got["vectors"], np.stack([expected[i] for i in sorted(expected)]))

    # `validate` records nothing in the track: the counts are on the candidate itself.
    props = backend.collections()[f"{backend.alias}__v2"]["properties"]
    assert json.loads(props["embrel.build"]) == {
        "source": "delta",
        "base": v1,
        "rows": ROWS + 50 - 50,
        "copied": ROWS - 100,
        "upserted": 100,
        "inserted": 50,
        "replaced": 50,
        "deleted": 50,
        "unknownDeletes": 3,
    }

    r = embrel(*state, "apply", "-f", str(spec), cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "building the candidate" not in r.stdout, "the validated candidate is reused"
    warmed, switched = (
        r.stdout.find(f"warmed {backend.alias}__v2 with 5 searches"),
        r.stdout.find("switched alias"),
    )
    assert 0 <= warmed < switched, f"warmed right before the flip: {r.stdout}"
    assert backend.alias_target() == f"{backend.alias}__v2"

    r = embrel(*state, "rollback", "products", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert backend.alias_target() == v1
    base_now = dump(backend, v1, tmp_path / "v1.npz")
    assert np.array_equal(base_now["ids"], ids) and np.array_equal(base_now["vectors"], base)


def _bad_deltas_leave_milvus_untouched(
    tmp_path: Path, backend: Backend, good: dict[str, object], holdings: dict[str, object]
) -> None:
    wide = write_parquet(tmp_path / "wide.parquet", np.arange(5), np.ones((5, DIM + 8), np.float32))
    cases = [
        ({**good, "base": "v0"}, "version 'v0' of track test/products is not in Milvus"),
        ({**good, "upserts": {"uri": str(wide)}}, f"data has {DIM + 8}-dim vectors"),
        (
            {**good, "deletes": {"uri": str(tmp_path / "nope.parquet")}},
            "nope.parquet does not exist",
        ),
    ]
    for i, (delta, fragment) in enumerate(cases):
        spec = write_release(tmp_path / f"bad{i}.yaml", delta_doc(backend, "v2", delta))
        r = embrel("--state-dir", str(tmp_path / "state"), "apply", "-f", str(spec), cwd=tmp_path)
        out = r.stdout + r.stderr
        assert r.returncode == 1, out
        assert fragment in out and "Traceback" not in out, out
        assert "source.delta" in out, f"the error names the spec field: {out}"
        assert backend.inspect() == holdings, f"case {i} changed Milvus"
