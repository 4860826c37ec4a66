"""Labelled query *texts*: the golden set that can judge a model change.

A golden set of query vectors was embedded by one model, so it cannot judge a
collection embedded by another. Texts can: each side embeds them with its own
encoder and is scored against the same relevance labels. Two layouts are read:

* BEIR (``queries.jsonl`` with ``_id`` and ``text``; ``qrels/<split>.tsv`` with a
  ``query-id  corpus-id  score`` header), corpus ids being collection ids;
* Parquet with a text column, ``relevant_ids`` (list of int64) and, optionally,
  ``relevance`` (list of grades, parallel to ``relevant_ids``).

Queries without a positive label are left out (trec_eval does the same); every
problem is a ``SourceError`` naming the file and line.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from controller.errors import SourceError
from controller.sources.location import SourceFile, as_file, read_failure

# The same bound as golden sets of vectors: every query is embedded and searched twice.
MAX_LABELLED_QUERIES = 100_000


@dataclass(frozen=True)
class LabelledQueries:
    """Query texts with their relevant collection ids and grades (> 0)."""

    ids: list[str]
    texts: list[str]
    relevant: list[npt.NDArray[np.int64]]
    grades: list[npt.NDArray[np.float64]]

    def __len__(self) -> int:
        return len(self.texts)


def read_labelled_queries(
    path: Path | SourceFile, split: str = "test", text_field: str = "text"
) -> LabelledQueries:
    """A BEIR folder (or its ``queries.jsonl``) or a Parquet file, by what ``path`` is."""
    path = as_file(path)
    if path.name == "queries.jsonl":
        return read_beir(path.parent, split)
    if path.is_dir():
        return read_beir(path, split)
    if not path.is_file():
        raise SourceError(f"labelled queries {path} do not exist (validation.goldenSet.texts.uri)")
    return read_parquet_queries(path, text_field)


def read_beir(folder: Path | SourceFile, split: str = "test") -> LabelledQueries:
    folder = as_file(folder)
    needed = {"queries.jsonl": folder.child("queries.jsonl")}
    needed[f"qrels/{split}.tsv"] = folder.child("qrels").child(f"{split}.tsv")
    for name, file in needed.items():
        if not file.is_file():
            raise SourceError(
                f"BEIR folder {folder} has no {name} (expected queries.jsonl and qrels/<split>.tsv)"
            )
    queries_file, qrels_file = needed.values()
    labels = _read_qrels(qrels_file)
    texts = _read_query_texts(queries_file, set(labels))
    if missing := [q for q in labels if q not in texts]:
        raise SourceError(
            f"{qrels_file} labels {len(missing)} queries that {queries_file.name} lacks, "
            f"e.g. {missing[0]!r}"
        )
    ids = sorted(labels, key=lambda q: texts[q][0])  # file order of queries.jsonl
    return _bounded(
        LabelledQueries(
            ids=ids,
            texts=[texts[q][1] for q in ids],
            relevant=[np.array(list(labels[q]), dtype=np.int64) for q in ids],
            grades=[np.array(list(labels[q].values()), dtype=np.float64) for q in ids],
        ),
        folder,
    )


def _read_qrels(path: SourceFile) -> dict[str, dict[int, float]]:
    """Positive labels per query id, from a BEIR qrels TSV (header line first)."""
    labels: dict[str, dict[int, float]] = {}
    with _opened(path) as lines:
        rows = csv.reader(lines, delimiter="\t")
        header = next(rows, None)
        if header is None or [h.strip() for h in header[:3]] != ["query-id", "corpus-id", "score"]:
            raise SourceError(f"{path}: the first line must be 'query-id<TAB>corpus-id<TAB>score'")
        for line, row in enumerate(rows, start=2):
            if not row:
                continue
            if len(row) < 3:
                raise SourceError(f"{path} line {line}: expected 3 tab-separated columns")
            query, doc, score = row[0].strip(), row[1].strip(), row[2].strip()
            try:
                grade, corpus_id = float(score), int(doc)
            except ValueError:
                raise SourceError(
                    f"{path} line {line}: corpus-id must be an int64 collection id and score "
                    f"a number, got {doc[:40]!r} and {score[:40]!r}"
                ) from None
            if grade > 0:
                labels.setdefault(query, {})[corpus_id] = grade
    if not labels:
        raise SourceError(f"{path} holds no positive relevance label")
    return labels


def _read_query_texts(path: SourceFile, wanted: set[str]) -> dict[str, tuple[int, str]]:
    """(line number, text) of the wanted query ids; the rest of the file is skipped."""
    found: dict[str, tuple[int, str]] = {}
    with _opened(path) as lines:
        for line, raw in enumerate(lines, start=1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
                query, text = str(record["_id"]), record["text"]
            except (json.JSONDecodeError, KeyError, TypeError):
                raise SourceError(
                    f"{path} line {line}: expected a JSON object with '_id' and 'text'"
                ) from None
            if query in wanted:
                if not isinstance(text, str) or not text.strip():
                    raise SourceError(f"{path} line {line}: query {query!r} has no text")
                found[query] = (line, text)
    return found


@contextmanager
def _opened(path: SourceFile) -> Iterator[Iterator[str]]:
    """A UTF-8 text file as lines; unreadable or undecodable files are SourceErrors."""
    try:
        with path.open_binary() as raw:
            yield _decoded(io.TextIOWrapper(raw, encoding="utf-8-sig", newline=""), path)
    except OSError as exc:
        raise read_failure(path, f"cannot read {path}", exc) from None


def _decoded(lines: Iterable[str], path: SourceFile) -> Iterator[str]:
    try:
        yield from lines
    except UnicodeDecodeError as exc:
        raise SourceError(f"{path} is not UTF-8 text (byte {exc.start})") from None


def read_parquet_queries(path: Path | SourceFile, text_field: str = "text") -> LabelledQueries:
    """Parquet with ``text_field``, ``relevant_ids`` and optionally ``relevance``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = as_file(path)
    try:
        table = pq.read_table(path.path, filesystem=path.fs)
    except (pa.ArrowException, OSError) as exc:
        raise read_failure(path, f"cannot read labelled queries {path}", exc) from exc
    names = table.column_names
    if missing := {text_field, "relevant_ids"} - set(names):
        raise SourceError(
            f"labelled queries {path} lack column(s) {sorted(missing)}; it has {sorted(names)}"
        )
    texts = table.column(text_field).to_pylist()
    relevant = table.column("relevant_ids").to_pylist()
    grades = table.column("relevance").to_pylist() if "relevance" in names else None
    out = LabelledQueries([], [], [], [])
    for row, text in enumerate(texts):
        rel = relevant[row] or []
        grade = (grades[row] if grades is not None else None) or [1.0] * len(rel)
        if not isinstance(text, str) or not text.strip():
            raise SourceError(f"labelled queries {path} row {row}: {text_field!r} is empty")
        if len(grade) != len(rel) or any(r is None for r in rel):
            raise SourceError(
                f"labelled queries {path} row {row}: relevance must be a list parallel to "
                "relevant_ids, and relevant_ids must hold no nulls"
            )
        keep = [(int(r), float(g)) for r, g in zip(rel, grade, strict=True) if g and g > 0]
        if keep:
            out.ids.append(str(row))
            out.texts.append(text)
            out.relevant.append(np.array([r for r, _ in keep], dtype=np.int64))
            out.grades.append(np.array([g for _, g in keep], dtype=np.float64))
    return _bounded(out, path)


def _bounded(queries: LabelledQueries, where: Path | SourceFile) -> LabelledQueries:
    if not len(queries):
        raise SourceError(f"labelled queries {where}: no query has a positive relevance label")
    if len(queries) > MAX_LABELLED_QUERIES:
        raise SourceError(
            f"labelled queries {where}: {len(queries):,} queries; at most "
            f"{MAX_LABELLED_QUERIES:,} are supported"
        )
    return queries
