"""``jetbridge enqueue`` and ``jetbridge task ...``: put tasks on queues, inspect, cancel, retry, delete, list."""

from __future__ import annotations

import json
import sys
import time
from datetime import timedelta
from typing import Annotated, Any

import typer
from jetbridge.internal import MAX_TRIES_LIMIT, Bytes, JetbridgeError, Producer, Signer, TaskRecord, TaskState, names
from nats.aio.client import Client

from .cli_common import (
    EXIT_FAILED,
    EXIT_TIMEOUT,
    JsonOpt,
    fail,
    task_subject,
    with_admin,
    with_producer,
    with_session,
)
from .durations import format_duration, parse_duration
from .output import err_console, print_json, show_task, task_dict, task_table
from .queues import QueueAdmin
from .settings import Settings

task_app = typer.Typer(help="Inspect and change tasks.", no_args_is_help=True)
STATES = [s.value for s in TaskState]


def _payload(payload: str | None, binary: bool, content_type: str | None) -> Any:
    raw = sys.stdin.buffer.read() if payload == "-" else (payload or "null").encode()
    if binary:
        return Bytes(raw, content_type or "application/octet-stream")
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise typer.BadParameter(f"payload is not JSON ({exc}); pass --binary to send bytes") from None


async def why_waiting(nc: Client, settings: Settings, task: TaskRecord) -> str:
    """The likely reason ``task`` has not finished: no dispatcher, no handler, still running, waiting to retry."""
    from .discovery import dispatchers, gather_infos, handler_for, handler_groups, serves

    if task.task_state is TaskState.ACTIVE:
        progress = f", {task.progress:.0%} {task.progress_message}".rstrip() if task.progress is not None else ""
        return f"still running (attempt {task.tries}{progress})"
    infos = await gather_infos(nc)
    online = await dispatchers(nc, infos)
    if not any(serves([*(d.get("queues") or []), *(d.get("configured") or [])], task.queue) for d in online):
        if not online:
            return f"no dispatcher is online: start one with `jetbridge run` (it serves queue {task.queue})"
        served = sorted({q for d in online for q in d.get("queues") or []})
        return f"no dispatcher serves queue {task.queue} (the {len(online)} online serve {', '.join(served) or 'none'})"
    subject = task_subject(settings, task.type)
    if task.task_state is TaskState.NO_HANDLER or not handler_for(handler_groups(infos), task.type, subject):
        return f"no handler is online for type {task.type} (subject {subject}): start one (see the guides)"
    if task.task_state is TaskState.RETRY:
        return f"waiting to retry after attempt {task.tries} failed: {task.last_err or 'no error given'}"
    return "waiting in the queue behind other tasks"


def _check_enqueue(task_type: str, queue: str, task_id: str | None, deadline: str | None, tries: int) -> float | None:
    """Refuse bad enqueue arguments before connecting; returns the deadline in seconds."""
    for label, name in (("task type", task_type), ("--queue", queue), ("--id", task_id)):
        if name is not None and not names.is_valid_name(name):
            raise typer.BadParameter(f"{label} {name!r} is invalid: use 1-256 letters, digits, '_', '-' and ':'")
    limit = parse_duration(deadline, what="--deadline") if deadline is not None else None
    if limit is not None and limit <= 0:
        raise typer.BadParameter("--deadline must be more than 0s: leave it out for no deadline")
    if not 0 <= tries <= MAX_TRIES_LIMIT:
        raise typer.BadParameter(f"--tries must be from 0 (no limit) to {MAX_TRIES_LIMIT}")
    return limit


def enqueue(
    ctx: typer.Context,
    task_type: Annotated[str, typer.Argument(help="Task type, e.g. email:new.")],
    payload: Annotated[str | None, typer.Argument(help="JSON payload; '-' reads stdin.")] = None,
    queue: Annotated[str, typer.Option("--queue", "-q")] = "DEFAULT",
    task_id: Annotated[str | None, typer.Option("--id", help="Your own task id.")] = None,
    dedup_key: Annotated[str | None, typer.Option(help="Enqueue once per key within the dedup window.")] = None,
    deadline: Annotated[str | None, typer.Option(help="Do not start after this long, e.g. 30s, 10m, 7d.")] = None,
    tries: Annotated[int, typer.Option(help="Attempts at most (0: unlimited).")] = 10,
    binary: Annotated[bool, typer.Option(help="Send the payload as bytes, not JSON.")] = False,
    content_type: Annotated[str | None, typer.Option(help="Content type of a binary payload.")] = None,
    wait: Annotated[str | None, typer.Option(help="Wait this long for the task to end, e.g. 30 or 2m (exit 4 on "
                                                  "timeout, with the reason).")] = None,
    delay: Annotated[str | None, typer.Option("--in", help="Run it this long from now, e.g. 10m (waits, holding no slot).")] = None,
    at: Annotated[str | None, typer.Option("--at", help="Run it at this RFC 3339 time, e.g. 2026-12-24T18:00:00+01:00.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Enqueue a task and print its id (with --wait: the finished task; --in / --at: a delayed task)."""
    limit = _check_enqueue(task_type, queue, task_id, deadline, tries)
    value = _payload(payload, binary, content_type)
    wait_s = parse_duration(wait, what="--wait") if wait is not None else None
    delay_s = parse_duration(delay, what="--in") if delay else None

    async def go(nc: Client, settings: Settings) -> tuple[str, TaskRecord | None, str]:
        signer = Signer(settings.signing_seed) if settings.signing_seed else None
        producer = Producer(nc, queue=queue, signer=signer)
        try:
            tid = await producer.enqueue(task_type, value, task_id=task_id, dedup_key=dedup_key, max_tries=tries,
                                         deadline=timedelta(seconds=limit) if limit else None,
                                         delay=delay_s, at=at)
            if not wait_s:
                return tid, None, ""
            try:
                return tid, await producer.wait(tid, timeout=wait_s), ""
            except TimeoutError:
                record = await producer.get(tid)
                return tid, record, await why_waiting(nc, settings, record)
        finally:
            await producer.close()

    tid, record, reason = with_session(ctx, go)
    if reason:
        assert record is not None
        if as_json:
            print_json({"id": tid, "state": record.state, "timed_out": True, "reason": reason})
        else:
            print(tid)
            fail(f"task {tid} did not finish within {format_duration(wait_s)}: it is {record.state}: {reason}")
        raise typer.Exit(EXIT_TIMEOUT)
    if as_json:
        print_json(task_dict(record) if record else {"id": tid})
    elif record is not None:
        show_task(record, queue_try_limit(ctx, record.queue))
    else:
        print(tid)
    if record is not None and record.task_state is not TaskState.COMPLETE:
        raise typer.Exit(EXIT_FAILED)


@task_app.command("get")
def task_get(ctx: typer.Context, task_id: str, as_json: JsonOpt = False) -> None:
    """Show one task."""
    record = with_producer(ctx, lambda p, nc: p.get(task_id))
    print_json(task_dict(record)) if as_json else show_task(record, queue_try_limit(ctx, record.queue))
    if not as_json:
        from .cli_limits import limits_note  # issue 18: the global limits an unfinished task waits for

        limits_note(ctx, record)


def queue_try_limit(ctx: typer.Context, queue: str) -> int:
    """The queue's max tries (-1 when it has none or cannot be read): shown with a task's tries."""
    async def go(admin: QueueAdmin) -> int:
        try:
            return (await admin.get(queue)).max_tries
        except JetbridgeError:
            return -1

    return with_admin(ctx, go)


@task_app.command("cancel")
def task_cancel(ctx: typer.Context, task_id: str, reason: str = "cancelled by operator", as_json: JsonOpt = False) -> None:
    """Cancel a task: it ends terminated, and a running attempt is told to stop (exit 1 if it had already ended)."""
    async def go(p: Producer, nc: Client) -> tuple[TaskRecord, bool]:
        before = await p.get(task_id)
        if before.task_state.terminal:
            return before, False
        return await p.cancel(task_id, reason=reason), True

    record, cancelled = with_producer(ctx, go)
    if not cancelled:
        raise fail(f"task {task_id} had already finished ({record.state}): nothing to cancel")
    print_json(task_dict(record)) if as_json else show_task(record)


@task_app.command("retry")
def task_retry(ctx: typer.Context, task_ids: list[str], queue: Annotated[str | None, typer.Option("--queue", "-q")] = None,
               as_json: JsonOpt = False) -> None:
    """Put tasks back on their queue (or --queue; not for signed tasks, whose signature covers the queue)."""
    from rich.progress import track

    async def go(p: Producer, nc: Client) -> list[TaskRecord]:
        out = []
        for tid in track(task_ids, description="retrying", console=err_console, disable=len(task_ids) < 10):
            out.append(await p.retry(tid, queue=queue))
        return out

    records = with_producer(ctx, go)
    print_json([task_dict(r) for r in records]) if as_json else task_table(records)


@task_app.command("delete")
def task_delete(ctx: typer.Context, task_id: str) -> None:
    """Remove a task from the store."""
    with_producer(ctx, lambda p, nc: p.delete(task_id))
    print(f"deleted {task_id}")


@task_app.command("list")
def task_list(
    ctx: typer.Context,
    queue: Annotated[str | None, typer.Option("--queue", "-q", help="Only tasks of this queue.")] = None,
    state: Annotated[str | None, typer.Option(help=f"Only tasks in this state: {', '.join(STATES)}.")] = None,
    task_type: Annotated[str | None, typer.Option("--type", help="Only tasks of this type.")] = None,
    since: Annotated[str | None, typer.Option(help="Only tasks created within this long, e.g. 10m, 1d.")] = None,
    limit: int = 200, as_json: JsonOpt = False,
) -> None:
    """List tasks (oldest first)."""
    if state is not None and state not in STATES:
        raise typer.BadParameter(f"unknown state {state!r}: use one of {', '.join(STATES)}", param_hint="--state")
    cutoff = time.time_ns() - int(parse_duration(since, what="--since") * 1e9) if since is not None else None

    async def go(p: Producer, nc: Client) -> list[TaskRecord] | None:
        from jetbridge.internal import TaskStore

        from .tasks import iter_tasks

        if await TaskStore(p._rq).stream_state(names.TASKS_STREAM) == "missing":
            return None
        found: list[TaskRecord] = []
        async for t in iter_tasks(nc):
            if ((queue is None or t.queue == queue) and (state is None or t.state == state)
                    and (task_type is None or t.type == task_type) and (cutoff is None or t.created_ns >= cutoff)):
                found.append(t)
                if len(found) >= limit:
                    break
        return found

    records = with_producer(ctx, go)
    if records is None:
        err_console.print("no tasks yet: the task store does not exist (enqueue a task or start `jetbridge run`)")
        records = []
    print_json([task_dict(r) for r in records]) if as_json else task_table(records)


@task_app.command("watch")
def task_watch(ctx: typer.Context, task_id: str, as_json: JsonOpt = False) -> None:
    """Follow one task's state changes until it ends."""
    from .watch import watch_events

    async def go(p: Producer, nc: Client) -> TaskRecord | None:
        record = await p.get(task_id)  # an unknown id is an error, not an endless wait
        if record.task_state.terminal:
            return record
        await watch_events(nc, task_id=task_id, as_json=as_json, until_terminal=True)
        return None

    finished = with_producer(ctx, go)
    if finished is not None:
        err_console.print(f"task {task_id} had already finished ({finished.state})")
        print_json(task_dict(finished)) if as_json else show_task(finished)


