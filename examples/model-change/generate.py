"""Documents and labelled queries for the model-change example, from real text.

    python examples/model-change/generate.py [OUT_DIR]    (default: examples/model-change/data)

    docs.parquet   500 documents: id, text (a standard-library docstring paragraph
                   without its first sentence)
    golden/        the BEIR folder the releases are judged on: queries.jsonl (each
                   paragraph's first sentence, for every 5th document) and
                   qrels/test.tsv (each query's one relevant document)

Real text that ships with Python, so the example needs no download.
"""

from __future__ import annotations

import importlib
import inspect
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

MODULES = (
    "argparse", "collections", "csv", "datetime", "decimal", "email.message", "functools",
    "http.client", "inspect", "json", "logging", "pathlib", "random", "re", "shutil",
    "sqlite3", "statistics", "string", "subprocess", "tarfile", "textwrap", "threading",
    "typing", "unittest", "urllib.parse", "uuid", "zipfile",
)  # fmt: skip
DOCS, EVERY = 500, 5  # documents, and one query per EVERY documents


def docstrings() -> Iterator[str]:
    """The modules', their classes' and functions' and the methods' docstrings."""
    for name in MODULES:
        module = importlib.import_module(name)
        yield inspect.getdoc(module) or ""
        for _, member in sorted(vars(module).items()):
            if inspect.isclass(member) or inspect.isfunction(member):
                yield inspect.getdoc(member) or ""
            if inspect.isclass(member):
                for _, method in sorted(vars(member).items()):
                    if inspect.isfunction(method):
                        yield inspect.getdoc(method) or ""


def labelled() -> list[tuple[str, str]]:
    """(query, document) pairs: a paragraph's first sentence, and the rest of it."""
    pairs: dict[str, str] = {}
    for doc in docstrings():
        for paragraph in doc.split("\n\n"):
            head, sep, body = re.sub(r"\s+", " ", paragraph).strip().partition(". ")
            if sep and len(head.split()) >= 5 and len(body.split()) >= 8:
                pairs.setdefault(body, head)
    return [(head, body) for body, head in pairs.items()][:DOCS]


def main(out: Path) -> None:
    pairs = labelled()
    (out / "golden" / "qrels").mkdir(parents=True, exist_ok=True)
    texts = [body for _, body in pairs]
    table = pa.table({"id": pa.array(range(len(texts)), pa.int64()), "text": texts})
    pq.write_table(table, out / "docs.parquet")
    asked = range(0, len(pairs), EVERY)
    queries = [json.dumps({"_id": f"q{i}", "text": pairs[i][0]}) for i in asked]
    (out / "golden" / "queries.jsonl").write_text("\n".join(queries) + "\n")
    qrels = ["query-id\tcorpus-id\tscore", *(f"q{i}\t{i}\t1" for i in asked)]
    (out / "golden" / "qrels" / "test.tsv").write_text("\n".join(qrels) + "\n")
    print(f"{len(texts)} documents, {len(queries)} labelled queries in {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "data")
