"""`embrel` run inside the test process, for scenarios on the in-memory fake.

``run_cli`` calls ``controller.cli.main`` with the working folder changed and stdout and
stderr captured into a ``CompletedProcess``, so a scenario's assertions read the same
as for the subprocess. ``Watcher`` runs `embrel run --watch` in a thread behind a
``Popen``-like face; its SIGTERM is a KeyboardInterrupt raised in that thread, which
is what the CLI's SIGTERM handler raises in a real process.

Output is captured per thread (a watcher thread and the test's own calls run side
by side), through one router installed on ``sys.stdout``/``sys.stderr`` meanwhile.
"""

from __future__ import annotations

import ctypes
import io
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO, Union

from prometheus_client import REGISTRY

import controller.cli

Sink = Union[TextIO, io.TextIOBase]  # noqa: UP007 (an alias used before _Pipe exists)


class _Router(io.TextIOBase):
    """Writes of a thread that captures go to its buffer; others to the stream it replaced."""

    def __init__(self, fallback: Sink, buffers: dict[int, Sink]) -> None:
        self.fallback, self.buffers = fallback, buffers

    def write(self, text: str) -> int:
        return self.buffers.get(threading.get_ident(), self.fallback).write(text)

    def flush(self) -> None:
        self.buffers.get(threading.get_ident(), self.fallback).flush()

    def isatty(self) -> bool:
        return False  # tqdm draws no progress bars


_lock = threading.Lock()
_users = 0
_out: dict[int, Sink] = {}
_err: dict[int, Sink] = {}
_signal = signal.signal


def _thread_safe_signal(sig: int, handler: Any) -> Any:
    """signal.signal from another thread raises; the CLI's watch installs a SIGTERM
    handler, which a watcher thread does without (it is stopped by ``Watcher``)."""
    if threading.current_thread() is not threading.main_thread():
        return signal.getsignal(sig)
    return _signal(sig, handler)


def reroute() -> None:
    """Put the router (back) on sys.stdout and sys.stderr while anything captures: pytest
    replaces them between a test's phases, under a watcher started in a fixture."""
    with _lock:
        if _users > 0:
            if not isinstance(sys.stdout, _Router):
                sys.stdout = _Router(sys.stdout, _out)
            if not isinstance(sys.stderr, _Router):
                sys.stderr = _Router(sys.stderr, _err)


@contextmanager
def _captured(out: Sink, err: Sink) -> Iterator[None]:
    global _users
    me = threading.get_ident()
    with _lock:
        if _users == 0:
            signal.signal = _thread_safe_signal  # type: ignore[assignment]
        _users += 1
        _out[me], _err[me] = out, err
    reroute()
    try:
        yield
    finally:
        with _lock:
            del _out[me], _err[me]
            _users -= 1
            if _users == 0:
                if isinstance(sys.stdout, _Router):
                    sys.stdout = sys.stdout.fallback
                if isinstance(sys.stderr, _Router):
                    sys.stderr = sys.stderr.fallback
                signal.signal = _signal


@contextmanager
def _cli_state(cwd: Path | None) -> Iterator[None]:
    """What `embrel` changes in its process, put back: logging, SIGTERM, the folder."""
    logger = logging.getLogger("controller")
    saved = logger.handlers[:], logger.level, logger.propagate
    main = threading.current_thread() is threading.main_thread()
    sigterm = signal.getsignal(signal.SIGTERM) if main else None
    before = os.getcwd()
    if cwd is not None and main:  # the process's folder: only the test's own thread moves it
        os.chdir(cwd)
    try:
        yield
    finally:
        os.chdir(before) if cwd is not None and main else None
        logger.handlers[:], logger.level, logger.propagate = saved[0], saved[1], saved[2]
        if main:
            signal.signal(signal.SIGTERM, sigterm)


@contextmanager
def _own_metrics(args: Sequence[str]) -> Iterator[None]:
    """`--metrics-port` registers embrel's metrics in prometheus_client's default registry,
    once per process; an in-process run takes them out again so the next can register."""
    if "--metrics-port" not in args:
        yield
        return
    before = set(REGISTRY._collector_to_names)  # no public listing of the collectors
    try:
        yield
    finally:
        for collector in set(REGISTRY._collector_to_names) - before:
            REGISTRY.unregister(collector)


def _main(args: Sequence[str]) -> int:
    try:
        with _own_metrics(args):
            return controller.cli.main(list(args))
    except SystemExit as exc:  # argparse: bad arguments exit 2 after printing usage
        return exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1


def run_cli(
    args: Sequence[str], cwd: Path | None = None, out: Sink | None = None
) -> subprocess.CompletedProcess[str]:
    """``embrel ARGS`` in this process, as ``subprocess.run(..., capture_output=True)``;
    with ``out``, stdout and stderr both go there (``stderr=subprocess.STDOUT``)."""
    stdout = out if out is not None else io.StringIO()
    stderr = stdout if out is not None else io.StringIO()
    with _captured(stdout, stderr), _cli_state(cwd):
        code = _main(args)
    text = stdout.getvalue() if isinstance(stdout, io.StringIO) else ""
    errors = stderr.getvalue() if out is None and isinstance(stderr, io.StringIO) else ""
    return subprocess.CompletedProcess(["embrel", *args], code, text, errors)


class _Pipe(io.TextIOBase):
    """Text written by one thread, read line by line by another, like a process's stdout."""

    def __init__(self) -> None:
        self._text, self._read, self._closed = "", 0, False
        self._changed = threading.Condition()

    def write(self, text: str) -> int:
        with self._changed:
            self._text += text
            self._changed.notify_all()
        return len(text)

    def close_writer(self) -> None:
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    def readline(self, size: int | None = -1) -> str:  # type: ignore[override]
        with self._changed:
            self._changed.wait_for(lambda: "\n" in self._text[self._read :] or self._closed)
            end = self._text.find("\n", self._read)
            end = len(self._text) if end < 0 else end + 1
            line, self._read = self._text[self._read : end], end
            return line

    def read(self, size: int | None = -1) -> str:
        with self._changed:
            self._changed.wait_for(lambda: self._closed)
            rest, self._read = self._text[self._read :], len(self._text)
            return rest


class Watcher:
    """`embrel ARGS` (a `run --watch`) in a thread, with the parts of Popen tests use."""

    def __init__(self, args: Sequence[str]) -> None:
        self.args = list(args)
        self.returncode: int | None = None
        self.stdout = _Pipe()
        self._thread = threading.Thread(target=self._run, name="embrel-watch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.returncode = run_cli(self.args, out=self.stdout).returncode
        finally:
            self.stdout.close_writer()

    def poll(self) -> int | None:
        return self.returncode

    def send_signal(self, sig: int) -> None:
        """SIGTERM and SIGINT: the KeyboardInterrupt the CLI's handler raises."""
        if sig not in (signal.SIGTERM, signal.SIGINT):
            raise ValueError(f"an in-process watcher takes SIGTERM or SIGINT, not {sig}")
        ident = self._thread.ident
        if ident is not None and self._thread.is_alive():
            ctypes.pythonapi.PyThreadState_SetAsyncExc(
                ctypes.c_ulong(ident), ctypes.py_object(KeyboardInterrupt)
            )

    def wait(self, timeout: float | None = None) -> int:
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise subprocess.TimeoutExpired(self.args, timeout or 0)
        assert self.returncode is not None
        return self.returncode

    def communicate(self, timeout: float | None = None) -> tuple[str, None]:
        self.wait(timeout)
        return self.stdout.read(), None
