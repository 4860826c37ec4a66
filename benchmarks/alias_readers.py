"""Readers that search through an alias all the time, as an application would: each
with its own connection and the documented client retry (controller.client.AliasSearcher),
recording every search and which collection served it.

Used by benchmarks/flip_proof.py and the soak (tests/soak): threads call ``read_loop``
directly, a separate process runs ``process_reader``. ``label`` turns the id of the top
hit into the name of the collection that served it (the collections hold disjoint ids);
it must be a module-level function, so a spawned process can be handed it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from controller.client import AliasSearcher, is_transient

# (started, finished, served label | "error", error text, retried); a reader ends with
# (0, count, "retried", message, False) tallies of the errors its retry cleared.
Search = tuple[float, float, str, str, bool]
Label = Callable[[int], str]


def read_loop(
    uri: str,
    alias: str,
    query: list[float],
    stop: Any,
    out: list[Search],
    label: Label,
    ready: Any = None,
    pause: float = 0.0,
) -> None:
    """Search ``alias`` until ``stop`` is set, ``pause`` seconds apart, appending to ``out``."""
    searcher = AliasSearcher(uri, alias)
    try:
        searcher.search([query], limit=1)  # connected and served once before the work begins
        if ready is not None:
            ready.set()
        while not stop.is_set():
            started, before = time.time(), searcher.retried
            try:
                hits = searcher.search([query], limit=1, output_fields=["id"])
                served = label(int(hits[0][0]["id"]))
                out.append((started, time.time(), served, "", searcher.retried > before))
            except Exception as exc:  # counted, never hidden
                text = f"{'transient ' if is_transient(exc) else ''}{exc}"[:160]
                out.append((started, time.time(), "error", text, searcher.retried > before))
            if pause:
                time.sleep(pause)
    finally:
        for text, count in searcher.retried_errors.items():
            out.append((0.0, float(count), "retried", text, False))  # a tally, not a search
        searcher.close()


def process_reader(
    uri: str,
    alias: str,
    query: list[float],
    stop: Any,
    ready: Any,
    queue: Any,
    label: Label,
    pause: float = 0.0,
) -> None:
    """``read_loop`` in a separate process; its searches come back on ``queue``."""
    out: list[Search] = []
    read_loop(uri, alias, query, stop, out, label, ready, pause)
    queue.put(out)
