"""Cases that drive the handler through the real dispatcher: enqueue a task, watch it, check its stored outcome.

Each case names the contract behaviour it checks (interop/README.md, protocol/SPEC.md). Waits are on things the
system reports: the handler's ``started``/``cancelled`` events, the dispatcher's task state events, a process
exiting. The one exception is the stale-reply counter, an in-process metric that notifies nobody (see
:func:`poll_until`).
"""

from __future__ import annotations

import os
import re
import signal
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import anyio
import jetbridge
from jetbridge._producer import DEFAULT_MAX_TRIES, payload_limit
from jetbridge._task import encode_task, new_task

from .env import LanguageEnv
from .inbox import Received
from .processes import ReplicaError
from .registry import Case, CaseFailure, CaseFn, Registry, check, describe, expect_task, same_json, short

registry = Registry()
case = registry.case

#: error codes that mean the library did NOT turn a handler crash into a retry reply (the process died, hung,
#: or answered garbage), so they cannot stand for "handler_error or similar"
NOT_A_HANDLER_ERROR = frozenset({"", "handler_lost", "timeout", "protocol_error", "no_handler", "dispatch_error",
                                 "cancelled", "max_tries"})


# Shared checks -------------------------------------------------------------------------------------------------

def expect_result(record: jetbridge.TaskRecord, expected: Any) -> None:
    """Fail unless the task's result is ``expected``: the same JSON value, or the same bytes and content type."""
    check(record.result is not None, f"the task has no result: {describe(record)}")
    assert record.result is not None
    got = record.result.value()
    if isinstance(expected, jetbridge.Bytes):
        check(isinstance(got, jetbridge.Bytes), f"result is JSON {short(got)}, wanted bytes ({expected.content_type})")
        assert isinstance(got, jetbridge.Bytes)
        check(got.content_type == expected.content_type,
              f"result content type is {got.content_type!r}, wanted {expected.content_type!r}")
        check(len(got.data) == len(expected.data), f"result is {len(got.data)} bytes, wanted {len(expected.data)}")
        differs = next((i for i, (a, b) in enumerate(zip(got.data, expected.data, strict=True)) if a != b), None)
        check(differs is None, f"result bytes differ from the payload from offset {differs}")
    else:
        check(not isinstance(got, jetbridge.Bytes),
              f"result is bytes ({getattr(got, 'content_type', '?')}), wanted JSON {short(expected)}")
        check(same_json(got, expected), f"result is {short(got)}, wanted {short(expected)}")


async def poll_until(condition: Callable[[], bool], *, what: str, timeout: float, every: float = 0.02) -> None:
    """Check ``condition`` every ``every`` seconds until it holds.

    Only for in-process state that has no change notification (a Prometheus counter); everything that is
    published or printed is awaited instead.
    """
    with anyio.move_on_after(timeout):
        while not condition():  # noqa: ASYNC110 - a metric has no event to wait on
            await anyio.sleep(every)
        return
    raise CaseFailure(f"{what}: not seen within {timeout:g}s")


# Echo ----------------------------------------------------------------------------------------------------------

_OBJECT = {"to": "ada@example.com", "n": 42, "pi": 3.25, "ok": True, "none": None,
           "list": [1, "two", [3], {"four": 4}], "max_safe_int": 9007199254740991, "nested": {"a": {}}}
#: every byte value, and a content type that is not the default: both must survive
_BINARY = jetbridge.Bytes(bytes(range(256)) * 4, "image/png")
#: accents, CJK, an astral emoji, a ZWJ sequence, and the characters JSON escapes
_UNICODE = "héllo ✓ 世界 🚀 \"quoted\" \\ back\nslash\ttab \u00a0 \U0001f469\u200d\U0001f52c"

ECHO_PAYLOADS: dict[str, tuple[Any, Any, str]] = {
    # name: (payload as enqueued, result expected, what it shows)
    "json-object": (_OBJECT, _OBJECT, "a JSON object (nested, all JSON types, the largest exact integer)"),
    "binary": (_BINARY, _BINARY, "bytes of every value, with their own content type (image/png)"),
    "unicode": (_UNICODE, _UNICODE, "a string with accents, CJK, emoji, a ZWJ sequence and JSON escapes"),
    "empty": (b"", jetbridge.Bytes(b"", "application/octet-stream"), "an empty payload, as empty bytes"),
    "null": (None, None, "JSON null"),
}


def _echo(payload: Any, expected: Any, what: str) -> CaseFn:
    async def run(env: LanguageEnv) -> None:
        record = await env.run("conf:echo", payload)
        expect_task(record, state="complete", tries=1)
        expect_result(record, expected)

    run.__doc__ = f"conf:echo through the dispatcher returns {what} unchanged."
    return run


for _name, (_payload, _expected, _what) in ECHO_PAYLOADS.items():
    registry.add(Case(f"echo:{_name}", _echo(_payload, _expected, _what), timeout=20))


def largest_binary_payload(max_payload: int, task_id: str, queue: str) -> int:
    """The most bytes a binary conf:echo payload may have for its stored task to fit (SPEC §8).

    Sized with a creation time of nine fraction digits (the longest the store writes), so the real document
    is at most that long; the result then just fits, within a few bytes of base64 rounding.
    """
    limit = payload_limit(max_payload)

    def stored(n: int) -> int:
        doc = new_task(task_id=task_id, task_type="conf:echo", queue=queue, payload=b"\0" * n,
                       content_type="application/octet-stream", max_tries=DEFAULT_MAX_TRIES,
                       created_ns=1_764_000_000_123_456_789, deadline_ns=None)
        return len(encode_task(doc))

    low, high = 0, limit  # stored(low) fits; stored(high) does not (base64 alone is larger than the limit)
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (mid, high) if stored(mid) <= limit else (low, mid)
    return low


@case("echo:near-limit", timeout=40)
async def echo_near_limit(env: LanguageEnv) -> None:
    """A binary payload whose stored task just fits the store's limit comes back whole."""
    task_id = f"near-limit-{os.urandom(6).hex()}"
    size = largest_binary_payload(env.nc.max_payload, task_id, env.MAIN_QUEUE)
    payload = jetbridge.Bytes(os.urandom(size), "application/octet-stream")
    try:  # the suite's own sizing: 12 bytes more (16 base64 characters) must not fit, whatever the timestamp
        await env.enqueue("conf:echo", jetbridge.Bytes(bytes(size + 12)), task_id=f"{task_id}-over")
        raise CaseFailure(f"a payload of {size + 12} bytes was accepted: the suite's {size} is not near the limit")
    except jetbridge.PayloadTooLargeError:
        pass
    try:
        record = await env.run("conf:echo", payload, task_id=task_id, timeout=30)
    except jetbridge.PayloadTooLargeError as exc:
        raise CaseFailure(f"the suite sized the payload wrong ({size} bytes): {exc}") from None
    expect_task(record, state="complete", tries=1)
    expect_result(record, payload)


@case("info")
async def info(env: LanguageEnv) -> None:
    """conf:info reports what the library tells a handler about its attempt (task, attempt, limits, budget)."""
    task_id = await env.enqueue("conf:info", None, max_tries=7)
    record = await env.wait(task_id)
    expect_task(record, state="complete", tries=1)
    got = _result(record)
    wanted = {"lang": env.lang, "task_id": task_id, "attempt": 1, "max_attempts": 7, "queue": env.MAIN_QUEUE}
    wrong = {k: got.get(k) for k, v in wanted.items() if not same_json(got.get(k), v)}
    check(not wrong, f"conf:info has {wrong}, wanted {({k: wanted[k] for k in wrong})}")
    check(got.get("instance") in env.replicas, f"instance {got.get('instance')!r} is none of {sorted(env.replicas)}")
    budget, most = got.get("budget_ms"), int(env.timing.max_run_time * 1000)
    check(isinstance(budget, int) and 0 < budget <= most,
          f"budget_ms {budget!r}, wanted the request's budget (0 < budget_ms <= {most})")


@case("result-too-large")
async def result_too_large(env: LanguageEnv) -> None:
    """A result that cannot fit in a reply becomes a terminate with result_too_large (SPEC §8), not a
    reply the server refuses (which the dispatcher would only see as a timeout)."""
    record = await env.run("conf:big", {"bytes": env.nc.max_payload})
    expect_task(record, state="terminated", tries=1, code="result_too_large")
    small = await env.run("conf:big", {"bytes": 1000})
    expect_task(small, state="complete", tries=1)
    expect_result(small, jetbridge.Bytes(b"a" * 1000, "application/octet-stream"))


# Outcomes ------------------------------------------------------------------------------------------------------

@case("fail-then-succeed")
async def fail_then_succeed(env: LanguageEnv) -> None:
    """conf:fail: attempts 1..N reply retry (planned_failure, "failure i of N"), attempt N+1 succeeds."""
    times = 2
    task_id = await env.enqueue("conf:fail", {"times": times})
    record = await env.wait(task_id)
    expect_task(record, state="complete", tries=times + 1)
    expect_result(record, {"attempt": times + 1})
    await env.task_events.wait_for(f"a retry state event with last_error 'failure 1 of {times}'", timeout=5,
                                   task_id=task_id, state="retry", last_error=f"failure 1 of {times}")


@case("retry-after")
async def retry_after(env: LanguageEnv) -> None:
    """retry_after_ms replaces the queue's backoff (0.1 s here): attempt 2 starts no sooner than asked."""
    ms = 600
    task_id = await env.enqueue("conf:retry_after", {"ms": ms})
    record = await env.wait(task_id)
    expect_task(record, state="complete", tries=2)
    expect_result(record, {"attempt": 2})
    first, second = await env.started(task_id, 1), await env.started(task_id, 2)
    gap = second.at - first.at
    check(gap >= ms / 1000, f"attempt 2 started {gap * 1000:.0f} ms after attempt 1, wanted >= {ms} ms "
                            "(retry_after_ms ignored or not sent)")


@case("terminate")
async def terminate(env: LanguageEnv) -> None:
    """A terminate reply ends the task for good after one attempt, with the handler's code and message."""
    message = "conformance says stop"
    record = await env.run("conf:terminate", {"message": message})
    expect_task(record, state="terminated", tries=1, code="planned_terminate")
    check(message in record.last_err, f"last_err {record.last_err!r} does not carry the message {message!r}")


@case("panic", timeout=30)
async def panic(env: LanguageEnv) -> None:
    """A crash in handler code becomes a retry reply; the service survives and serves the next task."""
    record = await env.run("conf:panic", None, max_tries=2)
    expect_task(record, state="expired", tries=2)
    check(record.last_err_code not in NOT_A_HANDLER_ERROR,
          f"last_err_code {record.last_err_code!r}: a crash in handler code should come back as a retry reply "
          f"naming the failure (e.g. handler_error); {describe(record)}")
    dead = [r.instance for r in env.replicas.values() if not r.alive]
    if dead:
        raise CaseFailure(f"replica(s) {dead} died on conf:panic{env.replicas[dead[0]].stderr_tail()}")
    after = await env.run("conf:echo", {"after": "panic"})
    expect_task(after, state="complete", tries=1)


# Middleware (issue 20) -----------------------------------------------------------------------------------------

#: what conf:mw returns through the conformance middleware (SPEC §12.2): registered as outer (global),
#: group (conf:mw*), inner (global), so the group runs inside both global ones; the trail is appended on the
#: way out, innermost first
MIDDLEWARE_TRAIL = ["handler", "group", "inner", "outer"]


@case("middleware:order")
async def middleware_order(env: LanguageEnv) -> None:
    """Global middleware run outermost in the order registered, a pattern group inside them (even one registered
    between them), and each sees and may change the handler's result."""
    record = await env.run("conf:mw", None)
    expect_task(record, state="complete", tries=1)
    expect_result(record, {"trail": MIDDLEWARE_TRAIL})


@case("middleware:short-circuit")
async def middleware_short_circuit(env: LanguageEnv) -> None:
    """A middleware that terminates without calling the rest of the chain: one attempt, terminated with its code,
    and the handler never runs (no ``started`` event)."""
    task_id = await env.enqueue("conf:mw_blocked", None)
    record = await env.wait(task_id)
    expect_task(record, state="terminated", tries=1, code="mw_blocked")
    check("blocked by middleware" in record.last_err, f"last_err {record.last_err!r}, wanted 'blocked by middleware'")
    # Had the handler run, its `started` event would have reached the server before the reply did, so before the
    # task's terminal state; the next task's own `started` event, awaited, comes later still.
    after = await env.run("conf:mw", None)  # and the next task still passes the whole chain
    expect_result(after, {"trail": MIDDLEWARE_TRAIL})
    await env.started(after.id, 1)
    seen = env.events.matching(task_id=task_id)
    if seen:
        raise CaseFailure(f"the handler ran behind the blocking middleware: {seen[0].body}")


# Long attempts -------------------------------------------------------------------------------------------------

@case("heartbeat-keeps-lease", timeout=30)
async def heartbeat_keeps_lease(env: LanguageEnv) -> None:
    """An attempt three leases long survives on the library's automatic heartbeats alone (one step: no
    progress heartbeat until the very end)."""
    ms = int(env.timing.lease * 3000)
    record = await env.run("conf:sleep", {"ms": ms, "steps": 1}, timeout=ms / 1000 + 15)
    expect_task(record, state="complete", tries=1)
    expect_result(record, {"slept_ms": ms, "attempt": 1})


_STEP = re.compile(r"step (\d+) of (\d+)")


@case("progress", timeout=30)
async def progress(env: LanguageEnv) -> None:
    """Progress heartbeats (i/K, "step i of K") are stored on the task while it runs (seen in its state events,
    which the dispatcher publishes after each save)."""
    steps = 3
    task_id = await env.enqueue("conf:sleep", {"ms": 1500, "steps": steps})

    def with_progress(m: Received) -> bool:
        return m.get("progress") is not None and _STEP.fullmatch(m.get("progress_message") or "") is not None

    event = await env.task_events.wait_for("a task state event with progress while active", timeout=10,
                                           where=with_progress, task_id=task_id, state="active")
    match = _STEP.fullmatch(event["progress_message"])
    assert match is not None
    i, k = int(match[1]), int(match[2])
    check(k == steps and abs(float(event["progress"]) - i / k) < 1e-6,
          f"stored progress {event['progress']} with message {event['progress_message']!r}, wanted {i}/{steps}")
    record = await env.wait(task_id)
    expect_task(record, state="complete", tries=1)


@case("cancel", timeout=30)
async def cancel(env: LanguageEnv) -> None:
    """An operator cancel reaches the running handler (reason operator) and ends the task terminated."""
    task_id = await env.enqueue("conf:sleep", {"ms": 20_000, "steps": 20})
    await env.started(task_id, 1)
    await env.producer.cancel(task_id, reason="conformance cancel")
    event = await env.events.wait_for(f"`cancelled` event for task {task_id}", timeout=5, event="cancelled",
                                      task_id=task_id)
    check(event.get("reason") == "operator", f"the handler saw cancel reason {event.get('reason')!r}, wanted operator")
    record = await env.wait(task_id)
    expect_task(record, state="terminated", tries=1, code="cancelled")


@case("deadline-passed")
async def deadline_passed(env: LanguageEnv) -> None:
    """A task past its deadline expires without an attempt: the handler never sees it."""
    task_id = await env.enqueue("conf:echo", "too late", deadline=timedelta(seconds=-1))
    record = await env.wait(task_id)
    expect_task(record, state="expired", tries=0)
    seen = env.events.matching(task_id=task_id)
    if seen:
        raise CaseFailure(f"the handler got the expired task: {seen[0].body}")


# Failures around the handler -----------------------------------------------------------------------------------

@case("killed-mid-task", timeout=40)
async def killed_mid_task(env: LanguageEnv) -> None:
    """SIGKILL the replica running an attempt: its heartbeats stop, the dispatcher declares it lost, and the
    task completes on the other replica as attempt 2."""
    task_id = await env.enqueue("conf:sleep", {"ms": 2000, "steps": 4})
    first = await env.started(task_id, 1)
    await env.replica(first["instance"]).kill()
    record = await env.wait(task_id, timeout=30)
    expect_task(record, state="complete", tries=2)
    expect_result(record, {"slept_ms": 2000, "attempt": 2})
    second = await env.started(task_id, 2)
    check(second["instance"] != first["instance"],
          f"attempt 2 ran on {second['instance']}, the replica that was killed")


@case("stale-reply", timeout=30)
async def stale_reply(env: LanguageEnv) -> None:
    """Attempt 1 outlives its budget (ignoring the cancel); attempt 2's result is stored, and attempt 1's late
    reply is counted as stale and changes nothing."""
    before = env.stale_replies()
    ms = int(env.timing.short_run_time * 2000)
    task_id = await env.enqueue("conf:sleep", {"ms": ms, "steps": 4, "only_attempt": 1, "ignore_cancel": True},
                                queue=env.SHORT_QUEUE)
    record = await env.wait(task_id)
    expect_task(record, state="complete", tries=2)
    expect_result(record, {"slept_ms": 0, "attempt": 2})
    await poll_until(lambda: env.stale_replies() > before, timeout=ms / 1000 + 5,
                     what='jetbridge_stale_messages{kind="reply"} to increase (attempt 1\'s late reply)')
    again = await env.producer.get(task_id)
    expect_task(again, state="complete", tries=2)
    expect_result(again, {"slept_ms": 0, "attempt": 2})


@case("parallel", timeout=120)
async def parallel(env: LanguageEnv) -> None:
    """500 tasks at once over two replicas: every one completes exactly once, and both replicas take a share."""
    count = 500
    results = await env.producer.enqueue_many(
        jetbridge.TaskSpec(type="conf:info", payload={"n": i}) for i in range(count))
    failed = [r for r in results if not isinstance(r, str)]
    if failed:
        raise CaseFailure(f"{len(failed)} of {count} enqueues failed, first: {failed[0]}")
    ids = [r for r in results if isinstance(r, str)]
    records = await _wait_all(env, ids, timeout=90)

    for problem, bad in (
            ("did not complete", [r for r in records.values() if r.state != "complete"]),
            ("took more than one attempt", [r for r in records.values() if r.tries != 1]),
            (f"have a conf:info result that does not describe their own task (task_id, attempt 1, queue "
             f"{env.MAIN_QUEUE})", [r for r in records.values() if not _is_own_info(r)])):
        if bad:
            raise CaseFailure(f"{len(bad)} of {count} tasks {problem}, e.g. {bad[0].id}: {describe(bad[0])}")

    wanted = set(ids)
    await env.events.wait_until(
        lambda: wanted <= {m["task_id"] for m in env.events.matching(event="started")},
        what=f"`started` events for all {count} tasks", timeout=10)
    starts = Counter(m["task_id"] for m in env.events.matching(event="started") if m["task_id"] in wanted)
    twice = [t for t, n in starts.items() if n > 1]
    if twice:
        raise CaseFailure(f"{len(twice)} tasks were started more than once, e.g. {twice[0]}")
    served = Counter(_result(r).get("instance") for r in records.values())
    idle = sorted(set(env.replicas) - set(served))
    check(not idle, f"replica(s) {idle} served none of {count} tasks (shares: {dict(served)}): "
                    "the replicas do not share a queue group")


def _result(record: jetbridge.TaskRecord) -> dict[str, Any]:
    value = record.result.value() if record.result is not None else None
    return value if isinstance(value, dict) else {}


def _is_own_info(record: jetbridge.TaskRecord) -> bool:
    info = _result(record)
    return (info.get("task_id") == record.id and info.get("attempt") == 1
            and info.get("queue") == LanguageEnv.MAIN_QUEUE)


async def _wait_all(env: LanguageEnv, ids: list[str], *, timeout: float) -> dict[str, jetbridge.TaskRecord]:
    """Every task's final record; on timeout, a failure that counts the stragglers and shows one."""
    done: dict[str, jetbridge.TaskRecord] = {}
    limiter = anyio.Semaphore(64)

    async def one(task_id: str) -> None:
        async with limiter:
            done[task_id] = await env.producer.wait(task_id)

    with anyio.move_on_after(timeout):
        async with anyio.create_task_group() as tg:
            for task_id in ids:
                tg.start_soon(one, task_id)
    missing = [i for i in ids if i not in done]
    if missing:
        example = await env.producer.get(missing[0])
        raise CaseFailure(f"{len(missing)} of {len(ids)} tasks had not ended after {timeout:g}s, "
                          f"e.g. {missing[0]}: {describe(example)}")
    return done


@case("drain", timeout=30)
async def drain(env: LanguageEnv) -> None:
    """SIGTERM during an attempt: the replica finishes it (not handed back) and exits 0."""
    task_id = await env.enqueue("conf:sleep", {"ms": 1000, "steps": 2})
    first = await env.started(task_id, 1)
    replica = env.replica(first["instance"])
    replica.signal(signal.SIGTERM)
    record = await env.wait(task_id)
    expect_task(record, state="complete", tries=1)
    expect_result(record, {"slept_ms": 1000, "attempt": 1})
    try:
        code = await replica.wait_exit(timeout=10)
    except ReplicaError as exc:
        raise CaseFailure(f"no exit after SIGTERM: {exc}") from None
    check(code == 0, f"{replica.instance} exited with code {code} after SIGTERM, wanted 0{replica.stderr_tail()}")
