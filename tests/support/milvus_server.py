"""Start and stop the real Milvus standalone server (PyPI ``milvus==2.3.5``) for tests.

The PyPI package ships a Python wrapper, ``milvus-server --data DIR``, that unpacks the
real Milvus binary into ``DIR/bin`` (about 5 s, once per DIR) and runs
``milvus run standalone`` (embedded etcd, local storage, rocksmq). Its traps, and what
this module does about them:

* It does not forward SIGTERM, and after its child dies it spins forever without reaping
  it. So ``stop()`` sends SIGTERM to the ``milvus run standalone`` process itself (found
  in the wrapper's process group through /proc), SIGKILL after a grace period, then kills
  the wrapper's process group and waits until nothing listens on the server's ports.
* Before launching it probes every port with a plain ``bind()`` (no SO_REUSEADDR) and
  silently moves to the next free one. That probe fails for about 60 s after a server
  stopped (server-side sockets in TIME_WAIT), although Milvus itself could bind. So a
  quick restart usually serves on 19531 (and health/metrics on 9092, not settable).
  ``start()`` first waits until nothing *listens* on the Milvus ports, then reads the
  proxy port the wrapper really chose from the ``DIR/configs/milvus.yaml`` it writes:
  ``uri`` always points at the live server, ``metrics_port`` at its /healthz and
  /metrics. (The etcd port option only changes ``etcd.endpoints``; the embedded etcd
  always listens on 127.0.0.1:2379 and 2380, and Milvus talks to it in-process.)
* Restarting on the same DIR can take about 30 s longer: the old run's sessions stay in
  etcd until their lease (``common.session.ttl`` of the old run, 30 s) expires. Use a
  fresh DIR per start, or start every run with ``extra_config={"common.session.ttl": 10}``.
* Once a collection holds data, the server's graceful stop hangs (its nodes keep retrying
  the coordinators it stopped first), so ``stop()`` usually ends in SIGKILL after
  ``grace`` seconds; flushed and inserted data survive that.
* It binds 0.0.0.0 for everything except etcd: fine on a test machine, never expose it.

One server at a time per machine (the embedded etcd ports are fixed): ``start()`` takes
an exclusive ``flock`` on ``MACHINE_LOCK`` first, so a second test run or benchmark on the
same machine waits for the first to stop its server instead of failing on the ports.
Linux only.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Self

import numpy as np

HOST = "127.0.0.1"
DEFAULT_PROXY_PORT = 19530
DEFAULT_ETCD_PORT = 2379
ETCD_PEER_PORT = 2380  # embedded etcd: always 2379 (client) and 2380 (peer)
DEFAULT_METRICS_PORT = 9091
# Every port a default milvus 2.3.5 standalone listens on (index coord 22930 is configured
# but not opened in standalone mode; listed for safety).
DEFAULT_PORTS: tuple[int, ...] = (
    DEFAULT_PROXY_PORT,
    19529,  # proxy internal
    19531,  # query coord
    53100,  # root coord
    13333,  # data coord
    21121,  # index node
    21123,  # query node
    21124,  # data node
    22930,  # index coord
    DEFAULT_ETCD_PORT,
    ETCD_PEER_PORT,
    DEFAULT_METRICS_PORT,
)
_LOG_NAME = "milvus-server.log"
MACHINE_LOCK = Path(os.environ.get("EMBREL_MILVUS_SERVER_LOCK", "/tmp/embrel-milvus-server.lock"))
_TCP_LISTEN = "0A"


def milvus_server_script() -> Path:
    """The ``milvus-server`` console script of the running interpreter's environment."""
    return Path(sys.executable).parent / "milvus-server"


def milvus_server_available() -> bool:
    """True when PyPI ``milvus`` is installed next to this interpreter."""
    return milvus_server_script().is_file()


def _listening_ports() -> dict[int, set[int]]:
    """Local TCP ports in LISTEN state, each with the socket inodes listening on it."""
    ports: dict[int, set[int]] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10 or fields[3] != _TCP_LISTEN:
                continue
            port = int(fields[1].rsplit(":", 1)[1], 16)
            ports.setdefault(port, set()).add(int(fields[9]))
    return ports


def _proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, pgrp) of a process, or None when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    rest = raw[raw.rfind(")") + 2 :].split()
    return rest[0], int(rest[1]), int(rest[2])


def _alive(pid: int) -> bool:
    stat = _proc_stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _all_pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def _descendants(root: int) -> set[int]:
    """Processes in ``root``'s process group or below it in the pid tree (root excluded)."""
    stats = {pid: stat for pid in _all_pids() if (stat := _proc_stat(pid)) is not None}
    found = {pid for pid, stat in stats.items() if stat[2] == root}
    frontier = {root} | found
    while frontier:
        frontier = {pid for pid, stat in stats.items() if stat[1] in frontier} - found
        found |= frontier
    found.discard(root)
    return found


def _is_standalone(pid: int) -> bool:
    argv = _cmdline(pid)
    return len(argv) >= 3 and Path(argv[0]).name == "milvus" and argv[1:3] == ["run", "standalone"]


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def _tail(path: Path, lines: int) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


class MilvusServer:
    """One real Milvus standalone server, started with ``milvus-server --data DIR``.

    ``with MilvusServer(tmp_dir) as server: MilvusClient(server.uri)`` or call
    ``start``/``stop`` yourself. ``stop`` is idempotent and also runs at interpreter exit.
    """

    def __init__(
        self,
        data_dir: Path | None = None,
        *,
        proxy_port: int = DEFAULT_PROXY_PORT,
        start_timeout: float = 120.0,
        extra_config: Mapping[str, str | int | float | bool] | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.proxy_port = proxy_port
        self.extra_config = dict(extra_config or {})
        self.metrics_port = DEFAULT_METRICS_PORT
        self.start_timeout = start_timeout
        self.uri = f"http://{HOST}:{proxy_port}"
        self.log_path: Path | None = None
        self.standalone_pid: int | None = None
        self.listen_ports: frozenset[int] = frozenset()
        self.start_seconds: float | None = None
        self.stop_seconds: float | None = None
        self._wrapper: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._machine_lock: IO[bytes] | None = None
        # How the wrapper launched `milvus run standalone` (argv, environment, folder):
        # ``restart`` runs it again the same way, on the same ports.
        self._launch: tuple[list[str], dict[str, str], str] | None = None

    # -- context manager ------------------------------------------------------------------

    def __enter__(self) -> Self:
        if not self.running:
            if self.data_dir is None:
                raise RuntimeError("MilvusServer(data_dir=...) is needed to use it with 'with'")
            self.start(self.data_dir, self.start_timeout)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._wrapper is not None

    # -- start ----------------------------------------------------------------------------

    def start(self, data_dir: Path, timeout: float = 120) -> None:
        """Launch the server and return once a pymilvus client gets an answer from it."""
        if self.running:
            raise RuntimeError(f"Milvus server already started at {self.uri}")
        script = milvus_server_script()
        if not script.is_file():
            raise RuntimeError(f"{script} not found: pip install milvus==2.3.5 (see the Makefile)")
        self._claim_machine()
        began = time.monotonic()
        deadline = began + timeout
        data_dir = Path(data_dir).resolve()
        data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir = data_dir
        # A server still shutting down would clash on the fixed etcd ports; the others float.
        # 9091 is left out: the Prometheus Pushgateway's default, and harmless if it moves.
        ports = {*DEFAULT_PORTS, self.proxy_port} - {DEFAULT_METRICS_PORT}
        self._wait_ports_closed(ports, deadline, "before start")
        config = data_dir / "configs" / "milvus.yaml"
        config.unlink(missing_ok=True)  # the wrapper rewrites it; a stale one would mislead us
        self.log_path = data_dir / _LOG_NAME
        self._log = self.log_path.open("ab")
        argv = [
            sys.executable,
            str(script),
            "--data",
            str(data_dir),
            "--proxy-port",
            str(self.proxy_port),
        ]
        for key, value in self.extra_config.items():
            text = str(value).lower() if isinstance(value, bool) else str(value)
            argv += ["--extra-config", f"{key}={text}"]
        self._log.write(f"\n=== {time.strftime('%F %T')} {' '.join(argv)}\n".encode())
        self._log.flush()
        self._wrapper = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group: stop() can kill all of it
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        atexit.register(self.stop)
        try:
            self._wait_ready(config, deadline)
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - began

    def _wait_ready(self, config: Path, deadline: float) -> None:
        wrapper = self._wrapper
        assert wrapper is not None
        proxy_port: int | None = None
        last_error = "no answer yet"
        while time.monotonic() < deadline:
            if wrapper.poll() is not None:
                self._fail(f"milvus-server exited with status {wrapper.returncode}")
            if self.standalone_pid is None:
                self.standalone_pid = next(
                    (pid for pid in _descendants(wrapper.pid) if _is_standalone(pid)), None
                )
                if self.standalone_pid is not None:
                    self.metrics_port = self._metrics_port(self.standalone_pid)
                    self._launch = _launch_of(self.standalone_pid)
            elif not _alive(self.standalone_pid):
                self._fail(f"'milvus run standalone' (pid {self.standalone_pid}) died")
            if proxy_port is None and config.is_file():
                proxy_port = _config_proxy_port(config)
                if proxy_port is not None:
                    self.uri = f"http://{HOST}:{proxy_port}"
            if proxy_port is not None and self.standalone_pid is not None:
                error = _client_error(self.uri)
                if error is None:
                    self.listen_ports = frozenset(_ports_of(self.standalone_pid))
                    return
                last_error = error
            time.sleep(0.5)
        self._fail(f"no answer at {self.uri} in time (last error: {last_error})")

    @staticmethod
    def _metrics_port(pid: int) -> int:
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            return DEFAULT_METRICS_PORT
        for item in environ:
            if item.startswith(b"METRICS_PORT="):
                return int(item.split(b"=", 1)[1])
        return DEFAULT_METRICS_PORT

    def _fail(self, reason: str) -> None:
        raise RuntimeError(f"Milvus server did not start: {reason}\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the wrapper log and of the server's own stdout/stderr logs."""
        if self.data_dir is None:
            return ""
        parts = []
        for path in (
            self.data_dir / _LOG_NAME,
            self.data_dir / "logs" / "milvus-stderr.log",
            self.data_dir / "logs" / "milvus-stdout.log",
        ):
            text = _tail(path, lines)
            if text:
                parts.append(f"--- {path} (last {lines} lines) ---\n{text}")
        return "\n".join(parts)

    # -- stop -----------------------------------------------------------------------------

    def _claim_machine(self) -> None:
        """Hold the machine-wide server lock (kept across a restart by ``stop(release=False)``)."""
        if self._machine_lock is not None:
            return
        handle = MACHINE_LOCK.open("ab")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for another Milvus server on this machine to stop ({MACHINE_LOCK})")
            fcntl.flock(handle, fcntl.LOCK_EX)
        self._machine_lock = handle

    def _release_machine(self) -> None:
        if self._machine_lock is not None:
            self._machine_lock.close()  # closing the file releases the flock
            self._machine_lock = None

    def stop(self, grace: float = 5.0, port_timeout: float = 30.0, release: bool = True) -> None:
        """Stop the server (SIGTERM, SIGKILL after ``grace`` s) and wait for its ports to close.

        ``release=False`` keeps the machine lock, for a test that restarts the server.
        """
        if self._wrapper is not None:
            self._stop_server(self._wrapper, grace, port_timeout)
        if release:
            self._release_machine()

    def restart(self, timeout: float = 120.0) -> None:
        """Run ``milvus run standalone`` again as the wrapper last launched it, after
        ``kill``: the same ports and data, as a restarted pod. (Through the wrapper it
        would move to other ports while the old ones sit in TIME_WAIT.)"""
        if self.running:
            raise RuntimeError(f"Milvus server already running at {self.uri}")
        if self._launch is None or self.log_path is None:
            raise RuntimeError("restart() needs a server started (and killed) before")
        argv, env, cwd = self._launch
        self._claim_machine()
        began = time.monotonic()
        self._log = self.log_path.open("ab")
        self._log.write(f"\n=== {time.strftime('%F %T')} restart: {' '.join(argv)}\n".encode())
        self._log.flush()
        self._wrapper = process = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.standalone_pid = process.pid
        atexit.register(self.stop)
        deadline = began + timeout
        last_error = "no answer yet"
        try:
            while (error := _client_error(self.uri)) is not None:
                last_error = error
                if process.poll() is not None:
                    self._fail(f"'milvus run standalone' exited with status {process.returncode}")
                if time.monotonic() >= deadline:
                    self._fail(f"no answer at {self.uri} in time (last error: {last_error})")
                time.sleep(0.5)
        except BaseException:
            self.stop(release=False)
            raise
        self.listen_ports = frozenset(_ports_of(process.pid))
        self.start_seconds = time.monotonic() - began

    def kill(self) -> None:
        """SIGKILL ``milvus run standalone`` (a crash, a pod evicted), then clean up what
        is left of the wrapper; the machine lock stays held for ``start`` again."""
        if self.standalone_pid is not None:
            _signal(self.standalone_pid, signal.SIGKILL)
        self.stop(grace=0.0, release=False)

    def _stop_server(
        self, wrapper: subprocess.Popen[bytes], grace: float, port_timeout: float
    ) -> None:
        began = time.monotonic()
        atexit.unregister(self.stop)
        group = wrapper.pid
        servers = {pid for pid in _descendants(group) if _is_standalone(pid)}
        if self.standalone_pid is not None and _alive(self.standalone_pid):
            servers.add(self.standalone_pid)
        ports = set(self.listen_ports) or {self.proxy_port}
        for pid in servers:
            ports |= _ports_of(pid)
            _signal(pid, signal.SIGTERM)
        if not _wait(lambda: not any(_alive(pid) for pid in servers), grace):
            for pid in servers:
                _signal(pid, signal.SIGKILL)
            _wait(lambda: not any(_alive(pid) for pid in servers), 5.0)
        # The wrapper ignores its child's death; it dies on SIGTERM (no handler installed).
        others = _descendants(group)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, signal.SIGTERM)
        try:
            wrapper.wait(timeout=5.0)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(group, signal.SIGKILL)
            wrapper.wait(timeout=5.0)
        for pid in others:  # anything that left the group but is still below the wrapper
            if _alive(pid):
                _signal(pid, signal.SIGKILL)
        # The server is now an orphaned zombie until init reaps it; wait for that too.
        _wait(lambda: all(_proc_stat(pid) is None for pid in servers | others), 5.0)
        self._wrapper = None
        self.standalone_pid = None
        if self._log is not None:
            self._log.close()
            self._log = None
        self._wait_ports_closed(ports, time.monotonic() + port_timeout, "after stop")
        self.listen_ports = frozenset()
        self.stop_seconds = time.monotonic() - began

    @staticmethod
    def _wait_ports_closed(ports: set[int], deadline: float, when: str) -> None:
        """Wait until nothing LISTENs on ``ports`` (TIME_WAIT leftovers are fine for Milvus)."""
        while True:
            busy = sorted(ports & _listening_ports().keys())
            if not busy:
                return
            if time.monotonic() >= deadline:
                raise RuntimeError(
                    f"ports {busy} still have a listener {when}: is another Milvus running? "
                    "(pgrep -af 'milvus run standalone')"
                )
            time.sleep(0.2)


def _wait(done: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if done():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)


def _launch_of(pid: int) -> tuple[list[str], dict[str, str], str]:
    """A process' argv, environment and working folder, to run it again."""
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    env = dict(item.decode(errors="replace").split("=", 1) for item in raw if b"=" in item)
    return _cmdline(pid), env, os.readlink(f"/proc/{pid}/cwd")


def _ports_of(pid: int) -> set[int]:
    """TCP ports a process listens on (matched through its socket inodes)."""
    inodes: set[int] = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    try:
        fds = list(fd_dir.iterdir())
    except OSError:
        return set()
    for fd in fds:
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(int(target[8:-1]))
    return {port for port, owners in _listening_ports().items() if owners & inodes}


def _config_proxy_port(config: Path) -> int | None:
    """The ``proxy.port`` the wrapper wrote into DIR/configs/milvus.yaml."""
    in_proxy = False
    for line in config.read_text().splitlines():
        if re.match(r"^\S", line):
            in_proxy = line.startswith("proxy:")
        elif in_proxy and (match := re.match(r"^  port: *(\d+)", line)):
            return int(match.group(1))
    return None


def _client_error(uri: str) -> str | None:
    """None when ``MilvusClient(uri).list_collections()`` works, else why it did not."""
    from pymilvus import MilvusClient

    client = None
    try:
        client = MilvusClient(uri=uri, timeout=3.0)
        client.list_collections(timeout=3.0)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()
    return None


def drop_alias_collections(uri: str, alias: str) -> None:
    """Drop every ``<alias>__*`` collection, moving its aliases off first: tests and
    benchmarks share one server, and Milvus 2.5+ refuses to drop an aliased collection."""
    from pymilvus import MilvusClient

    client = MilvusClient(uri=uri)
    try:
        for name in client.list_collections():
            if name.startswith(f"{alias}__"):
                for other in client.list_aliases(name).get("aliases", []):
                    client.drop_alias(other)
                client.drop_collection(name)
    finally:
        client.close()


def stored_ids(uri: str, collection: str) -> tuple[int, np.ndarray]:
    """count(*) (Strong: counts a duplicated primary key twice) and every id read back."""
    from pymilvus import MilvusClient

    client = MilvusClient(uri=uri, timeout=30)
    try:
        rows = client.query(
            collection, output_fields=["count(*)"], consistency_level="Strong", timeout=30
        )
        count = int(rows[0]["count(*)"])
        it = client.query_iterator(
            collection, batch_size=1000, output_fields=["id"], consistency_level="Strong"
        )
        ids: list[int] = []
        while page := it.next():
            ids.extend(int(r["id"]) for r in page)
        it.close()
        return count, np.asarray(sorted(ids), dtype=np.int64)
    finally:
        client.close()
