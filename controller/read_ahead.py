"""Reading ahead: the next items of a slow iterator produced in a thread while the
caller works on the current one (object storage reads, pages of a collection copy)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Generator, Iterator
from typing import Any, TypeVar

T = TypeVar("T")
_END = object()


def read_ahead(items: Iterator[T], depth: int) -> Generator[T, None, None]:
    """What ``items`` yields, produced in a thread at most ``depth`` items ahead: the
    producer's latency overlaps the caller's work. Errors reach the caller in order; a
    caller that stops early stops the thread (and closes ``items``) within 0.1 s."""
    ahead = _ReadAhead(items, depth)
    try:
        while (item := ahead.slots.get()) is not _END:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        ahead.stop.set()


class _ReadAhead:
    def __init__(self, items: Iterator[Any], depth: int) -> None:
        self.items = items
        self.slots: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self.stop = threading.Event()
        threading.Thread(target=self._produce, name="embrel-read-ahead", daemon=True).start()

    def _produce(self) -> None:
        try:
            for item in self.items:
                if not self._put(item):
                    return
            self._put(_END)
        except BaseException as exc:  # handed to the caller, who raises it
            self._put(exc)
        finally:
            close = getattr(self.items, "close", None)
            if close is not None:
                close()

    def _put(self, item: Any) -> bool:
        while not self.stop.is_set():
            try:
                self.slots.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False
