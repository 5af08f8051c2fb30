"""What every CLI command shares: settings from the context, sessions, exit codes, one-line errors.

Exit codes (documented in README.md, "Command line"):
    0 done; 1 the task or operation did not succeed (a waited task ended other than complete, a cancel of a finished
    task); 2 an error: bad input (names, durations, options, config), NATS unreachable or refusing; 3 no server given
    and none runs for the data dir; 4 ``enqueue --wait`` timed out (the task id, its state and the likely reason are
    printed); 70 an unexpected error (a bug).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

import anyio
import typer
from jetbridge.internal import Producer, Requester
from nats.aio.client import Client
from rich.markup import escape

from .output import err_console
from .queues import QueueAdmin
from .settings import Settings

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NO_SERVER = 3
EXIT_TIMEOUT = 4

T = TypeVar("T")
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]


def settings_of(ctx: typer.Context) -> Settings:
    return ctx.obj["settings"]  # type: ignore[no-any-return]


def run_async(fn: Callable[[], Awaitable[T]]) -> T:
    return anyio.run(fn)


def say_error(message: str) -> None:
    """``error: message`` on stderr: wrapped at word boundaries on a terminal, one line in a pipe or log."""
    err_console.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=not err_console.is_terminal)


def fail(message: str, code: int = EXIT_FAILED) -> typer.Exit:
    """Print ``error: message`` and return the exit to raise."""
    say_error(message)
    return typer.Exit(code)


def with_session(ctx: typer.Context, fn: Callable[[Client, Settings], Awaitable[T]]) -> T:
    async def go() -> T:
        from .connect import session

        async with session(settings_of(ctx)) as (nc, settings):
            return await fn(nc, settings)

    return run_async(go)


def with_producer(ctx: typer.Context, fn: Callable[[Producer, Client], Awaitable[T]]) -> T:
    async def go(nc: Client, settings: Settings) -> T:
        producer = Producer(nc)
        try:
            return await fn(producer, nc)
        finally:
            await producer.close()

    return with_session(ctx, go)


def with_admin(ctx: typer.Context, fn: Callable[[QueueAdmin], Awaitable[T]]) -> T:
    async def go(nc: Client, settings: Settings) -> T:
        rq = Requester(nc)
        try:
            return await fn(QueueAdmin(rq))
        finally:
            await rq.close()

    return with_session(ctx, go)


def task_subject(settings: Settings, task_type: str) -> str:
    """The subject a dispatcher with ``settings`` sends ``task_type`` to."""
    from .routes import Router

    return Router(list(settings.routes), prefix=settings.subject_prefix).resolve(task_type)[1]
