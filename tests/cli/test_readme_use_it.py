"""README.md's "Use it" steps, run as written against a real (embedded) server: no hang, no error, no traceback."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests.cli.docblocks import BIN, REPO, clean_env, script, section, shell_blocks

pytestmark = pytest.mark.timeout(240)


def test_readme_use_it_runs_as_written(tmp_path: Path) -> None:
    blocks = shell_blocks(section((REPO / "README.md").read_text(), "## Use it"))
    assert blocks and "jetbridge enqueue" in blocks[0]
    text = script(blocks)
    proc = subprocess.Popen(["bash", "-c", text], cwd=tmp_path, env=clean_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"the README's steps hung:\n{text}\nstdout:\n{out.decode()}\nstderr:\n{err.decode()}")
    finally:
        subprocess.run([str(BIN / "jetbridge"), "stop"], cwd=tmp_path, env=clean_env(), capture_output=True,
                       timeout=60, check=False)
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    stdout, stderr = out.decode(), err.decode()
    report = f"script:\n{text}\nstdout:\n{stdout}\nstderr:\n{stderr}"
    assert proc.returncode == 0, report
    assert "Traceback" not in stdout + stderr and "error:" not in stderr, report
    assert "complete" in stdout and "ada@example.com" in stdout, report  # enqueue --wait printed the result
    assert "jetbridge-handle" in stdout and "email:new" in stdout, report  # info shows the handler online
    assert "dispatchers" in stdout and "stopped 1 dispatcher" in stdout, report
