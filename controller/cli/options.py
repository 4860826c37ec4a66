"""Argument types and the options every command shares.

A bad value is a usage error from argparse (exit 2, the usage line, what is valid),
before any command runs: a port out of range, a state folder that is a file, an empty
version.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable
from pathlib import Path

MAX_PORT = 65535
STDIN = Path("-")  # `-f -`: the release spec is read from standard input
STDIN_NAME = "<stdin>"  # its name in messages and in the state folder


def port_number(lowest: int = 0, meaning: str = "0: any free port") -> Callable[[str], int]:
    """An argparse type: a TCP port in ``lowest``..65535 (``meaning`` explains the low end)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
        if not lowest <= value <= MAX_PORT:
            raise argparse.ArgumentTypeError(
                f"{value} is not a valid port: give {lowest}..{MAX_PORT} ({meaning})"
            )
        return value

    parse.__name__ = "port"  # argparse names the type in its message
    return parse


def state_dir(text: str) -> Path:
    """An argparse type: a folder, or a path where one can be created (not a file)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("is empty; give a folder path")
    path = Path(text).expanduser()
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(
            f"{path} is a file, not a folder; give the folder embrel keeps its state in"
        )
    return path


def non_empty(text: str) -> str:
    """An argparse type: any text but an empty (or blank) one."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return text


def spec_path(text: str) -> Path:
    """An argparse type for ``-f``: a file, a folder of YAML files, or ``-`` (stdin)."""
    if not text:
        raise argparse.ArgumentTypeError("is empty; give a release YAML file, a folder or -")
    return Path(text).expanduser()


def add_shared_options(parser: argparse.ArgumentParser, after_verb: bool = False) -> None:
    """``--config`` and ``--state-dir``, accepted before the verb and after it.

    After the verb the defaults are suppressed, so a value given before it is kept
    unless the same option is given again after it.
    """
    default = argparse.SUPPRESS if after_verb else None
    group = parser.add_argument_group("shared options (before or after the command)")
    group.add_argument(
        "--config",
        type=Path,
        default=default,
        help="controller config file (see config.example.yaml)",
    )
    group.add_argument(
        "--state-dir",
        type=state_dir,
        default=default,
        metavar="DIR",
        help="override stateDir from the config",
    )


def add_shared_options_to_verbs(verbs: Iterable[argparse.ArgumentParser]) -> None:
    for verb in verbs:
        add_shared_options(verb, after_verb=True)
