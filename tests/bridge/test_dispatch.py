"""End to end on a real nats-server: the dispatcher, the Python SDK service and the producer together."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import anyio
import jetbridge
import pytest
from jetbridge._task import TaskState
from nats.aio.client import Client

from tests.harness import Harness

pytestmark = pytest.mark.anyio


async def test_success_stores_the_result(h: Harness) -> None:
    async def handle(task: jetbridge.Task) -> Any:
        return {"got": task.payload, "attempt": task.attempt}

    async with h.dispatcher(), h.service({"echo": handle}):
        record = await h.run("echo", {"n": 1})
    assert record.task_state is TaskState.COMPLETE
    assert record.result is not None and record.result.value() == {"got": {"n": 1}, "attempt": 1}
    assert record.tries == 1 and record.last_err == ""


async def test_binary_payload_and_result_round_trip(h: Harness) -> None:
    async def handle(task: jetbridge.Task) -> Any:
        assert isinstance(task.payload, jetbridge.Bytes)
        return jetbridge.Bytes(task.payload.data[::-1], "image/png")

    async with h.dispatcher(), h.service({"bin": handle}):
        record = await h.run("bin", jetbridge.Bytes(b"\x00\x01\xff", "application/x-thing"))
    assert record.result is not None
    assert record.result.value() == jetbridge.Bytes(b"\xff\x01\x00", "image/png")


async def test_retry_then_success_counts_attempts(h: Harness) -> None:
    async def flaky(task: jetbridge.Task) -> Any:
        if task.attempt < 3:
            raise jetbridge.Retry(f"not yet {task.attempt}", code="flaky")
        return "ok"

    async with h.dispatcher(), h.service({"flaky": flaky}):
        record = await h.run("flaky")
    assert (record.state, record.tries, record.result and record.result.value()) == ("complete", 3, "ok")


async def test_exhausted_tries_expire_with_the_last_error(h: Harness) -> None:
    async def always(task: jetbridge.Task) -> Any:
        raise jetbridge.Retry(f"boom {task.attempt}", code="boom")

    async with h.dispatcher(), h.service({"bad": always}):
        record = await h.run("bad", max_tries=3)
    assert record.task_state is TaskState.EXPIRED
    assert record.tries == 3
    assert record.last_err == "gave up after 3 of 3 attempts: boom 3" and record.last_err_code == "boom"


async def test_queue_max_tries_caps_the_task(nc: Client, unique: str) -> None:
    h = Harness(nc, unique)
    await h.make_queue(max_tries=2)

    async def always(task: jetbridge.Task) -> Any:
        raise RuntimeError("kaput")

    async with h.dispatcher(), h.service({"bad": always}):
        record = await h.run("bad", max_tries=10)
    assert (record.state, record.tries, record.last_err_code) == ("expired", 2, "handler_error")
    assert "RuntimeError: kaput" in record.last_err


async def test_terminate_is_never_retried(h: Harness) -> None:
    calls = 0

    async def refuse(task: jetbridge.Task) -> Any:
        nonlocal calls
        calls += 1
        raise jetbridge.Terminate("no such mailbox", code="bad_address")

    async with h.dispatcher(), h.service({"mail": refuse}):
        record = await h.run("mail")
    assert (record.state, record.tries, record.last_err, record.last_err_code) == (
        "terminated", 1, "no such mailbox", "bad_address")
    assert calls == 1


async def test_deadline_passed_before_start_expires_without_an_attempt(h: Harness) -> None:
    started = anyio.Event()

    async def handle(task: jetbridge.Task) -> Any:
        started.set()

    task_id = await h.producer.enqueue("late", deadline=timedelta(seconds=-1))
    async with h.dispatcher(), h.service({"late": handle}):
        record = await h.producer.wait(task_id, timeout=10)
    assert (record.state, record.tries, record.last_err_code) == ("expired", 0, "deadline")
    assert not started.is_set()


async def test_retry_after_from_the_handler_is_honoured(h: Harness) -> None:
    seen: list[float] = []

    async def later(task: jetbridge.Task) -> Any:
        seen.append(anyio.current_time())
        if task.attempt == 1:
            raise jetbridge.Retry("busy", after=0.6)
        return "done"

    async with h.dispatcher(), h.service({"later": later}):
        record = await h.run("later")
    assert record.state == "complete"
    assert seen[1] - seen[0] >= 0.6


async def test_no_handler_waits_visibly_without_spending_attempts(h: Harness) -> None:
    async with h.dispatcher(), h.events() as events:
        task_id = await h.producer.enqueue("nobody", max_tries=2)
        with anyio.fail_after(10):
            async for event in events:
                if event.task_id == task_id and event.state == "no_handler":
                    break
        record = await h.producer.get(task_id)
        assert (record.state, record.tries) == ("no_handler", 0) and "no handler online" in record.last_err

        async def now_here(task: jetbridge.Task) -> Any:
            return task.attempt

        async with h.service({"nobody": now_here}):
            record = await h.producer.wait(task_id, timeout=10)
    assert (record.state, record.tries, record.result and record.result.value()) == ("complete", 1, 1)


async def test_long_task_heartbeats_past_its_lease_and_stores_progress(nc: Client, unique: str) -> None:
    h = Harness(nc, unique)
    await h.make_queue(lease=0.6)
    progress_seen = anyio.Event()

    async def slow(task: jetbridge.Task) -> Any:
        for i in range(1, 5):
            await anyio.sleep(0.4)
            await task.heartbeat(i / 4, f"step {i}")
        return "finished"

    async with h.dispatcher(), h.service({"slow": slow}), h.events() as events:
        task_id = await h.producer.enqueue("slow")
        with anyio.fail_after(15):
            async for event in events:
                if event.task_id != task_id:
                    continue
                if event.progress is not None and event.progress_message.startswith("step"):
                    progress_seen.set()
                if event.state == "complete":
                    break
        record = await h.producer.get(task_id)
    assert (record.state, record.tries) == ("complete", 1)  # 1.6 s of work under a 0.6 s lease, one attempt
    assert progress_seen.is_set()


async def test_a_silent_handler_is_declared_lost_and_retried(nc: Client, unique: str) -> None:
    """A handler that replies to nothing and never heartbeats (as a killed process) loses its attempt."""
    h = Harness(nc, unique)
    await h.make_queue(lease=0.5, max_run_time=30)

    async def blackhole(msg: Any) -> None:
        return None

    sub = await nc.subscribe(f"{h.prefix}.hang", queue="jetbridge", cb=blackhole)
    async with h.dispatcher():
        task_id = await h.producer.enqueue("hang", max_tries=2)
        with anyio.fail_after(10):  # far less than the 30 s attempt budget
            record = await h.producer.wait(task_id)
    await sub.unsubscribe()
    assert (record.state, record.tries, record.last_err_code) == ("expired", 2, "handler_lost")


async def test_timeout_then_stale_reply_is_not_stored(nc: Client, unique: str) -> None:
    h = Harness(nc, unique)
    await h.make_queue(max_run_time=0.5, lease=0.5)

    async def slow_first(task: jetbridge.Task) -> Any:
        if task.attempt == 1:
            with anyio.CancelScope(shield=True):
                await anyio.sleep(1.0)
            return "stale"
        return "fresh"

    async with h.dispatcher() as d, h.service({"slow": slow_first}):
        record = await h.run("slow")
        stale = d.metrics.stale_messages.labels(kind="reply")
        with anyio.fail_after(5):
            while stale._value.get() < 1:  # noqa: ASYNC110 - an in-process counter: no event to await
                await anyio.sleep(0.05)
    assert (record.state, record.result and record.result.value(), record.tries) == ("complete", "fresh", 2)


async def test_operator_cancel_stops_a_running_handler(h: Harness) -> None:
    started, cancelled = anyio.Event(), anyio.Event()
    reasons: list[str | None] = []

    async def forever(task: jetbridge.Task) -> Any:
        started.set()
        try:
            await anyio.sleep(60)
        except anyio.get_cancelled_exc_class():
            reasons.append(task.cancel_reason)
            cancelled.set()
            raise

    async with h.dispatcher(), h.service({"forever": forever}):
        task_id = await h.producer.enqueue("forever")
        with anyio.fail_after(10):
            await started.wait()
            await h.producer.cancel(task_id, reason="changed my mind")
            await cancelled.wait()
        record = await h.producer.wait(task_id, timeout=5)
    assert (record.state, record.last_err, record.last_err_code) == ("terminated", "changed my mind", "cancelled")
    assert reasons == ["operator"]


async def test_result_too_large_for_the_store_terminates(h: Harness) -> None:
    async def big(task: jetbridge.Task) -> Any:
        return "x" * (h.nc.max_payload - 2000)

    async with h.dispatcher(), h.service({"big": big}):
        record = await h.run("big", "p" * 1000)
    assert (record.state, record.last_err_code) == ("terminated", "result_too_large")


async def test_routes_pick_exact_then_prefix_then_catchall(h: Harness) -> None:
    from bridge.routes import Route

    routes = (Route("img:*", f"{h.prefix}.images"), Route("img:special", f"{h.prefix}.special"),
              Route("*", f"{h.prefix}.other"))
    seen: dict[str, str] = {}

    async def tag(name: str) -> Any:
        async def handle(task: jetbridge.Task) -> Any:
            seen[task.type] = name
            return name
        return handle

    async with h.dispatcher(routes=routes), h.service(
            {"images": await tag("images"), "special": await tag("special"), "other": await tag("other")}):
        for t in ("img:resize", "img:special", "mail:new"):
            await h.run(t)
    assert seen == {"img:resize": "images", "img:special": "special", "mail:new": "other"}


async def test_two_dispatchers_complete_each_task_once(h: Harness) -> None:
    calls: dict[str, int] = {}

    async def count(task: jetbridge.Task) -> Any:
        calls[task.id] = calls.get(task.id, 0) + 1
        await anyio.sleep(0.001)
        return task.id

    async with h.dispatcher(), h.dispatcher(), h.service({"n": count}, concurrency=200):
        results = await h.producer.enqueue_many(jetbridge.TaskSpec(type="n", payload=i) for i in range(300))
        ids = [r for r in results if isinstance(r, str)]
        records = [await h.producer.wait(i, timeout=30) for i in ids]
    assert len(ids) == 300
    assert all(r.state == "complete" and r.tries == 1 for r in records)
    assert all(calls[i] == 1 for i in ids)


async def test_waiting_retries_hold_no_slot_so_fresh_work_runs(nc: Client, unique: str) -> None:
    """max_concurrent 2 and four tasks waiting 30 s for their retry: fresh tasks still run at once.

    In asyncjobs a delayed NAK keeps counting against max_ack_pending; Jetbridge schedules the retry
    server-side (JETBRIDGE_SCHEDULES) and finishes the item, so the waiting retries hold no slot.
    """
    h = Harness(nc, unique)
    await h.make_queue(max_concurrent=2)
    failed = anyio.Event()
    failures = 0

    async def fail_once(task: jetbridge.Task) -> Any:
        nonlocal failures
        if task.attempt == 1:
            failures += 1
            if failures == 4:
                failed.set()
            raise jetbridge.Retry("come back in 30s", after=30)
        return "late"

    async def fresh(task: jetbridge.Task) -> Any:
        return "fresh"

    async with h.dispatcher(), h.service({"slow-retry": fail_once, "fresh": fresh}):
        waiting = [await h.producer.enqueue("slow-retry") for _ in range(4)]
        with anyio.fail_after(10):
            await failed.wait()
        with anyio.fail_after(10):
            records = [await h.run("fresh") for _ in range(6)]
        assert all(r.state == "complete" for r in records)
        states = {(await h.producer.get(t)).state for t in waiting}
        info = await h.admin.info(h.queue)
    assert states == {"retry"}
    assert info.in_flight == 0  # the four waiting retries are not holding consumer slots


async def test_scheduled_retry_comes_back_on_time(h: Harness) -> None:
    times: list[float] = []

    async def fail_once(task: jetbridge.Task) -> Any:
        times.append(anyio.current_time())
        if task.attempt == 1:
            raise jetbridge.Retry("again in 1.5s", after=1.5)
        return "back"

    async with h.dispatcher() as d, h.service({"sched": fail_once}):
        record = await h.run("sched")
        assert d.metrics.retries.get(h.queue, "sched") == 1
    assert record.state == "complete" and record.tries == 2
    assert 1.5 <= times[1] - times[0] < 4.0  # schedules have one-second precision


async def test_asyncjobs_dependencies_wait_run_with_results_or_become_unreachable(h: Harness) -> None:
    """Tasks with asyncjobs ``dependencies`` (state blocked) run after their parents, or never if one fails."""
    from jetbridge._requester import Requester
    from jetbridge._store import TaskStore, js_publish
    from jetbridge._task import TaskState, new_task
    from jetbridge._timeutil import now_ns

    store, rq = TaskStore(Requester(h.nc)), Requester(h.nc)
    seen: dict[str, Any] = {}

    async def parent(task: jetbridge.Task) -> Any:
        if task.payload == "fail":
            raise jetbridge.Terminate("parent failed")
        return f"result of {task.payload}"

    async def child(task: jetbridge.Task) -> Any:
        seen[task.id] = task.attempt
        return "child ran"

    async def blocked(task_id: str, parents: list[str]) -> None:
        doc = new_task(task_id=task_id, task_type="child", queue=h.queue, payload=b"null", content_type="",
                       max_tries=3, created_ns=now_ns(), deadline_ns=None)
        doc.state, doc.dependencies, doc.load_dependencies = TaskState.BLOCKED.value, parents, True
        await store.create(doc)
        await js_publish(rq, f"CHORIA_AJ.Q.{h.queue}.{task_id}", f'{{"kind":0,"job":"{task_id}"}}'.encode())

    async with h.dispatcher(), h.service({"parent": parent, "child": child}):
        ok1, ok2 = await h.producer.enqueue("parent", "a"), await h.producer.enqueue("parent", "b")
        bad = await h.producer.enqueue("parent", "fail")
        await blocked(f"c1-{h.unique}", [ok1, ok2])
        await blocked(f"c2-{h.unique}", [ok1, bad])
        await blocked(f"c3-{h.unique}", ["missing-parent"])
        good = await h.producer.wait(f"c1-{h.unique}", timeout=30)
        failed = await h.producer.wait(f"c2-{h.unique}", timeout=30)
        missing = await h.producer.wait(f"c3-{h.unique}", timeout=30)
    assert good.state == "complete" and good.dependency_results is not None
    assert {k: v["payload"] for k, v in good.dependency_results.items()} == {ok1: "result of a", ok2: "result of b"}
    assert (failed.state, failed.tries, failed.last_err_code) == ("unreachable", 0, "dependency")
    assert f"dependency {bad} ended terminated" in failed.last_err
    assert (missing.state, missing.last_err) == ("unreachable", "dependency missing-parent does not exist")
    assert list(seen) == [f"c1-{h.unique}"]


@pytest.mark.parametrize("active_events", [True, False])
async def test_the_active_event_can_be_turned_off(h: Harness, active_events: bool) -> None:
    async def ok(task: jetbridge.Task) -> Any:
        return "done"

    async with h.dispatcher(active_events=active_events), h.service({"ok": ok}), h.events() as events:
        task_id = await h.producer.enqueue("ok")
        states = []
        with anyio.fail_after(10):
            async for event in events:
                if event.task_id == task_id:
                    states.append(event.state)
                    if event.state == "complete":
                        break
    assert states == (["new", "active", "complete"] if active_events else ["new", "complete"])
