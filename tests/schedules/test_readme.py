"""README's "Delayed tasks and schedules" samples run as written: every shell line, then the Python block."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import anyio
import nats
from typer.testing import CliRunner

from bridge.cli import app
from bridge.embedded import NatsServer

README = Path(__file__).resolve().parents[2] / "README.md"


def section() -> tuple[list[str], str]:
    text = README.read_text().split("## Delayed tasks and schedules", 1)[1].split("\n## ", 1)[0]
    shell = re.search(r"```sh\n(.*?)```", text, re.S)
    python = re.search(r"```python\n(.*?)```", text, re.S)
    assert shell and python
    return [line for line in shell.group(1).splitlines() if line.strip()], python.group(1)


def test_readme_schedule_samples_run_as_written(own_server: NatsServer) -> None:
    lines, python = section()
    runner = CliRunner()
    env = {"NATS_URL": own_server.url}
    task_id = ""
    for line in lines:
        argv = shlex.split(line.replace("TASK_ID", task_id))
        assert argv[0] == "jetbridge"
        result = runner.invoke(app, argv[1:], env=env)
        assert result.exit_code == 0, f"{line}\n{result.output}\n{result.exception!r}"
        if " --in 10m" in line:
            task_id = result.output.strip()
    assert task_id

    async def sample() -> Any:
        nc = await nats.connect(own_server.url)
        scope: dict[str, Any] = {}
        body = "\n".join("    " + line for line in python.splitlines())
        exec(f"async def _sample(nc):\n{body}\n", scope)  # noqa: S102 - the README's own code
        try:
            await scope["_sample"](nc)
        finally:
            await nc.close()

    anyio.run(sample)
