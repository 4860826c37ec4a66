"""A rate-limited work queue of object keys, as client-go's (controller-runtime's)."""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections import deque
from collections.abc import Callable


class WorkQueue:
    """Keys to reconcile, as client-go's rate-limited work queue.

    A key is handed to one worker at a time: one added while it is being processed
    is queued again only when that worker is ``done``. ``add_rate_limited`` delays a
    key exponentially by its failures (``base * 2**n``, at most ``max_delay``) until
    ``forget``. ``add_after`` schedules a key (requeue_after, resync).
    """

    def __init__(
        self,
        base_delay: float = 1.0,
        max_delay: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.base_delay = base_delay
        self.max_delay = max_delay
        self._clock = clock
        self._cond = threading.Condition()
        self._queue: deque[str] = deque()
        self._dirty: set[str] = set()
        self._processing: set[str] = set()
        self._delayed: list[tuple[float, int, str]] = []
        self._seq = itertools.count()
        self._failures: dict[str, int] = {}
        self._shutdown = False

    def add(self, key: str) -> None:
        with self._cond:
            self._add(key)

    def _add(self, key: str) -> None:
        if self._shutdown or key in self._dirty:
            return
        self._dirty.add(key)
        if key not in self._processing:
            self._queue.append(key)
            self._cond.notify()

    def add_after(self, key: str, delay: float) -> None:
        if delay <= 0:
            self.add(key)
            return
        with self._cond:
            heapq.heappush(self._delayed, (self._clock() + delay, next(self._seq), key))
            self._cond.notify_all()

    def add_rate_limited(self, key: str, at_least: float = 0.0) -> float:
        """Schedule ``key`` after its backoff; returns the delay."""
        with self._cond:
            failures = self._failures.get(key, 0)
            self._failures[key] = failures + 1
        delay = min(self.max_delay, max(at_least, self.base_delay * (1 << min(failures, 30))))
        self.add_after(key, delay)
        return delay

    def forget(self, key: str) -> None:
        with self._cond:
            self._failures.pop(key, None)

    def failures(self, key: str) -> int:
        with self._cond:
            return self._failures.get(key, 0)

    def get(self, timeout: float | None = None) -> str | None:
        """The next key (now owned by the caller until ``done``), or None on timeout/shutdown."""
        deadline = None if timeout is None else self._clock() + timeout
        with self._cond:
            while True:
                self._promote_due()
                if self._queue:
                    key = self._queue.popleft()
                    self._processing.add(key)
                    self._dirty.discard(key)
                    return key
                if self._shutdown:
                    return None
                waits = [deadline - self._clock()] if deadline is not None else []
                if self._delayed:
                    waits.append(self._delayed[0][0] - self._clock())
                wait = min(waits) if waits else None
                if deadline is not None and deadline <= self._clock():
                    return None
                self._cond.wait(max(wait, 0.001) if wait is not None else None)

    def _promote_due(self) -> None:
        now = self._clock()
        while self._delayed and self._delayed[0][0] <= now:
            _, _, key = heapq.heappop(self._delayed)
            self._add(key)

    def done(self, key: str) -> None:
        with self._cond:
            self._processing.discard(key)
            if key in self._dirty:
                self._queue.append(key)
                self._cond.notify()

    def shutdown(self) -> None:
        with self._cond:
            self._shutdown = True
            self._cond.notify_all()

    def pending(self) -> int:
        with self._cond:
            return len(self._queue) + len(self._delayed)
