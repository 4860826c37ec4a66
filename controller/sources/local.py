"""Files on the local disk, with paths relative to the release spec's folder."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from controller.errors import SourceError
from controller.sources.base import GoldenSet, VectorSource
from controller.sources.files import open_files_source
from controller.spec import FilesSource

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
        path = self.base_dir / uri.removeprefix("file://")
        return read_golden_set(path)


def read_golden_set(path: Path) -> GoldenSet:
    """Parquet with ``vector`` (list of floats) and ``relevant_ids`` (list of int64)."""
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
