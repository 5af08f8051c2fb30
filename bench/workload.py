"""Putting tasks on a queue quickly, and timing how fast a queue empties.

``fill`` writes exactly what ``Producer.enqueue`` writes (the SDK builds each task document; then the task is
created with a compare-and-set against sequence 0 and, once stored, its work item published with
``Nats-Msg-Id``), but a chunk of tasks at a time with every publish of a step in flight at once instead of
awaiting each, so 100,000 tasks are queued in seconds. For the drains it is set-up; the ``enqueue`` scenario
times it next to the SDK's own ``enqueue_many`` as the reference for a pipelined batch enqueue.

``measure_drain`` times a drain the same way for every consumer (the dispatcher, asyncjobs): it polls the queue
stream's message count every 20 ms; the clock starts at the first poll that sees fewer items than were queued
and stops at the first that sees none (a work item leaves the stream when it is acknowledged, which the
dispatcher does only after the task's final state is saved). Start-up (imports, connect, set-up) is excluded.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Mapping
from typing import Any

import msgspec
from jetbridge import _names as names
from jetbridge import _protocol as proto
from jetbridge._events import task_state_event
from jetbridge._producer import Producer, TaskSpec
from jetbridge._task import encode_task
from jetbridge._timeutil import format_ms, now_ns
from nats.aio.client import Client

from .infra import Proc, log

PAYLOAD = {"n": 0, "kind": "noop", "data": "0123456789abcdef0123456789abcdef"}
_json = msgspec.json.Decoder()


async def js_api(nc: Client, subject: str, body: Any = None) -> dict[str, Any]:
    payload = b"" if body is None else msgspec.json.encode(body)
    msg = await nc.request(f"$JS.API.{subject}", payload, timeout=5.0)
    reply: dict[str, Any] = _json.decode(msg.data)
    if reply.get("error"):
        raise RuntimeError(f"$JS.API.{subject}: {reply['error']}")
    return reply


async def create_queue(nc: Client, queue: str, max_concurrent: int) -> None:
    """The queue (and the task store) as `jetbridge queue add QUEUE --max-concurrent N` makes them."""
    from jetbridge._requester import Requester

    from bridge.queues import QueueAdmin, QueueConfig

    rq = Requester(nc)
    try:
        await QueueAdmin(rq).add(QueueConfig(name=queue, max_concurrent=max_concurrent))
    finally:
        await rq.close()


async def stream_messages(nc: Client, stream: str) -> int:
    info = await js_api(nc, f"STREAM.INFO.{stream}")
    return int(info["state"]["messages"])


class _Pipeline:
    """Publishes with a reply inbox and counts the acks, so many JetStream publishes can be in flight at once."""

    def __init__(self, nc: Client) -> None:
        self.nc = nc
        self.inbox = nc.new_inbox()
        self.sent = self.acked = self.errors = 0
        self.first_error = ""
        self.caught_up = asyncio.Event()
        self.sub: Any = None

    async def start(self) -> None:
        self.sub = await self.nc.subscribe(f"{self.inbox}.*", cb=self._on_ack, pending_msgs_limit=1_000_000,
                                           pending_bytes_limit=1 << 30)

    async def _on_ack(self, msg: Any) -> None:
        self.acked += 1
        if b'"error"' in msg.data:
            self.errors += 1
            self.first_error = self.first_error or msg.data.decode(errors="replace")
        if self.acked >= self.sent:
            self.caught_up.set()

    async def publish_all(self, messages: list[tuple[str, bytes, dict[str, str]]], limit_s: float) -> None:
        """Publish every message, then wait until every one is acknowledged."""
        self.caught_up.clear()
        for subject, data, headers in messages:
            self.sent += 1
            await self.nc.publish(subject, data, reply=f"{self.inbox}.a", headers=headers)
        if self.acked < self.sent:
            await asyncio.wait_for(self.caught_up.wait(), limit_s)


async def fill(nc: Client, queue: str, n: int, *, chunk: int = 2000, events: bool = False,
               limit_s: float = 120.0) -> list[str]:
    """Queue ``n`` no-op tasks (type ``noop``) and return their ids; raises if any publish failed.

    Chunk by chunk, in ``Producer.enqueue``'s order: every task of the chunk is created (pipelined), then, once
    all are stored, every work item is published (pipelined); with ``events``, the ``new`` events follow.
    """
    producer = Producer(nc, queue=queue)
    pipe = _Pipeline(nc)
    await pipe.start()
    ids: list[str] = []
    started = time.monotonic()
    try:
        for first in range(0, n, chunk):
            docs = [producer._build(TaskSpec(type="noop", payload=PAYLOAD))[0] for _ in range(min(chunk, n - first))]
            ids.extend(doc.id for doc in docs)
            await pipe.publish_all([(names.task_subject(d.id), encode_task(d), {names.H_EXPECTED_LAST_SUBJECT_SEQ: "0"})
                                    for d in docs], limit_s)
            await pipe.publish_all([(names.queue_subject(queue, d.id), msgspec.json.encode({"kind": 0, "job": d.id}),
                                     {names.H_MSG_ID: d.id}) for d in docs], limit_s)
            if events:
                for d in docs:
                    await nc.publish(names.task_state_event_subject(d.id), task_state_event(d))
    finally:
        await pipe.sub.unsubscribe()
        await producer.close()
    if pipe.errors:
        raise RuntimeError(f"fill: {pipe.errors} publishes failed, first: {pipe.first_error}")
    queued = await stream_messages(nc, names.queue_stream(queue))
    if queued != n:
        raise RuntimeError(f"fill: the queue holds {queued} items, not {n}")
    log(f"queued {n} tasks in {time.monotonic() - started:.1f}s")
    return ids


def _cpu(procs: Mapping[str, Proc | int]) -> dict[str, float | None]:
    from .infra import proc_cpu

    return {name: proc_cpu(p if isinstance(p, int) else p.pid) for name, p in procs.items()}


async def measure_drain(nc: Client, queue: str, n: int, procs: Mapping[str, Proc | int], *,
                        limit_s: float, window: int | None = None) -> dict[str, Any]:
    """Wait for the queue to empty; returns the rate and each process's CPU per task over the timed window.

    With ``window``, the clock stops once that many items have left after the first poll that saw the queue
    shrink, so a deep queue's cost is measured while it is still deep (the rest is left queued).
    """
    stream = names.queue_stream(queue)
    t_start = t_end = 0.0
    at_start = 0
    cpu_start: dict[str, float | None] = {}
    cpu_end: dict[str, float | None] = {}
    left = n
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        await asyncio.sleep(0.02)
        try:
            left = await stream_messages(nc, stream)
        except (RuntimeError, TimeoutError):
            continue
        now = time.perf_counter()
        if not t_start and left < n:
            t_start, at_start, cpu_start = now, left, _cpu(procs)
        if left == 0 or (t_start and window is not None and at_start - left >= window):
            t_end, cpu_end = now, _cpu(procs)
            break
    result: dict[str, Any] = {"queued": n}
    if not t_end or not t_start:
        result["error"] = f"did not drain within {limit_s:.0f}s: {left} of {n} items left"
        return result
    seconds = t_end - t_start
    done = at_start - left
    result.update(tasks=done, seconds=round(seconds, 3), tasks_per_s=round(done / seconds, 1))
    if left:
        result["left_queued"] = left
    cpu: dict[str, float | None] = {}
    for name in procs:
        a, b = cpu_start.get(name), cpu_end.get(name)
        cpu[name] = round((b - a) * 1e6 / max(done, 1), 1) if a is not None and b is not None else None
    result["cpu_us_per_task"] = cpu
    result["cpu_cores_busy"] = {k: round(v * result["tasks_per_s"] / 1e6, 2) for k, v in cpu.items() if v is not None}
    return result


async def check_drained(nc: Client, queue: str, ids: list[str], sample: int = 25) -> dict[str, Any]:
    """Consumer counters after a drain, and the states of a random sample of the tasks."""
    stream = names.queue_stream(queue)
    info = await js_api(nc, f"CONSUMER.INFO.{stream}.{names.QUEUE_CONSUMER}")
    states: dict[str, int] = {}
    for task_id in random.sample(ids, min(sample, len(ids))):
        msg = await nc.request(f"$JS.API.DIRECT.GET.{names.TASKS_STREAM}.{names.task_subject(task_id)}", b"",
                               timeout=5)
        state = str(_json.decode(msg.data).get("state")) if msg.data else "missing"
        states[state] = states.get(state, 0) + 1
    return {"num_pending": info.get("num_pending"), "num_ack_pending": info.get("num_ack_pending"),
            "num_redelivered": info.get("num_redelivered"), "sampled_states": states}


def task_requests(count: int, *, task_type: str = "noop", queue: str = "BENCH") -> list[tuple[bytes, dict[str, str]]]:
    """Valid ``task_request`` bodies and headers, as the dispatcher would send them, each with its own token."""
    payload = msgspec.json.encode(PAYLOAD)
    encoding, ctype, raw = proto.payload_fields(payload, proto.JSON_CONTENT_TYPE)
    now = now_ns()
    out = []
    for i in range(count):
        token = f"benchraw{i:08d}"
        request = proto.TaskRequest(
            type=proto.REQUEST_TYPE, protocol=proto.PROTOCOL_VERSION, task_id=f"rawtask{i}", task_type=task_type,
            queue=queue, attempt=1, max_attempts=10, created=format_ms(now), deadline=None, attempt_token=token,
            attempt_deadline=format_ms(now + 3600 * 10**9), budget_ms=3_600_000,
            heartbeat_subject=f"jetbridge.hb.bench.{token}", heartbeat_interval_ms=10_000,
            cancel_subject=f"jetbridge.cancel.{token}", payload_encoding=encoding, content_type=ctype, payload=raw,
            traceparent=proto.traceparent_for(f"rawtask{i}", 1))
        out.append((proto.encode_request(request), proto.request_headers(request)))
    return out
