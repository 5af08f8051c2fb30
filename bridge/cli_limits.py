"""``jetbridge limit set|list|delete``: global limits per task type and queue, applied live by every dispatcher.

See docs/flow-control.md. A limit is stored in the JetStream KV bucket ``JETBRIDGE_LIMITS``; dispatchers watch it
and apply a change within a second.
"""

from __future__ import annotations

import fnmatch
from typing import Annotated, Any

import typer
from jetbridge.internal import TaskRecord
from nats.aio.client import Client
from rich.table import Table

from .cli_common import JsonOpt, fail, with_session
from .limit_store import delete_spec, limit_rows, open_bucket, save_spec
from .limits import check_pattern, limit_id, make_spec
from .output import console, print_json
from .settings import Settings

limit_app = typer.Typer(help="Global limits per task type and queue, across every dispatcher.", no_args_is_help=True)

PatternArg = Annotated[str, typer.Argument(metavar="PATTERN", help="Task type or fnmatch pattern, e.g. email:* "
                                                                   "('*': every type).")]
QueueOpt = Annotated[str, typer.Option("--queue", "-q", help="Only on this queue (or queue pattern).")]


@limit_app.command("set")
def limit_set(
    ctx: typer.Context, pattern: PatternArg = "*", queue: QueueOpt = "*",
    concurrency: Annotated[int | None, typer.Option(help="Attempts running at once, across dispatchers.")] = None,
    rate: Annotated[str | None, typer.Option(help="Attempts started, e.g. 100/s, 6000/m or 10/5s.")] = None,
    burst: Annotated[int | None, typer.Option(help="With --rate: starts allowed at once after idle time "
                                                   "(default 1).")] = None,
    adaptive: Annotated[bool, typer.Option("--adaptive", help="With --rate: halve the rate for a while when a "
                                           "handler replies retry with code rate_limited, overloaded or 429.")] = False,
) -> None:
    """Create or replace the limit on PATTERN (and --queue); dispatchers apply it within a second."""
    spec = make_spec(pattern, queue, concurrency, rate, burst, adaptive)

    async def go(nc: Client, settings: Settings) -> None:
        kv = await open_bucket(nc, create=True, replicas=settings.store_replicas)
        assert kv is not None
        await save_spec(kv, spec)

    with_session(ctx, go)
    parts = ([f"concurrency {spec.concurrency}"] if spec.concurrency else []) + (
        [f"rate {spec.rate_text} (burst {spec.burst}{', adaptive' if spec.adaptive else ''})"] if spec.rate else [])
    print(f"limit on {spec.describe()}: {', '.join(parts)}")


@limit_app.command("list")
def limit_list(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Every limit, with the attempts running under each concurrency limit now."""
    rows = with_session(ctx, lambda nc, settings: limit_rows(nc))
    if as_json:
        print_json(rows)
        return
    show_limits(rows)


def show_limits(rows: list[dict[str, Any]]) -> None:
    if not rows:
        console.print("[bold]limits[/bold]: none (set one with `jetbridge limit set PATTERN --concurrency N`)")
        return
    table = Table("task types", "queues", "concurrency", "running", "rate", "burst", title="limits",
                  title_justify="left", title_style="bold")
    for r in rows:
        rate = _cell(r["rate"]) + (" adaptive" if r.get("adaptive") else "")
        table.add_row(r["types"], r["queues"], _cell(r["concurrency"]), _cell(r["running"]), rate, _cell(r["burst"]))
    console.print(table)


def _cell(value: Any) -> str:
    return "-" if value is None else str(value)


@limit_app.command("delete")
def limit_delete(ctx: typer.Context, pattern: PatternArg = "*", queue: QueueOpt = "*") -> None:
    """Remove the limit on PATTERN (and --queue); waiting tasks start at once."""
    spec_id = limit_id(check_pattern(pattern, "PATTERN"), check_pattern(queue, "--queue"))

    async def go(nc: Client, settings: Settings) -> bool:
        kv = await open_bucket(nc, create=False)
        return kv is not None and await delete_spec(kv, spec_id)

    if not with_session(ctx, go):
        where = pattern + ("" if queue == "*" else f" on queue {queue}")
        raise fail(f"there is no limit on {where} (see `jetbridge limit list`)")
    print(f"limit on {pattern}{'' if queue == '*' else f' on queue {queue}'} deleted")


def limits_note(ctx: typer.Context, record: TaskRecord) -> None:
    """Under ``task get``: the limits an unfinished task is subject to, with their use now (why a task waits)."""
    if record.task_state.terminal:
        return
    try:
        rows = with_session(ctx, lambda nc, settings: limit_rows(nc, timeout=1.0))
    except Exception:  # noqa: BLE001 - a producer may not read the limits: the task is shown without them
        return
    for r in rows:
        if not (fnmatch.fnmatchcase(record.type, str(r["types"])) and fnmatch.fnmatchcase(record.queue,
                                                                                           str(r["queues"]))):
            continue
        parts = []
        if r["concurrency"]:
            parts.append(f"concurrency {r['concurrency']} ({r['running']} running now)")
        if r["rate"]:
            parts.append(f"rate {r['rate']} (burst {r['burst']})")
        where = str(r["types"]) + ("" if r["queues"] == "*" else f" on queue {r['queues']}")
        console.print(f"[bold]limit[/bold] {where}: {', '.join(parts)}; the task waits (no attempt spent) "
                      "while it is full")
