"""Long-running commands of the outside-project tests: a dispatcher, a handler, each in its own session.

A process is ready when its output says so (a line the guide names), never after a fixed time: a thread reads the
combined output and wakes whoever waits for a text. Each process leads its own session, so stopping it reaches what
it started (``go run`` and ``cargo run`` wrap the handler's binary).
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from collections.abc import Mapping
from pathlib import Path


class Running:
    """One background command whose output can be awaited."""

    def __init__(self, command: str, *, cwd: Path, env: Mapping[str, str]) -> None:
        self.command = command
        self.proc = subprocess.Popen(["bash", "-c", command], cwd=cwd, env=dict(env), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        self._out: list[str] = []
        self._changed = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in iter(self.proc.stdout.readline, b""):
            with self._changed:
                self._out.append(line.decode(errors="replace"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    @property
    def output(self) -> str:
        with self._changed:
            return "".join(self._out)

    def wait_for(self, text: str, timeout: float) -> None:
        """Returns once the output contains ``text``; fails if the process ends first or ``timeout`` passes."""
        with self._changed:
            done = self._changed.wait_for(lambda: text in "".join(self._out) or self.proc.poll() is not None, timeout)
            seen = "".join(self._out)
        if text in seen:
            return
        why = f"exited with {self.proc.returncode}" if done else f"still running after {timeout:g}s"
        raise AssertionError(f"`{self.command}` {why} without printing {text!r}; output:\n{seen[-3000:]}")

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM to the whole session, SIGKILL if it outlives ``timeout``; returns the exit code."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                return self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                continue
        return self.proc.wait(timeout)


def run(command: str, *, cwd: Path, env: Mapping[str, str], timeout: float) -> str:
    """Runs a guide's shell code to its end with bash -e; its output, or an assertion error quoting it."""
    done = subprocess.run(["bash", "-ec", command], cwd=cwd, env=dict(env), stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout, check=False)
    out = done.stdout.decode(errors="replace")
    assert done.returncode == 0, f"`{command.strip()}` failed ({done.returncode}):\n{out[-4000:]}"
    return out
