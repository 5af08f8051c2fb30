"""Fixtures of the outside-project tests: the release artifacts, and a dispatcher installed from them.

``make dist`` builds the artifacts once per run, into a temporary folder. The dispatcher is the
``jetbridge`` wheel installed, as the top-level README says, into a fresh venv outside the repository, serving
``DEFAULT`` on a real nats-server of its own; the handlers of every language's test complete tasks through it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from bridge.embedded import NatsServer
from tests.dist.guides import REPO, block, with_paths
from tests.dist.installs import VERSION, Artifacts, InstalledDispatcher, clean_env
from tests.dist.procs import Running, run


@pytest.fixture(scope="package")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Artifacts:
    """What ``make dist`` builds, into a temporary folder (so a ``dist/`` of the user's stays as it is)."""
    out = tmp_path_factory.mktemp("dist")
    run(f"make --no-print-directory dist DIST={out}", cwd=REPO, env=os.environ, timeout=600)
    return Artifacts(out)


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
