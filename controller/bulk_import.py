"""Bulk import: how a files build fills its candidate without inserting row by row.

``source.files.load`` chooses: ``insert`` (batches through the proxy), ``bulkImport``
(stage Parquet files where Milvus reads them, one import job per file), or ``auto``
(import sources of at least ``BULK_IMPORT_MIN_ROWS`` rows where the backend can, insert
otherwise). Written against the ports, like ``controller.incremental``:

1. ``check_load`` runs before anything is built: ``bulkImport`` on a backend without
   import (Milvus Lite) or without ``milvus.importStaging`` is a spec error.
2. ``BulkImport.load`` re-reads the checked source into staged files (memory bounded by
   a batch), submits the jobs, follows them (progress bar, telemetry), and removes the
   staged files however it ends.
3. Any failed job, or fewer rows imported than staged, raises ``BuildIncomplete``: the
   candidate never gets ``sourceRows``, so it is discarded and rebuilt, never promoted
   (``assert_promotable``). The engine's flushed row count then checks the rest.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass

from controller.errors import BuildIncomplete, SpecError, WaitTimedOut
from controller.ports import Advance, ImportJob, ImportStagingPort, MilvusPort
from controller.sources.base import VectorBatch
from controller.spec import BULK_IMPORT_MIN_ROWS, EmbeddingRelease, FieldSpec

Progress = Callable[[str, int | None], AbstractContextManager[Advance]]


def check_load(
    release: EmbeddingRelease, milvus: MilvusPort, staging: ImportStagingPort | None
) -> None:
    """Refuse ``load: bulkImport`` that cannot run, before anything is written."""
    files = release.spec.source.files
    if files is None or files.load != "bulkImport":
        return
    if not milvus.supports_bulk_import():
        why = f"Milvus Lite ({release.spec.milvus.uri}) has no bulk import; use insert or auto"
    elif staging is None:
        why = (
            "this controller has no milvus.importStaging in its config (where to stage "
            "files Milvus can read); set it, or use insert or auto"
        )
    else:
        return
    raise SpecError(release.track, [("spec.source.files.load", f"bulkImport: {why}")])


def wants_import(
    release: EmbeddingRelease, milvus: MilvusPort, staging: ImportStagingPort | None, rows: int
) -> bool:
    """Whether this files build imports (after ``check_load`` let it through)."""
    files = release.spec.source.files
    if files is None or files.load == "insert" or staging is None:
        return False
    if release.spec.collection.vectors:  # staged files carry the one vector column
        return False
    if files.load == "bulkImport":
        return True
    return rows >= BULK_IMPORT_MIN_ROWS and milvus.supports_bulk_import()


@dataclass
class BulkImport:
    """Stage, import, follow, clean up."""

    milvus: MilvusPort
    staging: ImportStagingPort
    progress: Progress
    report: Callable[[float, int], None]  # telemetry: fraction done, jobs newly failed
    say: Callable[[str], None]  # an event a person reads (status message)
    timeout: float
    poll: float
    sleep: Callable[[float], None] = time.sleep

    def load(
        self, target: str, fields: Sequence[FieldSpec], batches: Iterable[VectorBatch], rows: int
    ) -> int:
        """Import ``batches`` (``rows`` of them) into ``target``; the rows staged."""
        try:
            staged = 0
            with self.progress(f"staging {target}", rows) as advance:

                def counted() -> Iterator[VectorBatch]:
                    nonlocal staged
                    for batch in batches:
                        yield batch
                        staged += len(batch)
                        advance(len(batch))

                files = self.staging.stage(target, fields, counted())
            jobs = self.milvus.bulk_import(target, files)
            self.say(f"importing {staged} rows into {target}: {len(jobs)} import jobs submitted")
            imported = self._follow(target, jobs, staged)
        finally:
            self.staging.remove(target)
        if imported != staged:
            raise BuildIncomplete(
                f"bulk import into {target} reported {imported} rows, {staged} were staged; "
                "the incomplete candidate will be rebuilt"
            )
        return staged

    def _follow(self, target: str, jobs: Sequence[int], rows: int) -> int:
        """Poll every job until all ended; BuildIncomplete when any failed."""
        deadline = time.monotonic() + self.timeout
        with self.progress(f"importing {target}", rows) as advance:
            shown, said = 0, 0
            while True:
                states = [self.milvus.import_job(j) for j in jobs]
                done = sum(s.percent for s in states) / (100 * len(states))
                failed = [s for s in states if s.state == "failed"]
                completed = sum(s.state == "completed" for s in states)
                self.report(done, len(failed))
                if completed > said:  # one line per finished job, not per poll
                    said = completed
                    self.say(f"importing into {target}: {done:.0%}, {completed}/{len(jobs)} jobs")
                advance(int(done * rows) - shown)
                shown = int(done * rows)
                # A failed job ends the import only once no job of it can still write:
                # on 2.3.5 a job left pending while its collection is dropped (the
                # rebuild does) stayed Persisted and blocked every later import.
                if failed and all(s.state in ("completed", "failed") for s in states):
                    raise BuildIncomplete(_failure(target, failed, len(states)))
                if all(s.state == "completed" for s in states):
                    return sum(s.rows for s in states)
                if time.monotonic() > deadline:
                    raise WaitTimedOut(
                        f"bulk import into {target} not finished after {self.timeout:.0f}s "
                        f"({done:.0%}); the incomplete candidate will be rebuilt"
                    )
                self.sleep(self.poll)


def _failure(target: str, failed: Sequence[ImportJob], jobs: int) -> str:
    first = failed[0]
    return (
        f"bulk import into {target} failed: {len(failed)} of {jobs} jobs (job {first.job_id}: "
        f"{first.reason or 'no reason given'}); the incomplete candidate will be rebuilt. "
        "If Milvus cannot find the files, check milvus.importStaging.remotePrefix"
    )
