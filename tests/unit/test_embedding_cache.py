"""The embedding cache on a real SQLite file: integrity, eviction, concurrent readers."""

from __future__ import annotations

import sqlite3
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from controller.embedding.cache import EmbeddingCache

DIM = 384
M, R = "all-MiniLM-L6-v2", "rev1"


def vectors(keys: list[str], dim: int = DIM) -> dict[str, np.ndarray]:
    """A fixed vector per key, so any process can tell a right answer from a wrong one."""
    out = {}
    for key in keys:
        seed = int.from_bytes(key.encode()[-8:].rjust(8, b"\0"), "little")
        out[key] = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
    return out


def keys(n: int, prefix: str = "h") -> list[str]:
    return [f"{prefix}{i:08d}" for i in range(n)]


def test_round_trip_by_model_revision_and_hash(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path / "c.sqlite", 10**9)
    want = vectors(keys(50))
    cache.put_many(M, R, want)
    got = cache.get_many(M, R, [*keys(60)], DIM)
    assert sorted(got) == keys(50)
    assert all(np.array_equal(got[k], want[k]) for k in got)
    assert cache.count_present(M, R, keys(60)) == 50
    assert cache.get_many(M, "rev2", keys(50), DIM) == {}, "another revision is another key"
    assert cache.get_many("other", R, keys(50), DIM) == {}
    cache.close()


def test_corrupted_entries_are_dropped_not_served(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    cache = EmbeddingCache(path, 10**9)
    want = vectors(keys(10))
    cache.put_many(M, R, want)
    cache.close()
    raw = sqlite3.connect(path)
    blob = bytearray(want["h00000001"].tobytes())
    blob[100] ^= 0x40  # one flipped bit
    raw.execute("UPDATE embeddings SET vector = ? WHERE hash = 'h00000001'", (bytes(blob),))
    raw.execute("UPDATE embeddings SET vector = substr(vector, 1, 100) WHERE hash = 'h00000002'")
    raw.execute("UPDATE embeddings SET dim = 383 WHERE hash = 'h00000003'")
    raw.execute(  # another entry's (valid) vector under this key
        "UPDATE embeddings SET (vector, checksum) = (SELECT vector, checksum FROM embeddings "
        "WHERE hash = 'h00000005') WHERE hash = 'h00000004'"
    )
    raw.commit()
    raw.close()

    cache = EmbeddingCache(path, 10**9)
    got = cache.get_many(M, R, keys(10), DIM)
    damaged = {"h00000001", "h00000002", "h00000003", "h00000004"}
    assert set(got) == set(keys(10)) - damaged
    assert all(np.array_equal(got[k], want[k]) for k in got)
    assert cache.corrupted == 4
    assert cache.count_present(M, R, sorted(damaged)) == 0, "damaged entries are deleted"
    cache.put_many(M, R, {k: want[k] for k in damaged})  # what a build does: embed again
    again = cache.get_many(M, R, keys(10), DIM)
    assert len(again) == 10 and all(np.array_equal(again[k], want[k]) for k in again)


def test_wrong_dimension_is_a_miss(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path / "c.sqlite", 10**9)
    cache.put_many(M, R, vectors(keys(3), dim=8))
    assert cache.get_many(M, R, keys(3), DIM) == {}


def test_a_file_that_is_not_a_database_is_moved_aside(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    path.write_bytes(b"this is not sqlite" * 100)
    cache = EmbeddingCache(path, 10**9)
    cache.put_many(M, R, vectors(keys(2)))
    assert len(cache.get_many(M, R, keys(2), DIM)) == 2
    assert [p.name.startswith("c.sqlite.corrupt-") for p in tmp_path.iterdir()].count(True) == 1


def test_eviction_keeps_the_size_bound_and_the_recently_used(tmp_path: Path) -> None:
    limit = 1_000_000  # ~600 entries of 384 floats
    cache = EmbeddingCache(tmp_path / "c.sqlite", limit, touch_seconds=0.0)
    first = keys(100, "a")
    cache.put_many(M, R, vectors(first))
    time.sleep(0.01)
    for batch in range(20):
        cache.get_many(M, R, first[:10], DIM)  # keep ten of the oldest in use
        cache.put_many(M, R, vectors(keys(100, f"b{batch:02d}-")))
        time.sleep(0.01)
        assert cache.used_bytes() <= limit
    assert 300 < cache.entries() < 700
    assert len(cache.get_many(M, R, first[:10], DIM)) == 10, "recently read entries stay"
    assert cache.get_many(M, R, first[10:], DIM) == {}, "the least recently used went first"
    assert len(cache.get_many(M, R, keys(100, "b19-"), DIM)) == 100, "the newest stay"


def _reader(path: str, rounds: int) -> int:
    cache = EmbeddingCache(Path(path), 10**9)
    want = vectors(keys(500))
    served = 0
    for _ in range(rounds):
        got = cache.get_many(M, R, keys(500), DIM)
        assert set(got) == set(want)
        assert all(np.array_equal(got[k], want[k]) for k in got)
        served += len(got)
    cache.close()
    return served


def test_concurrent_readers_while_a_writer_writes(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    writer = EmbeddingCache(path, 10**9, touch_seconds=0.0)  # every read also writes
    writer.put_many(M, R, vectors(keys(500)))
    with ProcessPoolExecutor(4, mp_context=get_context("spawn")) as pool:
        readers = [pool.submit(_reader, str(path), 20) for _ in range(4)]
        for batch in range(20):
            writer.put_many(M, R, vectors(keys(200, f"w{batch:02d}-")))
        assert [r.result(timeout=120) for r in readers] == [500 * 20] * 4
    assert writer.entries() == 500 + 20 * 200
