"""Bad input: a clear one-paragraph error naming what is wrong, non-zero exit, Milvus untouched."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import Backend, Corpus, embrel, release_yaml, write_release, write_vectors


@pytest.fixture
def live_v1(tmp_path: Path, backend: Backend, corpus: Corpus) -> dict[str, object]:
    """A track with v1 live; returns what Milvus holds, to compare after each bad input."""
    spec = write_release(tmp_path / "v1.yaml", release_yaml(backend, "v1", corpus.path("v1")))
    r = embrel("--state-dir", str(tmp_path / "state"), "apply", "-f", str(spec), cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    return _holdings(backend)


def _holdings(backend: Backend) -> dict[str, object]:
    found = backend.inspect()
    return {"alias": found["alias_target"], "collections": sorted(found["collections"])}


def _apply(tmp_path: Path, text: str) -> tuple[int, str]:
    spec = tmp_path / "bad.yaml"
    spec.write_text(text)
    r = embrel("--state-dir", str(tmp_path / "state"), "apply", "-f", str(spec), cwd=tmp_path)
    assert "Traceback" not in r.stderr, r.stderr
    return r.returncode, r.stdout + r.stderr


def _doc(backend: Backend, source: Path, **changes: object) -> str:
    doc = release_yaml(backend, "v2", source)
    spec = doc["spec"]
    assert isinstance(spec, dict)
    spec.update(changes)
    return json.dumps(doc)  # JSON is YAML


def test_malformed_yaml(
    tmp_path: Path, backend: Backend, corpus: Corpus, live_v1: dict[str, object]
) -> None:
    code, out = _apply(tmp_path, "apiVersion: embrel.dev/v1alpha1\nspec: {alias: [\n")
    assert code == 2
    assert "bad.yaml" in out and "malformed YAML (line" in out
    assert _holdings(backend) == live_v1


def test_unknown_field_and_invalid_alias(
    tmp_path: Path, backend: Backend, corpus: Corpus, live_v1: dict[str, object]
) -> None:
    code, out = _apply(tmp_path, _doc(backend, corpus.path("v2"), colection={"dimension": 3}))
    assert code == 2 and "spec.colection: unknown field" in out
    code, out = _apply(tmp_path, _doc(backend, corpus.path("v2"), alias="bad-alias!"))
    assert code == 2 and "spec.alias" in out and "not a valid Milvus alias" in out
    assert _holdings(backend) == live_v1


def test_wrong_dimension(
    tmp_path: Path, backend: Backend, corpus: Corpus, live_v1: dict[str, object]
) -> None:
    wide = write_vectors(tmp_path / "wide.parquet", np.arange(10), np.ones((10, 48), np.float32))
    code, out = _apply(tmp_path, _doc(backend, wide))
    assert code == 1
    assert "wide.parquet" in out and "48" in out and "32" in out
    assert _holdings(backend) == live_v1


def test_nan_vectors(
    tmp_path: Path, backend: Backend, corpus: Corpus, live_v1: dict[str, object]
) -> None:
    vectors = corpus.vectors["v2"].copy()
    vectors[1234, 5] = np.nan
    bad = write_vectors(tmp_path / "nan.parquet", corpus.ids, vectors)
    code, out = _apply(tmp_path, _doc(backend, bad))
    assert code == 1
    assert "nan.parquet" in out and "1234" in out and "NaN" in out
    assert _holdings(backend) == live_v1


def test_duplicate_ids(
    tmp_path: Path, backend: Backend, corpus: Corpus, live_v1: dict[str, object]
) -> None:
    ids = corpus.ids.copy()
    ids[1500] = 7
    bad = write_vectors(tmp_path / "dupes.parquet", ids, corpus.vectors["v2"])
    code, out = _apply(tmp_path, _doc(backend, bad))
    assert code == 1
    assert "dupes.parquet" in out and "7" in out and "duplicate" in out.lower()
    assert _holdings(backend) == live_v1


def test_missing_file(
    tmp_path: Path, backend: Backend, corpus: Corpus, live_v1: dict[str, object]
) -> None:
    code, out = _apply(tmp_path, _doc(backend, tmp_path / "nowhere.parquet"))
    assert code == 1 and "nowhere.parquet" in out
    r = embrel("apply", "-f", str(tmp_path / "no-such-release.yaml"), cwd=tmp_path)
    assert r.returncode == 2 and "no-such-release.yaml" in r.stderr and "not found" in r.stderr
    assert _holdings(backend) == live_v1


def test_unreachable_milvus(tmp_path: Path, corpus: Corpus) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        "milvus: {timeoutSeconds: 2, retryAttempts: 1}\nreconcile: {maxAttempts: 1}\n"
    )
    doc = release_yaml(Backend("server", "http://127.0.0.1:1", "products"), "v1", corpus.path("v1"))
    spec = write_release(tmp_path / "r.yaml", doc)
    r = embrel(
        "--config",
        str(config),
        "--state-dir",
        str(tmp_path / "s"),
        "apply",
        "-f",
        str(spec),
        cwd=tmp_path,
    )
    assert r.returncode == 4, r.stdout + r.stderr
    assert "127.0.0.1:1" in r.stdout + r.stderr
    assert "Traceback" not in r.stderr
