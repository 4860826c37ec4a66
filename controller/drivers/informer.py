"""List + watch of EmbeddingReleases: a cache of objects and a callback per change."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

from controller.errors import EmbrelError, KubeGone, TemporaryError
from controller.kube import KubeGateway

log = logging.getLogger(__name__)


def track_key(obj: Mapping[str, Any]) -> str:
    meta = obj["metadata"]
    return f"{meta.get('namespace', 'default')}/{meta['name']}"


OnChange = Callable[[str, dict[str, Any] | None, dict[str, Any] | None], None]


class Informer:
    """Lists releases, then watches from the list's resourceVersion (with bookmarks).

    A watch that ends (its timeout) resumes from the last resourceVersion seen; an
    expired one (410 Gone) lists again. ``on_change(key, old, new)`` gets every change
    (``new`` is None on deletion), including objects that vanished between a watch and
    the relist.
    """

    def __init__(
        self,
        kube: KubeGateway,
        namespace: str | None,
        on_change: OnChange,
        stop: threading.Event,
        watch_timeout: int = 300,
    ) -> None:
        self.kube = kube
        self.namespace = namespace
        self.on_change = on_change
        self.stop = stop
        self.watch_timeout = watch_timeout
        self.cache: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self.synced = threading.Event()
        self.lists = 0  # how many times it listed (1 + relists after 410)
        self.resource_version = ""

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            return self.cache.get(key)

    def known_keys(self) -> list[str]:
        with self._lock:
            return list(self.cache)

    def run(self) -> None:
        backoff = 1.0
        while not self.stop.is_set():
            try:
                self._list_and_watch()
                backoff = 1.0
            except EmbrelError as exc:
                log.warning("%s; retrying in %.0fs", exc, backoff)
                self.stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)
            except Exception:  # never let the watch die silently: readiness depends on it
                log.exception("watch of %s failed; retrying", self.namespace or "all namespaces")
                self.stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)

    def _list_and_watch(self) -> None:
        items, rv = self.kube.list_releases(self.namespace)
        self.lists += 1
        self._replace(items)
        self.resource_version = rv
        self.synced.set()
        while not self.stop.is_set():
            try:
                for event in self.kube.watch_releases(
                    self.namespace, self.resource_version, self.watch_timeout
                ):
                    if event.resource_version:
                        self.resource_version = event.resource_version
                    if event.type != "BOOKMARK":
                        self._apply(event.type, event.object)
                    if self.stop.is_set():
                        return
            except KubeGone:
                log.info(
                    "watch of %s expired at resourceVersion %s; listing again",
                    self.namespace or "all namespaces",
                    self.resource_version,
                )
                return
            except TemporaryError as exc:
                log.warning("%s; watching again from %s", exc, self.resource_version)
                self.stop.wait(1.0)

    def _replace(self, items: list[dict[str, Any]]) -> None:
        fresh = {track_key(o): o for o in items}
        with self._lock:
            old, self.cache = self.cache, fresh
        for key, obj in old.items():
            if key not in fresh:
                self.on_change(key, obj, None)
        for key, obj in fresh.items():
            self.on_change(key, old.get(key), obj)

    def _apply(self, kind: str, obj: dict[str, Any]) -> None:
        key = track_key(obj)
        with self._lock:
            old = self.cache.get(key)
            if kind == "DELETED":
                self.cache.pop(key, None)
            else:
                self.cache[key] = obj
        self.on_change(key, old, None if kind == "DELETED" else obj)


def needs_reconcile(old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> bool:
    """Changes a controller acts on: not its own status writes (they would loop)."""
    if old is None or new is None:
        return True
    a, b = old.get("metadata", {}), new.get("metadata", {})
    return any(
        a.get(k) != b.get(k)
        for k in ("generation", "annotations", "finalizers", "deletionTimestamp")
    )
