"""The whole life of a release track through the real CLI, on every backend."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import ON_LITE_TOO, Backend, Corpus, embrel, release_yaml, write_release


def apply(
    tmp_path: Path, backend: Backend, corpus: Corpus, version: str, source: str, **kw: object
):  # type: ignore[no-untyped-def]
    doc = release_yaml(backend, version, corpus.path(source), corpus.dir / "golden.parquet", **kw)
    spec = write_release(tmp_path / f"release-{version}.yaml", doc)
    return embrel("--state-dir", str(tmp_path / "state"), "apply", "-f", str(spec), cwd=tmp_path)


def loaded(backend: Backend, collection: str) -> bool:
    """Load state as another process sees it. Milvus Lite forgets load state when the
    process that loaded it exits, so only the server (and the fake) can answer this."""
    return backend.kind == "lite" or bool(backend.collections()[collection]["loaded"])


@ON_LITE_TOO  # the embedded default, proven in the default suite
def test_v1_v2_rejected_v3_rollback_and_revert(
    tmp_path: Path, backend: Backend, corpus: Corpus
) -> None:
    state = ("--state-dir", str(tmp_path / "state"))
    c = lambda v: f"{backend.alias}__{v}"  # noqa: E731

    r = apply(tmp_path, backend, corpus, "v1", "v1")
    assert r.returncode == 0, r.stdout + r.stderr
    assert backend.alias_target() == c("v1")
    assert "recall@10=1" in r.stdout

    r = apply(tmp_path, backend, corpus, "v2", "v2")
    assert r.returncode == 0, r.stdout + r.stderr
    assert backend.alias_target() == c("v2")
    assert loaded(backend, c("v1")), "the previous version stays loaded for instant rollback"

    r = apply(tmp_path, backend, corpus, "v3", "broken")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "validation failed" in r.stdout and "recall@10" in r.stdout
    assert backend.alias_target() == c("v2"), "a rejected release never moves the alias"

    r = embrel(*state, "rollback", "products", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert backend.alias_target() == c("v1")
    assert "building" not in r.stdout and "validating" not in r.stdout

    r = embrel(*state, "history", "products", "-o", "json", cwd=tmp_path, check=True)
    outcomes = [(h["version"], h["outcome"]) for h in __import__("json").loads(r.stdout)]
    # One entry per version, its latest outcome, in the order things happened: v3 failed
    # before the rollback made v1 live again.
    assert outcomes == [("v2", "RolledBack"), ("v3", "Failed"), ("v1", "Live")]

    # GitOps revert to v2: its collection is retained, so this is a flip, not a rebuild.
    r = apply(tmp_path, backend, corpus, "v2", "v2")
    assert r.returncode == 3, "v2 was rolled back: it waits for an explicit promote"
    r = embrel(*state, "promote", "products", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert backend.alias_target() == c("v2")
    assert "loaded" not in r.stdout and "validat" not in r.stdout


def test_revert_to_retained_version_is_instant(
    tmp_path: Path, backend: Backend, corpus: Corpus
) -> None:
    """Invariant 5: re-applying an older retained version flips without a rebuild."""
    assert apply(tmp_path, backend, corpus, "v1", "v1").returncode == 0
    assert apply(tmp_path, backend, corpus, "v2", "v2").returncode == 0
    r = apply(tmp_path, backend, corpus, "v1", "v1")
    assert r.returncode == 0, r.stdout + r.stderr
    assert backend.alias_target() == f"{backend.alias}__v1"
    assert "building the candidate" not in r.stdout
    assert "returning to a kept version" in r.stdout


def test_manual_promotion_and_abort(tmp_path: Path, backend: Backend, corpus: Corpus) -> None:
    state = ("--state-dir", str(tmp_path / "state"))
    assert apply(tmp_path, backend, corpus, "v1", "v1").returncode == 0
    r = apply(tmp_path, backend, corpus, "v2", "v2", promotion={"mode": "manual"})
    assert r.returncode == 3, r.stdout + r.stderr
    assert "AwaitingPromotion" in r.stdout
    assert backend.alias_target() == f"{backend.alias}__v1"
    status = embrel(*state, "status", "products", "-o", "json", cwd=tmp_path, check=True)
    assert '"phase": "AwaitingPromotion"' in status.stdout

    r = embrel(*state, "promote", "products", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert backend.alias_target() == f"{backend.alias}__v2"

    r = apply(tmp_path, backend, corpus, "v3", "v3", promotion={"mode": "manual"})
    assert r.returncode == 3
    r = embrel(*state, "abort", "products", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert backend.alias_target() == f"{backend.alias}__v2", "abort never moves the alias"
    r = embrel(*state, "promote", "products", cwd=tmp_path)
    assert r.returncode == 1, "an aborted release cannot be promoted"
    assert backend.alias_target() == f"{backend.alias}__v2"


def test_retention_drops_beyond_keep_previous(
    tmp_path: Path, backend: Backend, corpus: Corpus
) -> None:
    keep = {"retention": {"keepPrevious": 1, "keepLoaded": 1}}
    for version in ("v1", "v2", "v3"):
        r = apply(tmp_path, backend, corpus, version, "v2" if version == "v3" else version, **keep)
        assert r.returncode == 0, r.stdout + r.stderr
    names = sorted(backend.collections())
    assert names == [f"{backend.alias}__v2", f"{backend.alias}__v3"]
    assert loaded(backend, f"{backend.alias}__v2")


def test_a_suspended_release_builds_nothing_until_resumed_and_still_rolls_back(
    tmp_path: Path, backend: Backend, corpus: Corpus
) -> None:
    state = ("--state-dir", str(tmp_path / "state"))
    c = lambda v: f"{backend.alias}__{v}"  # noqa: E731
    assert apply(tmp_path, backend, corpus, "v1", "v1").returncode == 0
    assert apply(tmp_path, backend, corpus, "v2", "v2").returncode == 0

    r = apply(tmp_path, backend, corpus, "v3", "v3", suspend=True)
    assert r.returncode == 3, r.stdout + r.stderr
    assert "Suspended" in r.stdout and "nothing is built" in r.stdout
    assert c("v3") not in backend.collections(), "a suspended release builds nothing"
    r = embrel(*state, "promote", "products", cwd=tmp_path)
    assert r.returncode != 0 and "spec.suspend" in r.stdout + r.stderr
    r = embrel(*state, "rollback", "products", cwd=tmp_path)
    assert r.returncode == 0 and "Rolled back" in r.stdout, r.stdout + r.stderr
    assert backend.alias_target() == c("v1"), "a person's rollback acts while suspended"

    r = apply(tmp_path, backend, corpus, "v3", "v3")
    assert r.returncode == 0, r.stdout + r.stderr
    assert backend.alias_target() == c("v3")
