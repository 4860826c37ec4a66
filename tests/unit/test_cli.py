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


def test_status_imports_neither_milvus_nor_the_engine(tmp_path: Path) -> None:
    """`embrel status` reads the state folder only: no pymilvus, grpc, pandas or pyarrow."""
    code = (
        "from controller.cli import main\n"
        f"assert main(['--state-dir', {str(tmp_path)!r}, 'status', 'nothing']) == 2"
    )
    imported = _imported_by(code)
    assert not {"pymilvus", "grpc", "pandas", "pyarrow", "kubernetes"} & set(imported), imported
    probe = f"import sys\n{code}\nassert 'controller.engine' not in sys.modules"
    subprocess.run([sys.executable, "-c", probe], cwd=REPO, check=True)


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
        (Phase.SUSPENDED, ExitCode.WAITING),
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


# --- shared options, argument types ------------------------------------------------


def _usage_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exit:
        main(argv)
    err = capsys.readouterr().err
    assert exit.value.code == ExitCode.INVALID and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("where", ["before", "after"])
@pytest.mark.parametrize("verb", ["status", "history", "promote", "abort", "rollback"])
def test_state_dir_before_or_after_the_verb(
    where: str, verb: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    option = ["--state-dir", str(tmp_path / "state")]
    argv = [*option, verb, "nope"] if where == "before" else [verb, "nope", *option]
    assert main(argv) == ExitCode.INVALID
    assert f"is not known in {tmp_path / 'state'}" in _one_error_line(capsys.readouterr().err)


def test_config_after_the_verb(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(f"stateDir: {tmp_path / 'from-config'}\n")
    assert main(["status", "nope", "--config", str(config)]) == ExitCode.INVALID
    assert f"is not known in {tmp_path / 'from-config'}" in capsys.readouterr().err
    # Given again after the verb, the later value wins; given once, it is kept.
    argv = ["--state-dir", str(tmp_path / "a"), "status", "x", "--state-dir", str(tmp_path / "b")]
    assert main(argv) == ExitCode.INVALID
    assert f"is not known in {tmp_path / 'b'}" in capsys.readouterr().err


@pytest.mark.parametrize("port", ["70000", "-1", "65536", "http"])
@pytest.mark.parametrize("verb", ["apply", "validate"])
def test_a_metrics_port_out_of_range_is_a_usage_error(
    port: str, verb: str, capsys: pytest.CaptureFixture[str]
) -> None:
    err = _usage_error([verb, "-f", "r.yaml", "--metrics-port", port], capsys)
    assert "--metrics-port" in err
    assert "0..65535" in err or "not a port number" in err


def test_the_controller_metrics_port_allows_minus_one_for_off(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from controller.cli import build_parser

    assert build_parser().parse_args(["controller", "--metrics-port", "-1"]).metrics_port == -1
    assert "-1..65535" in _usage_error(["controller", "--metrics-port", "-2"], capsys)


@pytest.mark.parametrize("where", ["before", "after"])
def test_a_state_dir_that_is_a_file_is_a_usage_error(
    where: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = tmp_path / "state"
    file.write_text("")
    option = ["--state-dir", str(file)]
    argv = [*option, "status", "x"] if where == "before" else ["status", "x", *option]
    assert f"{file} is a file, not a folder" in _usage_error(argv, capsys)


def test_rollback_to_an_empty_version_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    err = _usage_error(["--state-dir", str(tmp_path), "rollback", "products", "--to", ""], capsys)
    assert "--to: must not be empty" in err


def test_a_read_only_state_folder_is_one_line_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The tests may run as root, for whom chmod does not make a folder read-only.
    state = tmp_path / "state"

    def refuse(self: Path, *args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "mkdir", refuse)
    spec = REPO / "examples" / "demo" / "releases" / "products-v1.yaml"
    assert main(["--state-dir", str(state), "apply", "-f", str(spec)]) == ExitCode.FAILED
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith(f"error: cannot use {state}: Permission denied; check that the state")


# --- -f - and -f DIR -----------------------------------------------------------------

SPEC = """apiVersion: embrel.dev/v1alpha1
kind: EmbeddingRelease
metadata: {name: products}
spec:
  alias: products
  version: v1
  model: {name: m}
  milvus: {uri: ./milvus.db}
  collection: {dimension: 8}
  source: {files: {uri: data.parquet}}
"""


def _stdin(monkeypatch: pytest.MonkeyPatch, data: bytes) -> None:
    import io

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))


def test_a_spec_from_stdin_resolves_paths_against_the_current_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from controller.cli.local import read_stdin_spec

    monkeypatch.chdir(tmp_path)
    _stdin(monkeypatch, SPEC.encode())
    path, text, release = read_stdin_spec()
    assert path == tmp_path / "<stdin>" and path.parent == tmp_path
    assert text == SPEC and release.track == "default/products"


def test_an_invalid_spec_from_stdin_is_named_stdin(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _stdin(monkeypatch, b"kind: Nope\n")
    assert main(["--state-dir", str(tmp_path), "apply", "-f", "-"]) == ExitCode.INVALID
    assert capsys.readouterr().err.startswith("error: invalid release spec <stdin>:")
    _stdin(monkeypatch, b"x" * (2 << 20))  # bounded: read no further than the size limit
    assert main(["--state-dir", str(tmp_path), "validate", "-f", "-"]) == ExitCode.INVALID


def test_a_folder_applies_every_yaml_in_name_order_and_exits_with_the_worst(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    releases = tmp_path / "releases"
    releases.mkdir()
    for name, version in (("b.yml", "v2"), ("a.yaml", "v1"), ("c.yaml", "v3")):
        (releases / name).write_text(SPEC.replace("version: v1", f"version: {version}"))
    (releases / "broken.yaml").write_text("kind: [\n")
    (releases / "notes.txt").write_text("not a release")
    seen: list[str] = []

    def fake_apply(args: object, controller: object, path: Path, text: str, release: object) -> int:
        seen.append(path.name)
        return ExitCode.WAITING if path.name == "b.yml" else ExitCode.OK

    monkeypatch.setattr("controller.cli.local._apply_spec", fake_apply)
    argv = ["--state-dir", str(tmp_path / "state"), "apply", "-f", f"{releases}/"]
    assert main(argv) == ExitCode.INVALID  # broken.yaml is the worst
    assert seen == ["a.yaml", "b.yml", "c.yaml"]  # in name order, past the broken one
    out = capsys.readouterr()
    assert "4 release files in" in out.out and "invalid release spec" in out.err
    summary = out.out.splitlines()[-4:]
    assert summary == [
        "  a.yaml: ok (exit 0)",
        "  b.yml: waiting (exit 3)",
        "  broken.yaml: invalid (exit 2)",
        "  c.yaml: ok (exit 0)",
    ]


def test_an_empty_folder_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--state-dir", str(tmp_path / "s"), "apply", "-f", str(tmp_path)]
    assert main(argv) == ExitCode.INVALID
    assert "holds no *.yaml or *.yml files" in _one_error_line(capsys.readouterr().err)


def test_the_worst_exit_code() -> None:
    from controller.cli.output import worst_exit_code

    assert worst_exit_code([]) == ExitCode.OK
    assert worst_exit_code([0, 3, 0]) == ExitCode.WAITING
    assert worst_exit_code([3, 4, 1]) == ExitCode.FAILED
    assert worst_exit_code([1, 2, 0]) == ExitCode.INVALID


# --- output --------------------------------------------------------------------------


def test_status_into_a_closed_pipe_exits_quietly(tmp_path: Path) -> None:
    import os

    from controller.drivers.local import StateStore, TrackRecord

    record = TrackRecord("/r.yaml", SPEC, ReleaseStatus(), {})
    StateStore(tmp_path).save("default/x", record)
    read, write = os.pipe()
    os.close(read)  # `| head` that has already gone: every write to stdout fails
    try:
        r = subprocess.run(
            [sys.executable, "-m", "controller.cli", "--state-dir", str(tmp_path), "status", "x"],
            cwd=REPO,
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
        )
    finally:
        os.close(write)
    assert r.stderr == "" and r.returncode == ExitCode.BROKEN_PIPE


def test_status_shows_counts_in_full_and_values_with_four_digits() -> None:
    from controller.cli.output import format_status

    status = ReleaseStatus(
        build={"source": "files", "rows": 200_000},
        validation={
            "outcome": "Failed",
            "checks": [
                {
                    "name": "rowCount",
                    "value": 199_998.0,
                    "threshold": 200_000.0,
                    "outcome": "Failed",
                    "comparison": ">=",
                },
                {"name": "recall@10", "value": 0.912345, "threshold": 0.9, "outcome": "Passed"},
                {"name": "mmd", "value": float("nan"), "outcome": "Failed"},
            ],
        },
    )
    text = format_status(status, "")
    assert "Build:      files: rows 200,000" in text
    assert "199,998" in text and ">= 200,000" in text and "2e+05" not in text
    assert "0.9123" in text and "NaN" in text


def test_the_demo_hint_names_a_command_that_runs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from controller.cli import demo

    venv = tmp_path / ".venv" / "bin"
    venv.mkdir(parents=True)
    (venv / "embrel").write_text("#!/bin/sh\n")
    monkeypatch.setattr(sys, "executable", str(venv / "python"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("shutil.which", lambda name: None)  # not on the PATH: `make run`
    assert demo.embrel_command() == ".venv/bin/embrel"
    monkeypatch.setattr("shutil.which", lambda name: "/usr/bin/embrel")
    assert demo.embrel_command() == "embrel"
