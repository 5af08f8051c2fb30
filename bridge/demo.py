"""``make demo``: an embedded nats-server, the dispatcher, handlers in Python and Node (and Go when built), and
tasks that move through their states to results, a retry, a terminate and an expiry among them."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import jetbridge
import msgspec
import nats
from jetbridge.internal import Requester, decode_event
from rich.console import Console
from rich.table import Table

from .embedded import NatsServer
from .output import result_text
from .queues import QueueAdmin, QueueConfig

ROOT = Path(__file__).resolve().parent.parent
console = Console(highlight=False, width=None if sys.stdout.isatty() else 120)
COLOURS = {"new": "white", "active": "cyan", "retry": "yellow", "no_handler": "magenta", "complete": "green",
           "expired": "red", "terminated": "red"}


def _start(name: str, cmd: list[str], env: dict[str, str], cwd: Path, log_dir: Path) -> subprocess.Popen[bytes]:
    log = open(log_dir / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(cmd, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


async def _wait_for_service(nc: Any, name: str, timeout: float = 30.0) -> None:
    with anyio.fail_after(timeout):
        while True:
            try:
                await nc.request(f"$SRV.PING.{name}", b"", timeout=0.5)
                return
            except (nats.errors.NoRespondersError, nats.errors.TimeoutError):
                await anyio.sleep(0.1)


PLAN: list[tuple[str, Any, dict[str, Any], str]] = [
    ("text:wordcount", {"text": "the quick brown fox jumps over the lazy dog the end"}, {}, "node"),
    ("image:thumbnail", {"file": "cat.png"}, {}, "python"),
    ("email:send", {"to": "ada@example.com"}, {}, "python"),
    ("text:wordcount", {"txt": "a malformed payload"}, {}, "node"),
    ("report:nightly", {"day": "2026-11-24"}, {"deadline": timedelta(seconds=2.5)}, "nobody"),
]
GO_TASK: tuple[str, Any, dict[str, Any], str] = ("image:resize", None, {}, "go")


def _tiny_png(width: int = 32, height: int = 16) -> bytes:
    """A small gradient PNG for the Go resizer, made without an imaging library."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + bytes((x * 8) % 256 for x in range(width) for _ in range(3)) for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


async def _start_handlers(nc: Any, url: str, data: Path) -> dict[str, subprocess.Popen[bytes]]:
    env = {**os.environ, "NATS_URL": url, "JETBRIDGE_SERVER": url}
    logs = data / "logs"
    procs = {
        "dispatcher": _start("dispatcher", [sys.executable, "-m", "bridge", "run", "-q", "DEMO", "--log-format", "json"],
                             {**env, "JETBRIDGE_NO_HANDLER_DELAY": "1s"}, ROOT, logs),
        "python": _start("python", [sys.executable, str(ROOT / "interop/python/demo_handler.py")], env, ROOT, logs),
        "node": _start("node", ["node", "examples/wordcount.js"], env, ROOT / "interop/node", logs),
    }
    services = {"demo-python": "Python", "wordcount": "Node"}
    go_resize = ROOT / ".build/go/resize"
    if go_resize.exists():
        procs["go"] = _start("go", [str(go_resize)], env, ROOT, logs)
        services["resize"] = "Go"
    for name in services:
        await _wait_for_service(nc, name)
    listed = ", ".join(f"{name} ({lang})" for name, lang in services.items())
    console.print(f"[bold]3.[/bold] dispatcher and handler services running: {listed} (logs in {logs})")
    return procs


def _print_event(e: Any) -> None:
    detail = e.last_error or (f"{e.progress:.0%} {e.progress_message}" if e.progress is not None else "")
    colour = COLOURS.get(e.state, "white")
    console.print(f"  {e.timestamp[11:23]}  {e.task_id[-8:]}  {e.task_type:<16} "
                  f"[{colour}]{e.state:<10}[/{colour}] tries={e.tries}  {detail}")


async def _run_plan(nc: Any, producer: jetbridge.Producer) -> dict[str, str]:
    """Enqueue the plan and print every lifecycle event until all its tasks have ended."""
    handler_of: dict[str, str] = {}
    done = anyio.Event()
    finished: set[str] = set()

    async def on_event(msg: Any) -> None:
        try:
            e = decode_event(msg.data)
        except msgspec.DecodeError:
            return
        if e.task_id not in handler_of:
            return
        _print_event(e)
        if jetbridge.TaskState(e.state).terminal:
            finished.add(e.task_id)
            if finished >= set(handler_of):
                done.set()

    sub = await nc.subscribe("CHORIA_AJ.E.task_state.*", cb=on_event)
    console.print("[bold]4.[/bold] enqueueing tasks; their lifecycle events as they happen:")
    plan = list(PLAN)
    if (ROOT / ".build/go/resize").exists():
        import base64

        plan.insert(2, (GO_TASK[0], {"image": base64.b64encode(_tiny_png()).decode(), "width": 8}, {}, "go"))
    for task_type, payload, options, lang in plan:
        handler_of[await producer.enqueue(task_type, payload, **options)] = lang
    with anyio.fail_after(60):
        await done.wait()
    await sub.unsubscribe()
    return handler_of


async def _summary(producer: jetbridge.Producer, handler_of: dict[str, str]) -> None:
    table = Table("task", "type", "handler", "state", "tries", "result / last error", title="5. summary")
    for task_id, lang in handler_of.items():
        r = await producer.get(task_id)
        colour = COLOURS.get(r.state, "white")
        table.add_row(task_id[-8:], r.type, lang, f"[{colour}]{r.state}[/{colour}]", str(r.tries),
                      (result_text(r) or r.last_err)[:70])
    console.print(table)


def _stop(procs: dict[str, subprocess.Popen[bytes]]) -> None:
    for proc in procs.values():
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs.values():
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


async def _dashboard(url: str, data: Path, procs: dict[str, subprocess.Popen[bytes]]) -> None:
    """Issue 19: serve the API and dashboard on these tasks until Ctrl-C (at once when not on a terminal)."""
    from .embedded import free_port

    port = 8080 if _port_free(8080) else free_port()
    procs["dashboard"] = _start("dashboard", [sys.executable, "-m", "bridge", "--server", url, "serve", "--listen",
                                              f"127.0.0.1:{port}", "--queue", "DEMO"], dict(os.environ), ROOT,
                                data / "logs")
    console.print(f"[bold]5.[/bold] dashboard and API at [bold]http://127.0.0.1:{port}/[/bold] "
                  f"(API docs at /docs){' — Ctrl-C to stop' if sys.stdin.isatty() else ''}")
    if not sys.stdin.isatty() or os.environ.get("DEMO_EXIT"):
        return
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            return


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


async def main() -> None:
    data = ROOT / ".demo"
    shutil.rmtree(data, ignore_errors=True)
    (data / "logs").mkdir(parents=True)
    server = NatsServer(data / "jetstream").start()
    console.print(f"[bold]1.[/bold] embedded nats-server with JetStream at {server.url} (data in {data})")
    procs: dict[str, subprocess.Popen[bytes]] = {}
    nc = await nats.connect(server.url)
    try:
        rq = Requester(nc)
        await QueueAdmin(rq).add(QueueConfig(name="DEMO", retry="fixed:1s", lease=3.0, max_run_time=30))
        console.print("[bold]2.[/bold] queue DEMO: retries after 1s, lease 3s")
        procs = await _start_handlers(nc, server.url, data)
        producer = jetbridge.Producer(nc, queue="DEMO")
        started = time.monotonic()
        handler_of = await _run_plan(nc, producer)
        elapsed = time.monotonic() - started
        await _summary(producer, handler_of)
        console.print(f"all {len(handler_of)} tasks reached a terminal state in {elapsed:.1f}s")
        await producer.close()
        await rq.close()
        await _dashboard(server.url, data, procs)
    finally:
        _stop(procs)
        await nc.close()
        server.stop()


if __name__ == "__main__":
    anyio.run(main)
