"""The ``jetbridge`` command line."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import anyio
import msgspec
import typer
from jetbridge import _names as names
from jetbridge._errors import JetbridgeError
from jetbridge._producer import Producer
from jetbridge._protocol import Bytes
from jetbridge._requester import Requester
from jetbridge._signing import Signer

from .output import console, err_console, print_json, show_task, task_dict, task_table
from .policy import parse_duration
from .queues import QueueAdmin, QueueConfig
from .settings import Settings, load_settings

app = typer.Typer(help="Jetbridge: run NATS JetStream work queues on handler services in any language.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
task_app = typer.Typer(help="Inspect and change tasks.", no_args_is_help=True)
queue_app = typer.Typer(help="Create, inspect and remove queues.", no_args_is_help=True)
config_app = typer.Typer(help="Check and show the dispatcher's configuration.", no_args_is_help=True)
app.add_typer(task_app, name="task")
app.add_typer(queue_app, name="queue")
app.add_typer(config_app, name="config")
from .cli_bulk import bulk_app, pause_app  # noqa: E402  (issue 17: dead letters, bulk operations, pausing)
from .cli_dlq import dlq_app  # noqa: E402

app.add_typer(dlq_app, name="dlq")
app.add_typer(bulk_app, name="bulk")
queue_app.add_typer(pause_app)
from .cli_schedule import schedule_app, task_reschedule  # noqa: E402

app.add_typer(schedule_app, name="schedule")
task_app.command("reschedule")(task_reschedule)
from .cli_serve import serve  # noqa: E402  (issue 19: HTTP API and dashboard)

app.command("serve")(serve)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]


def _settings(ctx: typer.Context) -> Settings:
    return ctx.obj["settings"]  # type: ignore[no-any-return]


@app.callback()
def main_options(
    ctx: typer.Context,
    config: Annotated[Path | None, typer.Option("--config", "-c", envvar="JETBRIDGE_CONFIG",
                                                  help="TOML config file.")] = None,
    server: Annotated[str | None, typer.Option("--server", "-s", help="NATS URL(s); none: embedded server.")] = None,
    context: Annotated[str | None, typer.Option("--context", help="NATS CLI context name.")] = None,
    creds: Annotated[str | None, typer.Option(help="NATS creds file (JWT).")] = None,
    user: Annotated[str | None, typer.Option(help="NATS user.")] = None,
    password: Annotated[str | None, typer.Option(help="NATS password (prefer JETBRIDGE_PASSWORD).")] = None,
    token: Annotated[str | None, typer.Option(help="NATS token (prefer JETBRIDGE_TOKEN).")] = None,
    nkey_seed: Annotated[str | None, typer.Option("--nkey", help="NKey seed file.")] = None,
    tls_ca: Annotated[str | None, typer.Option(help="CA certificate to verify the server.")] = None,
    tls_cert: Annotated[str | None, typer.Option(help="Client certificate.")] = None,
    tls_key: Annotated[str | None, typer.Option(help="Client key.")] = None,
    data_dir: Annotated[str | None, typer.Option(help="Embedded server data directory.")] = None,
    inbox_prefix: Annotated[str | None, typer.Option(help="Reply subject prefix (for narrow permissions).")] = None,
    signing_seed: Annotated[str | None, typer.Option(help="Sign enqueued tasks with this ed25519 seed (hex or file; "
                                                          "prefer JETBRIDGE_SIGNING_SEED).")] = None,
) -> None:
    flags = {"server": server, "context": context, "creds": creds, "user": user, "password": password,
             "token": token, "nkey_seed": nkey_seed, "tls_ca": tls_ca, "tls_cert": tls_cert, "tls_key": tls_key,
             "data_dir": data_dir, "inbox_prefix": inbox_prefix, "signing_seed": signing_seed}
    import os

    env = dict(os.environ)
    if "NATS_URL" in env and "JETBRIDGE_SERVER" not in env and server is None:
        env["JETBRIDGE_SERVER"] = env["NATS_URL"]
    ctx.obj = {"config": config, "flags": flags, "env": env,
               "settings": load_settings(config, env=env, flags=flags)}


def _run(coro_fn: Any, *args: Any) -> Any:
    return anyio.run(coro_fn, *args)


# run ------------------------------------------------------------------------------------------------------------


@app.command()
def run(
    ctx: typer.Context,
    queue: Annotated[list[str] | None, typer.Option("--queue", "-q", help="Queue to serve (repeat; '*': all).")] = None,
    concurrency: Annotated[int | None, typer.Option(help="Attempts at once.")] = None,
    metrics_listen: Annotated[str | None, typer.Option("--metrics", help="host:port for /metrics, /healthz, /readyz.")] = None,
    log_format: Annotated[str | None, typer.Option(help="auto, console or json.")] = None,
    log_level: Annotated[str | None, typer.Option(help="debug, info, warning or error.")] = None,
    shutdown_grace: Annotated[str | None, typer.Option(help="How long running attempts may finish on SIGTERM.")] = None,
) -> None:
    """Run the dispatcher until SIGTERM or SIGINT, then drain."""
    flags = dict(ctx.obj["flags"], queues=queue or None, concurrency=concurrency, metrics_listen=metrics_listen,
                 log_format=log_format, log_level=log_level, shutdown_grace=shutdown_grace)
    settings = load_settings(ctx.obj["config"], env=ctx.obj["env"], flags=flags)
    from .service import run_dispatcher

    _run(run_dispatcher, settings)


# handle ---------------------------------------------------------------------------------------------------------

from .handle import HANDLE_HELP, HandleCommand  # noqa: E402


@app.command(cls=HandleCommand, help=HANDLE_HELP)
def handle(
    ctx: typer.Context,
    task_types: Annotated[list[str], typer.Argument(metavar="TYPE", help="Task types to serve ('*': every type on the prefix).")],
    concurrency: Annotated[int | None, typer.Option(envvar="JETBRIDGE_CONCURRENCY",
                                                    help="Commands at once (default: the number of CPUs).")] = None,
    prefix: Annotated[str | None, typer.Option(help="Task subject prefix (default: jetbridge.task).")] = None,
    grace: Annotated[str, typer.Option(help="On SIGTERM, how long running commands may finish.")] = "30s",
    kill_grace: Annotated[str, typer.Option(help="From SIGTERM to SIGKILL when a command is stopped.")] = "5s",
    terminate_exit: Annotated[int, typer.Option(help="Exit code that terminates the task.")] = 100,
    name: Annotated[str, typer.Option(help="Service name (nats micro ls).")] = "jetbridge-handle",
) -> None:
    from .handle import command_from, handle_main

    handle_main(_settings(ctx), task_types, command_from(ctx), concurrency=concurrency, prefix=prefix, grace=grace,
                kill_grace=kill_grace, terminate_exit=terminate_exit, name=name)


# enqueue --------------------------------------------------------------------------------------------------------


@app.command()
def enqueue(
    ctx: typer.Context,
    task_type: Annotated[str, typer.Argument(help="Task type, e.g. email:new.")],
    payload: Annotated[str | None, typer.Argument(help="JSON payload; '-' reads stdin.")] = None,
    queue: Annotated[str, typer.Option("--queue", "-q")] = "DEFAULT",
    task_id: Annotated[str | None, typer.Option("--id", help="Your own task id.")] = None,
    dedup_key: Annotated[str | None, typer.Option(help="Enqueue once per key within the dedup window.")] = None,
    deadline: Annotated[str | None, typer.Option(help="Do not start after this long, e.g. 30s, 10m.")] = None,
    tries: Annotated[int, typer.Option(help="Attempts at most (0: unlimited).")] = 10,
    binary: Annotated[bool, typer.Option(help="Send the payload as bytes, not JSON.")] = False,
    content_type: Annotated[str | None, typer.Option(help="Content type of a binary payload.")] = None,
    wait: Annotated[float | None, typer.Option(help="Wait up to this many seconds for the task to end.")] = None,
    delay: Annotated[str | None, typer.Option("--in", help="Run it this long from now, e.g. 10m (waits, holding no slot).")] = None,
    at: Annotated[str | None, typer.Option("--at", help="Run it at this RFC 3339 time, e.g. 2026-12-24T18:00:00+01:00.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Enqueue a task and print its id (--in / --at: a delayed task)."""
    raw = sys.stdin.buffer.read() if payload == "-" else (payload or "null").encode()
    if binary:
        value: Any = Bytes(raw, content_type or "application/octet-stream")
    else:
        try:
            value = json.loads(raw)
        except ValueError as exc:
            raise typer.BadParameter(f"payload is not JSON ({exc}); pass --binary to send bytes") from None
    limit = parse_duration(deadline, what="--deadline") if deadline else None

    async def go() -> None:
        from datetime import timedelta

        from .connect import session

        settings = _settings(ctx)
        async with session(settings) as (nc, _):
            signer = Signer(settings.signing_seed) if settings.signing_seed else None
            producer = Producer(nc, queue=queue, signer=signer)
            tid = await producer.enqueue(task_type, value, task_id=task_id, dedup_key=dedup_key, max_tries=tries,
                                         deadline=timedelta(seconds=limit) if limit else None,
                                         delay=parse_duration(delay, what="--in") if delay else None, at=at)
            record = await producer.wait(tid, timeout=wait) if wait else None
            await producer.close()
        if as_json:
            print_json(task_dict(record) if record else {"id": tid})
        elif record is not None:
            show_task(record)
        else:
            print(tid)

    _run(go)


# task ---------------------------------------------------------------------------------------------------------


def _with_producer(ctx: typer.Context, fn: Any) -> Any:
    async def go() -> Any:
        from .connect import session

        async with session(_settings(ctx)) as (nc, _):
            producer = Producer(nc)
            try:
                return await fn(producer, nc)
            finally:
                await producer.close()

    return _run(go)


@task_app.command("get")
def task_get(ctx: typer.Context, task_id: str, as_json: JsonOpt = False) -> None:
    """Show one task."""
    record = _with_producer(ctx, lambda p, nc: p.get(task_id))
    print_json(task_dict(record)) if as_json else show_task(record)


@task_app.command("cancel")
def task_cancel(ctx: typer.Context, task_id: str, reason: str = "cancelled by operator", as_json: JsonOpt = False) -> None:
    """Cancel a task: it ends terminated, and a running attempt is told to stop."""
    record = _with_producer(ctx, lambda p, nc: p.cancel(task_id, reason=reason))
    print_json(task_dict(record)) if as_json else show_task(record)


@task_app.command("retry")
def task_retry(ctx: typer.Context, task_ids: list[str], queue: Annotated[str | None, typer.Option("--queue", "-q")] = None,
               as_json: JsonOpt = False) -> None:
    """Put tasks back on their queue (or --queue) to run again."""
    from rich.progress import track

    async def go(p: Producer, nc: Any) -> list[Any]:
        out = []
        for tid in track(task_ids, description="retrying", console=err_console, disable=len(task_ids) < 10):
            out.append(await p.retry(tid, queue=queue))
        return out

    records = _with_producer(ctx, go)
    if as_json:
        print_json([task_dict(r) for r in records])
    else:
        task_table(records)


@task_app.command("delete")
def task_delete(ctx: typer.Context, task_id: str) -> None:
    """Remove a task from the store."""
    _with_producer(ctx, lambda p, nc: p.delete(task_id))
    print(f"deleted {task_id}")


@task_app.command("list")
def task_list(
    ctx: typer.Context, queue: Annotated[str | None, typer.Option("--queue", "-q")] = None,
    state: Annotated[str | None, typer.Option(help="Only tasks in this state.")] = None,
    limit: int = 200, as_json: JsonOpt = False,
) -> None:
    """List tasks (newest last)."""
    from .tasks import list_tasks

    records = _with_producer(ctx, lambda p, nc: list_tasks(nc, queue=queue, state=state, limit=limit))
    if as_json:
        print_json([task_dict(r) for r in records])
    else:
        task_table(records)


@task_app.command("watch")
def task_watch(ctx: typer.Context, task_id: str, as_json: JsonOpt = False) -> None:
    """Follow one task's state changes until it ends."""
    from .watch import watch_events

    _with_producer(ctx, lambda p, nc: watch_events(nc, task_id=task_id, as_json=as_json, until_terminal=True))


@app.command()
def watch(ctx: typer.Context, queue: Annotated[str | None, typer.Option("--queue", "-q")] = None,
          as_json: JsonOpt = False, seconds: Annotated[float | None, typer.Option(help="Stop after this long.")] = None) -> None:
    """Show live task states, progress, rates and errors from the lifecycle events."""
    from .watch import watch_events

    _with_producer(ctx, lambda p, nc: watch_events(nc, queue=queue, as_json=as_json, seconds=seconds))


# queue --------------------------------------------------------------------------------------------------------


def _with_admin(ctx: typer.Context, fn: Any) -> Any:
    async def go() -> Any:
        from .connect import session

        async with session(_settings(ctx)) as (nc, _):
            rq = Requester(nc)
            try:
                return await fn(QueueAdmin(rq))
            finally:
                await rq.close()

    return _run(go)


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

    config = _with_admin(ctx, go)
    print_json(config.to_dict()) if as_json else _show_queue(config)


def _show_queue(config: QueueConfig, extra: dict[str, Any] | None = None) -> None:
    from rich.table import Table

    table = Table(show_header=False, box=None)
    for key, value in {**config.to_dict(), **(extra or {})}.items():
        table.add_row(f"[bold]{key}[/bold]", str(value))
    console.print(table)


@queue_app.command("info")
def queue_info(ctx: typer.Context, name: str, as_json: JsonOpt = False) -> None:
    """Show a queue's settings and counts."""
    info = _with_admin(ctx, lambda a: a.info(name))
    extra = {"waiting": info.waiting, "in_flight": info.in_flight, "redelivered": info.redelivered, "bytes": info.bytes,
             "paused": info.paused}
    print_json({**info.config.to_dict(), **extra}) if as_json else _show_queue(info.config, extra)


@queue_app.command("list")
def queue_list(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """List queues."""
    async def go(admin: QueueAdmin) -> list[Any]:
        return [await admin.info(n) for n in await admin.names()]

    infos = _with_admin(ctx, go)
    if as_json:
        print_json([{**i.config.to_dict(), "waiting": i.waiting, "in_flight": i.in_flight, "paused": i.paused}
                    for i in infos])
        return
    from rich.table import Table

    table = Table("queue", "waiting", "in flight", "max tries", "max run time", "concurrency", "retry", "storage",
                  "paused")
    for i in infos:
        c = i.config
        table.add_row(c.name, str(i.waiting), str(i.in_flight), str(c.max_tries), f"{c.max_run_time:g}s",
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
        with Progress(console=err_console, transient=True) as bar:
            job = bar.add_task(f"purging {name}", total=None)
            return await purge_queue(nc, p._rq, name, lambda done, total: bar.update(job, completed=done, total=total))

    ended = _with_producer(ctx, go)
    print(f"purged queue {name}: {ended} waiting tasks ended as terminated")


@queue_app.command("delete")
def queue_delete(ctx: typer.Context, name: str, force: Annotated[bool, typer.Option("--force", "-f")] = False) -> None:
    """Delete a queue and its waiting items."""
    if not force:
        typer.confirm(f"Delete queue {name} and its waiting items?", abort=True)
    _with_admin(ctx, lambda a: a.delete(name))
    print(f"deleted queue {name}")


# info and config ------------------------------------------------------------------------------------------------


@app.command()
def info(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Show the server, the task store and every queue."""
    from jetbridge._store import js_api

    async def go(admin: QueueAdmin) -> dict[str, Any]:
        account = await js_api(admin._rq, "INFO")
        store = await js_api(admin._rq, f"STREAM.INFO.{names.TASKS_STREAM}")
        queues = [await admin.info(n) for n in await admin.names()]
        return {"jetstream": {"api_level": account.get("api", {}).get("level"), "streams": account.get("streams")},
                "task_store": {"stream": names.TASKS_STREAM, "tasks": store["state"]["messages"],
                               "bytes": store["state"]["bytes"], "replicas": store["config"].get("num_replicas")},
                "queues": [{"name": q.config.name, "waiting": q.waiting, "in_flight": q.in_flight} for q in queues]}

    data = _with_admin(ctx, go)
    if as_json:
        print_json(data)
        return
    console.print(f"[bold]task store[/bold] {data['task_store']['stream']}: {data['task_store']['tasks']} tasks, "
                  f"{data['task_store']['bytes']} bytes, R{data['task_store']['replicas']}")
    for q in data["queues"]:
        console.print(f"[bold]queue[/bold] {q['name']}: {q['waiting']} waiting, {q['in_flight']} in flight")


@config_app.command("check")
def config_check(ctx: typer.Context) -> None:
    """Validate the configuration (file, environment, flags) and say so."""
    _settings(ctx)
    print("configuration is valid")


@config_app.command("show")
def config_show(ctx: typer.Context) -> None:
    """Print the effective configuration as JSON, secrets redacted."""
    print_json(_settings(ctx).redacted())


def main() -> None:
    """Entry point: clear one-line errors for bad input, exit code 2; no tracebacks for users."""
    try:
        app()
    except JetbridgeError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        sys.exit(2)
    except msgspec.DecodeError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        sys.exit(2)


