"""One trace from a Python producer through ``jetbridge run`` to handlers in Python, Go, Node and Rust (issue 20).

Every process is real: the nats-server, the dispatcher, the producer and the four handler services (each with its
language's tracing middleware and official OpenTelemetry SDK), all exporting OTLP/HTTP to a receiver inside this
test. The producer enqueues one task per language inside one span, so everything is one trace. Each task's first
attempt fails, so under its ``enqueue`` span it must show the dispatcher's ``queued``, ``attempt 1``, ``retry wait``
and ``attempt 2`` spans, and the handler's span of each attempt as the child of that attempt's span.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path

import anyio
import pytest
from jetbridge import Producer
from jetbridge._requester import Requester
from nats.aio.client import Client

from bridge.embedded import NatsServer
from bridge.queues import QueueAdmin, QueueConfig
from tests.faults.rig import Proc
from tests.tracing.receiver import ReceivedSpan, running_receiver

pytestmark = pytest.mark.anyio

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
RUST_TARGET = Path(os.environ.get("CARGO_TARGET_DIR", REPO / ".cache" / "rust-target"))
#: each language's traced handler, as its build.sh leaves it (make interop-build)
HANDLERS: dict[str, list[str]] = {
    "python": [sys.executable, str(HERE / "py_handler.py")],
    "go": [str(REPO / ".build" / "go" / "traced")],
    "node": ["node", str(REPO / "interop" / "node" / "examples" / "traced.js")],
    "rust": [str(RUST_TARGET / "release" / "examples" / "traced")],
}
SERVER, CLIENT = 2, 3  # OTLP span kinds


def unbuilt() -> list[str]:
    return [cmd[-1] for cmd in HANDLERS.values() if not Path(cmd[-1]).exists()]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("JETBRIDGE_", "OTEL_")) and k != "NATS_URL"}
    return {**env, **extra}


def trace_of(spans: list[ReceivedSpan], task_type: str) -> dict[str, ReceivedSpan] | None:
    """The task's spans by role, once all eight are there and connected as they should be; else None."""
    produce = [s for s in spans if s.name == "produce" and s.parent_id == ""]
    if len(produce) != 1:
        return None
    mine = [s for s in spans if s.trace_id == produce[0].trace_id]
    roots = [s for s in mine if s.name == f"enqueue {task_type}" and s.parent_id == produce[0].span_id]
    if not roots:
        return None
    root = roots[0]

    def one(name: str, parent: str, service: str | None = None) -> ReceivedSpan | None:
        found = [s for s in mine if s.name == name and s.parent_id == parent and (service is None or s.service == service)]
        return found[0] if len(found) == 1 else None

    got = {"enqueue": root,
           "queued": one(f"queued {task_type}", root.span_id),
           "attempt1": one(f"{task_type} attempt 1", root.span_id),
           "wait": one(f"retry wait {task_type}", root.span_id),
           "attempt2": one(f"{task_type} attempt 2", root.span_id)}
    if any(s is None for s in got.values()):
        return None
    lang = task_type.rpartition(":")[2]
    for n in (1, 2):
        attempt = got[f"attempt{n}"]
        assert attempt is not None
        got[f"handler{n}"] = one(f"process {task_type}", attempt.span_id, f"traced-{lang}")
    return None if any(s is None for s in got.values()) else {k: v for k, v in got.items() if v is not None}


async def test_one_connected_trace_to_four_languages(nats_server: NatsServer, nc: Client, unique: str,
                                                     tmp_path: Path) -> None:
    missing = unbuilt()
    assert not missing, f"traced handlers not built: {missing} (run make interop-build)"
    queue = f"{unique}-trace"
    rq = Requester(nc)
    await rq.start()
    await QueueAdmin(rq).add(QueueConfig(name=queue, retry="fixed:0.05", lease=5.0, max_run_time=20.0))
    await rq.close()
    types = {lang: f"{unique}:{lang}" for lang in HANDLERS}
    with running_receiver() as rx, ExitStack() as procs:
        otel = {"OTEL_EXPORTER_OTLP_ENDPOINT": rx.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "100",
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}
        started = []
        for lang, cmd in HANDLERS.items():
            env = clean_env(NATS_URL=nats_server.url, JETBRIDGE_TYPE=types[lang], **otel)
            started.append(Proc(f"handler-{lang}", cmd, env, tmp_path, b"ready").start())
        dispatcher = Proc("dispatcher", [sys.executable, "-m", "bridge", "--server", nats_server.url, "run",
                                         "--queue", queue, "--log-format", "json"],
                          clean_env(JETBRIDGE_CREATE_QUEUES="false", **otel), tmp_path, b'"dispatcher_started"')
        started.append(dispatcher.start())
        for proc in started:
            procs.callback(stop, proc)
        for proc in started:
            await proc.wait_ready()

        produced = await anyio.run_process(
            [sys.executable, str(HERE / "producer.py"), nats_server.url, queue, *types.values()],
            env=clean_env(**otel), check=False)
        assert produced.returncode == 0, produced.stderr.decode()
        ids: dict[str, str] = json.loads(produced.stdout)
        producer = Producer(nc, queue=queue)
        for task_type, task_id in ids.items():
            record = await producer.wait(task_id, timeout=60)
            assert record.state == "complete", (task_type, record.state, record.last_err)
            assert record.tries == 2

        for lang, task_type in types.items():
            got = await rx.until(lambda spans, t=task_type: trace_of(spans, t), 30, f"connected trace for {lang}")
            assert got["enqueue"].service == "traced-producer"
            assert got["attempt1"].service == "jetbridge" and got["attempt1"].kind == CLIENT
            assert got["attempt1"].attributes["jetbridge.outcome"] == "retry"
            assert got["attempt1"].attributes["jetbridge.task.id"] == ids[task_type]
            assert got["attempt1"].attributes["jetbridge.queue"] == queue
            assert got["attempt2"].attributes["jetbridge.outcome"] == "complete"
            assert got["attempt2"].attributes["jetbridge.attempt"] == 2
            assert got["handler1"].kind == SERVER and got["handler1"].attributes["jetbridge.outcome"] == "retry"
            assert got["handler1"].attributes["jetbridge.error.code"] == "planned_failure"
            assert got["handler2"].attributes["jetbridge.outcome"] == "complete"
            assert got["handler2"].attributes["jetbridge.attempt"] == 2
            assert got["queued"].end_ns <= got["attempt1"].start_ns + 1_000_000
            assert got["attempt1"].end_ns <= got["wait"].end_ns <= got["attempt2"].start_ns + 1_000_000
        # One trace: the producer's span, and under it every task's enqueue, dispatcher and handler spans.
        traces = {s.trace_id for s in rx.snapshot() if s.service.startswith(("traced-", "jetbridge"))}
        assert len(traces) == 1, traces
        assert {s.service for s in rx.snapshot()} == {"traced-producer", "jetbridge", *(f"traced-{x}" for x in HANDLERS)}
        assert not rx.bad


def stop(proc: Proc) -> None:
    if proc.alive:
        assert proc.proc is not None
        proc.proc.terminate()
        try:
            proc.proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.proc.kill()
            proc.proc.wait()
