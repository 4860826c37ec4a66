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


def test_bad_input_is_refused_and_leaves_milvus_untouched(
    tmp_path: Path, backend: Backend, corpus: Corpus, live_v1: dict[str, object]
) -> None:
    """One live track, every kind of bad input against it (one test: each apply is cheap,
    setting up the live track is not)."""
    vectors = corpus.vectors["v2"].copy()
    vectors[1234, 5] = np.nan
    with_nan = write_vectors(tmp_path / "nan.parquet", corpus.ids, vectors)
    ids = corpus.ids.copy()
    ids[1500] = 7
    dupes = write_vectors(tmp_path / "dupes.parquet", ids, corpus.vectors["v2"])
    wide = write_vectors(tmp_path / "wide.parquet", np.arange(10), np.ones((10, 48), np.float32))
    cases = [
        # (what, spec text, exit code, fragments the message must contain)
        (
            "malformed YAML",
            "apiVersion: embrel.dev/v1alpha1\nspec: {alias: [\n",
            2,
            ["bad.yaml", "malformed YAML (line"],
        ),
        (
            "unknown field",
            _doc(backend, corpus.path("v2"), colection={"dimension": 3}),
            2,
            ["spec.colection: unknown field"],
        ),
        (
            "invalid alias",
            _doc(backend, corpus.path("v2"), alias="bad-alias!"),
            2,
            ["spec.alias", "not a valid Milvus alias"],
        ),
        ("wrong dimension", _doc(backend, wide), 1, ["wide.parquet", "48", "32"]),
        ("NaN vectors", _doc(backend, with_nan), 1, ["nan.parquet", "1234", "NaN"]),
        ("duplicate ids", _doc(backend, dupes), 1, ["dupes.parquet", "7", "uplicate"]),
        ("missing file", _doc(backend, tmp_path / "nowhere.parquet"), 1, ["nowhere.parquet"]),
    ]
    for what, text, expected_code, fragments in cases:
        code, out = _apply(tmp_path, text)
        assert code == expected_code, (what, out)
        for fragment in fragments:
            assert fragment in out, (what, fragment, out)
        assert _holdings(backend) == live_v1, f"{what} changed Milvus"
    r = embrel("apply", "-f", str(tmp_path / "no-such-release.yaml"), cwd=tmp_path)
    assert r.returncode == 2 and "no-such-release.yaml" in r.stderr and "not found" in r.stderr


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
