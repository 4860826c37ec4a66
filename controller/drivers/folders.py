"""Validation reports and drift references in the state folder (both drivers)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


class ReportFolder:
    """Validation reports under ``<stateDir>/reports/<namespace>.<name>/<version>/``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def write_report(self, track: str, version: str, files: dict[str, bytes]) -> str:
        folder = self.root / track.replace("/", ".") / version
        folder.mkdir(parents=True, exist_ok=True)
        for name, content in files.items():
            (folder / name).write_bytes(content)
        return str((folder / "report.html").resolve())


class ReferenceFolder:
    """Drift references under ``<stateDir>/references/<namespace>.<name>/<collection>.npz``.

    Written atomically (temp file + rename); a missing or unreadable file is reported
    as absent, and the engine captures a new reference from the live collection.
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, track: str, collection: str) -> Path:
        return self.root / track.replace("/", ".") / f"{collection}.npz"

    def save_reference(self, track: str, collection: str, arrays: dict[str, np.ndarray]) -> None:
        path = self._path(track, collection)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, allow_pickle=False, **arrays)
        tmp.replace(path)

    def load_reference(self, track: str, collection: str) -> dict[str, np.ndarray] | None:
        try:
            with np.load(self._path(track, collection)) as data:
                return {k: data[k] for k in data.files}
        except (OSError, ValueError) as exc:
            log.debug("no usable drift reference for %s: %s", collection, exc)
            return None
