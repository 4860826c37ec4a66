"""The local driver's state folder: one JSON record per track, and its locks.

Per track, ``<stateDir>/tracks/<namespace>.<name>.json`` keeps what the engine cannot
read from Milvus: the last applied spec (so `promote`, `abort` and `rollback` can act
without the file), the last status, and pending requests (intents). Namespaces are DNS
labels (no dots), so the file name names one track.

A module of its own, importing neither the engine nor the Milvus gateway, so that
`embrel status` and `history` start in a fraction of a second.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import signal
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from controller.errors import EmbrelError, UsageError
from controller.status import ReleaseStatus

if TYPE_CHECKING:
    from controller.spec import EmbeddingRelease

log = logging.getLogger(__name__)


@dataclass
class TrackRecord:
    """What the state folder remembers of one release track."""

    spec_path: str
    spec_text: str
    status: ReleaseStatus
    intents: dict[str, Any]
    generation: int = 0
    applied: list[str] = field(default_factory=list)  # requests the last pass carried out

    def release(self) -> EmbeddingRelease:
        from controller.spec import parse_release

        return parse_release(self.spec_text, self.spec_path)


class StateStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.tracks = root / "tracks"

    def path(self, track: str) -> Path:
        return self.tracks / f"{track.replace('/', '.')}.json"

    def load(self, track: str) -> TrackRecord | None:
        """The track's record; None when there is none, or when the file is damaged
        (it is moved aside as ``*.corrupt`` and the next apply rebuilds it from Milvus,
        which holds everything a release needs)."""
        path = self.path(track)
        if not path.exists():
            return None
        try:
            data = json.loads(path.read_bytes())
            return TrackRecord(
                spec_path=str(data["specPath"]),
                spec_text=str(data["specText"]),
                status=ReleaseStatus.from_dict(data.get("status", {})),
                intents=dict(data.get("intents", {})),
                generation=int(data.get("generation", 0)),
                applied=list(data.get("applied", [])),
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            aside = path.with_name(f"{path.name}.corrupt")
            os.replace(path, aside)
            log.warning(
                "state file %s was damaged and is moved aside to %s; apply the release "
                "again to rebuild it from Milvus",
                path,
                aside.name,
            )
            return None

    def save(self, track: str, record: TrackRecord) -> None:
        """Write atomically (temp file + rename) so a crash never leaves half a file."""
        self.tracks.mkdir(parents=True, exist_ok=True)
        path = self.path(track)
        # A temporary file of its own per writer: two writers sharing one name could
        # rename a file the other is still writing, and a reader see half of it.
        fd, name = tempfile.mkstemp(dir=self.tracks, prefix=f".{path.name}.", suffix=".tmp")
        tmp = Path(name)
        os.close(fd)
        tmp.write_text(
            json.dumps(
                {
                    "specPath": record.spec_path,
                    "specText": record.spec_text,
                    "generation": record.generation,
                    "status": record.status.to_dict(),
                    "intents": record.intents,
                    "applied": record.applied,
                },
                indent=2,
            )
        )
        os.replace(tmp, path)

    def find(self, name: str) -> str:
        """The track for ``name`` or ``namespace/name``; UsageError when unknown or ambiguous."""
        if "/" in name:
            if self.path(name).exists():
                return name
            matches = []
        else:
            matches = [
                p.stem.replace(".", "/", 1)
                for p in sorted(self.tracks.glob("*.json"))
                if p.stem.split(".", 1)[1] == name
            ]
            if len(matches) == 1:
                return matches[0]
        known = [p.stem.replace(".", "/", 1) for p in sorted(self.tracks.glob("*.json"))]
        why = "is ambiguous" if matches else "is not known"
        damaged = sorted(p.name for p in self.tracks.glob("*.corrupt"))
        hint = f"; damaged state files moved aside: {', '.join(damaged)}" if damaged else ""
        raise UsageError(
            f"release track {name!r} {why} in {self.root} "
            f"(known: {', '.join(known) or 'none'}){hint}"
        )

    def update_intents(self, track: str, change: Callable[[dict[str, Any]], None]) -> None:
        with self.lock():
            record = self.load(track)
            if record is None:
                raise UsageError(f"no release has been applied for track {track!r}")
            change(record.intents)
            self.save(track, record)

    @contextmanager
    def lock(self) -> Iterator[None]:
        """A short lock guarding read-modify-write of track files."""
        self.root.mkdir(parents=True, exist_ok=True)
        with _open_lock(self.root / "files.lock"):
            yield


@contextmanager
def _open_lock(path: Path, blocking: bool = True) -> Iterator[IO[str]]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+") as fh:
        flags = fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB)
        fcntl.flock(fh, flags)
        try:
            yield fh
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


WAKE_SIGNAL = signal.SIGUSR1
_WAKEABLE = "wakes-on-SIGUSR1"


class ControllerBusy(EmbrelError):
    """Another controller process holds the state folder."""

    def __init__(self, holder: str) -> None:
        pid, _, mark = holder.partition(" ")
        super().__init__(f"another embrel controller (pid {pid or 'unknown'}) is acting")
        self.pid = pid
        self.wakeable = mark == _WAKEABLE and pid.isdigit()

    def wake(self) -> None:
        """Ask the holder to look at the state folder now rather than at its next poll.

        Only a holder that said it handles WAKE_SIGNAL (`embrel run --watch`) is sent it:
        the signal's default action would end any other process.
        """
        if self.wakeable and int(self.pid) != os.getpid():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(self.pid), WAKE_SIGNAL)


@contextmanager
def controller_lock(root: Path, wakeable: bool = False) -> Iterator[None]:
    """Exclusive right to act on this state folder; ControllerBusy when taken.

    ``wakeable``: the holder handles WAKE_SIGNAL, so a verb that leaves it a request can
    have it acted on at once.
    """
    root.mkdir(parents=True, exist_ok=True)
    path = root / "controller.lock"
    with path.open("a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            raise ControllerBusy(fh.read().strip()) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()} {_WAKEABLE}" if wakeable else str(os.getpid()))
        fh.flush()
        try:
            yield
        finally:
            fh.truncate(0)
            fcntl.flock(fh, fcntl.LOCK_UN)
