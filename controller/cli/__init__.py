"""`embrel`: apply, watch and operate embedding releases from the command line.

    app      the parser assembled from the modules below; ``main``, ``kubectl_main``
    local    apply, validate, run, status, history, promote, abort, rollback (a state folder)
    kube     `embrel controller`, and ``--kube`` on the verbs (EmbeddingRelease objects)
    demo     `embrel demo` on Milvus Lite
    output   console output, formatters, exit codes: every module above uses it
    options  argument types and the options every command shares (--config, --state-dir)

Importing this package is cheap: the drivers, the engine and the clients they use are
imported by the command that runs, so `embrel --help` does not load them.
"""

from controller.cli.app import build_parser, kubectl_main, main

# The parser under its former name, for callers that inspect the CLI's flags.
_parser = build_parser

__all__ = ["build_parser", "kubectl_main", "main"]
