"""Bulk import (``source.files.load``) through the real CLI.

On the fake and the real Milvus 2.3.5 server: a release imported from staged Parquet
files is validated before its flip, and a failing validation leaves the alias where it
was; an import that fails half way (one corrupt staged file among good ones) leaves the
alias where it was and no complete candidate, and the next apply rebuilds it. On
Milvus Lite, which has no import: ``bulkImport`` is a spec error before anything is
built, and ``auto`` inserts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

import controller.drivers.wiring as wiring
from controller.config import ControllerConfig
from controller.engine.state import P_SOURCE_ROWS
from controller.sources.staging import ParquetStaging
from tests.conftest import REAL, Backend, Corpus, embrel, release_yaml, write_release
from tests.support import inprocess_cli

IMPORTING = pytest.mark.parametrize(
    "backend",
    ["fake", pytest.param("server", marks=[pytest.mark.server, REAL])],
    indirect=True,
)


def config(tmp_path: Path, **extra: Any) -> Path:
    """A controller config staging imports under tmp_path/stage, 500 rows per file."""
    stage = {"path": str(tmp_path / "stage"), "rowsPerFile": 500}
    body = {"milvus": {"importStaging": stage}, **extra}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


def release(
    backend: Backend, tmp_path: Path, corpus: Corpus, version: str, data: str, load: str
) -> Path:
    doc = release_yaml(backend, version, corpus.path(data), corpus.dir / "golden.parquet")
    spec = doc["spec"]
    assert isinstance(spec, dict)
    spec["source"]["files"]["load"] = load
    return write_release(tmp_path / f"{version}.yaml", doc)


def build_of(backend: Backend, version: str) -> dict[str, Any]:
    props = backend.collections()[f"{backend.alias}__{version}"]["properties"]
    return {"sourceRows": props.get(P_SOURCE_ROWS, ""), **json.loads(props["embrel.build"])}


@IMPORTING
def test_an_imported_release_flips_only_after_validation_passes(
    tmp_path: Path, backend: Backend, corpus: Corpus
) -> None:
    cfg, state = config(tmp_path), str(tmp_path / "state")
    opts = ("--config", str(cfg), "--state-dir", state)
    r = embrel(
        *opts,
        "apply",
        "-f",
        str(release(backend, tmp_path, corpus, "v1", "v1", "insert")),
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert build_of(backend, "v1")["load"] == "insert"

    # Imported, complete, but the golden set fails: the alias stays on v1.
    bad = release(backend, tmp_path, corpus, "v2", "broken", "bulkImport")
    r = embrel(*opts, "apply", "-f", str(bad), cwd=tmp_path)
    assert r.returncode != 0, r.stdout + r.stderr
    assert backend.alias_target() == f"{backend.alias}__v1"
    v2 = build_of(backend, "v2")
    assert (v2["load"], v2["rows"], v2["sourceRows"]) == ("bulkImport", 2000, "2000")
    assert backend.collections()[f"{backend.alias}__v2"]["properties"]["embrel.validation"] == (
        "failed"
    )

    good = release(backend, tmp_path, corpus, "v3", "v2", "bulkImport")
    r = embrel(*opts, "apply", "-f", str(good), cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert backend.alias_target() == f"{backend.alias}__v3"
    v3 = backend.collections()[f"{backend.alias}__v3"]
    assert v3["rows"] == 2000 and v3["properties"]["embrel.validation"] == "passed"
    assert build_of(backend, "v3")["load"] == "bulkImport"
    assert list((tmp_path / "stage").iterdir()) == []  # nothing left staged


class CorruptingStaging(ParquetStaging):
    """Stages like ParquetStaging, then truncates the second part, so that Milvus fails
    that job while the others import."""

    def stage(self, name: str, fields: Any, batches: Any) -> list[str]:
        files = super().stage(name, fields, batches)
        part = self.path / name / Path(files[1]).name
        part.write_bytes(part.read_bytes()[:100])
        return files


@IMPORTING
def test_an_import_failing_half_way_is_never_promoted(
    tmp_path: Path, backend: Backend, corpus: Corpus, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One reconcile pass per apply, so the failed pass is what the apply reports.
    cfg = config(tmp_path, reconcile={"maxAttempts": 1})
    opts = ("--config", str(cfg), "--state-dir", str(tmp_path / "state"))
    v1 = release(backend, tmp_path, corpus, "v1", "v1", "insert")
    r = inprocess_cli.run_cli([*opts, "apply", "-f", str(v1)], tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr

    def corrupting(conf: ControllerConfig) -> ParquetStaging | None:
        opts = conf.milvus.import_staging
        assert opts is not None
        return CorruptingStaging(opts.path, opts.remote(), opts.rows_per_file)

    honest = wiring.import_staging
    monkeypatch.setattr(wiring, "import_staging", corrupting)
    v2 = release(backend, tmp_path, corpus, "v2", "v2", "bulkImport")
    r = inprocess_cli.run_cli([*opts, "apply", "-f", str(v2)], tmp_path)
    assert r.returncode != 0
    assert "bulk import" in r.stdout + r.stderr and "1 of 4 jobs" in r.stdout + r.stderr
    assert backend.alias_target() == f"{backend.alias}__v1"
    candidate = backend.collections().get(f"{backend.alias}__v2")
    if candidate is not None:  # what the good jobs imported, never marked complete
        assert candidate["properties"].get(P_SOURCE_ROWS, "") == ""
        assert candidate["rows"] < 2000
    assert list((tmp_path / "stage").iterdir()) == []

    # The fault gone, the next apply discards the incomplete candidate and rebuilds it.
    monkeypatch.setattr(wiring, "import_staging", honest)
    r = inprocess_cli.run_cli([*opts, "apply", "-f", str(v2)], tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert backend.alias_target() == f"{backend.alias}__v2"
    assert build_of(backend, "v2") == {
        "sourceRows": "2000",
        "source": "files",
        "rows": 2000,
        "load": "bulkImport",
    }


@pytest.mark.parametrize("backend", [pytest.param("lite")], indirect=True)
def test_lite_refuses_bulk_import_and_auto_inserts(
    tmp_path: Path, backend: Backend, corpus: Corpus
) -> None:
    opts = ("--config", str(config(tmp_path)), "--state-dir", str(tmp_path / "state"))
    bad = release(backend, tmp_path, corpus, "v1", "v1", "bulkImport")
    r = embrel(*opts, "apply", "-f", str(bad), cwd=tmp_path)
    assert r.returncode != 0
    assert "source.files.load is bulkImport" in r.stdout + r.stderr
    assert "Milvus Lite" in r.stdout + r.stderr
    # Refused when the spec was read: no Milvus Lite database was even created.
    assert not Path(backend.uri).exists()

    auto = release(backend, tmp_path, corpus, "v1", "v1", "auto")
    r = embrel(*opts, "apply", "-f", str(auto), cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert backend.alias_target() == f"{backend.alias}__v1"
    assert build_of(backend, "v1")["load"] == "insert"
