"""Dispatcher hooks (bridge/hooks.py) loaded from real entry points: a test distribution (``*.dist-info`` with an
``entry_points.txt``) on sys.path, found by importlib.metadata like any installed package; the real dispatcher and a
real handler service on a real nats-server. A failing, slow or stuck hook never loses, repeats or delays a task."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import jetbridge
import pytest

from bridge.dispatcher import Dispatcher
from bridge.hooks import AttemptEnded, AttemptStarted, StateChanged
from bridge.settings import Settings, load_settings
from tests.harness import Harness

pytestmark = pytest.mark.anyio

HOOKS_MODULE = '''
import threading
import time

import anyio

CALLS = []
LOCK = threading.Condition()
RELEASE = threading.Event()


def record(kind, event):
    with LOCK:
        CALLS.append((kind, event))
        LOCK.notify_all()


def wait_for(n, timeout):
    with LOCK:
        return LOCK.wait_for(lambda: len(CALLS) >= n, timeout)


class Recorder:
    """Plain methods: run in a thread."""

    def before_attempt(self, event):
        record("before", event)

    def after_attempt(self, event):
        record("after", event)

    def state_changed(self, event):
        record("state", event)


class AsyncRecorder:
    async def state_changed(self, event):
        await anyio.sleep(0)
        record("async-state", event)


class Broken:
    def before_attempt(self, event):
        raise RuntimeError("hook bug")

    async def after_attempt(self, event):
        raise ValueError("async hook bug")

    def state_changed(self, event):
        raise KeyError(event.to_state)


class Slow:
    async def state_changed(self, event):
        await anyio.sleep(3600)


class Stuck:
    def state_changed(self, event):
        RELEASE.wait(60)


class Nothing:
    pass


class Failing:
    def __init__(self):
        raise OSError("no audit database")

    def state_changed(self, event):
        pass
'''

ENTRY_POINTS = '''
[jetbridge.hooks]
recorder = jb_test_hooks:Recorder
async-recorder = jb_test_hooks:AsyncRecorder
broken = jb_test_hooks:Broken
slow = jb_test_hooks:Slow
stuck = jb_test_hooks:Stuck
nothing = jb_test_hooks:Nothing
failing = jb_test_hooks:Failing
missing-module = jb_test_hooks_nowhere:Hook
'''


@pytest.fixture
def hook_dist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """An installed test distribution ``jb-test-hooks`` with the entry points above; yields its module."""
    (tmp_path / "jb_test_hooks.py").write_text(textwrap.dedent(HOOKS_MODULE))
    info = tmp_path / "jb_test_hooks-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: jb-test-hooks\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    monkeypatch.syspath_prepend(str(tmp_path))
    import jb_test_hooks

    yield jb_test_hooks
    jb_test_hooks.RELEASE.set()  # let a stuck hook's thread end
    sys.modules.pop("jb_test_hooks", None)


async def echo(task: jetbridge.Task) -> Any:
    if task.payload == "fail once" and task.attempt == 1:
        raise jetbridge.Retry("first attempt fails", code="planned")
    return task.payload


async def wait_calls(module: Any, n: int) -> list[tuple[str, Any]]:
    assert await anyio.to_thread.run_sync(module.wait_for, n, 20), f"only {len(module.CALLS)} hook calls: {module.CALLS}"
    return list(module.CALLS)


def hook_calls(dispatcher: Dispatcher, hook: str, result: str) -> float:
    total = 0.0
    for metric in dispatcher.metrics.registry.collect():
        for sample in metric.samples:
            if sample.name == "jetbridge_hook_calls_total" and sample.labels["hook"] == hook \
                    and sample.labels["result"] == result:
                total += sample.value
    return total


async def test_hooks_see_each_attempt_and_every_state_change_in_order(h: Harness, hook_dist: Any) -> None:
    async with h.dispatcher(hooks=("recorder", "async-recorder")) as dispatcher, h.service({"echo": echo}):
        done = await h.run("echo", "fail once")
        calls = await wait_calls(hook_dist, 8 + 4)
    assert (done.state, done.tries) == ("complete", 2)
    mine = [(kind, e) for kind, e in calls if e.task.id == done.id]
    sync = [(kind, e) for kind, e in mine if kind != "async-state"]
    assert [kind for kind, _ in sync] == ["state", "before", "after", "state", "state", "before", "after", "state"]
    states = [(e.from_state, e.to_state) for kind, e in sync if kind == "state"]
    assert states == [("new", "active"), ("active", "retry"), ("retry", "active"), ("active", "complete")]
    assert [(e.from_state, e.to_state) for kind, e in mine if kind == "async-state"] == states
    before = [e for kind, e in sync if kind == "before"]
    after = [e for kind, e in sync if kind == "after"]
    assert all(isinstance(e, AttemptStarted) for e in before) and all(isinstance(e, AttemptEnded) for e in after)
    assert [e.task.tries for e in before] == [1, 2]
    assert [(e.outcome, e.error_code) for e in after] == [("retry", "planned"), ("complete", "")]
    assert all(e.queue == h.queue and e.dispatcher == dispatcher.id for e in before + after)
    assert before[0].subject == f"{h.prefix}.echo" and after[1].duration >= 0
    assert all(isinstance(e, StateChanged) for kind, e in mine if kind in ("state", "async-state"))
    assert hook_calls(dispatcher, "recorder", "ok") >= 8


async def test_a_failing_hook_never_loses_or_repeats_a_task(h: Harness, hook_dist: Any) -> None:
    async with h.dispatcher(hooks=("broken", "recorder")) as dispatcher, h.service({"echo": echo}):
        done = await h.run("echo", {"n": 1})
        await wait_calls(hook_dist, 4)  # the recorder behind the broken hook got every call
    # a stopping dispatcher lets queued hook calls finish (failing ones fail at once)
    assert hook_calls(dispatcher, "broken", "error") == 4
    assert (done.state, done.tries, done.result is not None) == ("complete", 1, True)


async def test_slow_and_stuck_hooks_are_timed_out_and_never_delay_a_task(h: Harness, hook_dist: Any) -> None:
    async with h.dispatcher(hooks=("slow", "stuck", "recorder"), hook_timeout=0.2) as dispatcher, \
            h.service({"echo": echo}):
        started = anyio.current_time()
        records = [await h.run("echo", i) for i in range(3)]
        took = anyio.current_time() - started
        await wait_calls(hook_dist, 3 * 4)
        with anyio.fail_after(10):  # an in-process counter has no change notification to await (as in the
            # conformance suite's poll_until); the hooks' timeouts take 0.2 s each
            while hook_calls(dispatcher, "stuck", "timeout") < 1 or hook_calls(dispatcher, "slow", "timeout") < 1:  # noqa: ASYNC110
                await anyio.sleep(0.02)
    assert [(r.state, r.tries) for r in records] == [("complete", 1)] * 3
    assert took < 3 * 2 * 0.2 + 3  # no task waited for the 0.2 s timeouts of 6 state changes
    # the stuck hook's threads never return: after MAX_ABANDONED of them its calls are dropped, not piled up
    assert hook_calls(dispatcher, "stuck", "timeout") <= 4


@pytest.mark.parametrize(("hook", "message"), [
    ("absent", "hook 'absent' is not installed: no entry point 'absent' in group jetbridge.hooks (installed: "),
    ("nothing", "hook 'nothing' (jb_test_hooks:Nothing) has none of the hook methods before_attempt"),
    ("failing", "hook 'failing' (jb_test_hooks:Failing) cannot be loaded: OSError: no audit database"),
    ("missing-module", "hook 'missing-module' (jb_test_hooks_nowhere:Hook) cannot be loaded: ModuleNotFoundError"),
])
async def test_a_hook_that_cannot_be_used_is_a_one_line_config_error(
        h: Harness, hook_dist: Any, hook: str, message: str) -> None:
    with pytest.raises(jetbridge.ConfigError) as err:
        Dispatcher(h.nc, h.settings(hooks=(hook,)))
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


async def test_without_hooks_the_dispatcher_has_none(h: Harness) -> None:
    dispatcher = Dispatcher(h.nc, h.settings())
    assert dispatcher.hooks is None and dispatcher.settler.hooks is None


def test_hooks_setting_from_environment_file_and_flags(tmp_path: Path) -> None:
    assert load_settings(env={"JETBRIDGE_HOOKS": "audit, notify", "JETBRIDGE_HOOK_TIMEOUT": "250ms"}).hooks == (
        "audit", "notify")
    assert load_settings(env={"JETBRIDGE_HOOK_TIMEOUT": "250ms"}).hook_timeout == 0.25
    config = tmp_path / "jetbridge.toml"
    config.write_text('hooks = ["audit"]\n')
    assert load_settings(config, env={}, flags={"hooks": ["a", "b"]}).hooks == ("a", "b")
    with pytest.raises(jetbridge.ConfigError, match="hooks: 'no way' is not an entry point name"):
        Settings(hooks=("no way",)).validate()
    with pytest.raises(jetbridge.ConfigError, match="hook_timeout must be more than 0"):
        Settings(hook_timeout=0).validate()
