"""Each gate catches the candidate it exists for, on every backend, with the alias unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import Backend, embrel, release_yaml, unit_vectors, write_release, write_vectors

N, DIM = 3000, 32
GATES = {
    "minOverlapWithLive": {"k": 10, "min": 0.6},
    "minMeanCosineToLive": {"min": 0.9, "sample": 500},
    "minAnnRecall": {"k": 10, "min": 0.9, "sample": 50},
    "maxRowCountChange": 0.05,
    "distributionDrift": {"sample": 300},
}


@pytest.fixture
def track(tmp_path: Path, backend: Backend):  # type: ignore[no-untyped-def]
    """Apply helper: writes a source for the given vectors/ids and applies a release of it."""
    rng = np.random.default_rng(17)
    live = unit_vectors(rng, N, DIM)
    ids = np.arange(N, dtype=np.int64)

    def apply(
        version: str, vectors: np.ndarray, row_ids: np.ndarray = ids, **spec: object
    ) -> tuple[int, dict]:  # type: ignore[type-arg]
        source = write_vectors(tmp_path / f"{version}.parquet", row_ids, vectors)
        spec.setdefault("validation", {"gates": GATES})
        doc = release_yaml(backend, version, source, **spec)
        path = write_release(tmp_path / f"{version}.yaml", doc)
        state = ("--state-dir", str(tmp_path / "state"))
        r = embrel(*state, "apply", "-f", str(path), cwd=tmp_path)
        status = json.loads(
            embrel(*state, "status", "products", "-o", "json", cwd=tmp_path, check=True).stdout
        )
        return r.returncode, {c["name"]: c for c in status["validation"]["checks"]}

    code, _ = apply("v1", live)
    assert code == 0
    return rng, live, ids, apply


def _noisy(rng: np.random.Generator, v: np.ndarray, scale: float) -> np.ndarray:
    x = v + scale * rng.normal(size=v.shape).astype(np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


# The gates' longest checks run on the fake in the default suite, on Milvus Lite in the
# second step, and on the server in the heavy step (76 s + 29 s + 25 s there).
SERVER_IN_HEAVY_STEP = pytest.mark.parametrize(
    "backend",
    [
        "fake",
        pytest.param("lite", marks=pytest.mark.real),
        pytest.param("server", marks=[pytest.mark.server, pytest.mark.heavy]),
    ],
    indirect=True,
)

# Real only: the "weakindex" candidate fails minAnnRecall only on a real (approximate)
# index; the fake searches exactly, so every index it builds has recall 1.
REAL_ONLY_SERVER_IN_HEAVY_STEP = pytest.mark.parametrize(
    "backend",
    [
        pytest.param("lite", marks=pytest.mark.real),
        pytest.param("server", marks=[pytest.mark.server, pytest.mark.heavy]),
    ],
    indirect=True,
)


@REAL_ONLY_SERVER_IN_HEAVY_STEP
def test_each_bad_candidate_fails_its_gate(backend: Backend, track) -> None:  # type: ignore[no-untyped-def]
    rng, live, ids, apply = track
    live_collection = f"{backend.alias}__v1"

    cases = {
        "shuffled": (live, rng.permutation(ids), {}, ["minMeanCosineToLive", "minOverlapWithLive"]),
        "projected": (
            _noisy(rng, live @ np.linalg.qr(rng.normal(size=(DIM, DIM)))[0], 0),
            ids,
            {},
            ["minMeanCosineToLive", "minOverlapWithLive"],
        ),
        "missing": (live[: int(N * 0.9)], ids[: int(N * 0.9)], {}, ["maxRowCountChange"]),
        "weakindex": (
            live,
            ids,
            {
                "collection": {
                    "dimension": DIM,
                    "metric": "COSINE",
                    "index": {"type": "IVF_FLAT", "params": {"nlist": 128}},
                },
                "validation": {"gates": GATES, "searchParams": {"nprobe": 1}},
            },
            ["minAnnRecall"],
        ),
    }
    for version, (vectors, row_ids, spec, failing) in cases.items():
        code, checks = apply(version, vectors.astype(np.float32), row_ids, **spec)
        assert code == 1, (version, checks)
        failed = sorted(n for n, c in checks.items() if c["outcome"] == "Failed")
        assert set(failing) <= set(failed), (version, failed)
        assert backend.alias_target() == live_collection, f"{version} moved the alias"

    code, checks = apply("refresh", _noisy(rng, live, 0.01))
    assert code == 0, checks
    assert checks["minMeanCosineToLive"]["value"] > 0.99
    assert checks["minMeanCosineToLive"]["metrics"]["p5"] > 0.98
    assert checks["minOverlapWithLive"]["metrics"]["rbo"] > 0.6
    assert backend.alias_target() == f"{backend.alias}__refresh"


@SERVER_IN_HEAVY_STEP
def test_model_change_skips_same_id_cosine_and_decides_on_ranks(backend: Backend, track) -> None:  # type: ignore[no-untyped-def]
    rng, live, _ids, apply = track
    new_model = {"model": {"name": "another-model", "revision": "2"}}
    code, checks = apply(
        "m2", live[:, ::-1].copy(), **new_model
    )  # a different space, same neighbours
    assert code == 0, checks
    cosine = checks["minMeanCosineToLive"]
    assert cosine["outcome"] == "NotApplicable"
    assert "model changed" in cosine["detail"] and "rank-based gates decide" in cosine["detail"]
    assert checks["minOverlapWithLive"]["outcome"] == "Passed"

    code, checks = apply("m3", rng.permutation(live), **{"model": {"name": "third-model"}})
    assert code == 1
    assert checks["minMeanCosineToLive"]["outcome"] == "NotApplicable"
    assert checks["minOverlapWithLive"]["outcome"] == "Failed", "ranks still catch a bad new model"
    assert backend.alias_target() == f"{backend.alias}__m2"


def test_validate_runs_gates_without_promoting(tmp_path: Path, backend: Backend, track) -> None:  # type: ignore[no-untyped-def]
    rng, live, ids, _apply = track
    source = write_vectors(tmp_path / "v9.parquet", ids, _noisy(rng, live, 0.01))
    spec = write_release(
        tmp_path / "v9.yaml", release_yaml(backend, "v9", source, validation={"gates": GATES})
    )
    r = embrel("--state-dir", str(tmp_path / "state"), "validate", "-f", str(spec), cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "minMeanCosineToLive" in r.stdout and "Report:" in r.stdout
    report = Path(r.stdout.split("Report:")[1].split()[0])
    assert report.exists() and "minOverlapWithLive" in report.read_text()
    assert (report.parent / "cosine.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert backend.alias_target() == f"{backend.alias}__v1", "validate never promotes"


@SERVER_IN_HEAVY_STEP
def test_unmeasurable_live_pauses_for_a_person(tmp_path: Path, backend: Backend) -> None:
    """Inconclusive (live cannot be searched) waits for promote or abort; no timer promotes."""
    from tests.integration.test_ownership import setup_milvus

    setup_milvus(backend, "legacy")  # a collection embrel does not own, behind the alias...
    setup_milvus(backend, "release")  # ...and not loaded, so it cannot answer
    rng = np.random.default_rng(1)
    source = write_vectors(tmp_path / "v1.parquet", np.arange(500), unit_vectors(rng, 500, DIM))
    gates = {"validation": {"gates": {"minOverlapWithLive": {"k": 10, "min": 0.5}}}}
    # Taking over an alias embrel did not make needs the spec to say so (spec.adopt).
    adopt = {"adopt": f"{backend.alias}__legacy"}
    spec = write_release(
        tmp_path / "v1.yaml", release_yaml(backend, "v1", source, **gates, **adopt)
    )
    state = ("--state-dir", str(tmp_path / "state"))
    r = embrel(*state, "apply", "-f", str(spec), cwd=tmp_path)
    assert r.returncode == 3, r.stdout + r.stderr
    assert "inconclusive" in r.stdout and "could not measure against live" in r.stdout
    assert backend.alias_target() == f"{backend.alias}__legacy"

    r = embrel(*state, "apply", "-f", str(spec), cwd=tmp_path)  # applying again changes nothing
    assert r.returncode == 3 and backend.alias_target() == f"{backend.alias}__legacy"

    r = embrel(*state, "promote", "products", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert backend.alias_target() == f"{backend.alias}__v1"
    status = json.loads(embrel(*state, "status", "products", "-o", "json", cwd=tmp_path).stdout)
    assert status["validation"]["outcome"] == "accepted"
