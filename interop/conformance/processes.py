"""Handler replicas: ``interop/<lang>/conformance.sh`` run as child processes of the suite.

A replica is ready when it prints ``ready``, the contract's word that its endpoints are subscribed; the suite
waits for that line (or the process's death, or a timeout), never for a fixed time. Each replica gets its own
session, so its process group is its own: a SIGKILL reaches any children a wrapper script left behind, and a
Ctrl-C on the suite does not reach the handler behind the suite's back. Output goes to files in the run's log
directory; the tail of stderr is quoted when a replica fails to start.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

import anyio
from anyio.abc import TaskGroup


class ReplicaError(Exception):
    """A replica did not start, or did not stop the way it was asked to."""


class Replica:
    """One handler process, restartable under the same instance name."""

    _START_MARK = "--- conformance: start "

    def __init__(self, *, instance: str, script: Path, env: Mapping[str, str], log_dir: Path) -> None:
        self.instance = instance
        self.script = script
        self.env = dict(env)
        self.stdout_log = log_dir / f"{instance}.stdout"
        self.stderr_log = log_dir / f"{instance}.stderr"
        self.proc: asyncio.subprocess.Process | None = None
        self.starts = 0
        self._ready = anyio.Event()

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def start(self, tg: TaskGroup, *, timeout: float) -> None:
        """Start the process and return once it has printed ``ready``.

        Raises :class:`ReplicaError` with the reason (exit code, or no ``ready`` in time) and its stderr tail.
        ``tg`` owns the task that keeps reading stdout, so a chatty handler never blocks on a full pipe.
        """
        self.starts += 1
        self._ready = anyio.Event()
        with self.stderr_log.open("ab") as err:
            err.write(f"{self._START_MARK}{self.starts} of {self.instance}\n".encode())
            err.flush()
            try:
                self.proc = await asyncio.create_subprocess_exec(
                    str(self.script), stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                    stderr=err, env=self.env, start_new_session=True)
            except OSError as exc:
                raise ReplicaError(f"could not run {self.script}: {exc}") from None
        proc = self.proc
        tg.start_soon(self._pump_stdout, proc, self._ready)
        with anyio.move_on_after(timeout):
            async with anyio.create_task_group() as race:
                async def first(wait: Callable[[], Awaitable[object]]) -> None:
                    await wait()
                    race.cancel_scope.cancel()

                race.start_soon(first, self._ready.wait)
                race.start_soon(first, proc.wait)
        if self._ready.is_set():
            return
        if proc.returncode is not None:
            raise ReplicaError(f"{self.instance} exited with code {proc.returncode} before printing `ready`"
                               f"{self.stderr_tail()}")
        await self.kill()
        raise ReplicaError(f"{self.instance} printed no `ready` line within {timeout:g}s{self.stderr_tail()}")

    async def _pump_stdout(self, proc: asyncio.subprocess.Process, ready: anyio.Event) -> None:
        assert proc.stdout is not None
        with self.stdout_log.open("ab") as out:
            while line := await proc.stdout.readline():
                out.write(line)
                out.flush()
                if line.strip() == b"ready":
                    ready.set()

    def stderr_tail(self, lines: int = 8) -> str:
        """The last lines of stderr since the latest start, as a suffix for a failure message (or "")."""
        try:
            text = self.stderr_log.read_text(errors="replace")
        except OSError:
            return ""
        latest = text.rsplit(self._START_MARK, 1)[-1].split("\n", 1)[-1]
        tail = [t for t in latest.splitlines() if t.strip()][-lines:]
        return ("; stderr: " + " | ".join(tail)[-600:]) if tail else ""

    def signal(self, sig: signal.Signals) -> None:
        """Send ``sig`` to the handler itself (conformance.sh execs it, so this is the handler's pid)."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(sig)

    async def wait_exit(self, timeout: float) -> int:
        """The exit code, waiting up to ``timeout`` seconds; raises :class:`ReplicaError` if it keeps running."""
        assert self.proc is not None
        with anyio.move_on_after(timeout):
            return await self.proc.wait()
        raise ReplicaError(f"{self.instance} (pid {self.proc.pid}) still running {timeout:g}s later")

    async def kill(self) -> None:
        """SIGKILL the replica's whole process group (its own session) and reap it."""
        if self.proc is None or self.proc.returncode is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        with anyio.move_on_after(10):
            await self.proc.wait()

    async def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM (the handler drains and exits), then SIGKILL if it is still there after ``timeout``."""
        if not self.alive:
            return
        self.signal(signal.SIGTERM)
        try:
            await self.wait_exit(timeout)
        except ReplicaError:
            await self.kill()
