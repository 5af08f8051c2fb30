"""Every configuration sample in the docs passes `jetbridge config check` as written.

TOML blocks (README.md, docs/*.md) are checked as config files; the ``JETBRIDGE_*`` settings of docs/deploy.md's
``docker run -e`` lines and compose ``environment:`` entries are checked as an environment.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.cli.docblocks import BIN, REPO, clean_env

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
_TOML = re.compile(r"^```toml\n(.*?)^```", re.M | re.S)
_ENV = re.compile(r"(?:-e |^\s+)(JETBRIDGE_[A-Z_]+)(?:=|: )(\S+)", re.M)


def _toml_samples() -> list[tuple[str, str]]:
    return [(f"{doc.relative_to(REPO)}#{i}", text) for doc in DOCS for i, text in enumerate(_TOML.findall(doc.read_text()))
            if not text.startswith("# pyproject.toml")]  # a package's metadata (docs/hooks.md), not a config file


def _check(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "jetbridge"), *args, "config", "check"], cwd=tmp_path, text=True,
                          capture_output=True, env=clean_env(**(env or {})), timeout=60, check=False)


@pytest.mark.parametrize(("where", "text"), _toml_samples(), ids=[w for w, _ in _toml_samples()])
def test_toml_samples_pass_config_check(tmp_path: Path, where: str, text: str) -> None:
    path = tmp_path / "sample.toml"
    path.write_text(text)
    run = _check(tmp_path, "--config", str(path))
    assert run.returncode == 0 and "configuration is valid" in run.stdout, f"{where}:\n{run.stderr}"


def test_deploy_environment_samples_pass_config_check(tmp_path: Path) -> None:
    found = _ENV.findall((REPO / "docs" / "deploy.md").read_text())
    assert len(found) >= 4
    env = {k: v.strip("\"'") for k, v in found if not v.startswith("$")}  # YAML quotes are not part of the value
    run = _check(tmp_path, env=env)
    assert run.returncode == 0, f"{env}:\n{run.stderr}"


def test_a_bad_sample_fails() -> None:
    """The check is not vacuous: a duration it cannot read fails, naming the key."""
    run = subprocess.run([str(BIN / "jetbridge"), "config", "check"], text=True, capture_output=True, timeout=60,
                         env=clean_env(JETBRIDGE_RETAIN_FINISHED="a week"), check=False)
    assert run.returncode == 2 and "retain_finished" in run.stderr
