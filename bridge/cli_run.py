"""``jetbridge run``, ``server``, ``stop`` and ``handle``: the long-running processes.

``run --background`` starts the same command detached (its log in the data directory), waits until its dispatcher
is serving, and returns; ``stop`` ends the background dispatchers of the data directory and its embedded server.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from .cli_common import EXIT_NO_SERVER, fail, settings_of
from .embedded import running_server, start_local_server, stop_local_server
from .settings import Settings, load_settings

READY_TIMEOUT = 60.0


def _background_path(settings: Settings) -> Path:
    return Path(settings.data_dir) / "background.json"


def _background_pids(settings: Settings) -> list[int]:
    try:
        pids = json.loads(_background_path(settings).read_text())
    except (OSError, ValueError):
        return []
    return [p for p in pids if isinstance(p, int) and _alive(p)] if isinstance(pids, list) else []


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:  # a zombie child of ours is not alive
        return "Z" not in Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[:1]
    except OSError:
        return True


def _start_background(argv: list[str], settings: Settings) -> None:
    """Start ``jetbridge <argv>`` detached and wait for its ``ready`` line (or its early exit)."""
    data_dir = Path(settings.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / "dispatcher.log"
    read_fd, write_fd = os.pipe()
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "bridge", *argv, "--ready-fd", str(write_fd)],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=log, pass_fds=(write_fd,),
                                start_new_session=True)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as ready:
        line = ready.readline().decode().strip()  # EOF when the child exits without being ready
    if not line.startswith("ready"):
        proc.wait()
        tail = log_path.read_text(errors="replace").strip().splitlines()[-5:]
        raise fail(f"the dispatcher did not start (exit {proc.returncode}); the end of {log_path}:\n" + "\n".join(tail),
                   EXIT_NO_SERVER)
    _background_path(settings).write_text(json.dumps([*_background_pids(settings), proc.pid]))
    url = line.partition(" ")[2]
    print(f"dispatcher running in the background (pid {proc.pid}, NATS at {url}, log {log_path}); "
          "stop it with `jetbridge stop`")


def run(
    ctx: typer.Context,
    queue: Annotated[list[str] | None, typer.Option("--queue", "-q", help="Queue to serve (repeat; '*': all).")] = None,
    concurrency: Annotated[int | None, typer.Option(help="Attempts at once per queue (with --queues: in all).")] = None,
    priorities: Annotated[str | None, typer.Option("--queues", help="Queues by priority from one pool of slots, "
                                                   "e.g. CRITICAL:6,DEFAULT:3,LOW:1 (weighted).")] = None,
    strict_priority: Annotated[bool | None, typer.Option("--strict-priority", help="With --queues: a lower queue "
                                                         "runs only while higher ones are empty.")] = None,
    metrics_listen: Annotated[str | None, typer.Option("--metrics", help="host:port for /metrics, /healthz, /readyz.")] = None,
    log_format: Annotated[str | None, typer.Option(help="auto, console or json.")] = None,
    log_level: Annotated[str | None, typer.Option(help="debug, info, warning or error.")] = None,
    shutdown_grace: Annotated[str | None, typer.Option(help="How long running attempts may finish on SIGTERM.")] = None,
    hook: Annotated[list[str] | None, typer.Option(
        "--hook", help="Dispatcher hook to load: an entry point in group jetbridge.hooks (repeat).")] = None,
    http_listen: Annotated[str | None, typer.Option("--http", help="host:port for the HTTP API and dashboard.")] = None,
    background: Annotated[bool, typer.Option("--background", help="Start detached, return once serving.")] = False,
    processes: Annotated[int, typer.Option("--processes", help="Dispatcher processes, each with its own pull "
                                           "(one per core to use; see bridge/processes.py).")] = 1,
    ready_fd: Annotated[int | None, typer.Option(hidden=True)] = None,
) -> None:
    """Run the dispatcher until SIGTERM or SIGINT, then drain. No --server: on the data dir's embedded server."""
    flags = dict(ctx.obj["flags"], queues=queue or None, concurrency=concurrency, priorities=priorities,
                 strict_priority=strict_priority, metrics_listen=metrics_listen,
                 log_format=log_format, log_level=log_level, shutdown_grace=shutdown_grace, hooks=hook or None,
                 http_listen=http_listen)
    settings = load_settings(ctx.obj["config"], env=ctx.obj["env"], flags=flags)
    if settings.http_listen:  # a bad http_* setting or a missing token is a one-line error before anything starts
        from .web.embed import check

        check(settings, ctx.obj["env"])
    if background:
        _start_background([a for a in ctx.obj["argv"] if a != "--background"], settings)
        return
    import anyio

    from .service import run_dispatcher

    def ready(url: str) -> None:
        if ready_fd is not None:
            os.write(ready_fd, f"ready {url}\n".encode())
            os.close(ready_fd)

    if processes != 1:
        from .processes import MAX_PROCESSES, Supervisor

        if not 1 <= processes <= MAX_PROCESSES:
            raise fail(f"--processes must be between 1 and {MAX_PROCESSES}, got {processes}")
        raise typer.Exit(Supervisor(settings, ctx.obj["argv"], processes).run(on_ready=ready))
    anyio.run(lambda: run_dispatcher(settings, on_ready=ready))


def server(ctx: typer.Context) -> None:
    """Run the data dir's embedded nats-server alone (at its recorded address) until SIGTERM or SIGINT."""
    settings = settings_of(ctx)
    data_dir = Path(settings.data_dir)
    found = running_server(data_dir)
    if found is not None:
        raise fail(f"a server already runs for {data_dir} at {found[0]} (pid {found[1]})")
    nats = start_local_server(data_dir)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    try:
        while nats.proc is not None and nats.proc.poll() is None:
            if signal.sigtimedwait([signal.SIGTERM, signal.SIGINT], 1.0) is not None:
                break
    finally:
        stop_local_server(data_dir, nats)


def stop(ctx: typer.Context) -> None:
    """Stop the data dir's background dispatchers (they drain first), then its embedded server."""
    settings = settings_of(ctx)
    pids = _background_pids(settings)
    for pid in pids:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + settings.shutdown_grace + 15
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)  # not our children: polling is the only way to see them exit
    _background_path(settings).unlink(missing_ok=True)
    found = running_server(Path(settings.data_dir))
    if found is not None:
        os.kill(found[1], signal.SIGTERM)
        while _alive(found[1]) and time.monotonic() < deadline:
            time.sleep(0.1)
    what = [f"{len(pids)} dispatcher(s)"] + ([f"the server at {found[0]}"] if found else [])
    print(f"stopped {' and '.join(what)}" if pids or found else "nothing was running")
