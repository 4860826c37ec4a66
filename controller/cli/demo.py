"""`embrel demo`: the whole life of a release track on the embedded Milvus Lite.

v1 goes live, v2 cuts over, a broken v3 is rejected with the alias untouched, and a
rollback returns to v1 in one alias flip. Uses examples/demo (release YAMLs and the
data generator) so that what the demo shows is exactly what a user can apply.
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from controller.cli.output import ConsoleReporter, ExitCode, format_history
from controller.errors import UsageError
from controller.status import Phase
from controller.validation.results import format_number

if TYPE_CHECKING:
    from controller.config import ControllerConfig
    from controller.drivers.local import LocalController

EXAMPLES = Path("examples/demo")


def register(sub: argparse._SubParsersAction[Any]) -> None:
    demo = sub.add_parser("demo", help="v1 -> v2 -> rejected v3 -> rollback on Milvus Lite")
    demo.add_argument("--workdir", type=Path, default=Path(".demo"))
    demo.add_argument("--examples", type=Path, default=None, help="examples/demo folder")
    demo.set_defaults(handler=cmd_demo)


def cmd_demo(args: argparse.Namespace, config: ControllerConfig) -> int:
    return run_demo(args.workdir, args.examples)


def _find_examples(given: Path | None) -> Path:
    for candidate in (given, EXAMPLES, Path(__file__).resolve().parents[2] / EXAMPLES):
        if candidate is not None and (candidate / "generate.py").exists():
            return candidate
    raise UsageError(
        f"{given or EXAMPLES}: cannot find the demo's examples (generate.py and releases/); "
        "run from the repository root or pass --examples"
    )


def _generate(examples: Path, out: Path) -> None:
    spec = importlib.util.spec_from_file_location("embrel_demo_generate", examples / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.generate(out)


def embrel_command() -> str:
    """How the reader can run embrel from here: `embrel` when it is on the PATH, else the
    script inside the virtualenv (`make run` installs there and activates nothing)."""
    script = Path(sys.executable).parent / "embrel"
    on_path = shutil.which("embrel")
    if on_path is not None or not script.is_file():
        return "embrel"
    try:
        return str(script.relative_to(Path.cwd()))
    except ValueError:  # the virtualenv lies outside the current folder
        return str(script)


def run_demo(workdir: Path, examples_dir: Path | None = None) -> int:
    from controller.config import ControllerConfig
    from controller.drivers.local import LocalController, controller_lock

    started = time.monotonic()
    examples = _find_examples(examples_dir)
    if workdir.exists():
        shutil.rmtree(workdir)
    shutil.copytree(examples, workdir, ignore=shutil.ignore_patterns("__pycache__"))
    print(f"embrel demo: a release track on Milvus Lite in {workdir}/ (fresh)\n")
    _generate(examples, workdir / "data")
    print(
        "Generated 4,000 product vectors (64-dim) in three versions and a 200-query golden set.\n"
    )

    config = ControllerConfig(state_dir=workdir / ".embrel")
    controller = LocalController(config, ConsoleReporter(indent="    "))
    releases = workdir / "releases"
    try:
        with controller_lock(config.state_dir):
            ok = _scenario(controller, releases)
    finally:
        controller.close()
    print(
        f"\nDone in {time.monotonic() - started:.1f}s. Try: "
        f"{embrel_command()} --state-dir {config.state_dir} status products"
    )
    return ExitCode.OK if ok else ExitCode.FAILED


def _scenario(controller: LocalController, releases: Path) -> bool:
    from controller.drivers.local import read_spec

    steps = [
        ("1. Release v1: build, index, validate, create the alias", "products-v1.yaml", Phase.LIVE),
        (
            "2. Release v2 (refreshed model): shadow build, validate, cut over",
            "products-v2.yaml",
            Phase.LIVE,
        ),
        (
            "3. Release v3 (broken pipeline: vectors on the wrong ids)",
            "products-v3.yaml",
            Phase.FAILED,
        ),
    ]
    ok = True
    for title, filename, expected in steps:
        print(title)
        text, release = read_spec(releases / filename)
        controller.record_spec(releases / filename, text, release)
        result = controller.reconcile_track(release.track)
        ok &= _show(controller, release.track, result.status.phase, expected)
    print("4. Roll back to v1: one alias flip, no rebuild, no re-validation")
    track = "demo/products"
    controller.store.update_intents(track, lambda i: i.__setitem__("rollback", {"to": "v1"}))
    started = time.monotonic()
    result = controller.reconcile_track(track)
    print(f"    rollback took {(time.monotonic() - started) * 1000:.0f} ms end to end")
    ok &= _show(controller, track, result.status.phase, Phase.FAILED, rolled_back=True)
    print("History of demo/products (embrel history products):")
    record = controller.store.load(track)
    assert record is not None
    history = record.status.to_dict().get("history", [])
    print("    " + format_history(history).replace("\n", "\n    "))
    return ok


def _show(
    controller: LocalController,
    track: str,
    phase: Phase,
    expected: Phase,
    rolled_back: bool = False,
) -> bool:
    record = controller.store.load(track)
    assert record is not None
    status = record.status
    live = status.live or {}
    mark = "as expected" if phase == expected else f"UNEXPECTED, wanted {expected}"
    if not rolled_back:
        print(f"    => {phase} ({mark}): {status.message}")
    print(f"    => alias products -> {live.get('collection')} (version {live.get('version')})")
    if status.validation and not rolled_back:
        checks = ", ".join(
            f"{c['name']}={format_number(c['value'])}"
            for c in status.validation["checks"]
            if c.get("value") is not None
        )
        print(f"    => checks: {checks}")
    print()
    return phase == expected
