"""One embedded server per data dir, at a stable address, shared by every command; `jetbridge server` runs it alone."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest

from tests.cli.docblocks import BIN, clean_env
from tests.cli.test_guide_shell import Background

pytestmark = pytest.mark.timeout(180)
JETBRIDGE = str(BIN / "jetbridge")


def jb(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([JETBRIDGE, *args], cwd=cwd, env=clean_env(), capture_output=True, text=True, timeout=90,
                          check=False)
    assert "Traceback" not in done.stdout + done.stderr, done.stderr
    return done


def _record(cwd: Path) -> dict[str, object]:
    return json.loads((cwd / ".jetbridge" / "server.json").read_text())  # type: ignore[no-any-return]


def test_restarts_keep_the_address_and_commands_share_the_server(tmp_path: Path) -> None:
    try:
        first = jb("run", "--background", cwd=tmp_path)
        assert first.returncode == 0, first.stderr
        url = _record(tmp_path)["url"]
        assert f"NATS at {url}" in first.stdout
        task_id = jb("enqueue", "t", cwd=tmp_path).stdout.strip()
        assert jb("stop", cwd=tmp_path).returncode == 0
        assert _record(tmp_path)["pid"] is None  # stopped, the address stays recorded
        assert jb("info", cwd=tmp_path).returncode == 3  # nothing runs: it says so rather than start a server
        again = jb("run", "--background", cwd=tmp_path)
        assert again.returncode == 0 and _record(tmp_path)["url"] == url, again.stdout
        got = jb("task", "get", task_id, cwd=tmp_path)  # the same store, through the same address
        assert got.returncode == 0 and task_id in got.stdout
    finally:
        jb("stop", cwd=tmp_path)


def test_server_runs_alone_and_run_uses_it(tmp_path: Path) -> None:
    server = Background(f"{JETBRIDGE} server", tmp_path, clean_env())
    try:
        server.wait_for("started an embedded nats-server")
        url = str(_record(tmp_path)["url"])
        second = jb("server", cwd=tmp_path)
        assert second.returncode == 1 and f"a server already runs for .jetbridge at {url}" in second.stderr
        assert jb("queue", "add", "SQ", cwd=tmp_path).returncode == 0
        run = jb("run", "--background", cwd=tmp_path)
        assert run.returncode == 0 and f"NATS at {url}" in run.stdout, run.stderr
        assert "SQ" in jb("info", cwd=tmp_path).stdout
        jb("stop", cwd=tmp_path)  # the dispatcher, then the server
        assert server.proc.wait(30) == 0
    finally:
        if server.proc.poll() is None:
            server.proc.send_signal(signal.SIGTERM)
        server.stop()
