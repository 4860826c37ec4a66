"""The local driver against hostile files: the watcher survives them, a damaged state
file is moved aside instead of breaking every command, and unknown tracks are usage
errors. None of these needs Milvus: each is refused before a connection is made."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.config import ControllerConfig, ReconcileOptions
from controller.drivers.local import LocalController, StateStore, read_spec
from controller.drivers.store import WAKE_SIGNAL, ControllerBusy, controller_lock
from controller.drivers.watch import watch_folder
from controller.errors import SpecError, UsageError
from controller.ports import Advance


class Silent:
    def event(self, reason: str, message: str, warning: bool = False) -> None:
        pass

    @contextlib.contextmanager
    def progress(self, stage: str, total: int | None) -> Iterator[Advance]:
        yield lambda n: None


BAD_FILES = {
    "not-utf8.yaml": b'x: "\xff"\n',
    "utf16.yaml": "kind: EmbeddingRelease\n".encode("utf-16"),
    "deep.yaml": b"[" * 50_000 + b"]" * 50_000,
    "nul-namespace.yaml": (
        b"apiVersion: embrel.dev/v1alpha1\nkind: EmbeddingRelease\n"
        b'metadata: {name: a, namespace: "a\\0b"}\nspec: {}\n'
    ),
    "bomb.yaml": b"a: &a [1,1,1,1,1,1,1,1,1,1]\n"
    + b"".join(
        f"{n}: &{n} [{','.join([f'*{p}'] * 10)}]\n".encode()
        for p, n in zip("abcde", "bcdef", strict=True)
    )
    + b"kind: *f\n",
}


def test_the_watcher_reports_each_bad_file_and_keeps_going(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "releases"
    folder.mkdir()
    for name, raw in BAD_FILES.items():
        (folder / name).write_bytes(raw)
    controller = LocalController(ControllerConfig(state_dir=tmp_path / "state"), Silent())
    options = ReconcileOptions(watch_interval_seconds=0.01)
    watch_folder(controller, folder, options, once=True)
    out = capsys.readouterr().out
    for name in BAD_FILES:
        assert out.count(f"{name}: error: invalid release spec") == 1, out
    assert "not UTF-8 text" in out and "UTF-16 text" in out and "nests deeper" in out
    assert "expands to more than" in out and "metadata.namespace" in out


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_read_spec_turns_every_bad_file_into_a_spec_error(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(BAD_FILES[name])
    with pytest.raises(SpecError):
        read_spec(path)


def test_a_directory_or_missing_file_is_a_spec_error(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="cannot read"):
        read_spec(tmp_path)
    with pytest.raises(SpecError, match="file not found"):
        read_spec(tmp_path / "absent.yaml")


@pytest.mark.parametrize("content", [b"{not json", b'{"specPath": 1}', b"[]", b"\xff\xfe"])
def test_a_damaged_state_file_is_moved_aside(tmp_path: Path, content: bytes) -> None:
    store = StateStore(tmp_path)
    store.tracks.mkdir(parents=True)
    store.path("shop/products").write_bytes(content)
    assert store.load("shop/products") is None
    assert not store.path("shop/products").exists()
    assert (store.tracks / "shop.products.json.corrupt").read_bytes() == content
    with pytest.raises(UsageError, match=r"damaged state files moved aside: shop\.products"):
        store.find("products")


def test_unknown_tracks_are_usage_errors(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    with pytest.raises(UsageError, match="'nope' is not known"):
        store.find("nope")
    with pytest.raises(UsageError, match="no release has been applied"):
        store.update_intents("shop/nope", lambda intents: None)


def _holder(tmp_path: Path, wakeable: bool) -> subprocess.Popen[bytes]:
    """A process holding the state folder's lock, as `embrel run --watch` or a verb does."""
    code = (
        "import sys, time; from pathlib import Path; "
        "from controller.drivers.store import controller_lock\n"
        f"with controller_lock(Path(sys.argv[1]), wakeable={wakeable}):\n"
        "    print('held', flush=True); time.sleep(60)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline() == b"held\n"
    return proc


@pytest.mark.parametrize("wakeable", [True, False])
def test_only_a_holder_that_handles_the_wake_signal_is_sent_it(
    tmp_path: Path, wakeable: bool
) -> None:
    holder = _holder(tmp_path, wakeable)
    try:
        with pytest.raises(ControllerBusy) as busy, controller_lock(tmp_path):
            pass
        assert busy.value.pid == str(holder.pid) and busy.value.wakeable is wakeable
        busy.value.wake()
        # This holder installed no handler, so the signal's default action ends it: proof
        # that it was sent, and the reason it must never reach a holder that is not wakeable.
        try:
            code = holder.wait(timeout=5)
        except subprocess.TimeoutExpired:
            code = None
        assert code == (-WAKE_SIGNAL if wakeable else None)
    finally:
        holder.kill()
        holder.wait()
