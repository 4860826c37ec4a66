"""What the benchmarks share: data files, the two backends, release files, timing, tables.

Each benchmark measures embrel against a baseline taken in the same run on the same
backend, so the numbers compare like with like whatever the machine.
"""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from controller.ports import Advance
from tests.support.milvus_server import MilvusServer, drop_alias_collections

BACKENDS = ("lite", "server")
# Rows generated per chunk: bounds the generator's memory (50k x 384 float32 = 77 MB).
GEN_CHUNK = 50_000
# The server needs a few minutes at most to start; a test run may hold the fixed etcd port.
SERVER_WAIT_S = 900.0


# -- data --------------------------------------------------------------------------


def unit_vectors(rng: np.random.Generator, n: int, dim: int) -> npt.NDArray[np.float32]:
    x = rng.standard_normal(size=(n, dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def write_vectors(path: Path, rows: int, dim: int, seed: int = 0) -> Path:
    """``rows`` x ``dim`` float32 unit vectors with ids 0..rows-1, written chunk by chunk.

    The vector column is a fixed_size_list<float32>, the layout embedding pipelines
    usually write; uncompressed because random floats do not compress anyway.
    """
    rng = np.random.default_rng(seed)
    schema = pa.schema([("id", pa.int64()), ("vector", pa.list_(pa.float32(), dim))])
    with pq.ParquetWriter(path, schema, compression="none") as writer:
        for start in range(0, rows, GEN_CHUNK):
            n = min(GEN_CHUNK, rows - start)
            vectors = unit_vectors(rng, n, dim)
            table = pa.table(
                {
                    "id": pa.array(np.arange(start, start + n, dtype=np.int64)),
                    "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), dim),
                },
                schema=schema,
            )
            writer.write_table(table, row_group_size=10_000)
    return path


# -- release files -----------------------------------------------------------------


def release_doc(
    *,
    name: str,
    alias: str,
    version: str,
    uri: str,
    source: Path | str,
    dim: int,
    index: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A release spec with absolute paths, so it works from any folder."""
    return {
        "apiVersion": "embrel.dev/v1alpha1",
        "kind": "EmbeddingRelease",
        "metadata": {"name": name, "namespace": "bench"},
        "spec": {
            "alias": alias,
            "version": version,
            "model": {"name": "bench-encoder", "revision": version},
            "milvus": {"uri": uri},
            "collection": {
                "dimension": dim,
                "metric": "COSINE",
                "index": index or {"type": "HNSW", "params": {"M": 16, "efConstruction": 100}},
            },
            "source": {"files": {"uri": str(source), "idField": "id", "vectorField": "vector"}},
            "promotion": {"mode": "auto"},
            "retention": {"keepPrevious": 2, "keepLoaded": 1},
        },
    }


def write_yaml(path: Path, doc: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def fresh_alias(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


# -- a reporter that timestamps events ---------------------------------------------


@dataclass
class TimedReporter:
    """Records each engine event, and the last progress tick of each stage, with a
    monotonic timestamp. The engine ticks after each inserted batch, so the last tick
    of "loading ..." splits the ingest into inserts and the flush that follows."""

    events: list[tuple[float, str, str]] = field(default_factory=list)
    last_tick: dict[str, float] = field(default_factory=dict)

    def event(self, reason: str, message: str, warning: bool = False) -> None:
        self.events.append((time.perf_counter(), reason, message))

    def progress(self, stage: str, total: int | None) -> AbstractContextManager[Advance]:
        def advance(rows: int) -> None:
            self.last_tick[stage] = time.perf_counter()

        return contextlib.nullcontext(advance)

    def last_tick_of(self, prefix: str) -> float:
        return max(stamp for stage, stamp in self.last_tick.items() if stage.startswith(prefix))

    def at(self, fragment: str) -> float:
        """Time of the first event whose message contains ``fragment``."""
        for stamp, _, message in self.events:
            if fragment in message:
                return stamp
        seen = "\n".join(m for _, _, m in self.events)
        raise LookupError(f"no event containing {fragment!r}; events were:\n{seen}")

    def between(self, start: str, end: str) -> float:
        return self.at(end) - self.at(start)

    def span(self, fragment: str) -> float:
        """From the first event containing ``fragment`` to the next event; 0 when absent
        (Milvus Lite, for one, needs no load step after indexing)."""
        stamps = [stamp for stamp, _, _ in self.events]
        for i, (_, _, message) in enumerate(self.events[:-1]):
            if fragment in message:
                return stamps[i + 1] - stamps[i]
        return 0.0


# -- backends ----------------------------------------------------------------------


@dataclass
class Backend:
    """A Milvus to run against: Milvus Lite files in a folder, or one real server."""

    kind: str
    root: Path
    server_uri: str | None = None

    def uri(self, tag: str) -> str:
        """Lite: a fresh database per run (so runs never see each other's data)."""
        if self.server_uri is not None:
            return self.server_uri
        folder = self.root / f"lite-{tag}-{uuid.uuid4().hex[:6]}"
        folder.mkdir(parents=True)
        return str(folder / "milvus.db")

    def discard(self, uri: str, alias: str) -> None:
        """Free what a run left: stop its Lite server, or drop its collections on the server."""
        if self.server_uri is None:
            _release_lite(uri)
        else:
            drop_alias_collections(uri, alias)


def _release_lite(uri: str) -> None:
    # Milvus Lite 3 serves each .db from threads of this process until exit unless told.
    from milvus_lite.server_manager import server_manager_instance  # type: ignore[import-untyped]

    server_manager_instance.release_server(uri)


@contextmanager
def open_backend(kind: str) -> Iterator[Backend]:
    """Lite: a temp folder. Server: a real Milvus 2.3.5 started here and always stopped."""
    with tempfile.TemporaryDirectory(prefix=f"embrel-bench-{kind}-") as tmp:
        root = Path(tmp)
        if kind == "lite":
            yield Backend(kind, root)
            return
        server = start_server(root / "server")
        try:
            yield Backend(kind, root, server.uri)
        finally:
            server.stop()


def standalone_pids() -> list[int]:
    """PIDs of running ``milvus run standalone`` processes (ours or a test run's)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if len(argv) >= 3 and argv[0].endswith(b"milvus") and argv[1:3] == [b"run", b"standalone"]:
            pids.append(int(entry))
    return pids


def start_server(data_dir: Path, wait_s: float = SERVER_WAIT_S) -> MilvusServer:
    """Start the real server, waiting while another one (a test session) holds etcd's port."""
    deadline = time.monotonic() + wait_s
    while True:
        if busy := standalone_pids():
            if time.monotonic() > deadline:
                raise RuntimeError(f"another Milvus server (pids {busy}) kept running")
            print(f"  (waiting: another Milvus server is running, pids {busy})", flush=True)
            time.sleep(15)
            continue
        server = MilvusServer()
        try:
            server.start(data_dir / uuid.uuid4().hex[:6])
            return server
        except RuntimeError as exc:  # lost a race for the fixed ports: wait and retry
            if time.monotonic() > deadline:
                raise
            print(f"  (server start failed, retrying: {str(exc).splitlines()[0]})", flush=True)
            time.sleep(15)


# -- output ------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table, readable on a terminal and pasteable into docs/benchmarks.md."""
    cells = [[str(h) for h in headers], *[[str(c) for c in r] for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in cells
    ]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def revision() -> str:
    """The commit measured, and whether controller/ differed from it (others edit the tree)."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], capture_output=True, text=True, check=False)
        return done.stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--", "controller")
    return f"embrel {commit}{' with uncommitted changes in controller/' if dirty else ''}"


def machine() -> str:
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{os.cpu_count()} cores ({model}), {mem_gib:.0f} GiB RAM, "
        f"{platform.system()} {platform.release()}, Python {platform.python_version()}, "
        f"load average {os.getloadavg()[0]:.2f} now; {revision()}"  # other work skews timings
    )


class QuietReporter:
    """Drops the engine's events and progress (for benchmarks that time the engine)."""

    def event(self, reason: str, message: str, warning: bool = False) -> None:
        pass

    def progress(self, stage: str, total: int | None) -> Any:
        return contextlib.nullcontext(lambda n: None)


def write_parts(folder: Path, rows: int, dim: int, files: int) -> list[Path]:
    """``rows`` x ``dim`` vectors as ``files`` Parquet files of consecutive ids in
    ``folder`` (10,000-row groups, uncompressed): a source cut as object stores hold one."""
    folder.mkdir(parents=True, exist_ok=True)
    whole = pq.read_table(write_vectors(folder / "whole.parquet", rows, dim))
    (folder / "whole.parquet").unlink()
    per = -(-rows // files)
    parts = [folder / f"part-{i:03d}.parquet" for i in range(files)]
    for i, part in enumerate(parts):
        pq.write_table(whole.slice(i * per, per), part, compression="none", row_group_size=10_000)
    return parts


# The indexes a benchmark may build (--index). FLAT builds nothing; at 1M x 128 on 2
# cores IVF_FLAT (nlist 1024) takes about 5 minutes and HNSW far longer, which dominates
# any run whose subject is not the index.
INDEXES: dict[str, dict[str, Any]] = {
    "FLAT": {"type": "FLAT", "params": {}},
    "IVF_FLAT": {"type": "IVF_FLAT", "params": {"nlist": 1024}},
    "HNSW": {"type": "HNSW", "params": {"M": 8, "efConstruction": 32}},
}
