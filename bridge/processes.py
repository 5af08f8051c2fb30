"""``jetbridge run --processes N``: N dispatcher processes on one machine, each with its own pull.

One dispatcher is one Python thread, so it uses at most one core. On a machine with more cores, N processes share
the work the way N dispatchers on N machines do: each is an ordinary ``jetbridge run`` with its own connection and
its own pull from every queue's durable consumer, and the server hands each pulled item to exactly one of them. The
queue's ``max_concurrent`` (the consumer's ack-pending limit) stays the limit for all of them together; each process
also keeps its own ``--concurrency``. Nothing else is shared: every process has its own dispatcher id
(``<dispatcher_id>-<k>``), so its attempts, heartbeat subjects and adopt service are its own, and the one-live-attempt
rules between dispatchers (bridge/takeover.py) apply between them unchanged.

This process only supervises: it starts the children (and the data directory's embedded server when there is no
``--server``), waits until every child serves, restarts a child that dies, and on SIGTERM or SIGINT sends each child
one SIGTERM (each drains) and waits for them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import structlog

from .embedded import NatsServer, running_server, start_local_server, stop_local_server
from .logs import configure_logging
from .settings import Settings

log = structlog.get_logger("jetbridge.processes")

#: the most processes one command starts (beyond a core each they only contend)
MAX_PROCESSES = 256
READY_TIMEOUT = 60.0
#: wait before a dead child is started again
RESTART_DELAY = 1.0


def _term_with_parent() -> None:
    """In the child, before exec: SIGTERM (a drain) when the supervisor dies, even by SIGKILL (Linux only)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


@dataclass
class _Child:
    k: int
    dispatcher_id: str
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    #: the pipe the child writes its ready line to
    ready_fd: int = -1


def child_argv(argv: list[str]) -> list[str]:
    """The command line without ``--processes`` (a child is a plain ``jetbridge run``) or ``--ready-fd``."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in ("--processes", "--ready-fd"):
            skip = True
            continue
        if arg.startswith(("--processes=", "--ready-fd=")):
            continue
        out.append(arg)
    return out


def metrics_for(listen: str, k: int) -> str:
    """Child ``k``'s /metrics address: the port plus ``k`` (port 0 stays 0: any free port)."""
    if not listen:
        return ""
    host, _, port = listen.rpartition(":")
    return f"{host}:{int(port) + k if int(port) else 0}"


class Supervisor:
    """Starts ``n`` dispatcher processes and keeps them running until SIGTERM or SIGINT."""

    def __init__(self, settings: Settings, argv: list[str], n: int) -> None:
        self.settings = settings
        self.argv = child_argv(argv)
        self.children = [_Child(k, f"{settings.dispatcher_id}-{k}") for k in range(n)]
        self._server: NatsServer | None = None
        self._stopping = False

    def _on_signal(self, signum: int, frame: object) -> None:
        self._stopping = True

    def run(self, on_ready: Callable[[str], None] | None = None) -> int:
        """Until SIGTERM or SIGINT; 0, or 1 when a process did not start. ``on_ready(url)`` once all serve."""
        configure_logging(self.settings.log_format, self.settings.log_level)
        for signum in (signal.SIGTERM, signal.SIGINT):  # handlers, not a blocked mask: children inherit a mask
            signal.signal(signum, self._on_signal)
        data_dir = Path(self.settings.data_dir)
        if not self.settings.server and not self.settings.context and running_server(data_dir) is None:
            self._server = start_local_server(data_dir)
        try:
            for child in self.children:
                self._start(child)
            url = self._wait_ready()
            if url is None:
                return 1
            log.info("processes_started", processes=len(self.children),
                     dispatchers=[c.dispatcher_id for c in self.children])
            if on_ready is not None:
                on_ready(url)
            self._supervise()
            return 0
        finally:
            self._stop_all()
            if self._server is not None:
                stop_local_server(data_dir, self._server)

    def _start(self, child: _Child) -> None:
        read_fd, write_fd = os.pipe()
        env = {**os.environ, "JETBRIDGE_DISPATCHER_ID": child.dispatcher_id}
        argv = [sys.executable, "-m", "bridge", *self.argv, "--ready-fd", str(write_fd)]
        if self.settings.metrics_listen:
            env["JETBRIDGE_METRICS_LISTEN"] = metrics_for(self.settings.metrics_listen, child.k)
        child.proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, pass_fds=(write_fd,),
                                      start_new_session=True,  # a terminal's Ctrl-C reaches only this process
                                      preexec_fn=_term_with_parent)
        child.started = time.monotonic()
        os.close(write_fd)
        child.ready_fd = read_fd

    def _wait_ready(self) -> str | None:
        url = ""
        for child in self.children:
            with os.fdopen(child.ready_fd, "rb") as pipe:
                line = pipe.readline().decode().strip()  # EOF when the child exits without being ready
            if not line.startswith("ready"):
                log.error("process_did_not_start", dispatcher=child.dispatcher_id,
                          exit_code=child.proc.poll() if child.proc else None,
                          hint="see its log lines above")
                return None
            url = line.partition(" ")[2]
        return url

    def _supervise(self) -> None:
        while True:
            time.sleep(0.2)  # a signal's handler runs at once; children are not ours to wait on selectively
            if self._stopping:
                log.info("signal", action="stopping every dispatcher process")
                return
            for child in self.children:
                assert child.proc is not None
                code = child.proc.poll()
                if code is not None and time.monotonic() - child.started >= RESTART_DELAY:
                    log.error("process_exited", dispatcher=child.dispatcher_id, exit_code=code,
                              hint="started again under the same dispatcher id")
                    self._start(child)
                    os.close(child.ready_fd)

    def _stop_all(self) -> None:
        for child in self.children:
            if child.proc is not None and child.proc.poll() is None:
                child.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.settings.shutdown_grace + 15
        for child in self.children:
            if child.proc is None:
                continue
            try:
                child.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("process_did_not_stop", dispatcher=child.dispatcher_id, action="killed")
                child.proc.kill()
                child.proc.wait()

