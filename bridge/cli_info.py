"""``jetbridge info``, ``jetbridge watch`` and ``jetbridge config ...``: what runs, live, and what is configured."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer
from jetbridge.internal import JetStreamError, Requester, js_api, names
from nats.aio.client import Client
from rich.table import Table

from .cli_common import JsonOpt, settings_of, with_session
from .durations import format_duration
from .output import console, print_json
from .queues import _paused
from .settings import Settings

config_app = typer.Typer(help="Check and show the dispatcher's configuration.", no_args_is_help=True)
SAMPLE = 1.0  # seconds between the two reads of each queue that give its rate (also the discovery window)


async def _queue_counts(rq: Requester, queue: str) -> dict[str, Any]:
    stream = names.queue_stream(queue)
    try:
        c = await js_api(rq, f"CONSUMER.INFO.{stream}.{names.QUEUE_CONSUMER}")
    except JetStreamError:
        return {"name": queue, "depth": 0, "in_flight": 0, "paused": "", "delivered": 0, "consumer": False}
    return {"name": queue, "depth": int(c.get("num_pending", 0)), "in_flight": int(c.get("num_ack_pending", 0)),
            "paused": _paused(c), "delivered": int(c.get("delivered", {}).get("consumer_seq", 0)),
            "consumer": True}


async def gather_info(nc: Client) -> dict[str, Any]:
    """Server, JetStream, task store, queues (with a rate over :data:`SAMPLE`), dispatchers and handlers."""
    from .discovery import dispatchers, gather_infos, handler_groups
    from .queues import QueueAdmin

    rq = Requester(nc)
    try:
        server = nc._server_info  # noqa: SLF001 - nats-py keeps the server's INFO here and nowhere public
        account = await js_api(rq, "INFO")
        try:
            store = await js_api(rq, f"STREAM.INFO.{names.TASKS_STREAM}")
            task_store = {"stream": names.TASKS_STREAM, "tasks": store["state"]["messages"],
                          "bytes": store["state"]["bytes"], "replicas": store["config"].get("num_replicas")}
        except JetStreamError:
            task_store = {"stream": names.TASKS_STREAM, "missing": True}
        queue_names = await QueueAdmin(rq).names()
        before = {q: await _queue_counts(rq, q) for q in queue_names}
        started = time.monotonic()
        infos = await gather_infos(nc, window=SAMPLE)
        elapsed = max(time.monotonic() - started, 1e-3)
        queues = []
        for q in queue_names:
            now = await _queue_counts(rq, q)
            now["rate"] = round(max(0, now.pop("delivered") - before[q]["delivered"]) / elapsed, 2)
            queues.append(now)
        online = await dispatchers(nc, infos)
        from .limit_store import limit_rows

        limits = await limit_rows(nc)
    finally:
        await rq.close()
    for d in online:
        d["uptime"] = format_duration(round(time.time() - float(d.get("started") or time.time())))
    return {
        "server": {"url": nc.connected_url.geturl() if nc.connected_url else "", "version": server.get("version"),
                   "name": server.get("server_name"), "cluster": server.get("cluster", ""),
                   "max_payload": server.get("max_payload")},
        "jetstream": {"api_level": (account.get("api") or {}).get("level"), "streams": account.get("streams"),
                      "memory": account.get("memory"), "storage": account.get("storage")},
        "task_store": task_store, "queues": queues, "dispatchers": online,
        "handlers": [g.to_dict() for g in handler_groups(infos)], "limits": limits,
    }


def _table(title: str, columns: list[str], rows: list[list[str]], empty: str) -> None:
    if not rows:
        console.print(f"[bold]{title}[/bold]: {empty}")
        return
    table = Table(*columns, title=title, title_justify="left", title_style="bold")
    for row in rows:
        table.add_row(*row)
    console.print(table)


def show_info(data: dict[str, Any]) -> None:
    s, js, ts = data["server"], data["jetstream"], data["task_store"]
    console.print(f"[bold]server[/bold] {s['url']}: nats-server {s['version']} ({s['name']}"
                  f"{', cluster ' + s['cluster'] if s['cluster'] else ''}), max payload {s['max_payload']} bytes")
    console.print(f"[bold]jetstream[/bold] API level {js['api_level']}, {js['streams']} streams, "
                  f"{js['storage']} bytes on disk, {js['memory']} in memory")
    if ts.get("missing"):
        console.print(f"[bold]task store[/bold] {ts['stream']}: not created yet")
    else:
        console.print(f"[bold]task store[/bold] {ts['stream']}: {ts['tasks']} tasks, {ts['bytes']} bytes, "
                      f"R{ts['replicas']}")
    _table("queues", ["queue", "depth", "in flight", "rate/s", "paused"],
           [[q["name"], str(q["depth"]), str(q["in_flight"]), f"{q['rate']:g}", q["paused"] or "no"]
            for q in data["queues"]], "none (create one with `jetbridge queue add NAME`)")
    _table("dispatchers", ["id", "queues", "version", "uptime", "in flight"],
           [[d["id"], ", ".join(d.get("queues") or []), str(d.get("version", "")), d["uptime"],
             "" if d.get("in_flight") is None else str(d["in_flight"])] for d in data["dispatchers"]],
           "none online (start one with `jetbridge run`)")
    _table("handlers", ["service", "language", "version", "instances", "task types"],
           [[h["service"], ", ".join(h["sdk"]), ", ".join(h["versions"]), str(h["instances"]),
             ", ".join(h["task_types"])] for h in data["handlers"]], "none online")
    if data.get("limits"):
        from .cli_limits import show_limits

        show_limits(data["limits"])


def info(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Show the server and JetStream, every queue, and the dispatchers and handlers online."""
    data = with_session(ctx, lambda nc, settings: gather_info(nc))
    print_json(data) if as_json else show_info(data)


def watch(
    ctx: typer.Context, queue: Annotated[str | None, typer.Option("--queue", "-q", help="Only this queue.")] = None,
    events: Annotated[bool, typer.Option("--events", help="A scrolling log of state changes instead of the board.")] = False,
    as_json: JsonOpt = False,
    seconds: Annotated[str | None, typer.Option(help="Stop after this long, e.g. 30s (default: until Ctrl-C).")] = None,
) -> None:
    """A live board: queues with counts by state and rates, running attempts with progress, recent failures."""
    from .durations import parse_duration
    from .watch import watch_board, watch_events

    limit = parse_duration(seconds, what="--seconds") if seconds is not None else None

    async def go(nc: Client, settings: Settings) -> None:
        if events or as_json:
            await watch_events(nc, queue=queue, as_json=as_json, seconds=limit)
        else:
            await watch_board(nc, queue=queue, seconds=limit)

    try:
        with_session(ctx, go)
    except KeyboardInterrupt:
        pass


@config_app.command("check")
def config_check(ctx: typer.Context) -> None:
    """Validate the configuration (file, environment, flags) and say so."""
    settings_of(ctx)
    print("configuration is valid")


@config_app.command("show")
def config_show(ctx: typer.Context) -> None:
    """Print the effective configuration as JSON, secrets redacted."""
    print_json(settings_of(ctx).redacted())


