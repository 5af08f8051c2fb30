"""``jetbridge dlq …``: the operator's daily loop (find the failures, see why, replay), and the shared filters.

Every command that selects tasks takes the same filters (queue, type or pattern, error code, since/until, text in
the error) and reads them from a :class:`bridge.index.TaskIndex` filled by one ordered read of the task store.
Commands that change many tasks say how many match first and ask (``--yes`` for scripts), then show a progress bar.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any

import anyio
import typer
from jetbridge.internal import NS, ConfigError, Producer, Requester, now_ns, parse_ns
from nats.aio.client import Client

from . import dlq
from .index import Entry, Query
from .index_service import IndexView, open_view
from .output import console, err_console, print_json
from .policy import parse_duration

dlq_app = typer.Typer(help="Dead letters: tasks that ended terminated, expired or unreachable.", no_args_is_help=True)

QueueOpt = Annotated[str | None, typer.Option("--queue", "-q", help="Only this queue.")]
TypeOpt = Annotated[str | None, typer.Option("--type", "-t", help="Task type or pattern, e.g. email:*.")]
CodeOpt = Annotated[str | None, typer.Option("--code", help="Only this error code.")]
GrepOpt = Annotated[str | None, typer.Option("--grep", help="Only tasks whose last error contains this text.")]
SinceOpt = Annotated[str | None, typer.Option(help="Changed since: a duration ago (1h) or an RFC 3339 time.")]
UntilOpt = Annotated[str | None, typer.Option(help="Changed until: a duration ago (10m) or an RFC 3339 time.")]
YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]


def _when(text: str | None, what: str) -> int | None:
    if not text:
        return None
    try:
        return parse_ns(text)
    except ValueError:
        return now_ns() - int(parse_duration(text, what=what) * NS)


@dataclass
class Filters:
    queue: str | None
    task_type: str | None
    code: str | None
    grep: str | None
    since: str | None
    until: str | None

    def query(self, states: frozenset[str] | None = None) -> Query:
        return dlq.query(queue=self.queue, task_type=self.task_type, code=self.code, text=self.grep,
                         since_ns=_when(self.since, "--since"), until_ns=_when(self.until, "--until"),
                         states=states if states is not None else dlq.DEAD_STATES)


def connected(ctx: typer.Context, fn: Callable[[Client, Requester, IndexView | None], Awaitable[Any]],
               *, index: bool = True) -> Any:
    """Run ``fn(nc, requester, index)`` on a connection, with the shared index (or one of our own)."""
    settings = ctx.obj["settings"]

    async def go() -> Any:
        from .connect import session

        async with session(settings) as (nc, _):
            rq = Requester(nc)
            try:
                if not index:
                    return await fn(nc, rq, None)
                outcome: list[Any] = []
                async with anyio.create_task_group() as tg:  # the group only keeps a local index current
                    found = await open_view(nc, tg)
                    try:
                        outcome.append(await fn(nc, rq, found))
                    except Exception as exc:  # noqa: BLE001 - raised below, outside the group (no exception group)
                        outcome.append(exc)
                    tg.cancel_scope.cancel()
                if isinstance(outcome[0], Exception):
                    raise outcome[0]
                return outcome[0]
            finally:
                await rq.close()

    try:
        return anyio.run(go)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _entry_dict(e: Entry) -> dict[str, Any]:
    return {"id": e.id, "state": e.state, "type": e.type, "queue": e.queue, "code": e.code, "error": e.error}


def _table(entries: list[Entry]) -> None:
    from rich.table import Table

    table = Table("id", "type", "queue", "state", "code", "last error")
    for e in entries:
        table.add_row(e.id, e.type, e.queue, e.state, e.code, e.error[:70])
    console.print(table)


def confirm_count(count: int, what: str, yes: bool) -> bool:
    if count == 0:
        print(f"no tasks match: nothing to {what}")
        return False
    if not yes:
        typer.confirm(f"{count} tasks match. {what.capitalize()} them?", abort=True)
    return True


async def for_each(ids: list[str], label: str, act: Callable[[str], Awaitable[bool]],
                rate: float = 0.0, parallel: int = 32) -> tuple[int, int]:
    """Apply ``act`` to every id, ``parallel`` at once (one at a time when rate-limited), with a progress bar.

    Returns (done, skipped).
    """
    from rich.progress import Progress

    pacer = dlq.Pacer(rate)
    limiter = anyio.Semaphore(1 if rate else parallel)
    counts = [0, 0]
    with Progress(console=err_console, transient=True, disable=len(ids) < 50) as bar:
        job = bar.add_task(label, total=len(ids))

        async def one(task_id: str) -> None:
            try:
                counts[0 if await act(task_id) else 1] += 1
            finally:
                limiter.release()
                bar.advance(job)

        async with anyio.create_task_group() as tg:
            for task_id in ids:
                await limiter.acquire()
                await pacer.wait()
                tg.start_soon(one, task_id)
    return counts[0], counts[1]


# dlq --------------------------------------------------------------------------------------------------------


@dlq_app.command("list")
def dlq_list(ctx: typer.Context, queue: QueueOpt = None, task_type: TypeOpt = None, code: CodeOpt = None,
             grep: GrepOpt = None, since: SinceOpt = None, until: UntilOpt = None, limit: int = 100,
             cursor: Annotated[str | None, typer.Option(help="Continue after a previous page.")] = None,
             count: Annotated[bool, typer.Option("--count", help="Print only how many match.")] = False,
             as_json: JsonOpt = False) -> None:
    """List dead letters, newest first."""
    q = Filters(queue, task_type, code, grep, since, until).query()

    async def go(nc: Client, rq: Requester, index: IndexView | None) -> Any:
        assert index is not None
        return await index.count(q) if count else await index.page(q, limit=limit, cursor=cursor, newest_first=True)

    found = connected(ctx, go)
    if count:
        print(found)
    elif as_json:
        print_json({"tasks": [_entry_dict(e) for e in found.entries], "cursor": found.cursor})
    else:
        _table(found.entries)
        if found.cursor:
            err_console.print(f"more: --cursor {found.cursor}")


@dlq_app.command("show")
def dlq_show(ctx: typer.Context, task_id: str, as_json: JsonOpt = False) -> None:
    """Show one dead letter with its attempt timeline."""
    from .output import show_task, task_dict

    async def go(nc: Client, rq: Requester, index: IndexView | None) -> Any:
        producer = Producer(nc)
        try:
            return await producer.get(task_id)
        finally:
            await producer.close()

    record = connected(ctx, go, index=False)
    print_json(task_dict(record)) if as_json else show_task(record)


@dlq_app.command("replay")
def dlq_replay(ctx: typer.Context, task_ids: Annotated[list[str] | None, typer.Argument(help="Ids; none: filters.")] = None,
               queue: QueueOpt = None, task_type: TypeOpt = None, code: CodeOpt = None, grep: GrepOpt = None,
               since: SinceOpt = None, until: UntilOpt = None,
               to_queue: Annotated[str | None, typer.Option("--to-queue", help="Run them on this queue.")] = None,
               payload: Annotated[str | None, typer.Option(help="Replace the payload with this JSON.")] = None,
               rate: Annotated[str, typer.Option(help="At most this many per second, e.g. 50/s (0: no limit).")] = "0",
               dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would be replayed.")] = False,
               yes: YesOpt = False) -> None:
    """Run dead letters again in place (same id, history kept), once each, however often this runs."""
    per_second = _rate(rate)
    body = _json_payload(payload)
    filters = Filters(queue, task_type, code, grep, since, until)

    async def go(nc: Client, rq: Requester, index: IndexView | None) -> tuple[int, int, int]:
        ids = list(task_ids) if task_ids else (await index.ids(filters.query()) if index is not None else [])
        if dry_run:
            for task_id in ids:
                print(f"would replay {task_id}")
            return len(ids), 0, len(ids)
        if not confirm_count(len(ids), "replay", yes):
            return 0, 0, 0

        async def one(task_id: str) -> bool:
            result = await dlq.replay(nc, rq, task_id, queue=to_queue, payload=body)
            if not result.done:
                err_console.print(f"skipped {task_id}: {result.why}")
            return result.done

        done, skipped = await for_each(ids, "replaying", one, per_second)
        return done, skipped, len(ids)

    done, skipped, total = connected(ctx, go, index=not task_ids)
    if not dry_run and total:
        print(f"replayed {done} of {total} dead letters ({skipped} skipped)")


@dlq_app.command("delete")
def dlq_delete(ctx: typer.Context, task_ids: list[str], yes: YesOpt = False) -> None:
    """Delete dead letters by id (tasks that are no longer dead letters are left alone)."""
    confirm_count(len(task_ids), "delete", yes)
    removed = connected(ctx, lambda nc, rq, index: dlq.delete(rq, task_ids), index=False)
    print(f"deleted {len(removed)} dead letters")


@dlq_app.command("purge")
def dlq_purge(ctx: typer.Context, queue: QueueOpt = None, task_type: TypeOpt = None, code: CodeOpt = None,
              grep: GrepOpt = None, since: SinceOpt = None, until: UntilOpt = None,
              retention: Annotated[bool, typer.Option("--retention", help="Only what each queue's retention drops.")] = False,
              dry_run: Annotated[bool, typer.Option("--dry-run")] = False, yes: YesOpt = False) -> None:
    """Delete every dead letter matching the filters (or, with --retention, apply each queue's retention)."""
    filters = Filters(queue, task_type, code, grep, since, until)

    async def go(nc: Client, rq: Requester, index: IndexView | None) -> int:
        assert index is not None
        if retention:
            from .index import TaskIndex
            from .index_service import LocalView
            from .queues import QueueAdmin

            if not isinstance(index, LocalView):
                raise ConfigError("`dlq keep` applies retention already; this would race with it")
            local: TaskIndex = index.index
            names = [queue] if queue else await QueueAdmin(rq).names()
            return sum((await dlq.enforce_retention(rq, local, names)).values())
        ids = await index.ids(filters.query())
        if dry_run:
            print(f"would delete {len(ids)} dead letters")
            return 0
        if not confirm_count(len(ids), "delete", yes):
            return 0
        done, _ = await for_each(ids, "deleting", lambda i: delete_one(rq, index, i))
        return done

    print(f"deleted {connected(ctx, go)} dead letters")


async def delete_one(rq: Requester, index: IndexView | None, task_id: str, only_dead: bool = True) -> bool:
    removed = await dlq.delete(rq, [task_id], only_dead=only_dead)
    if removed and index is not None:
        await index.forget(task_id)
    return bool(removed)


@dlq_app.command("retention")
def dlq_retention(ctx: typer.Context, queue: str,
                  max_count: Annotated[int | None, typer.Option(help="Dead letters kept at most (0: no limit).")] = None,
                  max_age: Annotated[str | None, typer.Option(help="Kept this long, e.g. 30d as 720h (0: forever).")] = None,
                  ) -> None:
    """Show or set a queue's dead-letter retention (applied by `dlq purge --retention`)."""
    async def go(nc: Client, rq: Requester, index: IndexView | None) -> dlq.Retention:
        current = await dlq.get_retention(rq, queue)
        if max_count is None and max_age is None:
            return current
        if max_count is not None and max_count < 0:
            raise ConfigError("--max-count must be 0 (no limit) or more")
        new = dlq.Retention(max_count=current.max_count if max_count is None else max_count,
                            max_age=current.max_age if max_age is None else parse_duration(max_age, what="--max-age"))
        await dlq.set_retention(rq, queue, new)
        return new

    kept = connected(ctx, go, index=False)
    print(f"queue {queue} keeps {kept.max_count or 'any number of'} dead letters "
          f"for {f'{kept.max_age:g}s' if kept.max_age else 'ever'}")


def _rate(text: str) -> float:
    value = text.strip().removesuffix("/s")
    try:
        rate = float(value)
    except ValueError:
        raise ConfigError(f"--rate {text!r} is not a rate: use e.g. 50/s") from None
    if rate < 0:
        raise ConfigError("--rate must not be negative")
    return rate


def _json_payload(text: str | None) -> bytes | None:
    if text is None:
        return None
    import json

    try:
        json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"--payload is not JSON: {exc}") from None
    return text.encode()


@dlq_app.command("keep")
def dlq_keep(ctx: typer.Context,
             interval: Annotated[str, typer.Option(help="How often retention is applied and the gauge set.")] = "30s",
             metrics_listen: Annotated[str | None, typer.Option("--metrics", help="host:port for /metrics.")] = None,
             ) -> None:
    """Keep the task index for every command, set the dead_letters gauge, and apply dead-letter retention."""
    every = parse_duration(interval, what="--interval")
    settings = ctx.obj["settings"]

    async def go() -> None:
        import signal

        from .connect import session
        from .dlq_keeper import Keeper
        from .health import serve_health
        from .logs import configure_logging
        from .metrics import Metrics

        configure_logging(settings.log_format, settings.log_level)
        metrics = Metrics()
        async with session(settings) as (nc, _), anyio.create_task_group() as tg:
            keeper = Keeper(nc, metrics, interval=every)
            if metrics_listen:
                await tg.start(serve_health, metrics_listen, metrics, lambda: nc.is_connected)
            await tg.start(keeper.run)
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for _ in signals:
                    break
            tg.cancel_scope.cancel()

    anyio.run(go)
