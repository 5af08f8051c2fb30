"""What the outside-project tests share: a user's environment, the artifacts, and the installed dispatcher."""

from __future__ import annotations

import json
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.dist.guides import REPO
from tests.dist.procs import run

# Every library has this version (package.json, Cargo.toml, version.go); artifact names and the guides carry it.
VERSION: str = tomllib.loads((REPO / "sdk-python" / "pyproject.toml").read_text())["project"]["version"]


def clean_env(**extra: str) -> dict[str, str]:
    """The environment of a user's shell: no venv of the repository active, nothing of it on any path."""
    env = {k: v for k, v in os.environ.items() if k not in {"VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME"}}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                  if p and not p.startswith(str(REPO)))
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return {**env, **extra}


@dataclass
class Artifacts:
    """The folder make dist filled; ``one`` names a file in it, failing clearly if the build did not make it."""

    root: Path

    def one(self, relative: str) -> Path:
        path = self.root / relative
        assert path.is_file(), f"make dist did not build {relative}: {sorted(self.root.rglob('*'))}"
        return path


@dataclass
class InstalledDispatcher:
    """The dispatcher installed from its wheel, serving ``DEFAULT`` on the server at ``url``."""

    url: str
    bin: Path

    def enqueue(self, task_type: str, payload: Any, cwd: Path) -> dict[str, Any]:
        """Enqueues with the installed CLI and waits for the task to end; the task record."""
        out = run(f"{self.bin}/jetbridge enqueue {task_type} '{json.dumps(payload)}' --wait 120 --json", cwd=cwd,
                  env=clean_env(NATS_URL=self.url), timeout=180)
        task: dict[str, Any] = json.loads(out)
        return task
