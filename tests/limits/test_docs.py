"""docs/flow-control.md's and the README's flow-control commands, run as written against a real server: no error, no traceback."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from bridge.embedded import NatsServer
from tests.cli.docblocks import REPO, clean_env, script, section, shell_blocks

pytestmark = pytest.mark.timeout(180)
DOC = (REPO / "docs" / "flow-control.md").read_text()
README = (REPO / "README.md").read_text()


@pytest.mark.parametrize(("doc", "heading"), [(DOC, "## Global limits"), (DOC, "## Priorities across queues"),
                                              (DOC, "### Handlers push back: adaptive rates (opt-in)"),
                                              (README, "## Flow control: global limits and priorities")])
def test_the_samples_run_as_written(own_server: NatsServer, tmp_path: Path, doc: str, heading: str) -> None:
    blocks = shell_blocks(section(doc, heading))
    assert blocks
    text = script(blocks)
    done = subprocess.run(["bash", "-c", text], cwd=tmp_path, env=clean_env(NATS_URL=own_server.url),
                          capture_output=True, text=True, timeout=150, check=False)
    report = f"script:\n{text}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert done.returncode == 0, report
    assert "Traceback" not in done.stdout + done.stderr and "error:" not in done.stderr, report
    if heading == "## Global limits":
        assert "limit on email:*: concurrency 3" in done.stdout and "6000/m" in done.stdout, report
        assert "limit on report:build deleted" in done.stdout, report
