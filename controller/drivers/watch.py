"""`embrel run --watch DIR`: reconcile every release YAML in a folder, GitOps style.

A changed file is a new generation and starts a new release; a file reverted to a
version whose collection is retained becomes an instant rollback (the engine sees
the retained collection). A removed file leaves Milvus as it is (like Kubernetes'
deletionPolicy Retain). Requests left by `embrel promote|abort|rollback` are picked
up on the next poll, or at once when the verb wakes the watcher (``wakeup``, set by the
state folder's WAKE_SIGNAL: see controller.drivers.store).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from controller.config import ReconcileOptions
from controller.drivers.local import LocalController, read_spec
from controller.errors import EmbrelError
from controller.metrics import error_reason

log = logging.getLogger(__name__)


@dataclass
class _Seen:
    raw: bytes
    track: str = ""
    settled: bool = False
    last_pass: float = 0.0
    next_due: float = float("inf")  # when the engine asked to be called again (drift, drain)
    error: str = ""
    message: str = ""


def watch_folder(
    controller: LocalController,
    folder: Path,
    options: ReconcileOptions,
    once: bool = False,
    wakeup: threading.Event | None = None,
) -> None:
    wakeup = wakeup or threading.Event()
    seen: dict[Path, _Seen] = {}
    print(
        f"Watching {folder} for release YAMLs (every {options.watch_interval_seconds:g}s)",
        flush=True,
    )
    while True:
        files = sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")])
        for path in files:
            _visit(controller, path, seen, options)
        for gone in set(seen) - set(files):
            print(f"{gone.name}: removed; its collections and alias stay in Milvus", flush=True)
            del seen[gone]
        if once:
            return
        wakeup.wait(options.watch_interval_seconds)
        wakeup.clear()


def _visit(
    controller: LocalController, path: Path, seen: dict[Path, _Seen], options: ReconcileOptions
) -> None:
    try:
        raw = path.read_bytes()  # bytes: a file that is not UTF-8 is reported, not fatal
    except OSError:
        return  # removed between listing and reading: the next poll notices
    entry = seen.get(path)
    changed = entry is None or entry.raw != raw
    if changed:
        entry = seen[path] = _Seen(raw)
    assert entry is not None
    try:
        if changed:
            text, release = read_spec(path)
            controller.record_spec(path, text, release)
            entry.track = release.track
            print(f"{path.name}: {release.track} wants version {release.spec.version}", flush=True)
        if not entry.track:
            return  # the file never parsed: nothing to reconcile until it changes
        record = controller.store.load(entry.track)
        now = time.monotonic()
        due = now - entry.last_pass > options.resync_seconds or now >= entry.next_due
        if not (changed or not entry.settled or (record and record.intents) or due):
            return
        result = controller.reconcile_track(entry.track, wait=False)
        entry.settled, entry.last_pass, entry.error = result.done, time.monotonic(), ""
        wait = result.requeue_after if result.done else None
        entry.next_due = entry.last_pass + wait if wait is not None else float("inf")
        if changed or result.status.message != entry.message:
            print(f"{path.name}: {result.status.phase}: {result.status.message}", flush=True)
            entry.message = result.status.message
    except EmbrelError as exc:
        if entry.track:
            controller.telemetry.reconcile_error(entry.track, error_reason(exc))
        if str(exc) != entry.error:  # say it once, not every poll
            print(f"{path.name}: error: {exc}", flush=True)
        entry.error, entry.settled = str(exc), True
