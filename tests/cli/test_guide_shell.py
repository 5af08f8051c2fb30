"""interop/shell/README.md, "From nothing to a handled task", followed step by step as written.

The guide's steps use three terminals; here each long-running command (``jetbridge run``, ``jetbridge handle``)
runs in the background and the next step starts once it said it is up (the dispatcher's ``dispatcher_started`` log
line, the handler's ``ready``), as a person switches terminals once it printed that. Two substitutions, both
mechanical: ``make venv`` is skipped (the test runs in the venv) and the scratch directory ``/tmp/jb`` is the test's
own temporary directory (tests run side by side). The console transcript's commands run verbatim and their output
must contain each line the guide shows (``...`` stands for lines left out).
"""

from __future__ import annotations

import re
import shlex
import subprocess
import threading
from pathlib import Path

import pytest

from tests.cli.docblocks import REPO, clean_env, section, shell_blocks

pytestmark = pytest.mark.timeout(180)
GUIDE = REPO / "interop" / "shell" / "README.md"


class Background:
    """A long-running step: its output is collected, and :meth:`wait_for` blocks until a marker appears."""

    def __init__(self, command: str, cwd: Path, env: dict[str, str]) -> None:
        self.lines: list[str] = []
        self._seen = threading.Condition()
        self.proc = subprocess.Popen(["bash", "-c", f"exec {command}"], cwd=cwd, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            with self._seen:
                self.lines.append(raw.decode(errors="replace").rstrip())
                self._seen.notify_all()
        with self._seen:
            self._seen.notify_all()

    def wait_for(self, marker: str, within: float = 60.0) -> None:
        with self._seen:
            ok = self._seen.wait_for(lambda: any(marker in line for line in self.lines) or self.proc.poll() is not None,
                                     within)
        assert ok and any(marker in line for line in self.lines), f"no {marker!r} from it:\n" + "\n".join(self.lines)

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        assert "Traceback" not in "\n".join(self.lines), "\n".join(self.lines)
        return "\n".join(self.lines)


def _transcript(text: str) -> list[tuple[str, list[str]]]:
    """``(command, expected lines)`` pairs of a ```console block."""
    block = re.search(r"^```console\n(.*?)^```", text, re.M | re.S)
    assert block, "the guide has no console transcript"
    steps: list[tuple[str, list[str]]] = []
    for line in block.group(1).splitlines():
        if line.startswith("$ "):
            steps.append((line[2:], []))
        elif line.strip() and line.strip() != "...":
            steps[-1][1].append(" ".join(line.split()))
    return steps


def test_the_shell_guide_works_as_written(tmp_path: Path) -> None:
    text = section(GUIDE.read_text(), "## From nothing to a handled task")
    install, start, script, serve = shell_blocks(text)[:4]
    assert install.splitlines()[0] == "make venv" and "jetbridge run" in start and "handle greet" in serve
    env = clean_env()
    start_lines = start.replace("/tmp/jb", str(tmp_path)).splitlines()
    assert start_lines[0].startswith("mkdir -p ") and start_lines[1] == "jetbridge run"
    subprocess.run(["bash", "-c", start_lines[0]], check=True, env=env)
    (tmp_path / "greet.sh").write_text(script + "\n")  # "Save this as /tmp/jb/greet.sh and make it executable"
    subprocess.run(["chmod", "+x", "greet.sh"], cwd=tmp_path, check=True)
    steps: list[Background] = []
    try:
        steps.append(Background(start_lines[1], tmp_path, env))
        steps[-1].wait_for("dispatcher_started")
        steps.append(Background(serve.strip(), tmp_path, env))
        steps[-1].wait_for("ready")
        for command, expected in _transcript(text):
            done = subprocess.run(shlex.split(command), cwd=tmp_path, env={**env, "COLUMNS": "120"},
                                  capture_output=True, text=True, timeout=60, check=False)
            shown = [" ".join(line.split()) for line in done.stdout.splitlines()]
            report = f"$ {command}\nexit {done.returncode}\n{done.stdout}{done.stderr}"
            assert "Traceback" not in done.stdout + done.stderr and done.returncode in (0, 1), report
            for line in expected:
                assert line in shown, f"the guide shows {line!r}:\n{report}"
    finally:
        for step in reversed(steps):
            step.stop()
