"""Each library used from a project outside the repository, installed from ``make dist``'s artifacts exactly as
its guide says, completes a task through the dispatcher installed from its wheel (issue 14, "Usable from outside
the repo" and "Installs with what it declares").

The install steps, the handlers and the commands that run them are the guides' own code blocks, read from the
files; only the placeholder paths of the artifacts are made real. Package managers keep their caches in the clone's
``.cache/`` (as the build scripts do), so a second run reuses what the first downloaded and compiled.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.dist.guides import REPO, block, with_paths
from tests.dist.installs import VERSION, Artifacts, InstalledDispatcher, clean_env
from tests.dist.procs import Running, run

# A cold build of the Rust handler's dependencies is the long pole (about 2 minutes on 2 busy cores); in `make test`
# the release build of interop/rust (interop-build) has compiled them already, in the same target directory.
pytestmark = pytest.mark.timeout(900)
CACHE = REPO / ".cache"


def needs(tool: str) -> None:
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed")


def serve_and_enqueue(command: str, ready: str, project: Path, env: dict[str, str], dispatcher: InstalledDispatcher,
                      task_type: str, payload: object, start_timeout: float = 120,
                      drains: bool = False) -> dict[str, object]:
    """Starts the guide's handler, waits for its ready line, and returns the record of one task it completed.

    ``drains``: the handler is the process itself (not behind ``go run`` or ``cargo run``), and its guide says that
    SIGTERM drains it and it exits cleanly.
    """
    handler = Running(f"exec {command}" if drains else command, cwd=project, env={**env, "NATS_URL": dispatcher.url})
    try:
        handler.wait_for(ready, timeout=start_timeout)
        task = dispatcher.enqueue(task_type, payload, cwd=project)
    finally:
        code = handler.stop()
    assert task["state"] == "complete", f"{task}\nhandler output:\n{handler.output[-3000:]}"
    if drains:
        assert code == 0, f"the handler exited with {code} on SIGTERM:\n{handler.output[-3000:]}"
    return task


def result(task: dict[str, object]) -> object:
    """The handler's result in a task record (asyncjobs stores it with its completion time)."""
    stored = task["result"]
    assert isinstance(stored, dict), task
    return stored["payload"]


def test_python_sdk_wheel_alone(artifacts: Artifacts, dispatcher: InstalledDispatcher, tmp_path: Path) -> None:
    """The SDK wheel, alone in a fresh venv, declares all it needs to run the guide's handler."""
    wheel = artifacts.one(f"python/jetbridge_sdk-{VERSION}-py3-none-any.whl")
    env = clean_env()
    project = tmp_path / "mailer"
    project.mkdir()
    run(with_paths(block("python", "sh", "python3 -m venv .venv"), {f"/path/to/{wheel.name}": wheel}),
        cwd=project, env=env, timeout=600)
    where = run(".venv/bin/python -c 'import jetbridge; print(jetbridge.__file__)'", cwd=project, env=env, timeout=60)
    assert where.strip().startswith(str(project / ".venv")), where
    (project / "mailer.py").write_text(block("python", "python", "# mailer.py"))

    task = serve_and_enqueue(".venv/bin/python mailer.py", "mailer ready", project, env, dispatcher,
                             "email:send", {"to": "ada@example.com"}, drains=True)
    assert result(task) == {"sent_to": "ada@example.com", "attempt": 1}

    run(with_paths(block("python", "sh", ".venv/bin/pip install '/path/to/"), {f"/path/to/{wheel.name}": wheel}),
        cwd=project, env=env, timeout=600)
    signer = ".venv/bin/python -c 'import jetbridge; print(jetbridge.Signer(64 * \"1\").public_key)'"
    assert len(run(signer, cwd=project, env=env, timeout=60).strip()) == 64


def test_node_tarball(artifacts: Artifacts, dispatcher: InstalledDispatcher, tmp_path: Path) -> None:
    """The npm tarball installs with its dependencies and ships the compiled JS and its types."""
    needs("npm")
    tarball = artifacts.one(f"node/jetbridge-{VERSION}.tgz")
    env = clean_env(npm_config_cache=str(CACHE / "npm"), npm_config_prefer_offline="true", npm_config_audit="false",
                    npm_config_fund="false", npm_config_update_notifier="false")
    run(with_paths(block("node", "sh", "mkdir greeter"), {f"/path/to/{tarball.name}": tarball}),
        cwd=tmp_path, env=env, timeout=600)
    project = tmp_path / "greeter"
    installed = project / "node_modules" / "jetbridge"
    assert not installed.is_symlink(), "installed by link, not from the tarball"
    assert (installed / "dist/src/index.js").is_file() and (installed / "dist/src/index.d.ts").is_file()
    (project / "handler.js").write_text(block("node", "js", 'import { Terminate, createService, serve } from "jetbridge";'))

    command = block("node", "sh", "NATS_URL=nats://127.0.0.1:4222 node handler.js").replace("NATS_URL=nats://127.0.0.1:4222 ", "")
    task = serve_and_enqueue(command, "greeter: ready", project, env, dispatcher, "greet", {"name": "Ada"},
                             drains=True)
    assert result(task) == {"greeting": "Hello, Ada!", "attempt": 1}


def test_go_module_zip(artifacts: Artifacts, dispatcher: InstalledDispatcher, tmp_path: Path) -> None:
    """The module zip, unpacked next to a new module and used through a replace line; nats.go from the proxy."""
    needs("go")
    archive = artifacts.one(f"go/jetbridge-go-{VERSION}.zip")
    env = clean_env(GOMODCACHE=str(CACHE / "go/mod"), GOCACHE=str(CACHE / "go/build"))
    run(with_paths(block("go", "sh", "unzip /path/to/"), {f"/path/to/{archive.name}": archive}),
        cwd=tmp_path, env=env, timeout=300)
    project = tmp_path / "greeter"
    (project / "main.go").write_text(block("go", "go", "package main"))

    task = serve_and_enqueue(block("go", "sh", "go mod tidy"), "greeter: ready", project, env, dispatcher,
                             "greet", {"name": "Ada"}, start_timeout=600)
    assert result(task) == {"greeting": "Hello, Ada!"}


def test_rust_crate(artifacts: Artifacts, dispatcher: InstalledDispatcher, tmp_path: Path) -> None:
    """The .crate, unpacked on its own, builds with the registry's crates only: nothing of the repo around it."""
    needs("cargo")
    crate = artifacts.one(f"rust/jetbridge-{VERSION}.crate")
    # interop/rust/env.sh's caches: the registry and the compiled dependencies are shared with the repo's builds. The
    # guide's `cargo run --release` resolves the same versions and features as interop/rust's release build, so with a
    # warm cache only the two local crates compile (unless a dependency has had a release since).
    env = clean_env(CARGO_HOME=str(CACHE / "cargo"), CARGO_TARGET_DIR=str(CACHE / "rust-target"))
    run(with_paths(block("rust", "sh", "tar xzf /path/to/"), {f"/path/to/{crate.name}": crate}),
        cwd=tmp_path, env=env, timeout=300)
    project = tmp_path / "greeter"
    (project / "src/main.rs").write_text(block("rust", "rust", "use jetbridge::{HandlerError, Output, Service, Task};"))

    command = block("rust", "sh", "NATS_URL=nats://127.0.0.1:4222 cargo run").replace("NATS_URL=nats://127.0.0.1:4222 ", "")
    task = serve_and_enqueue(command, "greeter: ready", project, env, dispatcher, "greet", {"name": "Ada"},
                             start_timeout=780)
    assert result(task) == {"greeting": "Hello, Ada!"}
