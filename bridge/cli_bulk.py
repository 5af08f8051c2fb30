"""``jetbridge bulk retry|cancel|delete`` and ``jetbridge queue pause|resume``.

Bulk commands take the dead-letter commands' filters plus ``--state``, say how many tasks match, ask (``--yes`` for
scripts) and then act 32 at a time with a progress bar (see :mod:`bridge.cli_dlq`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Annotated

import typer
from jetbridge.internal import NS, ConfigError, ConflictError, JetbridgeError, Producer, Requester, now_ns, parse_ns
from nats.aio.client import Client

from . import dlq, pause
from .cli_dlq import (
    CodeOpt,
    Filters,
    GrepOpt,
    QueueOpt,
    SinceOpt,
    TypeOpt,
    UntilOpt,
    YesOpt,
    confirm_count,
    connected,
    delete_one,
    for_each,
)
from .index_service import IndexView
from .policy import parse_duration

bulk_app = typer.Typer(help="Retry, cancel or delete every task matching filters.", no_args_is_help=True)
pause_app = typer.Typer()

# bulk -------------------------------------------------------------------------------------------------------

StateOpt = Annotated[list[str] | None, typer.Option("--state", help="Only tasks in this state (repeat).")]


def _bulk(ctx: typer.Context, verb: str, filters: Filters, states: list[str] | None, yes: bool,
          act: Callable[[_Tools, str], Awaitable[bool]]) -> None:
    chosen = frozenset(states) if states else None
    if chosen is None and not any(vars(filters).values()):
        raise ConfigError(f"say which tasks to {verb}: give --state or another filter")

    async def go(nc: Client, rq: Requester, index: IndexView | None) -> tuple[int, int]:
        assert index is not None
        q = replace(filters.query(), states=chosen)
        ids = await index.ids(q)
        if not confirm_count(len(ids), verb, yes):
            return 0, 0
        producer = Producer(nc)
        try:
            tools = _Tools(nc, rq, producer, index)
            return await for_each(ids, verb, lambda task_id: act(tools, task_id))
        finally:
            await producer.close()

    done, skipped = connected(ctx, go)
    print(f"{verb}: {done} done, {skipped} skipped")


@dataclass
class _Tools:
    nc: Client
    rq: Requester
    producer: Producer
    index: IndexView


async def _retry(t: _Tools, task_id: str) -> bool:
    """A dead letter is replayed (tries from zero, once however often this runs); other tasks are put back."""
    try:
        if (await t.producer.get(task_id)).state in dlq.DEAD_STATES:
            return (await dlq.replay(t.nc, t.rq, task_id)).done
        await t.producer.retry(task_id)
    except (ConflictError, JetbridgeError):
        return False
    return True


async def _cancel(t: _Tools, task_id: str) -> bool:
    try:
        after = await t.producer.cancel(task_id, reason="cancelled in bulk by an operator")
    except JetbridgeError:
        return False
    return after.last_err_code == "cancelled"


async def _delete(t: _Tools, task_id: str) -> bool:
    return await delete_one(t.rq, t.index, task_id, only_dead=False)


@bulk_app.command("retry")
def bulk_retry(ctx: typer.Context, state: StateOpt = None, queue: QueueOpt = None, task_type: TypeOpt = None,
               code: CodeOpt = None, grep: GrepOpt = None, since: SinceOpt = None, until: UntilOpt = None,
               yes: YesOpt = False) -> None:
    """Put every matching task back on its queue (running ones are skipped)."""
    _bulk(ctx, "retry", Filters(queue, task_type, code, grep, since, until), state, yes, _retry)


@bulk_app.command("cancel")
def bulk_cancel(ctx: typer.Context, state: StateOpt = None, queue: QueueOpt = None, task_type: TypeOpt = None,
                code: CodeOpt = None, grep: GrepOpt = None, since: SinceOpt = None, until: UntilOpt = None,
                yes: YesOpt = False) -> None:
    """Cancel every matching task (ended ones are left as they are)."""
    _bulk(ctx, "cancel", Filters(queue, task_type, code, grep, since, until), state, yes, _cancel)


@bulk_app.command("delete")
def bulk_delete(ctx: typer.Context, state: StateOpt = None, queue: QueueOpt = None, task_type: TypeOpt = None,
                code: CodeOpt = None, grep: GrepOpt = None, since: SinceOpt = None, until: UntilOpt = None,
                yes: YesOpt = False) -> None:
    """Remove every matching task from the store."""
    _bulk(ctx, "delete", Filters(queue, task_type, code, grep, since, until), state, yes, _delete)


# queue pause|resume -----------------------------------------------------------------------------------------


@pause_app.command("pause")
def queue_pause(ctx: typer.Context, name: str,
                until: Annotated[str | None, typer.Option(help="Resume by itself at this time (RFC 3339) or after "
                                                               "this long (e.g. 30m).")] = None,
                note: Annotated[str, typer.Option(help="Why, for whoever looks next.")] = "") -> None:
    """Pause a queue: no dispatcher starts attempts on it; running ones finish; producers keep enqueuing."""
    now = now_ns()
    until_ns = None
    if until:
        try:
            until_ns = parse_ns(until)
        except ValueError:
            until_ns = now + int(parse_duration(until, what="--until") * NS)
    state = connected(ctx, lambda nc, rq, ix: pause.pause(rq, name, until_ns=until_ns, note=note, now_ns=now),
                       index=False)
    print(f"queue {name}: {pause.describe(state)}")


@pause_app.command("resume")
def queue_resume(ctx: typer.Context, name: str) -> None:
    """Resume a paused queue."""
    connected(ctx, lambda nc, rq, ix: pause.resume(rq, name), index=False)
    print(f"queue {name}: resumed")
