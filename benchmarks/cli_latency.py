"""How long a person waits for the `embrel` command itself: --help, status, rollback.

Runs the installed CLI (the virtualenv's ``embrel`` script, as a user does) in a fresh
process each time, with PYTHONPATH at this checkout, and reports the median and p90
wall time of each command against baselines measured in the same run: the bare
interpreter start (``python -c pass``), the import of the local driver
(``controller.drivers.local``), the floor of every command that reads the state folder,
and the same commands run by the CLI before it imported on demand (the last revision
with controller/cli_kube.py, extracted with ``git archive``; skipped outside a clone).

    embrel --help                 imports no driver, engine or client library
    embrel status NAME            a track set up here (v1, then v2 applied)
    embrel rollback NAME          the alias flip back to v1 and its proof through the alias,
                                  alternating with `embrel promote NAME` (back to v2)
    ... (handed to run --watch)   the same verbs while `embrel run --watch` holds the state
                                  folder: the verb leaves the request and wakes the watcher,
                                  which flips with its imports and connection already made

    python -m benchmarks.cli_latency [--backend lite|server] [--runs 10]
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from benchmarks.support import (
    BACKENDS,
    Backend,
    fresh_alias,
    machine,
    median,
    open_backend,
    release_doc,
    table,
    write_vectors,
    write_yaml,
)

REPO = Path(__file__).resolve().parents[1]
ROWS, DIM = 2_000, 64
INDEX = {"type": "HNSW", "params": {"M": 16, "efConstruction": 100}}
# Wall-time targets (seconds) on the real server; --help and status do not touch Milvus.
HANDED = " (handed to run --watch)"
TARGETS = {
    "embrel --help": 0.4,
    "embrel status": 0.6,
    "embrel rollback": 1.0,
    f"embrel rollback{HANDED}": 1.0,
}


@dataclass(frozen=True)
class Timing:
    what: str
    seconds: list[float]

    @property
    def median(self) -> float:
        return median(self.seconds)

    @property
    def p90(self) -> float:
        if len(self.seconds) < 2:
            return self.seconds[0]
        return statistics.quantiles(self.seconds, n=10, method="inclusive")[-1]


def embrel_command() -> list[str]:
    """The installed `embrel` script beside this interpreter, else ``python -m controller.cli``."""
    script = Path(sys.executable).with_name("embrel")
    return [str(script)] if script.exists() else [sys.executable, "-m", "controller.cli"]


def _env(tree: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(tree), "PYTHONUNBUFFERED": "1"}


@contextmanager
def cli_before() -> Iterator[tuple[str, Path] | None]:
    """The controller package as it was before the CLI package: (revision, folder)."""
    git = ["git", "-C", str(REPO)]
    found = subprocess.run(
        [*git, "rev-list", "-n1", "HEAD", "--", "controller/cli_kube.py"],
        capture_output=True,
        text=True,
        check=False,
    )
    if found.returncode != 0 or not found.stdout.strip():
        yield None
        return
    rev = f"{found.stdout.strip()[:9]}^"
    with tempfile.TemporaryDirectory(prefix="embrel-cli-before-") as tmp:
        archive = subprocess.run(
            [*git, "archive", rev, "controller"], capture_output=True, check=True
        ).stdout
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(tmp, filter="data")
        yield rev, Path(tmp)


def timed(argv: Sequence[str], expect: int = 0, tree: Path = REPO) -> float:
    """Wall time of one fresh process running ``argv`` on the controller package in
    ``tree``; it must exit ``expect``."""
    started = time.perf_counter()
    done = subprocess.run(argv, env=_env(tree), capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != expect:
        raise RuntimeError(
            f"{' '.join(argv)} exited {done.returncode}, wanted {expect}:\n"
            f"{done.stdout}\n{done.stderr}"
        )
    return elapsed


def repeat(what: str, argv: Sequence[str], runs: int, tree: Path = REPO) -> Timing:
    return Timing(what, [timed(argv, tree=tree) for _ in range(runs)])


@dataclass(frozen=True)
class Track:
    """A track with v2 live and v1 retired but kept loaded: ready to roll back."""

    name: str
    config: Path
    alias: str
    uri: str


def two_versions(backend: Backend, workdir: Path, tree: Path = REPO) -> Track:
    """Built by the CLI in ``tree``: each revision measures on a track it built itself
    (how a build is identified changed between them)."""
    alias = fresh_alias("cli")
    uri = backend.uri(alias)
    folder = workdir / alias
    config = write_yaml(folder / "config.yaml", {"stateDir": str(folder / "state")})
    for seed, version in enumerate(("v1", "v2")):
        source = write_vectors(folder / f"{version}.parquet", ROWS, DIM, seed=seed)
        doc = release_doc(
            name="cli", alias=alias, version=version, uri=uri, source=source, dim=DIM, index=INDEX
        )
        spec = write_yaml(folder / f"{version}.yaml", doc)
        timed([*embrel_command(), "--config", str(config), "apply", "-f", str(spec)], tree=tree)
    return Track("cli", config, alias, uri)


@contextmanager
def watching(track: Track) -> Iterator[None]:
    """`embrel run --watch` on the track's state folder, its file at v2, polling hourly:
    only the verbs' wake-up makes it act within the measurement."""
    folder = track.config.parent
    gitops = folder / "gitops"
    gitops.mkdir(exist_ok=True)
    (gitops / "cli.yaml").write_text((folder / "v2.yaml").read_text())
    config = write_yaml(
        folder / "watch.yaml",
        {"stateDir": str(folder / "state"), "reconcile": {"watchIntervalSeconds": 3600}},
    )
    argv = [*embrel_command(), "--config", str(config), "run", "--watch", str(gitops)]
    watcher = subprocess.Popen(
        argv, env=_env(REPO), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        assert watcher.stdout is not None
        while "Watching" not in (line := watcher.stdout.readline()):
            if not line:
                raise RuntimeError(f"{' '.join(argv)} exited {watcher.wait()}")
        yield
    finally:
        watcher.terminate()
        watcher.wait(timeout=60)


def flips(track: Track, runs: int, tree: Path = REPO, label: str = "") -> list[Timing]:
    """`embrel rollback` (v2 -> v1), then `embrel promote` (v1 -> v2), ``runs`` times each."""
    base = [*embrel_command(), "--config", str(track.config)]
    rollback, promote = [], []
    for _ in range(runs):
        rollback.append(timed([*base, "rollback", track.name], tree=tree))
        promote.append(timed([*base, "promote", track.name], tree=tree))
    return [
        Timing(f"embrel rollback{label}", rollback),
        Timing(f"embrel promote (back){label}", promote),
    ]


def commands(track: Track, runs: int, tree: Path = REPO, label: str = "") -> list[Timing]:
    """--help, status, rollback and promote, by the controller package in ``tree``."""
    embrel = embrel_command()
    status = [*embrel, "--config", str(track.config), "status", track.name]
    return [
        repeat(f"embrel --help{label}", [*embrel, "--help"], runs, tree),
        repeat(f"embrel status{label}", status, runs, tree),
        *flips(track, runs, tree, label),
    ]


def measure(backend: Backend, runs: int) -> list[Timing]:
    python = [sys.executable, "-c"]
    results = [
        repeat("python -c pass", [*python, "pass"], runs),
        repeat(
            "import controller.drivers.local", [*python, "import controller.drivers.local"], runs
        ),
    ]
    tracks = [two_versions(backend, backend.root)]
    try:
        results += commands(tracks[0], runs)
        with watching(tracks[0]):
            results += flips(tracks[0], runs, label=HANDED)
        with cli_before() as before:
            if before is not None:
                rev, tree = before
                tracks.append(two_versions(backend, backend.root, tree))
                results += commands(tracks[1], runs, tree, f" (before, {rev})")
    finally:
        if backend.server_uri is not None:
            for track in tracks:
                backend.discard(track.uri, track.alias)
    return results


def report(kind: str, results: Sequence[Timing]) -> str:
    start = results[0].median
    by_name = {r.what: r for r in results}
    rows = []
    for r in results:
        before = next(
            (b for name, b in by_name.items() if name.startswith(f"{r.what} (before")), None
        )
        target = TARGETS.get(r.what)
        verdict = (
            "" if target is None else f"< {target:.1f} s: {'met' if r.p90 < target else 'NOT met'}"
        )
        rows.append(
            [
                kind,
                r.what,
                str(len(r.seconds)),
                f"{r.median * 1000:.0f}",
                f"{r.p90 * 1000:.0f}",
                f"x{r.median / start:.1f}",
                "" if before is None else f"x{r.median / before.median:.2f}",
                verdict,
            ]
        )
    headers = ["backend", "command", "n", "median ms", "p90 ms", "vs python -c pass"]
    headers += ["now vs before", "target (p90)"]
    return table(headers, rows)


def run(runs: int, backends: Sequence[str]) -> dict[str, list[Timing]]:
    print(
        f"CLI latency: {' '.join(embrel_command())}, {runs} runs each, on {machine()}", flush=True
    )
    results = {}
    for kind in backends:
        with open_backend(kind) as backend:
            results[kind] = measure(backend, runs)
        print(report(kind, results[kind]), flush=True)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--backend", choices=[*BACKENDS, "both"], default="lite")
    p.add_argument("--runs", type=int, default=10)
    args = p.parse_args(argv)
    run(args.runs, BACKENDS if args.backend == "both" else (args.backend,))
    return 0


if __name__ == "__main__":
    sys.exit(main())
