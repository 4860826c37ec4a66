"""Files on the local disk, with paths relative to the release spec's folder."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from controller.errors import SourceError
from controller.sources.base import GoldenSet, VectorSource
from controller.sources.documents import DocumentSource, open_documents
from controller.sources.files import open_files_source
from controller.sources.ids import read_ids
from controller.sources.labelled_queries import (
    LabelledQueries,
    read_beir,
    read_labelled_queries,
    read_parquet_queries,
)
from controller.spec import DocumentsSource, FilesSource, LabelledTextsSpec

# A golden set is a few thousand labelled queries; refuse files that are clearly not one.
MAX_GOLDEN_QUERIES = 100_000


class LocalFiles:
    """The engine's DataPort for files next to (or below) the release YAML."""

    def __init__(self, base_dir: Path) -> None:
        self.base_dir = base_dir

    def open_vectors(self, files: FilesSource, extra_fields: Sequence[str]) -> VectorSource:
        return open_files_source(
            files.uri, files.id_field, files.vector_field, extra_fields, self.base_dir
        )

    def read_golden_set(self, uri: str) -> GoldenSet:
        return read_golden_set(self._path(uri))

    def read_labelled_queries(self, texts: LabelledTextsSpec) -> LabelledQueries:
        """validation.goldenSet.texts: BEIR or Parquet, as ``format`` says or the path is."""
        path = self._path(texts.uri)
        if texts.format == "parquet":
            return read_parquet_queries(path, texts.text_field)
        if texts.format == "beir":
            return read_beir(path if path.is_dir() else path.parent, texts.split)
        return read_labelled_queries(path, texts.split, texts.text_field)

    def read_query_vectors(self, uri: str, vector_field: str, sample: int, seed: int) -> np.ndarray:
        return read_query_vectors(self._path(uri), vector_field, sample, seed)

    def open_documents(self, documents: DocumentsSource, columns: Sequence[str]) -> DocumentSource:
        return open_documents(
            documents.uri, documents.id_field, documents.text_field, columns, self.base_dir
        )

    def read_ids(self, uri: str, id_field: str) -> np.ndarray:
        return read_ids(uri, id_field, self.base_dir)

    def _path(self, uri: str) -> Path:
        return self.base_dir / uri.removeprefix("file://")


def read_query_vectors(path: Path, vector_field: str, sample: int, seed: int) -> np.ndarray:
    """A seeded sample of up to ``sample`` query vectors from a Parquet column."""
    import pyarrow as pa  # imported on use, as in controller.sources.files
    import pyarrow.parquet as pq

    if not path.exists():
        raise SourceError(f"query set {path} does not exist (validation.queries.uri)")
    try:
        parquet = pq.ParquetFile(path)
        if vector_field not in parquet.schema_arrow.names:
            raise SourceError(
                f"query set {path} has no column {vector_field!r} (validation.queries.vectorField); "
                f"it has {parquet.schema_arrow.names}"
            )
        total = parquet.metadata.num_rows
        keep = np.sort(np.random.default_rng(seed).choice(total, min(sample, total), replace=False))
        rows: list[list[float]] = []
        offset = 0
        for batch in parquet.iter_batches(batch_size=10_000, columns=[vector_field]):
            local = keep[(keep >= offset) & (keep < offset + batch.num_rows)] - offset
            column = batch.column(0)
            rows += [column[int(i)].as_py() for i in local]
            offset += batch.num_rows
    except (pa.ArrowException, OSError) as exc:
        raise SourceError(f"cannot read query set {path}: {exc}") from exc
    if not rows or any(r is None for r in rows) or len({len(r) for r in rows}) != 1:
        raise SourceError(f"query set {path}: {vector_field!r} must hold equal-length float lists")
    queries = np.asarray(rows, dtype=np.float32)
    if not np.isfinite(queries).all():
        raise SourceError(f"query set {path} has NaN or infinite values")
    return queries


def read_golden_set(path: Path) -> GoldenSet:
    """Parquet with ``vector`` (list of floats) and ``relevant_ids`` (list of int64)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not path.exists():
        raise SourceError(f"golden set {path} does not exist (validation.goldenSet.uri)")
    try:
        meta = pq.ParquetFile(path)
        names = set(meta.schema_arrow.names)
        if missing := {"vector", "relevant_ids"} - names:
            raise SourceError(
                f"golden set {path} lacks column(s) {sorted(missing)}; it has {sorted(names)}. "
                "Expected 'vector' (list of floats) and 'relevant_ids' (list of int64)"
            )
        if meta.metadata.num_rows > MAX_GOLDEN_QUERIES:
            raise SourceError(
                f"golden set {path} has {meta.metadata.num_rows} queries; "
                f"at most {MAX_GOLDEN_QUERIES} are supported"
            )
        table = meta.read(columns=["vector", "relevant_ids"])
    except (pa.ArrowException, OSError) as exc:
        raise SourceError(f"cannot read golden set {path}: {exc}") from exc
    vectors = table.column("vector").to_pylist()
    if any(v is None for v in vectors) or len({len(v) for v in vectors}) > 1:
        raise SourceError(f"golden set {path}: every 'vector' must be a list of equal length")
    queries = np.asarray(vectors, dtype=np.float32)
    if queries.ndim != 2 or len(queries) == 0:
        raise SourceError(f"golden set {path} holds no query vectors")
    if not np.isfinite(queries).all():
        raise SourceError(f"golden set {path} has NaN or infinite values in 'vector'")
    relevant = [
        np.asarray(r or [], dtype=np.int64) for r in table.column("relevant_ids").to_pylist()
    ]
    return GoldenSet(queries, relevant, str(path))
