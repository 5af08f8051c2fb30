"""``jetbridge limit set|list|delete``: stored, listed, shown by ``info``, removed; bad input is one clear line."""

from __future__ import annotations

import json

import pytest

from bridge.embedded import NatsServer
from tests.limits.procs import cli


def test_set_list_info_delete(nats_server: NatsServer, unique: str) -> None:
    pattern = f"mail{unique}:*"
    done = cli(nats_server, "limit", "set", pattern, "--concurrency", "3", "--rate", "6000/m", "--burst", "10")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"limit on {pattern}: concurrency 3, rate 6000/m (burst 10)"
    assert cli(nats_server, "limit", "set", "--queue", f"Q{unique}", "--rate", "5/s").returncode == 0
    rows = json.loads(cli(nats_server, "limit", "list", "--json").stdout)
    mine = {r["types"]: r for r in rows if unique in r["types"] or unique in r["queues"]}
    assert mine[pattern]["concurrency"] == 3 and mine[pattern]["rate_per_s"] == 100.0
    assert mine[pattern]["burst"] == 10 and mine[pattern]["running"] == 0
    assert mine["*"]["queues"] == f"Q{unique}" and mine["*"]["rate"] == "5/s" and mine["*"]["concurrency"] is None
    table = cli(nats_server, "limit", "list").stdout
    assert pattern in table and "6000/m" in table
    info = json.loads(cli(nats_server, "info", "--json").stdout)
    assert any(r["types"] == pattern for r in info["limits"])
    assert cli(nats_server, "limit", "delete", pattern).returncode == 0
    assert cli(nats_server, "limit", "delete", "--queue", f"Q{unique}").returncode == 0
    rows = json.loads(cli(nats_server, "limit", "list", "--json").stdout)
    assert not [r for r in rows if unique in r["types"] or unique in r["queues"]]
    gone = cli(nats_server, "limit", "delete", pattern)
    assert gone.returncode == 1 and gone.stderr.strip() == f"error: there is no limit on {pattern} (see `jetbridge limit list`)"


@pytest.mark.parametrize(("args", "message"), [
    (["x:*"], "a limit needs --concurrency N, --rate COUNT/UNIT, or both"),
    (["x:*", "--rate", "fast"], "--rate 'fast' is not a rate: write COUNT/UNIT, e.g. 100/s, 6000/m or 10/5s"),
    (["x:*", "--rate", "0/s"], "--rate '0/s' must be more than 0 and at most 1000000/s"),
    (["x:*", "--concurrency", "0"], "--concurrency must be between 1 and 10000, got 0"),
    (["x:*", "--concurrency", "2", "--burst", "3"], "--burst only applies with --rate"),
    (["x y", "--concurrency", "2"], "PATTERN 'x y' must be a task type or fnmatch pattern of letters, digits and "
                                    "_-:. with * ? [ ] (for example email:*)"),
    (["x", "--concurrency", "two"], None),
])
def test_bad_input_is_one_line(nats_server: NatsServer, args: list[str], message: str | None) -> None:
    done = cli(nats_server, "limit", "set", *args)
    assert done.returncode == 2, done
    assert "Traceback" not in done.stderr
    if message is not None:
        assert done.stderr.strip() == f"error: {message}"
