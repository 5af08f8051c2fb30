"""Fixtures of the outside-project tests: the release artifacts, and a dispatcher installed from them.

``make dist``'s script builds the artifacts once per run into a temporary folder. The dispatcher is the
``jetbridge`` wheel installed, as the top-level README says, into a fresh venv outside the repository, serving
``DEFAULT`` on a real nats-server of its own; the handlers of every language's test complete tasks through it.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bridge.embedded import NatsServer
from tests.dist.guides import REPO, block, with_paths
from tests.dist.procs import Running, run

VERSION = "0.1.0"


def clean_env(**extra: str) -> dict[str, str]:
    """The environment of a user's shell: no venv of the repository active, nothing of it on any path."""
    env = {k: v for k, v in os.environ.items() if k not in {"VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME"}}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                  if p and not p.startswith(str(REPO)))
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return {**env, **extra}


@dataclass
class Artifacts:
    root: Path

    def one(self, relative: str) -> Path:
        path = self.root / relative
        assert path.is_file(), f"make dist did not build {relative}: {sorted(self.root.rglob('*'))}"
        return path


@pytest.fixture(scope="package")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Artifacts:
    """What ``make dist`` builds, built by the same script into a temporary folder."""
    out = tmp_path_factory.mktemp("dist")
    run(f"{REPO}/tests/dist/build.sh {out} {sys.executable}", cwd=REPO, env=os.environ, timeout=600)
    return Artifacts(out)


@dataclass
class InstalledDispatcher:
    url: str
    bin: Path

    def enqueue(self, task_type: str, payload: Any, cwd: Path) -> dict[str, Any]:
        """Enqueues with the installed CLI and waits for the task to end; the task record."""
        out = run(f"{self.bin}/jetbridge enqueue {task_type} '{json.dumps(payload)}' --wait 120 --json", cwd=cwd,
                  env=clean_env(NATS_URL=self.url), timeout=180)
        task: dict[str, Any] = json.loads(out)
        return task


@pytest.fixture(scope="package")
def dispatcher(artifacts: Artifacts, tmp_path_factory: pytest.TempPathFactory) -> Iterator[InstalledDispatcher]:
    home = tmp_path_factory.mktemp("dispatcher")
    run("python3 -m venv venv", cwd=home, env=clean_env(), timeout=120)
    install = with_paths(block("dispatcher", "sh", "pip install /path/to/jetbridge-"), {
        f"/path/to/jetbridge-{VERSION}-py3-none-any.whl": artifacts.one(f"python/jetbridge-{VERSION}-py3-none-any.whl"),
        f"/path/to/jetbridge_sdk-{VERSION}-py3-none-any.whl":
            artifacts.one(f"python/jetbridge_sdk-{VERSION}-py3-none-any.whl"),
    })
    venv_path = os.pathsep.join([str(home / "venv" / "bin"), clean_env()["PATH"]])
    run(install, cwd=home, env=clean_env(PATH=venv_path), timeout=600)
    server = NatsServer(home / "nats")
    server.start()
    installed = InstalledDispatcher(server.url, home / "venv" / "bin")
    proc = Running(f"exec {installed.bin}/jetbridge run", cwd=home, env=clean_env(NATS_URL=server.url))
    try:
        proc.wait_for("dispatcher_started", timeout=60)
        yield installed
    finally:
        proc.stop()
        server.stop()
