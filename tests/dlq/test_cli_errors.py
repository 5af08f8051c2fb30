"""Every mistake in the dead-letter, bulk and pause commands gets one clear line and exit code 2."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import anyio
import pytest

from bridge.embedded import NatsServer

pytestmark = pytest.mark.anyio

CASES = [
    (["dlq", "replay", "--rate", "abc", "--yes"], "--rate 'abc' is not a rate: use e.g. 50/s"),
    (["dlq", "list", "--since", "yesterday"], "--since 'yesterday' is not a duration"),
    (["dlq", "list", "--cursor", "zz"], "cursor 'zz' is not one this index handed out"),
    (["dlq", "replay", "--payload", "{bad", "--yes"], "--payload is not JSON"),
    (["dlq", "retention", "QUEUE", "--max-count", "-3"], "--max-count must be 0 (no limit) or more"),
    (["dlq", "show", "no-such-task"], "task no-such-task not found"),
    (["bulk", "delete"], "say which tasks to delete: give --state or another filter"),
    (["queue", "pause", "NoSuchQueue"], "queue NoSuchQueue does not exist"),
    (["queue", "pause", "QUEUE", "--until", "2001-01-01T00:00:00Z"], "--until must be in the future"),
    (["queue", "pause", "QUEUE", "--until", "soon"], "--until 'soon' is not a duration"),
]


@pytest.mark.parametrize(("args", "message"), CASES, ids=[" ".join(a[:2]) + f"-{i}" for i, (a, _) in enumerate(CASES)])
async def test_one_clear_line(h: Any, nats_server: NatsServer, args: list[str], message: str) -> None:
    argv = [sys.executable, "-m", "bridge", "--server", nats_server.url, *[a.replace("QUEUE", h.queue) for a in args]]
    result = await anyio.to_thread.run_sync(lambda: subprocess.run(argv, capture_output=True, text=True, timeout=60,
                                                                   env={"COLUMNS": "200", "PATH": ""}))
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert message in " ".join(result.stderr.split()), result.stderr
