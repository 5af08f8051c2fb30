"""docs/hooks.md's audit hook, installed as its pyproject.toml says (a distribution whose entry points are the
document's), runs in a real dispatcher and writes the audit lines the document promises."""

from __future__ import annotations

import json
import re
import sys
import tomllib
from pathlib import Path
from typing import Any

import jetbridge
import pytest

from tests.harness import Harness

pytestmark = pytest.mark.anyio
DOC = Path(__file__).resolve().parents[2] / "docs" / "hooks.md"


def block(name: str) -> str:
    """The fenced block of docs/hooks.md whose first line is ``# name``."""
    found = re.search(rf"^```\w+\n(# {re.escape(name)}\n.*?)^```", DOC.read_text(), re.M | re.S)
    assert found is not None, f"no block {name} in {DOC}"
    return found.group(1)


def install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What pip puts in site-packages for the document's package: the module and a dist-info with its entry points."""
    project = tomllib.loads(block("pyproject.toml"))["project"]
    site = tmp_path / "site"
    info = site / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n")
    groups = project["entry-points"]
    (info / "entry_points.txt").write_text("".join(
        f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items()) for group, eps in groups.items()))
    (site / "audit_hook.py").write_text(block("audit_hook.py"))
    monkeypatch.syspath_prepend(str(site))


async def echo(task: jetbridge.Task) -> Any:
    return task.payload


async def test_the_audit_hook_of_the_docs_writes_every_state_change(
        h: Harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install(tmp_path, monkeypatch)
    audit = tmp_path / "audit.jsonl"
    monkeypatch.setenv("AUDIT_LOG", str(audit))
    try:
        async with h.dispatcher(hooks=("audit",)), h.service({"echo": echo}):
            record = await h.run("echo", {"n": 1})
        # the dispatcher has stopped: queued hook calls have run
        lines = [json.loads(line) for line in audit.read_text().splitlines()]
    finally:
        sys.modules.pop("audit_hook", None)
    assert record.state == "complete"
    assert [(line["task_id"], line["from"], line["to"]) for line in lines] == [
        (record.id, "new", "active"), (record.id, "active", "complete")]
    assert all(line["queue"] == h.queue and line["type"] == "echo" for line in lines)
