"""The embedding cache: vectors keyed by (model, revision, content hash), in SQLite.

A text embedded once is never embedded again, across releases, rollbacks and
re-releases, and across tracks that share a state folder. One SQLite file
(``<stateDir>/embedding-cache.sqlite`` by default):

* WAL journal: readers never block each other or the writer; several controllers
  (or a benchmark beside a controller) may read one cache at once.
* Every entry stores its dimension and a checksum over key, dimension and bytes.
  An entry whose length, dimension or checksum does not match, or that holds a
  non-finite value, is deleted and reported as a miss, so it is recomputed and
  never served. A file that is not a database at all is moved aside and replaced.
* Size bound: when the database outgrows ``max_bytes``, the least recently used
  entries are deleted until it is under 90% of it. "Used" is refreshed at most once
  per ``touch_seconds`` per entry, so reads rarely write.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import numpy.typing as npt

log = logging.getLogger(__name__)

# SQLite before 3.32 allows 999 host parameters per statement; stay well below.
_CHUNK = 500
_LOW_WATER = 0.9  # evict down to this share of max_bytes
# A rowid table: WITHOUT ROWID would spill every 1.5 kB vector into overflow pages
# (186 entries per MB measured, against ~550 here).
_SCHEMA = """
CREATE TABLE IF NOT EXISTS embeddings (
    model TEXT NOT NULL,
    revision TEXT NOT NULL,
    hash TEXT NOT NULL,
    dim INTEGER NOT NULL,
    vector BLOB NOT NULL,
    checksum TEXT NOT NULL,
    used REAL NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS embeddings_key ON embeddings (model, revision, hash);
CREATE INDEX IF NOT EXISTS embeddings_used ON embeddings (used);
"""
SCHEMA_VERSION = 1  # PRAGMA user_version; a cache of another layout is emptied

Vector = npt.NDArray[np.float32]


def checksum(model: str, revision: str, key: str, dim: int, blob: bytes) -> str:
    """Covers the key too, so a vector stored under another key is caught."""
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{model}\0{revision}\0{key}\0{dim}\0".encode())
    h.update(blob)
    return h.hexdigest()


class EmbeddingCache:
    """``EmbeddingCachePort`` on one SQLite file; safe across threads and processes."""

    def __init__(self, path: Path, max_bytes: int, touch_seconds: float = 3600.0) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.touch_seconds = touch_seconds
        self.corrupted = 0  # entries found damaged and dropped, since opened
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None  # opened on first use
        self._disabled = False

    # -- the port ----------------------------------------------------------------

    def get_many(
        self, model: str, revision: str, hashes: Sequence[str], dimension: int
    ) -> dict[str, Vector]:
        """Valid cached vectors of ``hashes``; damaged entries are dropped, not returned."""
        found: dict[str, Vector] = {}
        bad: list[str] = []
        stale: list[str] = []
        now = time.time()
        with self._session() as db:
            if db is None:
                return found
            for chunk in _chunks(list(dict.fromkeys(hashes))):
                marks = ",".join("?" * len(chunk))
                rows = db.execute(
                    "SELECT hash, dim, vector, checksum, used FROM embeddings "
                    f"WHERE model = ? AND revision = ? AND hash IN ({marks})",
                    (model, revision, *chunk),
                ).fetchall()
                for key, dim, blob, stored, used in rows:
                    vector = _valid(model, revision, key, dim, blob, stored, dimension)
                    if vector is None:
                        bad.append(key)
                        continue
                    found[key] = vector
                    if used < now - self.touch_seconds:
                        stale.append(key)
            self._drop(db, model, revision, bad)
            db.executemany(
                "UPDATE embeddings SET used = ? WHERE model = ? AND revision = ? AND hash = ?",
                [(now, model, revision, key) for key in stale],
            )
        return found

    def count_present(self, model: str, revision: str, hashes: Sequence[str]) -> int:
        """How many of ``hashes`` have an entry (validity is checked when read)."""
        present = 0
        with self._session() as db:
            if db is None:
                return 0
            for chunk in _chunks(list(dict.fromkeys(hashes))):
                marks = ",".join("?" * len(chunk))
                (n,) = db.execute(
                    "SELECT COUNT(*) FROM embeddings "
                    f"WHERE model = ? AND revision = ? AND hash IN ({marks})",
                    (model, revision, *chunk),
                ).fetchone()
                present += int(n)
        return present

    def put_many(self, model: str, revision: str, vectors: Mapping[str, Vector]) -> None:
        now = time.time()
        rows = []
        for key, vector in vectors.items():
            blob = np.ascontiguousarray(vector, dtype="<f4").tobytes()
            dim = len(blob) // 4
            rows.append(
                (model, revision, key, dim, blob, checksum(model, revision, key, dim, blob), now)
            )
        with self._session() as db:
            if db is None:
                return
            db.executemany("INSERT OR REPLACE INTO embeddings VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
        self._evict()

    # -- size --------------------------------------------------------------------

    def used_bytes(self) -> int:
        """Bytes of database pages in use (the file may be larger: freed pages are reused)."""
        with self._session() as db:
            if db is None:
                return 0
            return _used_bytes(db)

    def entries(self) -> int:
        with self._session() as db:
            if db is None:
                return 0
            return int(db.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0])

    def _evict(self) -> None:
        with self._session() as db:
            if db is None:
                return
            target = int(self.max_bytes * _LOW_WATER)
            used = _used_bytes(db)
            if used <= self.max_bytes:
                return
            count = int(db.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0])
            evicted = 0
            while used > target and count > 0:
                per_entry = max(1, used // max(count, 1))
                n = max(1, min(count, -(-(used - target) // per_entry)))
                db.execute(
                    "DELETE FROM embeddings WHERE rowid IN ("
                    "SELECT rowid FROM embeddings ORDER BY used LIMIT ?)",
                    (n,),
                )
                db.commit()
                evicted += n
                count -= n
                used = _used_bytes(db)
            log.info("embedding cache over %d bytes: evicted %d entries", self.max_bytes, evicted)

    # -- housekeeping ------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def _drop(self, db: sqlite3.Connection, model: str, revision: str, keys: list[str]) -> None:
        if not keys:
            return
        self.corrupted += len(keys)
        log.warning(
            "embedding cache %s: %d damaged entries (length, dimension or checksum) dropped; "
            "they will be embedded again",
            self.path,
            len(keys),
        )
        db.executemany(
            "DELETE FROM embeddings WHERE model = ? AND revision = ? AND hash = ?",
            [(model, revision, key) for key in keys],
        )

    def _open(self) -> sqlite3.Connection | None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            return _connect(self.path)
        except sqlite3.DatabaseError as exc:
            # Not a database (or damaged beyond reading): keep it for a person, start afresh.
            aside = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
            log.warning("embedding cache %s is unreadable (%s); moved to %s", self.path, exc, aside)
            for suffix in ("", "-wal", "-shm"):
                part = self.path.with_name(self.path.name + suffix)
                if part.exists():
                    part.rename(aside.with_name(aside.name + suffix))
            try:
                return _connect(self.path)
            except sqlite3.DatabaseError as again:
                log.warning("embedding cache disabled: %s", again)
                return None

    @contextmanager
    def _session(self) -> Iterator[sqlite3.Connection | None]:
        """The connection inside one transaction; a damaged database disables the cache."""
        with self._lock:
            if self._db is None and not self._disabled:
                self._db = self._open()
                self._disabled = self._db is None
            db = self._db
            if db is None:
                yield None
                return
            try:
                with db:  # commit on success, roll back on error
                    yield db
            except sqlite3.OperationalError:
                raise  # locked past busy_timeout, disk full: the caller's problem
            except sqlite3.DatabaseError as exc:
                log.warning("embedding cache %s is damaged (%s); disabled for now", self.path, exc)
                db.close()
                self._db, self._disabled = None, True


def _connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, timeout=30.0, check_same_thread=False, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = NORMAL")
        if db.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
            _create_schema(db)
    except sqlite3.DatabaseError:
        db.close()
        raise
    db.isolation_level = "DEFERRED"  # implicit transactions again, committed by `with db`
    return db


def _create_schema(db: sqlite3.Connection) -> None:
    """Create the tables once; the write lock makes a second opener wait, then skip."""
    db.execute("BEGIN IMMEDIATE")
    try:
        if db.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
            db.execute("DROP TABLE IF EXISTS embeddings")
            for statement in filter(str.strip, _SCHEMA.split(";")):
                db.execute(statement)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def _used_bytes(db: sqlite3.Connection) -> int:
    pages = int(db.execute("PRAGMA page_count").fetchone()[0])
    free = int(db.execute("PRAGMA freelist_count").fetchone()[0])
    size = int(db.execute("PRAGMA page_size").fetchone()[0])
    return (pages - free) * size


def _valid(
    model: str, revision: str, key: str, dim: int, blob: bytes, stored: str, dimension: int
) -> Vector | None:
    if dim != dimension or not isinstance(blob, bytes) or len(blob) != 4 * dim:
        return None
    if checksum(model, revision, key, dim, blob) != stored:
        return None
    vector = np.frombuffer(blob, dtype="<f4").astype(np.float32)
    return vector if np.isfinite(vector).all() else None


def _chunks(items: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]
