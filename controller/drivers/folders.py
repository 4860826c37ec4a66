"""Validation reports and drift references in the state folder (both drivers); the
reports also over HTTP (``ReportFolder.document``, served by ``controller.metrics``)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from controller.metrics import DOCUMENTS_PREFIX as URL_PREFIX
from controller.metrics import Document
from controller.spec import names_a_version
from controller.validation.report import CSP

log = logging.getLogger(__name__)


REPORT_KINDS = {"html": "text/html; charset=utf-8", "md": "text/markdown; charset=utf-8"}


class ReportFolder:
    """Validation reports under ``<stateDir>/reports/<namespace>.<name>/<version>/``.

    ``write_report`` answers what ``status.validation.report`` shows: the HTML file's
    path, or with ``urls`` the path the controller's HTTP port serves it under,
    ``/reports/<namespace>/<name>/<version>.html`` (``.md`` for the Markdown).
    ``document`` serves such a path, and nothing else: each part must be a valid
    namespace, release name and version (never ``..``, a separator or an encoded
    one), and the file must resolve inside this folder.
    """

    def __init__(self, root: Path, urls: bool = False) -> None:
        self.root = root
        self.urls = urls

    def write_report(self, track: str, version: str, files: dict[str, bytes]) -> str:
        folder = self.root / track.replace("/", ".") / version
        folder.mkdir(parents=True, exist_ok=True)
        for name, content in files.items():
            (folder / name).write_bytes(content)
        if self.urls:
            return f"{URL_PREFIX}{track}/{version}.html"
        return str((folder / "report.html").resolve())

    def document(self, url_path: str) -> Document | None:
        """The report at ``/reports/<namespace>/<name>/<version>.(html|md)``; None for
        any other path (the server answers 404)."""
        path = self._file(url_path)
        if path is None:
            return None
        try:
            body = path.read_bytes()
        except OSError:
            return None
        kind = path.suffix.removeprefix(".")
        return Document(body, REPORT_KINDS[kind], (("Content-Security-Policy", CSP),))

    def _file(self, url_path: str) -> Path | None:
        parts = url_path.removeprefix(URL_PREFIX).split("/")
        if not url_path.startswith(URL_PREFIX) or len(parts) != 3:
            return None
        namespace, name, leaf = parts
        version, dot, kind = leaf.rpartition(".")
        if not dot or kind not in REPORT_KINDS or not names_a_version(namespace, name, version):
            return None
        root = self.root.resolve()
        path = (root / f"{namespace}.{name}" / version / f"report.{kind}").resolve()
        return path if path.is_relative_to(root) and path.is_file() else None


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
