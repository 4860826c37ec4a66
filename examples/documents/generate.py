"""Documents for the example: paragraphs of the Python standard library's docstrings.

    python examples/documents/generate.py [OUT_DIR]      (default: examples/documents/data)

    docs-v1.parquet   2,000 paragraphs: id, text, title (the module they come from)
    docs-v2.parquet   the same, 1% of the texts edited, 5 removed, 5 added

Real text that ships with Python, so the example needs no download. Release v1 and
v2 with the specs beside this file: v2 embeds only the 25 new and edited documents
(see docs/incremental.md).
"""

from __future__ import annotations

import importlib
import inspect
import re
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

MODULES = (
    "argparse", "collections", "csv", "datetime", "decimal", "email.message", "functools",
    "http.client", "inspect", "json", "logging", "pathlib", "random", "re", "shutil",
    "sqlite3", "statistics", "string", "subprocess", "tarfile", "textwrap", "threading",
    "typing", "unittest", "urllib.parse", "uuid", "zipfile",
)  # fmt: skip
DOCS, EDITED, REMOVED, ADDED = 2000, 20, 5, 5


def paragraphs() -> list[tuple[str, str]]:
    """(module, paragraph) pairs, distinct paragraphs of at least 40 characters."""
    seen: dict[str, str] = {}
    for name in MODULES:
        module = importlib.import_module(name)
        for member in _documented(module):
            for part in (inspect.getdoc(member) or "").split("\n\n"):
                text = re.sub(r"\s+", " ", part).strip()
                if len(text) >= 40:
                    seen.setdefault(text, name)
    return [(module, text) for text, module in seen.items()][:DOCS]


def _documented(module: object) -> list[object]:
    """The module, its classes and functions, and the classes' methods, in name order."""
    out = [module]
    for _, member in sorted(vars(module).items()):
        if inspect.isclass(member) or inspect.isfunction(member):
            out.append(member)
        if inspect.isclass(member):
            out += [m for _, m in sorted(vars(member).items()) if inspect.isfunction(m)]
    return out


def write(path: Path, docs: dict[int, tuple[str, str]]) -> None:
    ids = sorted(docs)
    table = pa.table(
        {
            "id": pa.array(ids, pa.int64()),
            "text": [docs[i][1] for i in ids],
            "title": [docs[i][0] for i in ids],
        }
    )
    pq.write_table(table, path)


def generate(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    v1 = dict(enumerate(paragraphs()))
    write(out / "docs-v1.parquet", v1)
    v2 = dict(v1)
    for i in range(0, EDITED * 50, 50):  # every 50th document, 1%
        module, text = v1[i]
        v2[i] = (module, f"{text} (Revised for this release.)")
    for i in range(1, REMOVED * 50, 50):
        del v2[i]
    for j in range(ADDED):
        v2[10_000 + j] = ("example", f"A new document, number {j}, added in release v2.")
    write(out / "docs-v2.parquet", v2)
    print(f"wrote {len(v1)} documents (v1) and {len(v2)} (v2) to {out}")


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "data")
