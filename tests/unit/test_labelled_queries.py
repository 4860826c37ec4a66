"""Labelled query texts in the BEIR layout and in Parquet."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from controller.errors import SourceError
from controller.sources.labelled_queries import read_labelled_queries


def beir(tmp_path: Path, qrels: str, queries: list[dict[str, object]] | None = None) -> Path:
    folder = tmp_path / "beir"
    (folder / "qrels").mkdir(parents=True)
    rows = queries or [
        {"_id": "q2", "text": "how to sort a list"},
        {"_id": "q1", "text": "open a file"},
        {"_id": "q9", "text": "unlabelled in this split"},
    ]
    (folder / "queries.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "qrels" / "test.tsv").write_text(qrels)
    return folder


def test_beir_folder(tmp_path: Path) -> None:
    folder = beir(
        tmp_path, "query-id\tcorpus-id\tscore\nq1\t10\t1\nq2\t20\t2\nq2\t21\t1\nq1\t11\t0\n"
    )
    got = read_labelled_queries(folder)
    assert got.ids == ["q2", "q1"]  # the order of queries.jsonl
    assert got.texts == ["how to sort a list", "open a file"]
    assert [r.tolist() for r in got.relevant] == [[20, 21], [10]]  # score 0: not relevant
    assert [g.tolist() for g in got.grades] == [[2.0, 1.0], [1.0]]
    assert read_labelled_queries(folder / "queries.jsonl").ids == got.ids


@pytest.mark.parametrize(
    ("qrels", "queries", "expected"),
    [
        ("q1\t10\t1\n", None, "the first line must be 'query-id"),
        ("query-id\tcorpus-id\tscore\nq1\tdoc-a\t1\n", None, "line 2: corpus-id must be an int64"),
        ("query-id\tcorpus-id\tscore\nq1\t10\n", None, "line 2: expected 3 tab-separated"),
        ("query-id\tcorpus-id\tscore\nq1\t10\t0\n", None, "no positive relevance label"),
        (
            "query-id\tcorpus-id\tscore\nq7\t10\t1\n",
            None,
            "labels 1 queries that queries.jsonl lacks",
        ),
        (
            "query-id\tcorpus-id\tscore\nq1\t10\t1\n",
            [{"id": "q1"}],
            "line 1: expected a JSON object",
        ),
        ("query-id\tcorpus-id\tscore\nq1\t10\t1\n", [{"_id": "q1", "text": " "}], "has no text"),
    ],
)
def test_beir_errors_name_file_and_line(
    tmp_path: Path, qrels: str, queries: list[dict[str, object]] | None, expected: str
) -> None:
    with pytest.raises(SourceError) as info:
        read_labelled_queries(beir(tmp_path, qrels, queries))
    assert expected in str(info.value)


def test_beir_missing_parts_and_bad_bytes(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"has no qrels/dev\.tsv"):
        read_labelled_queries(beir(tmp_path, "query-id\tcorpus-id\tscore\n"), split="dev")
    folder = beir(tmp_path / "x", "query-id\tcorpus-id\tscore\nq1\t10\t1\n")
    (folder / "queries.jsonl").write_bytes(b'{"_id": "q1", "text": "\xff"}\n')
    with pytest.raises(SourceError, match="is not UTF-8 text"):
        read_labelled_queries(folder)
    with pytest.raises(SourceError, match="do not exist"):
        read_labelled_queries(tmp_path / "nowhere.parquet")


def test_parquet_with_grades(tmp_path: Path) -> None:
    path = tmp_path / "golden.parquet"
    pq.write_table(
        pa.table(
            {
                "text": ["alpha", "beta", "gamma"],
                "relevant_ids": [[1, 2], [3], []],
                "relevance": [[2.0, 1.0], [1.0], []],
            }
        ),
        path,
    )
    got = read_labelled_queries(path)
    assert got.texts == ["alpha", "beta"]  # gamma has no label
    assert [g.tolist() for g in got.grades] == [[2.0, 1.0], [1.0]]


def test_parquet_errors(tmp_path: Path) -> None:
    path = tmp_path / "golden.parquet"
    pq.write_table(pa.table({"query": ["a"], "relevant_ids": [[1]]}), path)
    with pytest.raises(SourceError, match=r"lack column\(s\) \['text'\]"):
        read_labelled_queries(path)
    assert read_labelled_queries(path, text_field="query").texts == ["a"]
    pq.write_table(pa.table({"text": ["a"], "relevant_ids": [[1, 2]], "relevance": [[1.0]]}), path)
    with pytest.raises(SourceError, match="row 0: relevance must be a list parallel"):
        read_labelled_queries(path)
    pq.write_table(pa.table({"text": [""], "relevant_ids": [[1]]}), path)
    with pytest.raises(SourceError, match="row 0: 'text' is empty"):
        read_labelled_queries(path)
