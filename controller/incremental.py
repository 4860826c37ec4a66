"""The three builds of a candidate: files, a delta over a base collection, documents.

Each is written against the ports only (no I/O of their own) and runs in two
phases (the ``Build`` protocol). ``plan`` reads and checks every input before
anything in Milvus is created, so bad input leaves Milvus untouched; ``load`` fills
the candidate the engine created, in bounded batches, and returns the counts for
``status.build``. What follows a load (the row count after flush, the properties
that mark the candidate complete) is the engine's, the same for all three
(``controller.engine.steps.build``).

Files: every row of ``source.files``, checked in a first pass, inserted in a second.

Delta: the base collection's rows, read by id from its physical name with Strong
consistency, minus the deleted ids and the upserted ids, plus the upserts.

Documents: each document's content hash (``controller.embedding.content``) is
compared with the hash stored in the base collection (the live one, when it has
hashes): an equal hash copies the base's vector, a new or changed document is
looked up in the embedding cache, and only cache misses are embedded.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, closing
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from controller.bulk_import import BulkImport
from controller.embedding.content import HASH_LENGTH, content_hash, embedding_input
from controller.errors import SourceError
from controller.ports import (
    Advance,
    DataPort,
    EmbedderPort,
    EmbeddingCachePort,
    MilvusPort,
)
from controller.read_ahead import read_ahead
from controller.sources.base import VectorBatch, VectorSource
from controller.sources.documents import DocumentBatch
from controller.spec import CONTENT_HASH_FIELD, EmbeddingRelease, FieldSpec, FilesSource
from controller.validation.sanity import DuplicateIdTracker, check_batch, check_field_values

# The field documents releases add to the collection for each row's content hash.
HASH_FIELD = FieldSpec(name=CONTENT_HASH_FIELD, type="VARCHAR", max_length=HASH_LENGTH)
# Rows per page when reading a base collection's ids and hashes (no vectors).
ID_PAGE = 16_384
FETCH_CHUNK = 1000  # ids per get-by-id call

Ids = npt.NDArray[np.int64]


@dataclass
class BuildPorts:
    """What a build needs from the engine."""

    release: EmbeddingRelease
    milvus: MilvusPort
    data: DataPort
    progress: Callable[[str, int | None], AbstractContextManager[Advance]]
    batch_size: int
    embedder: Callable[[], EmbedderPort]  # made on first use: the model loads lazily
    cache: EmbeddingCachePort
    # Files builds: the bulk import to use for this many checked rows; None inserts.
    importer: Callable[[int], BulkImport | None] = lambda rows: None


@dataclass
class BuildResult:
    rows: int  # rows in the candidate
    counts: dict[str, Any]  # status.build
    summary: str  # one line for an event
    cache_hits: int | None = None  # documents builds: embedding cache lookups
    cache_misses: int | None = None


class Build(Protocol):
    """A build: ``plan`` checks everything and writes nothing; ``load`` fills ``target``."""

    def describe(self) -> str: ...
    def plan(self) -> None: ...
    def load(self, target: str) -> BuildResult: ...


def ensure_loaded(milvus: MilvusPort, name: str) -> None:
    """Reading rows needs a loaded collection on the Milvus server."""
    if not milvus.is_loaded(name):
        milvus.load(name)


def _take(batch: VectorBatch, keep: npt.NDArray[np.bool_]) -> VectorBatch:
    index = np.flatnonzero(keep)
    return VectorBatch(
        ids=batch.ids[index],
        vectors=np.ascontiguousarray(batch.vectors[index]),
        fields={name: [values[i] for i in index] for name, values in batch.fields.items()},
        origin=batch.origin,
        first_row=batch.first_row,
    )


def _in(ids: Ids, sorted_set: Ids) -> npt.NDArray[np.bool_]:
    return np.isin(ids, sorted_set, assume_unique=False)


def check_base_schema(ports: BuildPorts, base: str, role: str) -> list[FieldSpec]:
    """The base must hold vectors of the spec's dimension and the spec's extra fields."""
    spec = ports.release.spec.collection
    schema = ports.milvus.collection_schema(base)
    dimension, fields = schema.dimension, list(schema.fields)
    theirs = {f.name: f.type for f in fields if f.name != CONTENT_HASH_FIELD}
    ours = {f.name: f.type for f in spec.fields}
    problems = []
    if dimension != spec.dimension:
        problems.append(f"{dimension}-dim vectors, the spec says {spec.dimension}")
    if theirs != ours:
        problems.append(f"fields {theirs or '{}'}, the spec's collection.fields are {ours or '{}'}")
    if schema.vectors:  # a delta or documents build writes the one vector field
        names = ", ".join(repr(v.name) for v in schema.vectors)
        problems.append(f"vector fields {names} besides vector, which a delta does not copy")
    if problems:
        raise SourceError(
            f"{role} {base} does not match the spec: it has {'; '.join(problems)}. "
            "A delta keeps the base's schema; release a full build to change it"
        )
    return fields


# -- files -------------------------------------------------------------------------


@dataclass
class FilesBuild:
    """``source.files``: every row, checked whole before the first insert."""

    ports: BuildPorts
    source: VectorSource | None = None
    rows: int = 0  # rows the check pass counted
    bulk: BulkImport | None = None  # chosen once the rows are counted

    def describe(self) -> str:
        return f"{'importing' if self.bulk else 'inserting'} {self.rows} rows"

    def plan(self) -> None:
        """Check dimension, NaN/inf, zero vectors and duplicate ids of every row."""
        files = self.ports.release.spec.source.files
        assert files is not None
        spec = self.ports.release.spec.collection
        columns = [f.name for f in spec.fields] + [v.name for v in spec.vectors]
        source = self.ports.data.open_vectors(files, columns)
        dupes, rows = DuplicateIdTracker(), 0
        with self.ports.progress(f"checking {source.describe()}", source.count_rows()) as adv:
            for batch in source.batches(self.ports.batch_size):
                check_batch(batch, spec.dimension, spec.metric, spec.fields, spec.vectors)
                dupes.add(batch)
                rows += len(batch.ids)
                adv(len(batch.ids))
        dupes.check()
        if rows == 0:
            raise SourceError(
                f"{source.describe()} holds no rows; refusing to release an empty collection"
            )
        self.source, self.rows = source, rows
        self.bulk = self.ports.importer(rows)

    def load(self, target: str) -> BuildResult:
        assert self.source is not None, "plan() first"
        if self.bulk is not None:
            loaded = self.bulk.load(
                target, self.ports.release.spec.collection.fields, self._checked(), self.rows
            )
        else:
            loaded = self._insert(target)
        if loaded != self.rows:
            raise SourceError(
                f"{self.source.describe()} changed while loading: {self.rows} rows checked, "
                f"{loaded} read"
            )
        how = "bulkImport" if self.bulk is not None else "insert"
        counts = {"source": "files", "rows": loaded, "load": how}
        return BuildResult(loaded, counts, f"loaded {loaded} rows into {target} ({how})")

    def _checked(self) -> Iterator[VectorBatch]:
        """The source again, every batch checked again (the files may have changed)."""
        assert self.source is not None
        spec = self.ports.release.spec.collection
        for batch in self.source.batches(self.ports.batch_size):
            check_batch(batch, spec.dimension, spec.metric, spec.fields, spec.vectors)
            yield batch

    def _insert(self, target: str) -> int:
        loaded = 0
        with self.ports.progress(f"loading {target}", self.rows) as advance:
            for batch in self._checked():
                self.ports.milvus.insert(target, batch)
                loaded += len(batch.ids)
                advance(len(batch.ids))
        return loaded


# -- delta -------------------------------------------------------------------------


@dataclass
class DeltaBuild:
    """``source.delta``: base rows, upserts applied by id, deleted ids removed."""

    ports: BuildPorts
    base: str  # the base's physical collection name
    upserts: VectorSource | None = None
    upsert_ids: Ids = field(default_factory=lambda: np.empty(0, np.int64))
    delete_ids: Ids = field(default_factory=lambda: np.empty(0, np.int64))

    def describe(self) -> str:
        return f"applying a delta to {self.base}"

    def plan(self) -> None:
        """Check the base's schema, every upsert and the deletes; write nothing."""
        delta = self.ports.release.spec.source.delta
        assert delta is not None
        check_base_schema(self.ports, self.base, "source.delta.base")
        if delta.upserts is not None:
            u = delta.upserts
            files = FilesSource(uri=u.uri, id_field=u.id_field, vector_field=u.vector_field)
            extras = [f.name for f in self.ports.release.spec.collection.fields]
            self.upserts = _labelled(
                "source.delta.upserts", lambda: self.ports.data.open_vectors(files, extras)
            )
            self.upsert_ids = _labelled(
                "source.delta.upserts", lambda: self._check_upserts(self.upserts)
            )
        if delta.deletes is not None:
            d = delta.deletes
            self.delete_ids = _labelled(
                "source.delta.deletes", lambda: self.ports.data.read_ids(d.uri, d.id_field)
            )
        both = np.intersect1d(self.upsert_ids, self.delete_ids)
        if both.size:
            raise SourceError(
                f"ids {both[:5].tolist()}{' and more' if both.size > 5 else ''} are both "
                "upserted and deleted in source.delta; an id may be in one of the two only"
            )
        ensure_loaded(self.ports.milvus, self.base)

    def _check_upserts(self, source: VectorSource | None) -> Ids:
        assert source is not None
        spec = self.ports.release.spec.collection
        dupes = DuplicateIdTracker()
        ids: list[Ids] = [np.empty(0, np.int64)]
        with self.ports.progress(f"checking {source.describe()}", source.count_rows()) as adv:
            for batch in source.batches(self.ports.batch_size):
                check_batch(batch, spec.dimension, spec.metric, spec.fields)
                dupes.add(batch)
                ids.append(np.array(batch.ids, dtype=np.int64))
                adv(len(batch))
        dupes.check()
        return np.sort(np.concatenate(ids))

    def load(self, target: str) -> BuildResult:
        ports, spec = self.ports, self.ports.release.spec.collection
        extras = [f.name for f in spec.fields]
        copied = replaced = deleted = 0
        # The next page is read while this one is written: a copy waits for Milvus on
        # both sides, so overlapping them hides the shorter.
        pages = read_ahead(ports.milvus.iterate_rows(self.base, ports.batch_size, extras), 2)
        with ports.progress(f"copying {self.base} into {target}", None) as advance, closing(pages):
            for batch in pages:
                upserted, gone = _in(batch.ids, self.upsert_ids), _in(batch.ids, self.delete_ids)
                keep = ~(upserted | gone)
                replaced += int(upserted.sum())
                deleted += int(gone.sum())
                if keep.any():
                    ports.milvus.insert(target, _take(batch, keep))
                copied += int(keep.sum())
                advance(len(batch))
        upserted_rows = 0
        if self.upserts is not None:
            with ports.progress(f"upserting into {target}", len(self.upsert_ids)) as advance:
                for batch in _labelled_iter("source.delta.upserts", self.upserts, ports.batch_size):
                    check_batch(batch, spec.dimension, spec.metric, spec.fields)
                    ports.milvus.insert(target, batch)
                    upserted_rows += len(batch)
                    advance(len(batch))
        if upserted_rows != len(self.upsert_ids):
            raise SourceError(
                f"source.delta.upserts changed while loading: {len(self.upsert_ids)} rows "
                f"checked, {upserted_rows} read"
            )
        rows = copied + upserted_rows
        if rows == 0:
            raise SourceError(
                f"the delta leaves nothing of {self.base}: refusing to release an empty collection"
            )
        counts = {
            "source": "delta",
            "base": self.base,
            "rows": rows,
            "copied": copied,
            "upserted": upserted_rows,
            "inserted": upserted_rows - replaced,
            "replaced": replaced,
            "deleted": deleted,
            "unknownDeletes": len(self.delete_ids) - deleted,
        }
        summary = (
            f"delta on {self.base}: copied {copied}, upserted {upserted_rows} "
            f"({replaced} replaced, {upserted_rows - replaced} new), deleted {deleted}"
            + (
                f", {counts['unknownDeletes']} deleted ids were not in the base"
                if counts["unknownDeletes"]
                else ""
            )
        )
        return BuildResult(rows, counts, summary)


def _labelled(where: str, read: Callable[[], Any]) -> Any:
    """Name the spec field in a source error: several files feed one delta."""
    try:
        return read()
    except SourceError as exc:
        raise SourceError(f"{where}: {exc}") from exc


def _labelled_iter(where: str, source: VectorSource, batch_size: int) -> Iterator[VectorBatch]:
    try:
        yield from source.batches(batch_size)
    except SourceError as exc:
        raise SourceError(f"{where}: {exc}") from exc


# -- documents ---------------------------------------------------------------------


@dataclass
class _Classified:
    """One batch of documents against the base: hashes and what to do with each."""

    hashes: list[str]
    unchanged: npt.NDArray[np.bool_]  # same id, same hash in the base: copy its vector
    updated: npt.NDArray[np.bool_]  # id in the base with another hash


@dataclass
class DocumentsBuild:
    """``source.documents``: copy unchanged vectors, serve from the cache, embed the rest."""

    ports: BuildPorts
    base: str | None  # the live collection when it carries content hashes
    base_ids: Ids = field(default_factory=lambda: np.empty(0, np.int64))
    base_hashes: npt.NDArray[Any] = field(default_factory=lambda: np.empty(0, "S64"))
    planned: dict[str, int] = field(default_factory=dict)

    @property
    def columns(self) -> list[str]:
        spec = self.ports.release.spec
        assert spec.source.documents is not None
        metadata = spec.source.documents.metadata_fields
        return list(dict.fromkeys([*metadata, *(f.name for f in spec.collection.fields)]))

    def describe(self) -> str:
        p = self.planned
        changed = f"{p.get('added', 0)} new and {p.get('updated', 0)} changed documents"
        if self.base is None:
            return f"{changed}, no base collection with content hashes"
        return f"{changed}, the rest copied from {self.base}"

    def plan(self) -> None:
        """Read every document once: check it, hash it, count what changed; write nothing."""
        spec = self.ports.release.spec
        assert spec.source.documents is not None and spec.embedder is not None
        if self.base is not None:
            ensure_loaded(self.ports.milvus, self.base)
            self._read_base_hashes(self.base)
        source = self.ports.data.open_documents(spec.source.documents, self.columns)
        dupes = DuplicateIdTracker()
        counts = dict.fromkeys(("documents", "added", "updated", "unchanged", "cached"), 0)
        with self.ports.progress(f"checking {source.describe()}", None) as advance:
            for batch in source.batches(self.ports.batch_size):
                dupes.add(_ids_only(batch))
                fields = spec.collection.fields
                columns = {f.name: batch.columns[f.name] for f in fields}
                check_field_values(columns, fields, batch.origin, batch.first_row, batch.ids)
                c = self._classify(batch)
                need = [h for h, keep in zip(c.hashes, c.unchanged, strict=True) if not keep]
                counts["documents"] += len(batch)
                counts["unchanged"] += int(c.unchanged.sum())
                counts["updated"] += int(c.updated.sum())
                counts["cached"] += self.ports.cache.count_present(*self._cache_key(), need)
                advance(len(batch))
        dupes.check()
        if counts["documents"] == 0:
            raise SourceError(f"{source.describe()} holds no documents; refusing an empty release")
        counts["added"] = counts["documents"] - counts["unchanged"] - counts["updated"]
        counts["deleted"] = len(self.base_ids) - counts["unchanged"] - counts["updated"]
        self.planned = counts
        if counts["added"] + counts["updated"] > counts["cached"]:
            self._check_dimension()  # something must be embedded: load the model now

    def _check_dimension(self) -> None:
        spec = self.ports.release.spec
        produced = self.ports.embedder().dimension()
        if produced != spec.collection.dimension:
            raise SourceError(
                f"spec.embedder.model {spec.embedder.model if spec.embedder else '?'} produces "
                f"{produced}-dim vectors, the spec says collection.dimension: "
                f"{spec.collection.dimension}"
            )

    def _read_base_hashes(self, base: str) -> None:
        ids: list[Ids] = [np.empty(0, np.int64)]
        hashes: list[npt.NDArray[Any]] = [np.empty(0, "S64")]
        for batch in self.ports.milvus.iterate_rows(
            base, ID_PAGE, [CONTENT_HASH_FIELD], vectors=False
        ):
            ids.append(np.array(batch.ids, dtype=np.int64))
            hashes.append(np.asarray(batch.fields[CONTENT_HASH_FIELD], dtype="S64"))
        all_ids, all_hashes = np.concatenate(ids), np.concatenate(hashes)
        order = np.argsort(all_ids, kind="stable")
        self.base_ids, self.base_hashes = all_ids[order], all_hashes[order]

    def _cache_key(self) -> tuple[str, str]:
        embedder = self.ports.release.spec.embedder
        assert embedder is not None
        return embedder.model, embedder.revision or ""

    def _classify(self, batch: DocumentBatch) -> _Classified:
        spec = self.ports.release.spec
        assert spec.source.documents is not None and spec.embedder is not None
        fields = spec.source.documents.metadata_fields
        hashes = [
            content_hash(text, {f: batch.columns[f][i] for f in fields}, fields, spec.embedder)
            for i, text in enumerate(batch.texts)
        ]
        if len(self.base_ids) == 0:
            none = np.zeros(len(batch), dtype=bool)
            return _Classified(hashes, none, none.copy())
        pos = np.minimum(np.searchsorted(self.base_ids, batch.ids), len(self.base_ids) - 1)
        known = self.base_ids[pos] == batch.ids
        same = known & (self.base_hashes[pos] == np.asarray(hashes, dtype="S64"))
        return _Classified(hashes, same, known & ~same)

    def load(self, target: str) -> BuildResult:
        ports, spec = self.ports, self.ports.release.spec
        assert spec.source.documents is not None
        source = ports.data.open_documents(spec.source.documents, self.columns)
        extras = [f.name for f in spec.collection.fields]
        tally = dict.fromkeys(("rows", "copied", "cacheHits", "embedded"), 0)
        with ports.progress(f"loading {target}", self.planned.get("documents")) as advance:
            for batch in source.batches(ports.batch_size):
                c = self._classify(batch)
                vectors = self._vectors(batch, c, tally)
                fields = {name: batch.columns[name] for name in extras}
                fields[CONTENT_HASH_FIELD] = c.hashes
                ports.milvus.insert(
                    target, VectorBatch(batch.ids, vectors, fields, batch.origin, batch.first_row)
                )
                tally["rows"] += len(batch)
                advance(len(batch))
        if tally["rows"] != self.planned["documents"]:
            raise SourceError(
                f"{source.describe()} changed while loading: {self.planned['documents']} "
                f"documents checked, {tally['rows']} read"
            )
        return self._result(tally)

    def _vectors(
        self, batch: DocumentBatch, c: _Classified, tally: dict[str, int]
    ) -> npt.NDArray[np.float32]:
        """Vectors for one batch: from the base, else the cache, else the embedder."""
        spec = self.ports.release.spec.collection
        vectors = np.zeros((len(batch), spec.dimension), dtype=np.float32)
        have = np.zeros(len(batch), dtype=bool)
        if c.unchanged.any() and self.base is not None:
            picked = np.flatnonzero(c.unchanged)
            for start in range(0, len(picked), FETCH_CHUNK):
                rows = picked[start : start + FETCH_CHUNK]
                found = self.ports.milvus.vectors_by_id(self.base, batch.ids[rows].tolist())
                for i in rows:
                    vector = found.get(int(batch.ids[i]))
                    if vector is not None and vector.shape == (spec.dimension,):
                        vectors[i], have[i] = vector, True
            tally["copied"] += int(have.sum())
        missing = np.flatnonzero(~have)
        if missing.size:
            self._cached_or_embedded(batch, c, missing, vectors, tally)
        check_batch(
            VectorBatch(batch.ids, vectors, {}, batch.origin, batch.first_row),
            spec.dimension,
            spec.metric,
        )
        return vectors

    def _cached_or_embedded(
        self,
        batch: DocumentBatch,
        c: _Classified,
        rows: npt.NDArray[np.intp],
        vectors: npt.NDArray[np.float32],
        tally: dict[str, int],
    ) -> None:
        spec = self.ports.release.spec
        assert spec.source.documents is not None
        model, revision = self._cache_key()
        keys = [c.hashes[i] for i in rows]
        cached = self.ports.cache.get_many(model, revision, keys, spec.collection.dimension)
        todo = [int(i) for i in rows if c.hashes[i] not in cached]
        for i in rows:
            if c.hashes[i] in cached:
                vectors[i] = cached[c.hashes[i]]
        tally["cacheHits"] += len(rows) - len(todo)
        if not todo:
            return
        fields = spec.source.documents.metadata_fields
        texts = [
            embedding_input(batch.texts[i], {f: batch.columns[f][i] for f in fields}, fields)
            for i in todo
        ]
        embedded = np.asarray(self.ports.embedder().embed(texts), dtype=np.float32)
        if embedded.shape != (len(todo), spec.collection.dimension):
            raise SourceError(
                f"spec.embedder.model {spec.embedder.model if spec.embedder else '?'} returned "
                f"vectors of shape {embedded.shape} for {len(todo)} texts; the spec says "
                f"collection.dimension: {spec.collection.dimension}"
            )
        check_batch(
            VectorBatch(batch.ids[todo], embedded, {}, batch.origin, batch.first_row),
            spec.collection.dimension,
            spec.collection.metric,
        )
        vectors[todo] = embedded
        self.ports.cache.put_many(
            model, revision, {c.hashes[i]: embedded[j] for j, i in enumerate(todo)}
        )
        tally["embedded"] += len(todo)

    def _result(self, tally: dict[str, int]) -> BuildResult:
        p = self.planned
        looked_up = tally["rows"] - tally["copied"]
        hits, misses = tally["cacheHits"], looked_up - tally["cacheHits"]
        counts = {
            "source": "documents",
            "base": self.base,
            "rows": tally["rows"],
            "documents": p["documents"],
            "added": p["added"],
            "updated": p["updated"],
            "unchanged": p["unchanged"],
            "deleted": p["deleted"],
            "copied": tally["copied"],
            "embedded": tally["embedded"],
            "cacheHits": hits,
            "cacheMisses": misses,
            "cacheHitRate": round(hits / looked_up, 4) if looked_up else None,
        }
        summary = (
            f"{p['documents']} documents against {self.base or 'no base'}: {p['added']} added, "
            f"{p['updated']} updated, {p['unchanged']} unchanged, {p['deleted']} deleted; "
            f"copied {tally['copied']} vectors, {hits} from the embedding cache, "
            f"embedded {tally['embedded']}"
        )
        return BuildResult(tally["rows"], counts, summary, hits, misses)


def documents_base(ports: BuildPorts, live: str | None) -> str | None:
    """The live collection, when its vectors can be reused: same schema, content hashes."""
    if live is None:
        return None
    schema = ports.milvus.collection_schema(live)
    if schema.field(CONTENT_HASH_FIELD) is None:
        return None  # not built from documents: every document counts as new
    if schema.dimension != ports.release.spec.collection.dimension:
        return None
    return live


def _ids_only(batch: DocumentBatch) -> VectorBatch:
    return VectorBatch(
        batch.ids, np.empty((len(batch), 0), np.float32), {}, batch.origin, batch.first_row
    )
