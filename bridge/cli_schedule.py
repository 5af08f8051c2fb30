"""``jetbridge schedule ...``: cron schedules that every dispatcher fires, and ``task reschedule`` for delayed tasks."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import anyio
import typer
from jetbridge.internal import JSON_CONTENT_TYPE, Bytes, Producer, Schedules, ScheduleView, Signer, format_ns, parse_ns

from .output import console, print_json, show_task, task_dict
from .policy import parse_duration

HELP = """Cron schedules: every dispatcher fires them, each slot exactly once (no leader, no single point of failure).

  jetbridge schedule add nightly "30 2 * * *" report:build '{"full":true}' --queue REPORTS --tz Europe/Berlin --overlap skip --catchup 1h --jitter 30s --tries 3 --deadline 1h

  jetbridge schedule add pulse "@every 10s" health:ping --overlap allow

  jetbridge schedule list  |  view nightly  |  pause nightly --note "db migration"  |  resume nightly  |  trigger nightly

  jetbridge schedule backfill nightly --from 2026-12-01T00:00:00Z --to 2026-12-03T00:00:00Z

  jetbridge schedule delete nightly

CRON is five fields (minute hour day-of-month month day-of-week), @yearly @monthly @weekly @daily @hourly, or @every 30s. --tz (or a CRON_TZ= prefix) sets the zone, UTC by default. Daylight saving follows Debian cron: a fixed time in the skipped spring hour runs right after the jump; one in the repeated autumn hour runs once.

--overlap decides what happens while the previous task is unfinished: skip the slot, buffer_one (run it when that task ends), or allow. After an outage, slots within --catchup fire late; older ones are counted as missed. Each schedule records its last fire, next fire and last task (view).

Schedules are stored where asyncjobs keeps them (KV CHORIA_AJ_CONFIGURATION, key scheduled_tasks.NAME), so `ajc cron list` shows them. Delayed tasks: `jetbridge enqueue TYPE --in 10m` or `--at TIME`, then `jetbridge task reschedule ID --in 1h` or `task cancel ID`.
"""  # noqa: E501 - rich wraps each paragraph

schedule_app = typer.Typer(help=HELP, no_args_is_help=True)
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]
T = TypeVar("T")


def _with_schedules(ctx: typer.Context, fn: Callable[[Schedules], Awaitable[T]]) -> T:
    async def go() -> T:
        from .connect import session

        settings = ctx.obj["settings"]
        async with session(settings) as (nc, _):
            signer = Signer(settings.signing_seed) if settings.signing_seed else None
            schedules = Schedules(nc, producer=Producer(nc, signer=signer))
            try:
                return await fn(schedules)
            finally:
                await schedules.close()

    return anyio.run(go)


def _show(view: ScheduleView, as_json: bool) -> None:
    data = view.to_dict()
    if as_json:
        print_json(data)
        return
    from rich.table import Table

    table = Table(show_header=False, box=None)
    for key, value in data.items():
        table.add_row(f"[bold]{key}[/bold]", "" if value is None else str(value))
    console.print(table)


def _time(text: str, what: str) -> int:
    try:
        return parse_ns(text)
    except ValueError:
        raise typer.BadParameter(f"{what} {text!r} is not an RFC 3339 time such as 2026-12-24T18:00:00+01:00") from None


@schedule_app.command("add")
def add(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Schedule name: letters, digits, '_' and '-'.")],
    cron: Annotated[str, typer.Argument(help='"30 2 * * *", "@daily", "@every 10m" (quote it).')],
    task_type: Annotated[str, typer.Argument(help="Type of the tasks it creates.")],
    payload: Annotated[str | None, typer.Argument(help="JSON payload, stored and sent byte for byte.")] = None,
    queue: Annotated[str, typer.Option("--queue", "-q")] = "DEFAULT",
    tz: Annotated[str | None, typer.Option(help="IANA time zone, e.g. Europe/Berlin (default UTC).")] = None,
    tries: Annotated[int, typer.Option(help="Attempts per task at most.")] = 10,
    deadline: Annotated[str | None, typer.Option(help="Each task's deadline after its fire time (>= 30s).")] = None,
    overlap: Annotated[str, typer.Option(help="While the last task runs: skip, buffer_one or allow.")] = "skip",
    catchup: Annotated[str, typer.Option(help="How late a slot may still fire after an outage.")] = "1m",
    jitter: Annotated[str | None, typer.Option(help="Fire each slot up to this much later.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a schedule, or replace the one with this name at once."""
    value: Any = None
    if payload is not None:
        try:
            json.loads(payload)
        except ValueError as exc:
            raise typer.BadParameter(f"payload is not JSON ({exc})") from None
        value = Bytes(payload.encode(), JSON_CONTENT_TYPE)
    limit = parse_duration(deadline, what="--deadline") if deadline else None
    window = parse_duration(catchup, what="--catchup")
    spread = parse_duration(jitter, what="--jitter") if jitter else None
    view = _with_schedules(ctx, lambda s: s.add(name, cron, task_type, value, queue=queue, tz=tz, max_tries=tries,
                                                 deadline=limit, overlap=overlap, catchup=window, jitter=spread))
    _show(view, as_json)


@schedule_app.command("list")
def list_(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """List schedules with their last and next fire."""
    views = _with_schedules(ctx, lambda s: s.list())
    if as_json:
        print_json([v.to_dict() for v in views])
        return
    from rich.table import Table

    table = Table("name", "schedule", "queue / type", "next fire", "fired/missed/skipped", "paused", box=None)
    for v in views:
        d = v.to_dict()
        table.add_row(d["name"], d["schedule"].removeprefix("CRON_TZ="), f"{d['queue']} / {d['type']}",
                      d["next_fire"], f"{d['fires']}/{d['missed']}/{d['skipped']}",
                      (d["note"] or "yes") if d["paused"] else "")
    console.print(table)


@schedule_app.command("view")
def view(ctx: typer.Context, name: str, as_json: JsonOpt = False) -> None:
    """Show one schedule: definition, last fire, next fire, last task, counters."""
    _show(_with_schedules(ctx, lambda s: s.get(name)), as_json)


@schedule_app.command("pause")
def pause(ctx: typer.Context, name: str, note: Annotated[str, typer.Option(help="Why (shown in list).")] = "",
          as_json: JsonOpt = False) -> None:
    """Stop firing a schedule until it is resumed (slots meanwhile are not fired later)."""
    _show(_with_schedules(ctx, lambda s: s.pause(name, note=note)), as_json)


@schedule_app.command("resume")
def resume(ctx: typer.Context, name: str, as_json: JsonOpt = False) -> None:
    """Fire a paused schedule again, from its next slot."""
    _show(_with_schedules(ctx, lambda s: s.resume(name)), as_json)


@schedule_app.command("trigger")
def trigger(ctx: typer.Context, name: str) -> None:
    """Fire a schedule now, once, outside its slots; prints the task id."""
    print(_with_schedules(ctx, lambda s: s.trigger(name)))


@schedule_app.command("backfill")
def backfill(
    ctx: typer.Context, name: str,
    start: Annotated[str, typer.Option("--from", help="First time (RFC 3339), inclusive.")],
    end: Annotated[str, typer.Option("--to", help="Last time (RFC 3339), inclusive.")],
    as_json: JsonOpt = False,
) -> None:
    """Fire every slot of a past range that has not fired (a slot that fired keeps its one task)."""
    first, last = _time(start, "--from"), _time(end, "--to")
    fired = _with_schedules(ctx, lambda s: s.backfill(name, first, last))
    rows = [{"slot": format_ns(slot), "task_id": task_id, "created": created} for slot, task_id, created in fired]
    if as_json:
        print_json(rows)
        return
    for row in rows:
        print(f"{row['slot']}  {row['task_id']}  {'created' if row['created'] else 'already fired'}")
    print(f"{sum(1 for _, _, created in fired if created)} of {len(rows)} slots fired")


@schedule_app.command("delete")
def delete(ctx: typer.Context, name: str, force: Annotated[bool, typer.Option("--force", "-f")] = False) -> None:
    """Delete a schedule (tasks it created stay)."""
    if not force:
        typer.confirm(f"Delete schedule {name}?", abort=True)
    _with_schedules(ctx, lambda s: s.delete(name))
    print(f"deleted schedule {name}")


def task_reschedule(
    ctx: typer.Context, task_id: str,
    delay: Annotated[str | None, typer.Option("--in", help="New due time from now, e.g. 10m.")] = None,
    at: Annotated[str | None, typer.Option("--at", help="New due time, RFC 3339.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Move a delayed task that is still waiting (state scheduled) to a new due time."""
    seconds = parse_duration(delay, what="--in") if delay else None

    async def go(s: Schedules) -> Any:
        return await s._producer.reschedule(task_id, delay=seconds, at=at)

    record = _with_schedules(ctx, go)
    print_json(task_dict(record)) if as_json else show_task(record)
