"""``jetbridge queue ...``: create, inspect, purge and remove queues."""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated, Any

import typer
from jetbridge.internal import JetbridgeError, Producer

from .cli_common import JsonOpt, with_admin, with_producer
from .durations import format_duration, parse_duration
from .output import console, err_console, print_json
from .queues import QueueAdmin, QueueConfig

#: queue settings shown as durations (one format everywhere: what is shown can be passed back to a flag)
DURATION_KEYS = frozenset({"max_run_time", "max_age", "lease"})
queue_app = typer.Typer(help="Create, inspect and remove queues.", no_args_is_help=True)


def _queue_options(
    max_tries: int | None, max_run_time: str | None, max_concurrent: int | None, max_entries: int | None,
    discard_old: bool | None, max_age: str | None, lease: str | None, retry: str | None, memory: bool | None,
    replicas: int | None,
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if max_tries is not None:
        out["max_tries"] = max_tries
    if max_run_time is not None:
        out["max_run_time"] = parse_duration(max_run_time, what="--max-run-time")
    if max_concurrent is not None:
        out["max_concurrent"] = max_concurrent
    if max_entries is not None:
        out["max_entries"] = max_entries
    if discard_old is not None:
        out["discard_old"] = discard_old
    if max_age is not None:
        out["max_age"] = parse_duration(max_age, what="--max-age")
    if lease is not None:
        out["lease"] = parse_duration(lease, what="--lease")
    if retry is not None:
        out["retry"] = retry
    if memory is not None:
        out["storage"] = "memory" if memory else "file"
    if replicas is not None:
        out["replicas"] = replicas
    return out


@queue_app.command("add")
def queue_add(
    ctx: typer.Context, name: str,
    max_tries: Annotated[int | None, typer.Option(help="Attempts per task at most (-1: no queue limit).")] = None,
    max_run_time: Annotated[str | None, typer.Option(help="Longest attempt, e.g. 1h.")] = None,
    max_concurrent: Annotated[int | None, typer.Option(help="Attempts at once across dispatchers.")] = None,
    max_entries: Annotated[int | None, typer.Option(help="Waiting tasks at most (0: no limit).")] = None,
    discard_old: Annotated[bool | None, typer.Option("--discard-old/--refuse-new", help="When full.")] = None,
    max_age: Annotated[str | None, typer.Option(help="How long items may wait (0: forever).")] = None,
    lease: Annotated[str | None, typer.Option(help="Silence after which an attempt is taken over.")] = None,
    retry: Annotated[str | None, typer.Option(help="Retry policy: default, 10m, 1h, 1m, exponential, fixed:5s.")] = None,
    memory: Annotated[bool | None, typer.Option("--memory/--file", help="Storage.")] = None,
    replicas: Annotated[int | None, typer.Option(help="Stream replicas.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a queue, or update an existing one."""
    opts = _queue_options(max_tries, max_run_time, max_concurrent, max_entries, discard_old, max_age, lease,
                          retry, memory, replicas)

    async def go(admin: QueueAdmin) -> QueueConfig:
        try:
            current = await admin.get(name)
        except JetbridgeError:
            return await admin.add(QueueConfig(name=name, **opts))
        return await admin.add(replace(current, asyncjobs_native=False, **opts))

    config = with_admin(ctx, go)
    print_json(config.to_dict()) if as_json else _show_queue(config)


def _show_queue(config: QueueConfig, extra: dict[str, Any] | None = None) -> None:
    from rich.table import Table

    table = Table(show_header=False, box=None)
    for key, value in {**config.to_dict(), **(extra or {})}.items():
        shown = format_duration(value) if key in DURATION_KEYS else str(value)
        table.add_row(f"[bold]{key}[/bold]", shown)
    console.print(table)


@queue_app.command("info")
def queue_info(ctx: typer.Context, name: str, as_json: JsonOpt = False) -> None:
    """Show a queue's settings and counts."""
    info = with_admin(ctx, lambda a: a.info(name))
    extra = {"waiting": info.waiting, "in_flight": info.in_flight, "redelivered": info.redelivered, "bytes": info.bytes,
             "paused": info.paused}
    print_json({**info.config.to_dict(), **extra}) if as_json else _show_queue(info.config, extra)


@queue_app.command("list")
def queue_list(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """List queues."""
    async def go(admin: QueueAdmin) -> list[Any]:
        return [await admin.info(n) for n in await admin.names()]

    infos = with_admin(ctx, go)
    if as_json:
        print_json([{**i.config.to_dict(), "waiting": i.waiting, "in_flight": i.in_flight, "paused": i.paused}
                    for i in infos])
        return
    from rich.table import Table

    table = Table("queue", "waiting", "in flight", "max tries", "max run time", "concurrency", "retry", "storage",
                  "paused")
    for i in infos:
        c = i.config
        table.add_row(c.name, str(i.waiting), str(i.in_flight), str(c.max_tries), format_duration(c.max_run_time),
                      str(c.max_concurrent), c.retry, c.storage, i.paused)
    console.print(table)


@queue_app.command("purge")
def queue_purge(ctx: typer.Context, name: str, force: Annotated[bool, typer.Option("--force", "-f")] = False) -> None:
    """Drop every waiting item of a queue; its tasks end terminated (code purged)."""
    if not force:
        typer.confirm(f"Drop every waiting item of queue {name} and end its tasks?", abort=True)
    from rich.progress import Progress

    from .tasks import purge_queue

    async def go(p: Producer, nc: Any) -> int:
        await QueueAdmin(p._rq).info(name)  # a missing queue is said plainly, before anything changes
        with Progress(console=err_console, transient=True) as bar:
            job = bar.add_task(f"purging {name}", total=None)
            return await purge_queue(nc, p._rq, name, lambda done, total: bar.update(job, completed=done, total=total))

    ended = with_producer(ctx, go)
    print(f"purged queue {name}: {ended} waiting tasks ended as terminated")


@queue_app.command("delete")
def queue_delete(ctx: typer.Context, name: str, force: Annotated[bool, typer.Option("--force", "-f")] = False) -> None:
    """Delete a queue and its waiting items."""
    if not force:
        typer.confirm(f"Delete queue {name} and its waiting items?", abort=True)
    with_admin(ctx, lambda a: a.delete(name))
    print(f"deleted queue {name}")
