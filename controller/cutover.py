"""Proof that a flip took effect: fingerprints, probes through the alias, the verified flip.

``alter_alias`` returning, and ``describe_alias`` agreeing, do not prove that
applications see the new collection: on Milvus 2.3.5 about 3% of flips were *lost*
(every search through the alias kept answering from the old collection until the
alias was changed again; docs/benchmarks.md §7). A fingerprint is a handful of probes whose
answers tell the two collections apart: ids whose vectors differ (or exist on one
side only) and queries whose top-k differ. Milvus is reached only through the
``MilvusPort`` the engine passes in.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from enum import StrEnum
from typing import Any

import numpy as np

from controller.errors import MilvusRejected
from controller.ports import MilvusPort
from controller.spec import PRIMARY_VECTOR, EmbeddingRelease
from controller.validation.gates import search_params

# Components of each probe vector kept in the fingerprint: enough to tell two
# embeddings of the same id apart, small enough for a collection property.
HEAD = 4
# Two heads closer than this are the same vector (float32 round trips are exact;
# this only absorbs normalisation noise).
SAME = 1e-4
MAX_ID_PROBES = 8
MAX_QUERY_PROBES = 4


class Seen(StrEnum):
    NEW = "new"  # every probe answered like the new collection
    OLD = "old"  # at least one probe answered like the old collection
    UNCLEAR = "unclear"  # answers match neither (data changing under us?)


@dataclass(frozen=True)
class Fingerprint:
    """Probes that tell ``new`` from ``old``; symmetric, so a rollback swaps them."""

    new: str
    old: str
    ids: tuple[int, ...] = ()
    new_heads: tuple[tuple[float, ...] | None, ...] = ()  # None: the id is absent
    old_heads: tuple[tuple[float, ...] | None, ...] = ()
    query_ids: tuple[int, ...] = ()  # probe queries: the vectors of these ids ...
    query_from: str = ""  # ... in this collection
    new_answers: tuple[tuple[int, ...], ...] = ()
    old_answers: tuple[tuple[int, ...], ...] = ()

    @property
    def distinguishable(self) -> bool:
        return bool(self.ids or self.query_ids)

    def between(self, new: str, old: str) -> Fingerprint | None:
        """This fingerprint oriented for a flip from ``old`` to ``new``, if it covers them."""
        if (self.new, self.old) == (new, old):
            return self
        if (self.new, self.old) == (old, new):
            return Fingerprint(
                new=new,
                old=old,
                ids=self.ids,
                new_heads=self.old_heads,
                old_heads=self.new_heads,
                query_ids=self.query_ids,
                query_from=self.query_from,
                new_answers=self.old_answers,
                old_answers=self.new_answers,
            )
        return None

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Fingerprint:
        d = json.loads(text)
        return cls(
            new=d["new"],
            old=d["old"],
            ids=tuple(d["ids"]),
            new_heads=tuple(_head_or_none(h) for h in d["new_heads"]),
            old_heads=tuple(_head_or_none(h) for h in d["old_heads"]),
            query_ids=tuple(d["query_ids"]),
            query_from=d["query_from"],
            new_answers=tuple(tuple(a) for a in d["new_answers"]),
            old_answers=tuple(tuple(a) for a in d["old_answers"]),
        )


def _head_or_none(h: list[float] | None) -> tuple[float, ...] | None:
    return None if h is None else tuple(h)


def _head(v: np.ndarray | None) -> tuple[float, ...] | None:
    return None if v is None else tuple(float(x) for x in v[:HEAD])


def _same(a: tuple[float, ...] | None, b: tuple[float, ...] | None) -> bool:
    if a is None or b is None:
        return a is b
    return bool(np.max(np.abs(np.subtract(a, b))) < SAME)


def fingerprint(
    new: str,
    old: str,
    ids: list[int],
    new_vectors: dict[int, np.ndarray],
    old_vectors: dict[int, np.ndarray],
    query_ids: list[int],
    new_answers: np.ndarray,
    old_answers: np.ndarray,
) -> Fingerprint:
    """Keep the probes whose answers differ between the two collections."""
    differing = [i for i in ids if not _same(_head(new_vectors.get(i)), _head(old_vectors.get(i)))][
        :MAX_ID_PROBES
    ]
    queries = [
        (q, tuple(int(x) for x in a), tuple(int(x) for x in b))
        for q, a, b in zip(query_ids, new_answers, old_answers, strict=True)
        if set(a.tolist()) != set(b.tolist())
    ][:MAX_QUERY_PROBES]
    return Fingerprint(
        new=new,
        old=old,
        ids=tuple(differing),
        new_heads=tuple(_head(new_vectors.get(i)) for i in differing),
        old_heads=tuple(_head(old_vectors.get(i)) for i in differing),
        query_ids=tuple(q for q, _, _ in queries),
        query_from=new,
        new_answers=tuple(a for _, a, _ in queries),
        old_answers=tuple(b for _, _, b in queries),
    )


def judge(fp: Fingerprint, seen_vectors: dict[int, np.ndarray], seen_answers: np.ndarray) -> Seen:
    """What the alias resolved to, from answers read through it."""
    votes: list[Seen] = []
    for i, new_head, old_head in zip(fp.ids, fp.new_heads, fp.old_heads, strict=True):
        head = _head(seen_vectors.get(i))
        votes.append(
            Seen.NEW
            if _same(head, new_head)
            else Seen.OLD
            if _same(head, old_head)
            else Seen.UNCLEAR
        )
    for answer, new, old in zip(seen_answers, fp.new_answers, fp.old_answers, strict=False):
        got = set(int(x) for x in answer)
        to_new, to_old = len(got & set(new)), len(got & set(old))
        votes.append(Seen.NEW if to_new > to_old else Seen.OLD if to_old > to_new else Seen.UNCLEAR)
    if Seen.OLD in votes:
        return Seen.OLD
    return Seen.NEW if votes and all(v == Seen.NEW for v in votes) else Seen.UNCLEAR


# -- probing through the alias (through the MilvusPort) ----------------------------


def _both(a: Seen, b: Seen) -> Seen:
    if Seen.OLD in (a, b):
        return Seen.OLD
    return Seen.NEW if a == b == Seen.NEW else Seen.UNCLEAR


PROBE_K = 10


@dataclass(frozen=True)
class Probes:
    """A fingerprint, the vectors of its probe queries and the vector field it reads."""

    fp: Fingerprint
    queries: np.ndarray
    field: str = PRIMARY_VECTOR


class _Probe:
    """Reads through the alias on a fresh connection, as a newly started client would."""

    def __init__(self, milvus: MilvusPort, release: EmbeddingRelease, probes: Probes) -> None:
        self.alias = release.spec.alias
        self.fp, self.queries = probes.fp, probes.queries if probes.fp.query_ids else None
        self.k = len(self.fp.new_answers[0]) if self.fp.new_answers else PROBE_K
        self.params = search_params(release, self.k)
        self.field = probes.field
        self.client = milvus.fresh()
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embrel-probe")

    def once(self) -> Seen:
        """One round of reads through the alias, side by side.

        The get is Strong; the search (or, without query probes, a second get) uses
        Bounded consistency, as applications read. On 2.3.5 a Strong
        request refreshes the proxy's alias cache while Bounded ones kept the old
        target for seconds (docs/benchmarks.md §7): only both together prove a flip.
        """
        fp, c, field = self.fp, self.client, self.field
        as_apps = (
            self.pool.submit(
                c.search_ids, self.alias, self.queries, self.k, self.params, "Bounded", field
            )
            if self.queries is not None
            else self.pool.submit(c.vectors_by_id, self.alias, fp.ids, "Bounded", field)
        )
        try:
            strong = c.vectors_by_id(self.alias, fp.ids, "Strong", field) if fp.ids else {}
            seen = as_apps.result()
        except MilvusRejected:  # e.g. the old collection has another dimension
            return Seen.OLD
        if isinstance(seen, dict):  # the Bounded get: both reads must show the target
            none = np.empty((0, self.k), dtype=np.int64)
            return _both(judge(fp, strong, none), judge(fp, seen, none))
        return judge(fp, strong, seen)  # ids from the Strong get, answers from the search

    def until_new(self, window: float) -> Seen:
        deadline = time.monotonic() + window
        while (seen := self.once()) != Seen.NEW and time.monotonic() < deadline:
            time.sleep(0.05)
        return seen

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        self.client.close()


@dataclass(frozen=True)
class FlipProof:
    """What ``verified_flip`` measured: whether readers were shown to see the target."""

    verified: bool
    method: str  # "probes" | "describeAlias"
    probes: int  # probes in the fingerprint (0 with describeAlias)
    attempts: int  # alter_alias calls issued
    seconds: float
    issued_at: float  # epoch of the first alter_alias

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (camelCase keys, as ``status.cutover`` shows them)."""
        return {
            "verified": self.verified,
            "method": self.method,
            "probes": self.probes,
            "attempts": self.attempts,
            "seconds": self.seconds,
            "issuedAt": self.issued_at,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FlipProof:
        return cls(
            verified=bool(d.get("verified", False)),
            method=str(d.get("method", "")),
            probes=int(d.get("probes", 0)),
            attempts=int(d.get("attempts", 0)),
            seconds=float(d.get("seconds", 0.0)),
            issued_at=float(d.get("issuedAt", 0.0)),
        )


def proof_text(proof: FlipProof) -> str:
    if not proof.verified:
        return (
            f"NOT verified: probes through the alias still saw the old collection after "
            f"{proof.attempts} attempts ({proof.seconds:.2f}s)"
        )
    how = (
        f"{proof.probes} probes through the alias"
        if proof.method == "probes"
        else "describe_alias (the collections hold identical probes)"
    )
    return f"verified by {how} in {proof.seconds:.2f}s, {proof.attempts} attempt(s)"


def read_probes(
    milvus: MilvusPort, release: EmbeddingRelease, new: str, old: str, hint: Fingerprint | None
) -> Probes:
    """Differing ids and differing top-k, read now from both physical collections.

    A stored fingerprint only says *which* ids and queries told the pair apart at
    validation; their answers are read again, since either side may have been
    written since (that is what drift is). Bounded reads: both are long flushed.
    """
    k, seed, bounded = PROBE_K, release.spec.validation.seed, "Bounded"
    field = probe_field(milvus, release, new, old)
    if hint is not None:
        ids, query_ids, query_from = list(hint.ids), list(hint.query_ids), hint.query_from
    else:
        ids, query_ids, query_from = milvus.sample_ids(new, 1024, seed).tolist(), [], new
    new_v = milvus.vectors_by_id(new, ids, bounded, field)
    old_v = milvus.vectors_by_id(old, ids, bounded, field)
    if hint is None:
        query_ids = [i for i in ids if i in new_v][:16]
    source = new_v if query_from == new else old_v if query_from == old else {}
    if query_ids and any(i not in source for i in query_ids):
        source = milvus.vectors_by_id(query_from, query_ids, bounded, field)
    query_ids = [i for i in query_ids if i in source]
    dims = {len(v) for v in (*new_v.values(), *old_v.values(), *source.values())}
    if not query_ids or len(dims) != 1:  # another dimension: ids alone tell them apart
        empty = np.empty((0, k), dtype=np.int64)
        fp = fingerprint(new, old, ids, new_v, old_v, [], empty, empty)
        return Probes(fp, np.empty((0, 0), dtype=np.float32), field)
    queries = np.stack([source[i] for i in query_ids])
    params = search_params(release, k)
    answers = [milvus.search_ids(side, queries, k, params, bounded, field) for side in (new, old)]
    fp = fingerprint(new, old, ids, new_v, old_v, query_ids, *answers)
    fp = replace(fp, query_from=query_from)
    kept = [query_ids.index(q) for q in fp.query_ids]
    return Probes(fp, queries[kept], field)


def probe_field(milvus: MilvusPort, release: EmbeddingRelease, new: str, old: str) -> str:
    """The vector field probes read and search: the release's search field, as its
    applications search, when both collections have it; else ``vector``, which every
    collection has (a probe on a field one side lacks would only ever be refused)."""
    field = release.spec.collection.search_field
    if field == PRIMARY_VECTOR:
        return field
    both = all(milvus.collection_schema(c).vector(field) is not None for c in (new, old))
    return field if both else PRIMARY_VECTOR


def verified_flip(
    milvus: MilvusPort,
    release: EmbeddingRelease,
    target: str,
    probes: Probes | None,
    window: float,
    attempts: int,
    reissuing: Callable[[int, Seen], None],
    guard: Callable[[int], None],
) -> FlipProof:
    """Point the alias at ``target`` and prove it by probing through the alias.

    Re-issues ``alter_alias`` when probes still see the old collection after
    ``window`` (a lost flip), at most ``attempts`` times. ``guard(attempt)`` runs right
    before every ``alter_alias`` and raises to refuse it (fencing: the caller's
    leadership and compare-and-set).
    """
    alias = release.spec.alias
    started, issued_at = time.monotonic(), time.time()
    fp = probes.fp if probes else None
    probe = _Probe(milvus, release, probes) if probes and probes.fp.distinguishable else None
    try:
        for attempt in range(1, max(1, attempts) + 1):
            guard(attempt)
            milvus.point_alias(alias, target)
            if probe is None:  # identical content: describe_alias is all there is
                seen = Seen.NEW if milvus.alias_target(alias) == target else Seen.OLD
            else:
                seen = probe.until_new(window)
            if seen == Seen.NEW:
                break
            reissuing(attempt, seen)
    finally:
        if probe is not None:
            probe.close()
    return FlipProof(
        verified=seen == Seen.NEW,
        method="probes" if probe else "describeAlias",
        probes=len(fp.ids) + len(fp.query_ids) if fp else 0,
        attempts=attempt,
        seconds=round(time.monotonic() - started, 3),
        issued_at=round(issued_at, 3),
    )
