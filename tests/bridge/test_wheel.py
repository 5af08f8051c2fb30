"""The watchdogs' timer wheel: at most a tick early, short delays exact, removed callbacks never run, one loop
timer however many are armed."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.wheel import TimerWheel

pytestmark = pytest.mark.anyio
TICK = 0.01


async def test_callbacks_run_once_each_at_most_a_tick_early_and_removed_ones_never() -> None:
    loop = asyncio.get_running_loop()
    wheel = TimerWheel(tick=TICK)
    ran: dict[str, float] = {}
    armed_at = loop.time()
    delays = {f"k{i}": (i % 7) * 0.013 for i in range(60)}  # 0 and 0.013: shorter and longer than a tick
    for key, delay in delays.items():
        wheel.add(key, delay, lambda key=key: ran.setdefault(key, loop.time()))
    removed = {key for i, key in enumerate(delays) if i % 3 == 0}
    for key in removed:
        wheel.remove(key)
    wheel.add("k1", 0.05, lambda: ran.setdefault("k1", loop.time()))  # armed again: only the new time counts
    delays["k1"] = 0.05
    everything = asyncio.Event()
    wheel.add("last", 0.1, everything.set)
    await asyncio.wait_for(everything.wait(), 10)
    assert set(ran) == set(delays) - removed
    for key, at in ran.items():
        early = 0.0 if delays[key] < TICK else TICK
        assert at >= armed_at + delays[key] - early, f"{key} ran {armed_at + delays[key] - at:.4f}s early"
    assert len(wheel) == 0


async def test_a_callback_can_arm_again_and_the_wheel_keeps_one_timer() -> None:
    wheel = TimerWheel(tick=0.005)
    fired: list[int] = []
    done = asyncio.Event()

    def again() -> None:
        fired.append(1)
        if len(fired) < 5:
            wheel.add("w", 0.006 if len(fired) % 2 else 0.001, again)  # a slot, then a timer of its own
        else:
            done.set()

    wheel.add("w", 0.0, again)
    for i in range(100):  # many far slots: still one loop timer, for the earliest
        wheel.add(f"far{i}", 60 + i, lambda: None)
    await asyncio.wait_for(done.wait(), 10)
    assert len(fired) == 5
    scheduled = [h for h in asyncio.get_running_loop()._scheduled if not h.cancelled()]  # type: ignore[attr-defined]
    assert sum(1 for h in scheduled if getattr(h, "_callback", None) == wheel._fire) == 1
    wheel.close()
    assert len(wheel) == 0


async def test_a_callback_that_removes_another_due_in_the_same_slot_stops_it() -> None:
    wheel = TimerWheel(tick=TICK)
    ran: list[str] = []
    done = asyncio.Event()
    wheel.add("a", TICK, lambda: (ran.append("a"), wheel.remove("b")))
    wheel.add("b", TICK, lambda: ran.append("b"))
    wheel.add("end", 5 * TICK, done.set)
    await asyncio.wait_for(done.wait(), 10)
    assert ran in (["a"], ["b", "a"])  # whichever runs first, b never runs after a removed it


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.booleans()), min_size=1, max_size=30))
def test_any_mix_of_adds_and_removes(plan: list[tuple[int, bool]]) -> None:
    async def run() -> None:
        wheel = TimerWheel(tick=0.002)
        ran: list[int] = []
        for i, (ticks, remove) in enumerate(plan):
            wheel.add(i, ticks * 0.002, lambda i=i: ran.append(i))
            if remove:
                wheel.remove(i)
        end = asyncio.Event()
        wheel.add("end", 0.02, end.set)
        await asyncio.wait_for(end.wait(), 10)
        assert sorted(ran) == [i for i, (_, remove) in enumerate(plan) if not remove]
        assert len(wheel) == 0

    asyncio.run(run())


async def test_a_failing_callback_does_not_stop_the_others() -> None:
    loop = asyncio.get_running_loop()
    reported: list[dict[str, object]] = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    try:
        wheel = TimerWheel(tick=TICK)
        ran: list[str] = []
        done = asyncio.Event()

        def fail() -> None:
            raise RuntimeError("boom")

        wheel.add("a", TICK, fail)
        wheel.add("b", TICK, lambda: ran.append("b"))
        wheel.add("c", 3 * TICK, lambda: ran.append("c"))
        wheel.add("end", 5 * TICK, done.set)
        await asyncio.wait_for(done.wait(), 10)
    finally:
        loop.set_exception_handler(None)
    assert ran == ["b", "c"]
    assert [(c["message"], str(c["exception"])) for c in reported] == [("timer wheel callback failed", "boom")]


async def test_a_watchdog_woken_early_arms_again_and_ends_a_silent_attempt_only_once_its_lease_is_up(nc: Any) -> None:
    """The wheel may wake a watchdog up to a tick early. Woken early (here: called at once), it must not call a
    live attempt lost (a retry beside a handler still running); it ends the silent attempt once the lease and the
    first-contact grace have passed, not before."""
    from jetbridge._task import new_task
    from jetbridge.internal import now_ns

    from bridge.attempts import Attempt, AttemptAborted, AttemptRunner
    from bridge.metrics import Metrics
    from bridge.routes import default_route

    runner = AttemptRunner(nc, dispatcher_id="wheeltest", metrics=Metrics(), first_contact_grace=0.2)
    await runner.start()
    await nc.subscribe("wheeltest.silent", cb=_ignore)  # a handler that takes the request and never answers
    task = new_task(task_id="t1", task_type="silent", queue="Q", payload=None, content_type="", max_tries=1,
                    created_ns=now_ns(), deadline_ns=None)
    attempt = Attempt(task=task, seq=1, queue="Q", route=default_route(), subject="wheeltest.silent", budget=30.0,
                      lease=0.3)
    runner.running[attempt.token] = attempt
    loop = asyncio.get_running_loop()
    started = loop.time()
    waiting = asyncio.ensure_future(runner._requester.request("wheeltest.silent", b"{}", timeout=None,
                                                              token=attempt.token))
    await asyncio.sleep(0)
    runner._check_lease(attempt)  # an early wake, well before lease + grace (0.5 s)
    with pytest.raises(AttemptAborted) as ended:
        await asyncio.wait_for(waiting, 10)
    assert ended.value.reason == "lost"
    assert loop.time() - started >= 0.5 - 0.05  # the lease and the grace, less the monotonic clocks' difference
    runner.running.pop(attempt.token)
    await runner.close()


async def _ignore(msg: Any) -> None:
    return None
