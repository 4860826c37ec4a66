"""Milvus Lite paths that cannot hold a database are the spec's to fix (exit 2), not
"Milvus is unavailable" retried for a minute; a folder another process holds is."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from controller.errors import MilvusUnavailable, SpecError
from controller.milvus import LITE_LOCK_FILE, MilvusGateway, RetryPolicy
from controller.spec import MilvusRef

QUICK = RetryPolicy(attempts=1, max_wait=0.1, timeout=10)


@pytest.mark.parametrize("uri", ["/", "file://", "data/milvus", "./x.sqlite", "file:///tmp/"])
def test_a_lite_path_must_end_in_db(uri: str) -> None:
    with pytest.raises(ValueError, match=r"nor a Milvus Lite database path ending in \.db"):
        MilvusRef(uri=uri)


def test_server_urls_and_db_paths_pass() -> None:
    for uri in ("http://milvus:19530", "https://x:443", "./data/milvus.db", "file:///tmp/m.db"):
        MilvusRef(uri=uri)


def test_a_file_where_the_database_folder_should_be(tmp_path: Path) -> None:
    path = tmp_path / "file.db"
    path.write_text("hello")
    with pytest.raises(SpecError, match="is a file, not a Milvus Lite database folder") as info:
        MilvusGateway(str(path), policy=QUICK)
    assert info.value.problems[0][0] == "spec.milvus.uri"


def test_a_path_where_no_database_can_be_created() -> None:
    with pytest.raises(SpecError, match=r"cannot create a Milvus Lite database at /proc/x\.db"):
        MilvusGateway("/proc/x.db", policy=QUICK)


def test_a_damaged_database_folder(tmp_path: Path) -> None:
    path = tmp_path / "bad.db"
    path.mkdir()
    (path / "databases").write_text("junk")
    (path / "collections").write_text("junk")
    with pytest.raises(SpecError, match="is not a Milvus Lite database, or it is damaged"):
        MilvusGateway(str(path), policy=QUICK)


def test_a_folder_held_by_another_process_is_worth_waiting_for(tmp_path: Path) -> None:
    path = tmp_path / "held.db"
    path.mkdir()
    (path / LITE_LOCK_FILE).touch()
    holder = subprocess.Popen(  # holds the lock as a second Milvus Lite process would
        [sys.executable, "-c", HOLD_LOCK, str(path / LITE_LOCK_FILE)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(MilvusUnavailable, match="another process holds it"):
            MilvusGateway(str(path), policy=QUICK)
    finally:
        holder.kill()
        holder.wait()


HOLD_LOCK = """
import fcntl, sys, time
fh = open(sys.argv[1], "a")
fcntl.flock(fh, fcntl.LOCK_EX)
print("locked", flush=True)
time.sleep(60)
"""
