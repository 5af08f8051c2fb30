"""Issue 13, items 1-3: one live attempt per task, verified content only, no item runs another queue's task.

Each case is what a hostile or careless producer, operator or race does on a real server: a second work item for a
task while its attempt runs (a retry schedule, ``task retry``, a reconciler, a forged item), a task rewritten between
the dispatcher's read and its claim, items that name a task of another queue.
"""

from __future__ import annotations

from typing import Any

import anyio
import jetbridge
import msgspec
import pytest
from jetbridge import _names as names
from jetbridge._requester import Requester
from jetbridge._store import TaskStore, js_api, js_publish
from nats.aio.client import Client

from tests.bad_input.conftest import eventually, metric
from tests.harness import Harness
from tests.security.test_signing import PUBLIC, signed

pytestmark = pytest.mark.anyio


class Gate:
    """A handler that records every attempt it sees and holds each one until released."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, str, Any]] = []
        self.entered = anyio.Event()
        self.release = anyio.Event()

    async def handle(self, task: jetbridge.Task) -> Any:
        self.calls.append((task.id, task.attempt, task.queue, task.payload))
        self.entered.set()
        await self.release.wait()
        return {"attempt": task.attempt}


async def put_item(nc: Client, queue: str, task_id: str, *, subject_id: str | None = None) -> None:
    """Publish a work item straight onto a queue stream, as a retry mover, an operator or an attacker would."""
    item = msgspec.json.encode({"kind": 0, "job": task_id})
    await js_publish(Requester(nc), names.queue_subject(queue, subject_id or task_id), item)


async def queue_state(nc: Client, queue: str) -> tuple[int, int]:
    """(items stored, items delivered and not yet settled) of a queue."""
    rq = Requester(nc)
    stream = await js_api(rq, f"STREAM.INFO.{names.queue_stream(queue)}")
    consumer = await js_api(rq, f"CONSUMER.INFO.{names.queue_stream(queue)}.{names.QUEUE_CONSUMER}")
    return int(stream["state"]["messages"]), int(consumer["num_ack_pending"])


async def assert_queue_settles_empty(nc: Client, queue: str, within: float = 10.0) -> None:
    """Every item settled and removed. Acks are sent without waiting and the server removes an acked item from a
    work queue just after it stops counting it pending, so this waits (bounded) for (0, 0) rather than reading once;
    an item left behind still fails it."""
    state = await queue_state(nc, queue)
    with anyio.move_on_after(within):
        while state != (0, 0):
            await anyio.sleep(0.05)
            state = await queue_state(nc, queue)
    assert state == (0, 0), f"(items stored, items pending) = {state}"


async def test_a_second_item_while_the_attempt_runs_is_adopted_not_run(h: Harness) -> None:
    gate = Gate()
    async with h.dispatcher() as d, h.service({"slow": gate.handle}):
        task_id = await h.producer.enqueue("slow", max_tries=2)
        with anyio.fail_after(20):
            await gate.entered.wait()
        for n in (1, 2):  # each replaces the item before it: the queue keeps one per task
            await put_item(h.nc, h.queue, task_id)
            await eventually(lambda n=n: metric(d.metrics.takeovers, queue=h.queue, verdict="adopted") >= n)
        gate.release.set()
        record = await h.producer.wait(task_id, timeout=20)
        await eventually(lambda: d.busy.count == 0)
        await assert_queue_settles_empty(h.nc, h.queue)  # the adopted items were settled with the outcome
    assert (record.state, record.tries, record.result and record.result.value()) == ("complete", 1, {"attempt": 1})
    assert [c[:2] for c in gate.calls] == [(task_id, 1)]


async def test_a_second_item_on_another_dispatcher_is_handed_to_the_one_running_the_task(h: Harness) -> None:
    gate = Gate()
    async with h.dispatcher(concurrency=1) as first, h.service({"slow": gate.handle}):
        task_id = await h.producer.enqueue("slow", max_tries=2)
        with anyio.fail_after(20):
            await gate.entered.wait()
        async with h.dispatcher() as second:  # the only one with a free slot: it gets the second item
            await put_item(h.nc, h.queue, task_id)
            await eventually(lambda: metric(second.metrics.takeovers, queue=h.queue, verdict="handed_over") >= 1)
            gate.release.set()
            record = await h.producer.wait(task_id, timeout=20)
            await eventually(lambda: first.busy.count == 0 and second.busy.count == 0)
            await assert_queue_settles_empty(h.nc, h.queue)
    assert (record.state, record.tries, record.dispatcher) == ("complete", 1, first.id)
    assert [c[:2] for c in gate.calls] == [(task_id, 1)]


async def test_an_operator_retry_and_the_retry_schedule_never_run_two_attempts(h: Harness) -> None:
    """Attempt 1 asks for a retry in 1 s (a server-side schedule); an operator retries the task at once, attempt 2
    starts, and then the schedule fires and puts a second item on the queue while attempt 2 runs."""
    gate = Gate()

    async def flaky(task: jetbridge.Task) -> Any:
        if task.attempt == 1:
            gate.calls.append((task.id, 1, task.queue, task.payload))
            raise jetbridge.Retry("busy", after=1.0)
        return await gate.handle(task)

    async with h.dispatcher() as d, h.service({"flaky": flaky}), h.events() as events:
        task_id = await h.producer.enqueue("flaky", max_tries=5)
        with anyio.fail_after(20):
            async for event in events:
                if event.state == "retry":
                    break
        await h.producer.retry(task_id)
        with anyio.fail_after(20):
            await gate.entered.wait()
        await eventually(lambda: metric(d.metrics.takeovers, queue=h.queue, verdict="adopted") >= 1)
        gate.release.set()
        record = await h.producer.wait(task_id, timeout=20)
        await eventually(lambda: d.busy.count == 0)
        await assert_queue_settles_empty(h.nc, h.queue)
    assert [c[:2] for c in gate.calls] == [(task_id, 1), (task_id, 2)]
    assert (record.state, record.tries) == ("complete", 2)


async def test_a_task_rewritten_before_its_claim_is_verified_again(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """The signed task is read and verified, then replaced with changed content before the ``active`` save: the
    save loses its compare-and-set, and the re-read version must be verified too, never run."""
    gate = Gate()
    gate.release.set()
    producer = signed(h)
    task_id = await producer.enqueue("work", {"n": 1}, max_tries=3)
    real_save = TaskStore.save
    tampered = False

    async def save_after_tampering(self: TaskStore, doc: jetbridge.TaskRecord, seq: int, **kw: Any) -> int:
        nonlocal tampered
        if doc.id == task_id and not tampered:
            tampered = True
            store = TaskStore(Requester(h.nc))
            current, current_seq = await store.load(task_id)
            current.payload = b'{"n": 666}'  # the signature no longer matches
            await store.save(current, current_seq)
        return await real_save(self, doc, seq, **kw)

    # In place before the dispatcher starts: it may claim the task while the handler service is still starting.
    monkeypatch.setattr(TaskStore, "save", save_after_tampering)
    async with h.dispatcher(verify_key=PUBLIC), h.service({"work": gate.handle}):
        record = await producer.wait(task_id, timeout=20)
    assert tampered
    assert (record.state, record.last_err_code, record.tries) == ("terminated", "signature", 0)
    assert gate.calls == []
    await producer.close()


async def test_items_naming_a_task_of_another_queue_are_dropped(h: Harness, nc: Client) -> None:
    other = Harness(nc, f"{h.unique}b")
    await other.make_queue()
    gate = Gate()
    gate.release.set()
    victim = await other.producer.enqueue("work", {"n": 1})
    own = await h.producer.enqueue("work", {"n": 2})
    async with h.dispatcher() as d, h.service({"work": gate.handle}):
        for _ in range(3):
            await put_item(nc, h.queue, victim)  # on queue A's subject for the victim's id
        await put_item(nc, h.queue, own, subject_id=victim)  # an item whose subject and job disagree
        record = await h.producer.wait(own, timeout=20)
        await eventually(lambda: metric(d.metrics.dropped_items, queue=h.queue, reason="foreign_item") >= 2)
        await assert_queue_settles_empty(h.nc, h.queue)
    untouched = await other.producer.get(victim)
    assert (untouched.state, untouched.tries) == ("new", 0)
    assert record.state == "complete"
    assert [c[0] for c in gate.calls] == [own] and gate.calls[0][2] == h.queue


async def test_heartbeat_free_start_within_first_contact_grace_is_not_lost(h: Harness) -> None:
    """A handler that sees the request only after more than a heartbeat timeout (a cold runtime, a loaded
    machine) keeps its attempt: the first heartbeat gets the extra first-contact grace."""
    await h.make_queue(lease=0.5, max_run_time=10.0)
    from jetbridge import _protocol as proto
    from nats.aio.msg import Msg

    from tests.bad_input.conftest import reply_body, rogue

    seen: list[int] = []

    async def cold(msg: Msg, request: proto.TaskRequest) -> None:
        seen.append(request.attempt)
        await anyio.sleep(0.9)  # the cold start: longer than the 0.5 s heartbeat timeout, within the grace
        await h.nc.publish(request.heartbeat_subject, proto.encode_heartbeat(request.task_id, request.attempt_token))
        await h.nc.publish(msg.reply, reply_body(request, result="warm"))

    async with h.dispatcher(first_contact_grace=2.0), rogue(h, "cold", cold):
        record = await h.run("cold", max_tries=3)
    assert (record.state, record.tries, seen) == ("complete", 1, [1])


async def test_a_forged_item_on_a_tasks_own_subject_does_not_strand_it(h: Harness) -> None:
    """The forgery replaces the task's real item (a queue keeps one item per subject); dropping the forgery must
    put the real item back, or the task waits for the reconciler."""
    gate = Gate()
    gate.release.set()
    task_id = await h.producer.enqueue("work", {"n": 1})
    decoy = await h.producer.enqueue("work", {"n": 2})
    await put_item(h.nc, h.queue, decoy, subject_id=task_id)  # on task_id's subject, naming the decoy
    async with h.dispatcher(reconcile_interval=0) as d, h.service({"work": gate.handle}):
        record = await h.producer.wait(task_id, timeout=20)
        await h.producer.wait(decoy, timeout=20)
        await eventually(lambda: metric(d.metrics.dropped_items, queue=h.queue, reason="foreign_item") >= 1)
    assert (record.state, record.tries) == ("complete", 1)
    assert sorted(c[0] for c in gate.calls) == sorted([task_id, decoy])


async def test_a_second_item_while_the_attempt_is_being_started_waits_for_it(h: Harness) -> None:
    """Between the ``active`` save and the attempt's start (the ``active`` event is published in between) a second
    item for the task must not be taken for an orphan of this very dispatcher: it waits, then is adopted."""
    gate = Gate()
    async with h.dispatcher() as d, h.service({"slow": gate.handle}):
        real_event = d.settler.event
        duplicated = False

        async def event_with_a_duplicate(task: jetbridge.TaskRecord) -> None:
            nonlocal duplicated
            if task.state == "active" and not duplicated:
                duplicated = True
                await put_item(h.nc, h.queue, task.id)
                await eventually(lambda: metric(d.metrics.takeovers, queue=h.queue, verdict="starting") >= 1)
            await real_event(task)

        d.settler.event = event_with_a_duplicate  # type: ignore[method-assign]
        task_id = await h.producer.enqueue("slow", max_tries=3)
        with anyio.fail_after(20):
            await gate.entered.wait()
        await eventually(lambda: metric(d.metrics.takeovers, queue=h.queue, verdict="adopted") >= 1)
        gate.release.set()
        record = await h.producer.wait(task_id, timeout=20)
    assert [c[:2] for c in gate.calls] == [(task_id, 1)]
    assert (record.state, record.tries) == ("complete", 1)


async def test_a_restarted_holder_saying_not_running_does_not_free_its_predecessors_attempt(nc: Client) -> None:
    """A dispatcher restarted under the same (configured) id answers "not running" for an attempt its previous
    process started; that process's handler may still be working, so the task waits out the orphan wait."""
    from jetbridge._timeutil import format_ns, now_ns

    from bridge.takeover import Claims, Takeover, Verdict

    holder = Takeover(nc, "restarted-d", lambda task_id: None, Claims())
    await holder.start()
    asker = Takeover(nc, "other-d", lambda task_id: None, Claims())
    try:
        queue = "QR"
        reply = f"$JS.ACK.{names.queue_stream(queue)}.{names.QUEUE_CONSUMER}.1.2.3.4.0"

        def active(tried_ns: int) -> jetbridge.TaskRecord:
            return jetbridge.TaskRecord(id=f"t{tried_ns}", type="x", queue=queue, payload=None, max_tries=3,
                                        state="active", tries=1, created=format_ns(tried_ns),
                                        tried=format_ns(tried_ns), dispatcher="restarted-d")

        before = active(now_ns() - 10 * 1_000_000_000)  # started by the holder's previous process
        assert (await asker.check(before, queue, reply, 5.0))[0] is Verdict.WAIT
        after = active(now_ns())  # started by the process that answers: its "not running" is the truth
        assert (await asker.check(after, queue, reply, 5.0))[0] is Verdict.TAKE_OVER
    finally:
        await holder.close()
