"""The `embrel` command line: the parser assembled from each module's commands, and ``main``.

Each module registers its own subcommands (``register(subparsers)``) and imports what
they need when they run; this module only parses, loads the config and turns an error
into its one-line message and exit code (controller.cli.output).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from controller.cli import demo, local
from controller.cli import kube as kube_commands
from controller.cli.options import add_shared_options, add_shared_options_to_verbs
from controller.cli.output import ExitCode, report_error, report_os_error, setup_logging
from controller.errors import EmbrelError


def build_parser(kube: bool = False) -> argparse.ArgumentParser:
    """The whole CLI; ``kube``: `kubectl embrel`, where ``--kube`` is implied."""
    p = argparse.ArgumentParser(
        prog="kubectl embrel" if kube else "embrel",
        description="Blue/green releases of embeddings in Milvus.",
    )
    add_shared_options(p)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    if kube:  # `kubectl embrel`: only the verbs that act on the cluster
        local.register_verbs(sub)
        kube_commands.register(sub, kube=True)
    else:
        local.register(sub)
        kube_commands.register(sub)  # `embrel controller`, list, get, --kube on the verbs
        demo.register(sub)
    _register_version(sub)
    add_shared_options_to_verbs({id(verb): verb for verb in sub.choices.values()}.values())
    return p


def _register_version(sub: argparse._SubParsersAction[Any]) -> None:
    sub.add_parser("version", help="print the version of embrel").set_defaults(handler=cmd_version)


def cmd_version(args: argparse.Namespace, config: object) -> int:
    from controller import __version__

    print(f"embrel {__version__}")
    return ExitCode.OK


def main(argv: Sequence[str] | None = None, kube: bool = False) -> int:
    """Run one command; its exit code (0 live or done, 1 failed, 2 invalid, 3 waiting, 4 unavailable)."""
    args = build_parser(kube).parse_args(argv)
    handler = args.kube_handler if getattr(args, "kube", False) else args.handler
    try:
        from controller.config import load_config  # pydantic: not needed for --help

        config = load_config(args.config)
        if args.state_dir is not None:
            config = config.model_copy(update={"state_dir": args.state_dir})
        setup_logging(config)
        code: int = handler(args, config)
        sys.stdout.flush()  # here, so that a closed pipe is seen while it can be handled
        return code
    except EmbrelError as exc:
        return report_error(exc)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return ExitCode.INTERRUPTED
    except BrokenPipeError:
        return _stdout_closed()
    except OSError as exc:  # the state folder read-only, a disk full: the machine, not embrel
        return report_os_error(exc)


def _stdout_closed() -> int:
    """`embrel status | head`: the reader went away; stop quietly, as a pipe expects.

    Python would report the same broken pipe again when it flushes stdout at exit, so
    stdout is pointed at /dev/null first.
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # stdout is no file (embedded, captured): nothing to flush
        pass
    return ExitCode.BROKEN_PIPE


def kubectl_main() -> int:
    """`kubectl embrel ...` (the kubectl-embrel executable): the CLI with --kube implied."""
    return main(sys.argv[1:], kube=True)
