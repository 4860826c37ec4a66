"""`embrel run --watch DIR`: GitOps-style reconciling, and one controller at a time."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import (
    REAL_ONLY,
    Backend,
    Corpus,
    embrel,
    embrel_watch,
    release_yaml,
    write_release,
)


@pytest.fixture
def gitops(tmp_path: Path) -> Path:
    folder = tmp_path / "repo"
    folder.mkdir()
    return folder


@pytest.fixture
def watcher(tmp_path: Path, gitops: Path, backend: Backend) -> Iterator[Any]:
    """`embrel run --watch`: a process on Lite and the server, a thread on the fake."""
    config = tmp_path / "config.yaml"
    config.write_text(f"stateDir: {tmp_path / 'state'}\nreconcile: {{watchIntervalSeconds: 0.3}}\n")
    proc = embrel_watch(backend, "--config", str(config), "run", "--watch", str(gitops))
    yield proc
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)


def wait_for(tmp_path: Path, version: str, phase: str, timeout: float = 180) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    status: dict[str, object] = {}
    while time.monotonic() < deadline:
        r = embrel(
            "--state-dir", str(tmp_path / "state"), "status", "products", "-o", "json", cwd=tmp_path
        )
        if r.returncode == 0:
            status = json.loads(r.stdout)
            live = status.get("live") or {}
            if (
                status.get("phase") == phase
                and isinstance(live, dict)
                and live.get("version") == version
            ):
                return status
        time.sleep(0.3)
    raise AssertionError(f"never reached {phase} with {version} live: {status}")


def test_changed_file_releases_reverted_file_rolls_back(
    tmp_path: Path, backend: Backend, corpus: Corpus, gitops: Path, watcher: Any
) -> None:
    golden = corpus.dir / "golden.parquet"
    spec = gitops / "products.yaml"
    v1 = release_yaml(backend, "v1", corpus.path("v1"), golden)
    write_release(spec, v1)
    wait_for(tmp_path, "v1", "Live")

    write_release(spec, release_yaml(backend, "v2", corpus.path("v2"), golden))  # a git commit
    wait_for(tmp_path, "v2", "Live")

    # While the watcher runs, it is the only controller: apply is refused, requests are handed over.
    other = write_release(tmp_path / "other.yaml", release_yaml(backend, "v9", corpus.path("v2")))
    r = embrel("--state-dir", str(tmp_path / "state"), "apply", "-f", str(other), cwd=tmp_path)
    assert r.returncode == 1 and "another embrel controller (pid" in r.stderr

    write_release(spec, v1)  # git revert
    status = wait_for(tmp_path, "v1", "Live", timeout=60)
    history = [(h["version"], h["outcome"]) for h in status["history"]]  # type: ignore[union-attr, index]
    # One entry per version, with its latest outcome, in the order they last went live.
    assert history == [("v2", "Retired"), ("v1", "Live")]

    r = embrel(
        "--state-dir", str(tmp_path / "state"), "rollback", "products", "--to", "v2", cwd=tmp_path
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Handed to the running controller" in r.stdout

    watcher.send_signal(signal.SIGTERM)
    out, _ = watcher.communicate(timeout=60)
    assert watcher.returncode == 130, out
    # the revert was a flip of the retained v1 collection, not a rebuild
    after_revert = out.split("wants version v1")[-1]
    assert (
        "building the candidate" not in after_revert
        and "returning to a kept version" in after_revert
    )
    assert backend.alias_target() == f"{backend.alias}__v2"


def test_invalid_file_is_reported_and_others_keep_working(
    tmp_path: Path, backend: Backend, corpus: Corpus, gitops: Path, watcher: Any
) -> None:
    (gitops / "broken.yaml").write_text(
        "apiVersion: embrel.dev/v1alpha1\nkind: EmbeddingRelease\nspec: [\n"
    )
    write_release(gitops / "products.yaml", release_yaml(backend, "v1", corpus.path("v1")))
    wait_for(tmp_path, "v1", "Live")
    watcher.send_signal(signal.SIGTERM)
    out, _ = watcher.communicate(timeout=60)
    assert "broken.yaml: error: invalid release spec" in out
    assert out.count("broken.yaml: error") == 1, (
        "an unchanged bad file is reported once, not every poll"
    )


# A watcher process is woken by a signal; the fake backend runs the watcher as a thread.
@REAL_ONLY
def test_a_request_wakes_the_watcher_instead_of_waiting_for_its_poll(
    tmp_path: Path, backend: Backend, corpus: Corpus, gitops: Path
) -> None:
    state = str(tmp_path / "state")
    golden = corpus.dir / "golden.parquet"
    for version in ("v1", "v2"):
        spec = write_release(
            tmp_path / f"{version}.yaml",
            release_yaml(backend, version, corpus.path(version), golden),
        )
        embrel("--state-dir", state, "apply", "-f", str(spec), cwd=tmp_path, check=True)
    (gitops / "products.yaml").write_text((tmp_path / "v2.yaml").read_text())
    config = tmp_path / "config.yaml"
    # Polls an hour apart: only the wake-up can make the watcher act on the request in time.
    config.write_text(f"stateDir: {state}\nreconcile: {{watchIntervalSeconds: 3600}}\n")
    watcher = embrel_watch(backend, "--config", str(config), "run", "--watch", str(gitops))
    try:
        assert watcher.stdout is not None
        while "Watching" not in (line := watcher.stdout.readline()):  # it holds the lock now
            assert line, "the watcher exited before watching"
        r = embrel("--state-dir", state, "rollback", "products", cwd=tmp_path, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "Handed to the running controller" in r.stdout
        assert "Rolled back: alias -> " in r.stdout and "(version v1)" in r.stdout
    finally:
        watcher.send_signal(signal.SIGTERM)
        watcher.wait(timeout=60)
    assert backend.alias_target() == f"{backend.alias}__v1"  # Lite: once the watcher let go
