"""spec.collection.searchField: a release whose collection has two vector fields is
validated, flipped and served on the field it names, not on ``vector``.

The corpus makes that visible: ``vector`` and ``image`` are unrelated, both 16-dim,
so queries of one field find nonsense on the other without any error. The golden
set is labelled on ``image`` (it passes only when the gates search ``image``), and
v2 changes ``image`` only, so the cutover probes tell v1 from v2 only on ``image``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from controller.client import ReleaseClient
from controller.spec import EmbedderSpec
from tests.conftest import Backend, embrel, release_yaml, unit_vectors, write_golden, write_release

DIM, ROWS = 16, 600
IMAGE = {"name": "image", "dimension": DIM, "metric": "COSINE", "index": {"type": "FLAT"}}
EMBEDDER = {"model": "image-encoder", "dimension": DIM}  # recorded for clients, never loaded


def _columns(path: Path, ids: np.ndarray, text: np.ndarray, image: np.ndarray) -> Path:
    pq.write_table(
        pa.table(
            {
                "id": pa.array(ids, pa.int64()),
                "vector": pa.FixedSizeListArray.from_arrays(pa.array(text.ravel()), DIM),
                "image": pa.array(list(image), pa.list_(pa.float32())),
            }
        ),
        path,
    )
    return path


def _release(tmp_path: Path, backend: Backend, version: str, source: Path) -> Path:
    doc = release_yaml(
        backend,
        version,
        source,
        golden=tmp_path / "golden.parquet",
        min_recall=0.9,
        dimension=DIM,
        embedder=EMBEDDER,
        validation={"gates": {"minAnnRecall": {"k": 10, "min": 0.9, "sample": 50}}},
        monitoring={"enabled": True, "interval": "1s"},
    )
    spec = doc["spec"]
    assert isinstance(spec, dict)
    spec["collection"] |= {"vectors": [IMAGE], "searchField": "image"}
    return write_release(tmp_path / f"{version}.yaml", doc)


def _apply(tmp_path: Path, spec: Path) -> str:
    r = embrel("--state-dir", str(tmp_path / "state"), "apply", "-f", str(spec), cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout + r.stderr


def _checks(props: dict[str, Any]) -> dict[str, Any]:
    return {c["name"]: c for c in json.loads(props["embrel.checks"])}


@pytest.mark.parametrize("backend", ["fake", "lite"], indirect=True)
def test_gates_probes_and_clients_search_the_declared_field(
    tmp_path: Path, backend: Backend
) -> None:
    rng = np.random.default_rng(11)
    ids = np.arange(ROWS, dtype=np.int64)
    text, image = unit_vectors(rng, ROWS, DIM), unit_vectors(rng, ROWS, DIM)
    queries = image[:40] + 0.05 * unit_vectors(rng, 40, DIM)
    write_golden(
        tmp_path / "golden.parquet", queries, np.argsort(-(queries @ image.T), axis=1)[:, :10]
    )
    _apply(
        tmp_path,
        _release(tmp_path, backend, "v1", _columns(tmp_path / "v1.parquet", ids, text, image)),
    )
    v1 = f"{backend.alias}__v1"
    props = backend.collections()[v1]["properties"]
    assert props["embrel.searchField"] == "image"
    checks = _checks(props)
    # On `vector` these queries would find unrelated rows: recall near 0, not 1.
    assert checks["recall@10"]["value"] >= 0.95, checks["recall@10"]
    assert checks["minAnnRecall"]["value"] >= 0.9, checks["minAnnRecall"]

    # v2: the same `vector`, another `image`: only probes on `image` tell them apart.
    moved = image + 0.02 * unit_vectors(rng, ROWS, DIM)
    moved /= np.linalg.norm(moved, axis=1, keepdims=True)
    _apply(
        tmp_path,
        _release(tmp_path, backend, "v2", _columns(tmp_path / "v2.parquet", ids, text, moved)),
    )
    v2 = f"{backend.alias}__v2"
    assert backend.alias_target() == v2
    cutover = json.loads(backend.collections()[v2]["properties"]["embrel.cutover"])
    assert cutover["verified"] and cutover["method"] == "probes", cutover

    _drift_is_measured_on_image(tmp_path, backend, v2, moved)
    if backend.kind == "lite":
        _client_searches_image(backend, v2, moved)


def _drift_is_measured_on_image(
    tmp_path: Path, backend: Backend, v2: str, image: np.ndarray
) -> None:
    """The drift reference holds v2's image vectors and its canaries' answers on image;
    measured again, they are unchanged (on `vector` they would be unrelated)."""
    with np.load(tmp_path / "state" / "references" / "test.products" / f"{v2}.npz") as ref:
        ids, vectors, answers = ref["ids"], ref["vectors"], ref["canary_answers"]
    np.testing.assert_allclose(vectors, image[ids], atol=1e-6)
    assert answers[:, 0].tolist() == ids[: len(answers)].tolist()  # each canary finds itself
    time.sleep(1.1)  # the drift interval has passed: the next apply measures
    assert "measuring drift" in _apply(tmp_path, tmp_path / "v2.yaml")
    drift = json.loads(backend.collections()[v2]["properties"]["embrel.drift"])
    assert drift["values"]["same_id_cosine"] > 0.999 and not drift["breaches"], drift


def _client_searches_image(backend: Backend, v2: str, image: np.ndarray) -> None:
    with backend.port() as port:
        port.load(v2)  # Lite releases it when the controller exits
        client = ReleaseClient(backend.uri, backend.alias)
        try:
            encoder = EmbedderSpec.model_validate(EMBEDDER)
            answers = client.search(image[:5], encoder, limit=1, output_fields=["id"])
        finally:
            client.close()
    assert [a.hits[0]["id"] for a in answers] == [0, 1, 2, 3, 4]
    assert {a.collection for a in answers} == {v2}
