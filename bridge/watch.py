"""``jetbridge watch``: the live board (queues, running attempts, failures), or the event log behind ``--events``."""

from __future__ import annotations

import json
import time
from collections import Counter, deque

import anyio
import msgspec
from jetbridge.internal import TaskState, TaskStateEvent, decode_event, names
from nats.aio.client import Client
from rich.live import Live
from rich.table import Table

from .output import console


def _view(events: deque[TaskStateEvent], counts: Counter[str], started: float) -> Table:
    elapsed = max(time.monotonic() - started, 1e-6)
    done = counts["complete"] + counts["expired"] + counts["terminated"]
    title = (f"{done / elapsed:.1f} finished/s · " + " · ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    table = Table("time", "task", "type", "queue", "state", "tries", "progress / error", title=title)
    table.columns[1].no_wrap = True  # ids are never cut
    for e in list(events)[-25:]:
        detail = e.last_error or (f"{e.progress:.0%} {e.progress_message}" if e.progress is not None else "")
        table.add_row(e.timestamp[11:23], e.task_id, e.task_type, e.queue, e.state, str(e.tries), detail)
    return table


async def watch_events(
    nc: Client, *, task_id: str | None = None, queue: str | None = None, as_json: bool = False,
    until_terminal: bool = False, seconds: float | None = None,
) -> None:
    subject = names.task_state_event_subject(task_id) if task_id else f"{names.EVENT_SUBJECT_PREFIX}.task_state.*"
    send, receive = anyio.create_memory_object_stream[bytes](10_000)

    async def on_msg(msg: object) -> None:
        try:
            send.send_nowait(msg.data)  # type: ignore[attr-defined]
        except anyio.WouldBlock:
            pass

    sub = await nc.subscribe(subject, cb=on_msg)
    events: deque[TaskStateEvent] = deque(maxlen=200)
    counts: Counter[str] = Counter()
    started = time.monotonic()
    try:
        with anyio.move_on_after(seconds if seconds is not None else float("inf")):
            live = None if as_json else Live(_view(events, counts, started), console=console, refresh_per_second=4)
            if live is not None:
                live.start()
            try:
                async for data in receive:
                    try:
                        event = decode_event(data)
                    except msgspec.DecodeError:
                        continue
                    if queue and event.queue != queue:
                        continue
                    if as_json:
                        print(json.dumps(msgspec.to_builtins(event)), flush=True)
                    else:
                        events.append(event)
                        counts[event.state] += 1
                        assert live is not None
                        live.update(_view(events, counts, started))
                    if until_terminal and TaskState(event.state).terminal:
                        break
            finally:
                if live is not None:
                    live.stop()
    finally:
        await sub.unsubscribe()


async def watch_board(nc: Client, *, queue: str | None = None, seconds: float | None = None) -> None:
    """The live board until ``seconds`` pass (or Ctrl-C): events update it, queue depths are re-read every 2 s."""
    from jetbridge.internal import Requester

    from .board import Board
    from .queues import QueueAdmin

    board = Board()
    started = time.monotonic()
    rq = Requester(nc)
    admin = QueueAdmin(rq)

    async def on_msg(msg: object) -> None:
        try:
            event = decode_event(msg.data)  # type: ignore[attr-defined]
        except msgspec.DecodeError:
            return
        if queue is None or event.queue == queue:
            board.add(event, time.monotonic())

    async def depths() -> None:
        for name in await admin.names():
            if queue is None or name == queue:
                info = await admin.info(name)
                board.depth[name] = (info.waiting, info.in_flight)

    sub = await nc.subscribe(f"{names.EVENT_SUBJECT_PREFIX}.task_state.*", cb=on_msg)
    try:
        with anyio.move_on_after(seconds if seconds is not None else float("inf")):
            await depths()
            with Live(board.render(time.monotonic(), 0), console=console, refresh_per_second=4) as live:
                tick = 0
                while True:
                    await anyio.sleep(0.25)  # the board's frame rate
                    tick += 1
                    if tick % 8 == 0:
                        await depths()
                    now = time.monotonic()
                    live.update(board.render(now, now - started))
    finally:
        console.line()  # the last frame stays on screen, and the prompt starts on a line of its own
        await sub.unsubscribe()
        await rq.close()
