"""The CLI package: one exit-code table, usage errors as one line, imports on demand."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from controller.cli import main
from controller.cli.output import ExitCode, error_exit_code, outcome_exit_code
from controller.errors import (
    ConflictError,
    EmbrelError,
    MilvusUnavailable,
    SourceError,
    SpecError,
    UsageError,
)
from controller.status import Phase, ReleaseStatus
from tests.conftest import REPO

# Heavy libraries a command imports only when it needs them (benchmarks/cli_latency.py).
HEAVY = ("matplotlib", "pyarrow", "pandas", "kubernetes", "pymilvus", "grpc", "pydantic", "numpy")
HEAVY += ("tqdm", "yaml", "prometheus_client", "tenacity", "sentence_transformers", "torch")


def _imported_by(code: str) -> list[str]:
    """The heavy top-level packages a fresh interpreter holds after running ``code``."""
    probe = (
        f"import json, sys\n{code}\n"
        f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & {set(HEAVY)!r})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True
    )
    return list(json.loads(out.stdout.splitlines()[-1]))


def test_help_imports_no_heavy_library() -> None:
    code = (
        "from controller.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit as exit:\n    assert exit.code == 0"
    )
    assert _imported_by(code) == []
    assert _imported_by("import controller.cli") == []


def test_leaf_modules_import_their_heavy_libraries_on_use() -> None:
    assert "matplotlib" not in _imported_by("import controller.validation.report")
    assert "pyarrow" not in _imported_by("import controller.sources")
    assert "kubernetes" not in _imported_by("from controller.cli import kube")


def test_python_dash_m_runs_the_cli() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "controller.cli", "--help"], cwd=REPO, capture_output=True, text=True
    )
    assert r.returncode == 0 and "usage: embrel" in r.stdout and "rollback" in r.stdout


@pytest.mark.parametrize(
    ("phase", "code"),
    [
        (Phase.LIVE, ExitCode.OK),
        (Phase.FAILED, ExitCode.FAILED),
        (Phase.DEGRADED, ExitCode.FAILED),
        (Phase.AWAITING_PROMOTION, ExitCode.WAITING),
        (Phase.ROLLED_BACK, ExitCode.WAITING),
        (Phase.BUILDING, ExitCode.UNAVAILABLE),  # stopped mid-way: Milvus stayed unavailable
    ],
)
def test_exit_code_of_each_phase(phase: Phase, code: ExitCode) -> None:
    assert outcome_exit_code(ReleaseStatus(phase=phase)) == code


def test_an_error_decides_the_outcome_over_the_phase() -> None:
    live = ReleaseStatus(phase=Phase.LIVE)
    assert outcome_exit_code(live, MilvusUnavailable("down")) == ExitCode.UNAVAILABLE
    assert outcome_exit_code(live, ConflictError("reused")) == ExitCode.FAILED
    failed = ReleaseStatus(phase=Phase.FAILED)
    assert outcome_exit_code(failed, SourceError("bad")) == ExitCode.FAILED


def test_exit_code_of_each_error() -> None:
    assert error_exit_code(SpecError("r.yaml", [("spec.alias", "required")])) == ExitCode.INVALID
    assert error_exit_code(UsageError("unknown track")) == ExitCode.INVALID
    assert error_exit_code(MilvusUnavailable("down")) == ExitCode.UNAVAILABLE
    assert error_exit_code(ConflictError("reused")) == ExitCode.FAILED
    assert error_exit_code(EmbrelError("busy")) == ExitCode.FAILED
    assert [int(c) for c in ExitCode] == [0, 1, 2, 3, 4, 130, 141]


def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("verb", ["status", "history", "promote", "abort", "rollback"])
def test_an_unknown_track_is_a_usage_error(
    verb: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--state-dir", str(tmp_path), verb, "nope"]) == ExitCode.INVALID
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith("error: release track 'nope' is not known in ")
    assert "(known: none)" in line and "invalid release spec" not in line


def test_an_ambiguous_track_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tracks = tmp_path / "tracks"
    tracks.mkdir()
    for namespace in ("a", "b"):
        (tracks / f"{namespace}.products.json").write_text("{}")
    assert main(["--state-dir", str(tmp_path), "status", "products"]) == ExitCode.INVALID
    line = _one_error_line(capsys.readouterr().err)
    assert "release track 'products' is ambiguous" in line and "a/products, b/products" in line


def test_watching_a_missing_folder_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nowhere"
    assert main(["--state-dir", str(tmp_path), "run", "--watch", str(missing)]) == 2
    assert _one_error_line(capsys.readouterr().err) == f"error: --watch {missing}: not a folder"


def test_a_demo_without_its_examples_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("controller.cli.demo.EXAMPLES", tmp_path / "no-examples")
    monkeypatch.setattr("controller.cli.demo.__file__", str(tmp_path / "cli" / "demo.py"))
    argv = ["--state-dir", str(tmp_path), "demo", "--workdir", str(tmp_path / "demo")]
    assert main(argv) == ExitCode.INVALID
    assert "cannot find the demo's examples" in _one_error_line(capsys.readouterr().err)


def test_a_bad_flag_exits_2_with_usage(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit:
        main(["status"])
    assert exit.value.code == 2 and "usage: embrel status" in capsys.readouterr().err
