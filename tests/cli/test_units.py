"""Pure pieces of the CLI: durations, option hoisting, the watch board, handler discovery, packaging metadata."""

from __future__ import annotations

import tomllib

import pytest
from jetbridge._errors import ConfigError
from jetbridge._events import TaskStateEvent

from bridge.board import Board
from bridge.discovery import handler_for, handler_groups, serves
from bridge.durations import format_duration, parse_duration
from bridge.errors import GLOBAL_OPTIONS, hoist_global_options
from tests.cli.docblocks import REPO


@pytest.mark.parametrize(("text", "seconds"), [
    ("7d", 604800), ("1h30m", 5400), ("250ms", 0.25), ("30", 30), ("1.5s", 1.5), (90, 90), ("0s", 0),
])
def test_durations_read(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["soon", "", "5 s", "1x", "-1s", "s", "100000000000h", "1h 30m", "7d\n\n1"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(ConfigError, match="--x"):
        parse_duration(text, what="--x")


@pytest.mark.parametrize("seconds", [0, 0.25, 1, 59, 60, 3600, 3661, 86400, 604800, 1.5])
def test_durations_print_as_they_are_read(seconds: float) -> None:
    assert parse_duration(format_duration(seconds)) == seconds
    assert format_duration(3600.0) == "1h" and format_duration(None) == ""


def test_global_options_move_in_front_of_the_command() -> None:
    assert hoist_global_options(["run", "--server", "nats://x", "-q", "A"], GLOBAL_OPTIONS) == \
        ["--server", "nats://x", "run", "-q", "A"]
    assert hoist_global_options(["info", "--data-dir=d"], GLOBAL_OPTIONS) == ["--data-dir=d", "info"]
    # nothing after -- (a handler's command line) is touched
    assert hoist_global_options(["handle", "t", "--", "cmd", "--server", "y"], GLOBAL_OPTIONS) == \
        ["handle", "t", "--", "cmd", "--server", "y"]


def _event(task_id: str, state: str, queue: str = "Q", error: str = "") -> TaskStateEvent:
    return TaskStateEvent(event_id="e", type="t", timestamp="2026-01-01T00:00:00Z", task_id=task_id, state=state,
                          tries=1, queue=queue, task_type="t", last_error=error)


def test_the_board_counts_tasks_not_events() -> None:
    board = Board()
    for state in ("new", "active", "retry", "active", "complete"):
        board.add(_event("a", state, error="boom" if state == "retry" else ""), now=100.0)
    board.add(_event("b", "active"), now=100.0)
    assert board.counts()["Q"] == {"complete": 1, "active": 1}
    assert [e.task_id for e in board.running()] == ["b"]
    assert [e.last_error for e in board.failures] == ["boom"]
    assert board.rate("Q", now=110.0) == pytest.approx(1 / 60)
    assert board.rate("Q", now=1000.0) == 0.0


def test_discovery_groups_handler_instances() -> None:
    infos = [
        {"name": "mailer", "version": "1.0.0", "metadata": {"jetbridge.sdk": "node/0.1.0"},
         "endpoints": [{"subject": "jetbridge.task.email:new", "metadata": {"jetbridge.task_type": "email:new"}}]},
        {"name": "mailer", "version": "1.0.0", "metadata": {"jetbridge.sdk": "node/0.1.0"}, "endpoints": []},
        {"name": "jetbridge-dispatcher", "metadata": {"jetbridge.dispatcher": "d1"}},
        {"name": "unrelated", "metadata": {}},
    ]
    groups = handler_groups(infos)
    assert [g.to_dict() for g in groups] == [{"service": "mailer", "instances": 2, "sdk": ["node/0.1.0"],
                                              "versions": ["1.0.0"], "task_types": ["email:new"]}]
    assert handler_for(groups, "email:new", "jetbridge.task.email:new")
    assert not handler_for(groups, "sms", "jetbridge.task.sms")
    assert serves(["*"], "ANY") and serves(["A"], "A") and not serves(["A"], "B")


def test_license_metadata_is_an_spdx_string() -> None:
    """A table (``{text = ...}``) makes setuptools print deprecation banners at every install (`make demo`)."""
    for path in (REPO / "pyproject.toml", REPO / "sdk-python" / "pyproject.toml"):
        project = tomllib.loads(path.read_text())["project"]
        assert project["license"] == "Apache-2.0", path
