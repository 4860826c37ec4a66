"""Proof that a flip took effect: fingerprints and what probes through the alias show.

``alter_alias`` returning, and ``describe_alias`` agreeing, do not prove that
applications see the new collection: on Milvus 2.3.5 about 3% of flips were *lost*
(every search through the alias kept answering from the old collection until the
alias was changed again; DESIGN.md §6). A fingerprint is a handful of probes whose
answers tell the two collections apart: ids whose vectors differ (or exist on one
side only) and queries whose top-k differ. Pure: the engine reads the answers.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from enum import StrEnum

import numpy as np

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
