"""The embedded driver: release YAML files, a state folder, no cluster.

The state folder keeps, per track, what the engine cannot read from Milvus
(controller.drivers.store); Milvus itself holds everything needed to resume a release
(see controller.engine).

One controller acts on a state folder at a time: ``controller.lock`` (an exclusive
``flock``) is held by `embrel run --watch` for its lifetime and by the other verbs
while they act. A verb that finds the lock taken leaves its request in the track's
file for the running controller and waits for it to be applied. Milvus Lite locks its
data folder to one process anyway, so this is also what makes the verbs work while a
watcher runs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from controller.config import ControllerConfig, credentials_from_env
from controller.drivers import wiring
from controller.drivers.folders import ReferenceFolder as ReferenceFolder  # re-exported
from controller.drivers.folders import ReportFolder as ReportFolder  # re-exported
from controller.drivers.store import ControllerBusy as ControllerBusy  # re-exported
from controller.drivers.store import StateStore as StateStore  # re-exported
from controller.drivers.store import TrackRecord as TrackRecord  # re-exported
from controller.drivers.store import controller_lock as controller_lock  # re-exported
from controller.engine import Engine, Intents, ReconcileResult, utc_now
from controller.errors import SpecError, TemporaryError, UsageError
from controller.metrics import error_reason
from controller.ports import EmbedderFactory, MilvusPort, Reporter, Telemetry, Unfenced
from controller.spec import EmbeddingRelease, parse_release
from controller.status import ReleaseStatus
from controller.yaml_input import decode

log = logging.getLogger(__name__)


class LocalController:
    """Reconciles releases from files against Milvus, persisting status in the state folder."""

    def __init__(
        self,
        config: ControllerConfig,
        reporter: Reporter,
        telemetry: Telemetry | None = None,  # Prometheus metrics when `--metrics-port` is given
        embedders: EmbedderFactory | None = None,  # tests and benchmarks count what is embedded
    ) -> None:
        self.config = config
        self.reporter = reporter
        self.engines = wiring.EngineFactory(config, telemetry, embedders)
        self.telemetry: Telemetry = self.engines.telemetry
        self.store = StateStore(config.state_dir)
        self._warned_secret_refs: set[str] = set()

    def close(self) -> None:
        self.engines.close()

    def gateway(self, release: EmbeddingRelease, base_dir: Path) -> MilvusPort:
        """Milvus for ``release``, with credentials from the environment."""
        ref = release.spec.milvus
        if ref.secret_ref and ref.secret_ref not in self._warned_secret_refs:
            self._warned_secret_refs.add(ref.secret_ref)
            self.reporter.event(
                "CredentialsFromEnvironment",
                f"milvus.secretRef {ref.secret_ref!r} is read by the Kubernetes driver only; "
                "the local driver takes credentials from EMBREL_MILVUS_* variables",
                warning=True,
            )
        return self.engines.gateway(ref, base_dir, credentials_from_env())

    def engine(self, release: EmbeddingRelease, base_dir: Path) -> Engine:
        # The state folder's flock is held while a pass runs: this process may always act.
        milvus = self.gateway(release, base_dir)
        return self.engines.engine(milvus, base_dir, self.reporter, fence=Unfenced())

    def record_spec(self, path: Path, text: str, release: EmbeddingRelease) -> TrackRecord:
        """Remember the applied spec; a changed spec is a new generation."""
        with self.store.lock():
            record = self.store.load(release.track)
            if record is None:
                record = TrackRecord(str(path.resolve()), text, ReleaseStatus(), {}, 1)
            elif record.spec_text != text or record.spec_path != str(path.resolve()):
                record.spec_path, record.spec_text = str(path.resolve()), text
                record.generation += 1
            self.store.save(release.track, record)
            return record

    def apply_file(
        self, path: Path, text: str, release: EmbeddingRelease, hold: bool = False
    ) -> ReconcileResult:
        """`embrel apply` (record the spec, reconcile the track) or, with ``hold``,
        `embrel validate`: build and judge the candidate, recording nothing."""
        if hold:
            return self.validate(path, release)
        self.record_spec(path, text, release)
        return self.reconcile_track(release.track)

    def validate(self, path: Path, release: EmbeddingRelease) -> ReconcileResult:
        """Build (or reuse) and validate ``release``'s candidate; never promote.

        The track's file is left as it was: its spec, status and requests stay those of
        the last apply, whatever version is validated.
        """
        record = self.store.load(release.track)
        previous = record.status if record is not None else ReleaseStatus()
        generation = record.generation if record is not None else 0

        def one_pass() -> ReconcileResult:
            try:
                engine = self.engine(release, path.resolve().parent)
                return engine.reconcile(release, Intents(hold=True), previous, generation)
            except TemporaryError as exc:  # could not even connect
                return wiring.failed_pass(previous, exc, generation, utc_now())

        return self._retrying(one_pass)

    def reconcile_track(self, track: str, wait: bool = True, hold: bool = False) -> ReconcileResult:
        """Reconcile a known track until it settles (retrying temporary errors when ``wait``)."""
        return self._retrying(lambda: self._reconcile_once(track, hold), wait)

    def _reconcile_once(self, track: str, hold: bool) -> ReconcileResult:
        record = self.store.load(track)
        if record is None:
            raise UsageError(f"no release has been applied for track {track!r}")
        release = record.release()
        base_dir = Path(record.spec_path).parent
        try:
            result = self.engine(release, base_dir).reconcile(
                release,
                lambda: replace(self._pending(track), hold=hold),
                record.status,
                record.generation,
            )
        except TemporaryError as exc:  # could not even connect
            result = wiring.failed_pass(record.status, exc, record.generation, utc_now())
        self._save_result(track, result)
        self._observe(release, result)
        return result

    def _retrying(
        self, one_pass: Callable[[], ReconcileResult], wait: bool = True
    ) -> ReconcileResult:
        attempts = self.config.reconcile.max_attempts
        for attempt in range(1, attempts + 1):
            result = one_pass()
            if result.done or not wait or attempt == attempts:
                return result
            delay = min(result.requeue_after or 1.0, 30.0)
            self.reporter.event(
                "Retrying",
                f"{result.error}; retry {attempt}/{attempts - 1} in {delay:.0f}s",
                warning=True,
            )
            time.sleep(delay)
        raise AssertionError("unreachable")

    def _observe(self, release: EmbeddingRelease, result: ReconcileResult) -> None:
        self.telemetry.observe_status(release, result.status)
        if result.error is not None:
            self.telemetry.reconcile_error(release.track, error_reason(result.error))

    def _pending(self, track: str) -> Intents:
        """Requests as the track file holds them now (another process may add one)."""
        with self.store.lock():
            record = self.store.load(track)
        return _intents(record.intents if record else {})

    def _save_result(self, track: str, result: ReconcileResult) -> None:
        with self.store.lock():
            record = self.store.load(track)
            assert record is not None
            # A refused request changes nothing: the status stays as it was.
            record.status = result.kept if result.refused and result.kept else result.status
            record.applied = sorted(result.applied)
            for name in result.applied:
                record.intents.pop(name, None)
            if result.done:
                # Requests are for now: a stale `promote` must not promote a later release.
                record.intents.clear()
            self.store.save(track, record)


def _intents(raw: dict[str, Any]) -> Intents:
    rollback = raw.get("rollback")
    return Intents(
        promote=bool(raw.get("promote")),
        abort=bool(raw.get("abort")),
        rollback=rollback is not None,
        rollback_to=(rollback or {}).get("to") if isinstance(rollback, dict) else None,
    )


def read_spec(path: Path) -> tuple[str, EmbeddingRelease]:
    """A release file's text and its release; SpecError for anything unreadable."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise SpecError(str(path), [("", "file not found")]) from None
    except OSError as exc:
        raise SpecError(str(path), [("", f"cannot read: {exc.strerror}")]) from None
    release = parse_release(raw, str(path))  # checks the encoding and size first
    return decode(raw), release
