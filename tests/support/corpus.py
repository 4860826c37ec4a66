"""Real text that ships with Python: paragraphs of standard-library docstrings.

Used by the documents tests and benchmarks as a corpus nobody wrote for them. The
same Python version gives the same paragraphs, in the same order, on every machine.
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Iterator

# Pure-Python modules with long docstrings and no side effects on import.
MODULES = (
    "argparse",
    "ast",
    "asyncio",
    "bisect",
    "calendar",
    "collections",
    "configparser",
    "contextlib",
    "csv",
    "dataclasses",
    "datetime",
    "decimal",
    "difflib",
    "doctest",
    "email.message",
    "email.utils",
    "enum",
    "fractions",
    "ftplib",
    "functools",
    "gettext",
    "glob",
    "gzip",
    "heapq",
    "hmac",
    "http.client",
    "http.cookiejar",
    "http.server",
    "imaplib",
    "inspect",
    "ipaddress",
    "json",
    "locale",
    "logging",
    "logging.handlers",
    "mailbox",
    "mimetypes",
    "optparse",
    "os",
    "pathlib",
    "pdb",
    "pickle",
    "pickletools",
    "poplib",
    "pprint",
    "pydoc",
    "queue",
    "random",
    "re",
    "sched",
    "selectors",
    "shlex",
    "shutil",
    "smtplib",
    "socket",
    "socketserver",
    "sqlite3",
    "ssl",
    "statistics",
    "string",
    "subprocess",
    "tarfile",
    "tempfile",
    "textwrap",
    "threading",
    "timeit",
    "tokenize",
    "traceback",
    "typing",
    "unittest",
    "unittest.mock",
    "urllib.parse",
    "urllib.request",
    "uuid",
    "warnings",
    "weakref",
    "xml.dom.minidom",
    "xml.etree.ElementTree",
    "zipfile",
    "zoneinfo",
    # Appended later, so the first paragraphs (what the tests use) stay the same.
    "asyncio.base_events",
    "asyncio.streams",
    "asyncio.tasks",
    "codecs",
    "concurrent.futures",
    "copy",
    "dis",
    "email.charset",
    "email.header",
    "email.headerregistry",
    "email.parser",
    "filecmp",
    "fileinput",
    "fnmatch",
    "getopt",
    "gettext",
    "graphlib",
    "hashlib",
    "html.parser",
    "importlib.metadata",
    "importlib.resources",
    "io",
    "lzma",
    "modulefinder",
    "multiprocessing.connection",
    "multiprocessing.managers",
    "multiprocessing.pool",
    "netrc",
    "numbers",
    "operator",
    "platform",
    "plistlib",
    "profile",
    "pstats",
    "py_compile",
    "pyclbr",
    "quopri",
    "reprlib",
    "rlcompleter",
    "runpy",
    "secrets",
    "shelve",
    "signal",
    "site",
    "stat",
    "struct",
    "symtable",
    "sysconfig",
    "tabnanny",
    "token",
    "trace",
    "tracemalloc",
    "types",
    "unittest.case",
    "urllib.robotparser",
    "wave",
    "webbrowser",
    "wsgiref.handlers",
    "wsgiref.validate",
    "xml.dom.pulldom",
    "xml.sax.handler",
    "xml.sax.saxutils",
    "xmlrpc.client",
    "xmlrpc.server",
    "zipapp",
    "zipimport",
)
_SPACE = re.compile(r"\s+")


def _docstrings() -> Iterator[str]:
    for name in MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:  # a module a later Python dropped: fewer paragraphs, same order
            continue
        yield inspect.getdoc(module) or ""
        for _, member in sorted(vars(module).items()):
            if getattr(member, "__module__", None) != module.__name__:
                continue
            if inspect.isclass(member) or inspect.isfunction(member):
                yield inspect.getdoc(member) or ""
            if inspect.isclass(member):
                for _, method in sorted(vars(member).items()):
                    if inspect.isfunction(method):
                        yield inspect.getdoc(method) or ""


def stdlib_paragraphs(limit: int, min_chars: int = 40) -> list[str]:
    """Up to ``limit`` distinct paragraphs of at least ``min_chars`` characters."""
    seen: dict[str, None] = {}
    for doc in _docstrings():
        for paragraph in doc.split("\n\n"):
            text = _SPACE.sub(" ", paragraph).strip()
            if len(text) >= min_chars and text not in seen:
                seen[text] = None
                if len(seen) == limit:
                    return list(seen)
    return list(seen)
