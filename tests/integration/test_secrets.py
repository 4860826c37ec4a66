"""Invariant 6: a Milvus credential never appears in status, logs, output or state files."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.config import Credentials
from tests.conftest import Backend, Corpus, embrel, release_yaml, write_release

SECRET = "s3cr3t-t0ken-4f9a"


def _everything_written(tmp_path: Path, outputs: list[str]) -> str:
    files = [p.read_text(errors="replace") for p in (tmp_path / "state").rglob("*") if p.is_file()]
    return "\n".join(outputs + files)


def test_token_never_leaks(
    tmp_path: Path, backend: Backend, corpus: Corpus, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EMBREL_MILVUS_TOKEN", SECRET)  # the CLI subprocesses inherit it
    monkeypatch.setenv("EMBREL_MILVUS_PASSWORD", SECRET)
    spec = write_release(
        tmp_path / "r.yaml",
        release_yaml(backend, "v1", corpus.path("v1"), corpus.dir / "golden.parquet"),
    )
    state = ("--state-dir", str(tmp_path / "state"))
    runs = [
        embrel(*state, "apply", "-f", str(spec), cwd=tmp_path),
        embrel(*state, "status", "products", "-o", "json", cwd=tmp_path),
        embrel(*state, "history", "products", cwd=tmp_path),
    ]
    # and a failure path, where error messages are built from connection details
    config = tmp_path / "config.yaml"
    config.write_text(
        "milvus: {timeoutSeconds: 1, retryAttempts: 1}\nreconcile: {maxAttempts: 1}\n"
    )
    down = release_yaml(
        Backend("server", "http://127.0.0.1:1", "x"), "v1", corpus.path("v1"), name="down"
    )
    runs.append(
        embrel(
            "--config",
            str(config),
            *state,
            "apply",
            "-f",
            str(write_release(tmp_path / "d.yaml", down)),
            cwd=tmp_path,
        )
    )
    assert runs[0].returncode == 0, runs[0].stdout + runs[0].stderr
    assert runs[-1].returncode == 4
    written = _everything_written(tmp_path, [r.stdout + r.stderr for r in runs])
    assert "products" in written  # we did look at real output
    assert SECRET not in written
    assert SECRET not in repr(Credentials(token=SECRET, password=SECRET))
