"""The ``jetbridge`` command line: global options, the command groups, and one-line errors instead of tracebacks.

Commands live in modules by topic (cli_run, cli_tasks, cli_queues, cli_info); a new group is a Typer app in its own
module added here with ``app.add_typer(...)``. Exit codes are listed in bridge/cli_common.py.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from . import cli_info, cli_run, cli_tasks
from .cli_common import settings_of
from .cli_queues import queue_app
from .errors import GLOBAL_OPTIONS, hoist_global_options, report
from .handle import HANDLE_HELP, HandleCommand
from .settings import load_settings

app = typer.Typer(help="Jetbridge: run NATS JetStream work queues on handler services in any language.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
app.add_typer(cli_tasks.task_app, name="task")
app.add_typer(queue_app, name="queue")
app.add_typer(cli_info.config_app, name="config")
app.command()(cli_run.run)
app.command()(cli_run.server)
app.command()(cli_run.stop)
app.command()(cli_tasks.enqueue)
app.command()(cli_info.info)
app.command()(cli_info.watch)
from .cli_bulk import bulk_app, pause_app  # noqa: E402  (issue 17: dead letters, bulk operations, pausing)
from .cli_dlq import dlq_app  # noqa: E402

app.add_typer(dlq_app, name="dlq")
app.add_typer(bulk_app, name="bulk")
queue_app.add_typer(pause_app)
from .cli_schedule import schedule_app, task_reschedule  # noqa: E402

app.add_typer(schedule_app, name="schedule")
cli_tasks.task_app.command("reschedule")(task_reschedule)
from .cli_serve import serve  # noqa: E402  (issue 19: HTTP API and dashboard)

app.command("serve")(serve)
from .cli_limits import limit_app  # noqa: E402  (issue 18: global limits)

app.add_typer(limit_app, name="limit")

#: the command line after global options were moved to the front (``run --background`` starts it again)
_ARGV: list[str] = []


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
    """Global options go before or after the command: `jetbridge run --server URL` works."""
    flags = {"server": server, "context": context, "creds": creds, "user": user, "password": password,
             "token": token, "nkey_seed": nkey_seed, "tls_ca": tls_ca, "tls_cert": tls_cert, "tls_key": tls_key,
             "data_dir": data_dir, "inbox_prefix": inbox_prefix, "signing_seed": signing_seed}
    env = dict(os.environ)
    if "NATS_URL" in env and "JETBRIDGE_SERVER" not in env and server is None:
        env["JETBRIDGE_SERVER"] = env["NATS_URL"]
    ctx.obj = {"config": config, "flags": flags, "env": env, "argv": _ARGV,
               "settings": load_settings(config, env=env, flags=flags)}



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
    timeout: Annotated[str | None, typer.Option(
        help="Stop a command after this long, per attempt (never later than the attempt's budget), e.g. 30s.")] = None,
) -> None:
    from .handle import command_from, handle_main

    handle_main(settings_of(ctx), task_types, command_from(ctx), concurrency=concurrency, prefix=prefix, grace=grace,
                kill_grace=kill_grace, terminate_exit=terminate_exit, name=name, timeout=timeout)


def main() -> None:
    """Entry point: global options anywhere, clear one-line errors with documented exit codes, no tracebacks."""
    argv = hoist_global_options(sys.argv[1:], GLOBAL_OPTIONS)
    _ARGV[:] = argv
    try:
        app(args=argv, prog_name="jetbridge")
    except BaseException as exc:  # noqa: BLE001 - every error ends as one line and an exit code (bridge/errors.py)
        sys.exit(report(exc))
