"""The docs name only what exists: CLI flags, spec fields, controller modules, metrics."""

from __future__ import annotations

import argparse
import importlib
import re
import typing
from pathlib import Path

from prometheus_client import CollectorRegistry
from pydantic import BaseModel

from controller.cli import build_parser
from controller.metrics import PrometheusTelemetry
from controller.spec import EmbeddingRelease

REPO = Path(__file__).parents[2]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# `embrel ...` or `kubectl embrel ...` in an inline code span (which may wrap) or on a
# line of a code block, up to a comment or the end of the span.
_COMMAND = re.compile(r"(?:`|^)((?:kubectl )?embrel [^`#\n]*(?:\n[^`#\n]*(?=`))?)", re.M)
_FLAG = re.compile(r"(?<![\w-])(--?[A-Za-z][\w-]*)")
_SPEC_PATH = re.compile(r"\bspec(?:\.[A-Za-z][A-Za-z0-9]*)+")
# controller/cli/app.py or controller.cli.app.main, as the docs name code.
# A path followed by ":123(" is a frame of recorded profiler output (it names the code
# as it was at the commit the measurement names), not a pointer into today's code.
_MODULE_FILE = re.compile(r"\bcontroller/[\w/]*\w(?:\.py(?!:\d+\()|/)")
_DOTTED = re.compile(r"\bcontroller(?:\.[A-Za-z_]\w*)+")
_NOT_CODE = {"controller.lock"}  # the state folder's lock file


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return {s for a in parser._actions for s in a.option_strings}


def _commands() -> list[tuple[str, str]]:
    return [(doc.name, m.group(1)) for doc in DOCS for m in _COMMAND.finditer(doc.read_text())]


def test_every_documented_cli_flag_exists() -> None:
    top, subcommands = _options(build_parser()), _subcommands()
    unknown, checked = [], 0
    for doc, command in _commands():
        words = command.split()
        words = words[words.index("embrel") + 1 :]
        # The first word naming subcommands; `apply|validate|run` names three.
        verbs = next(
            (vs for w in words if (vs := [v for v in w.split("|") if v in subcommands])), []
        )
        known = top | (
            set.intersection(*(_options(subcommands[v]) for v in verbs)) if verbs else set()
        )
        for flag in _FLAG.findall(" ".join(words)):
            checked += 1
            if flag not in known:
                unknown.append(f"{doc}: {flag} in `{command.strip()}`")
    assert checked > 10, "the commands in the docs were not found"
    assert unknown == []


def _models(annotation: object) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models(arg)]


def _resolves(path: list[str]) -> bool:
    """Whether ``spec.a.b`` names a field (by its camelCase YAML name) of the model."""
    models: list[type[BaseModel]] = [EmbeddingRelease]
    for depth, part in enumerate(path):
        fields = [
            f for m in models for name, f in m.model_fields.items() if (f.alias or name) == part
        ]
        if not fields:
            return False
        models = [m for f in fields for m in _models(f.annotation)]
        if not models and depth < len(path) - 1:
            return False  # a scalar field named as if it had fields
    return True


def test_every_documented_spec_path_exists() -> None:
    found = [
        (doc.name, m.group(0))
        for doc in DOCS
        for m in _SPEC_PATH.finditer(doc.read_text())
        if m.group(0) != "spec.py"
    ]
    assert len(found) > 10, "the spec paths in the docs were not found"
    assert [f for f in found if not _resolves(f[1].split("."))] == []
    assert not _resolves(["spec", "source", "bogus"])  # the check itself can fail


def _names_code(dotted: str) -> bool:
    """Whether ``a.b.c`` is a module of this repository, or an attribute of one."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        path = REPO.joinpath(*parts[:cut])
        if path.with_suffix(".py").is_file() or (path / "__init__.py").is_file():
            obj: object = importlib.import_module(".".join(parts[:cut]))
            try:
                for name in parts[cut:]:
                    obj = getattr(obj, name)
            except AttributeError:
                return False
            return True
    return False


def test_every_documented_module_exists() -> None:
    files = {(doc.name, m.group(0)) for doc in DOCS for m in _MODULE_FILE.finditer(doc.read_text())}
    dotted = {(doc.name, m.group(0)) for doc in DOCS for m in _DOTTED.finditer(doc.read_text())}
    assert len(files) > 10 and len(dotted) > 5, "the module names in the docs were not found"
    assert [f for f in files if not (REPO / f[1]).exists()] == []
    assert [d for d in dotted if d[1] not in _NOT_CODE and not _names_code(d[1])] == []
    assert not _names_code("controller.cli_kube")  # the check itself can fail


def test_architecture_lists_every_controller_module() -> None:
    text = (REPO / "docs" / "architecture.md").read_text()
    layers = text.split("## Layers", 1)[1].split("```")[1]
    controller = REPO / "controller"
    missing = (
        [
            str(path.relative_to(controller))
            for path in sorted(controller.glob("*.py"))
            if path.name != "__init__.py" and path.name not in layers
        ]
        + [
            f"{pkg.name}/"
            for pkg in sorted(p for p in controller.iterdir() if (p / "__init__.py").exists())
            if f"{pkg.name}/" not in layers
        ]
        + [
            f"drivers/{path.name}"
            for path in sorted((controller / "drivers").glob("*.py"))
            if not path.name.startswith("__") and path.name not in layers
        ]
        + [
            f"cli/{path.name}"
            for path in sorted((controller / "cli").glob("*.py"))
            if not path.name.startswith("__") and f"\n    {path.name}" not in layers
        ]
    )
    assert missing == []


def test_observability_lists_exactly_the_exported_metrics() -> None:
    series = PrometheusTelemetry(CollectorRegistry()).series_names()
    histograms = {n.removesuffix("_bucket") for n in series if n.endswith("_bucket")}
    parts = {f"{h}{suffix}" for h in histograms for suffix in ("_bucket", "_count", "_sum")}
    families = (set(series) - parts) | histograms
    text = (REPO / "docs" / "observability.md").read_text()
    documented = set(re.findall(r"`(embrel_[a-z_]+)`", text))
    assert len(families) > 20
    assert documented == families
