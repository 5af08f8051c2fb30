"""The tracing experiment (issue 20): the dispatcher's CPU per task with tracing off, and on with OTLP export.

Runs the Go no-op drain in alternating rounds (off, on, sampled, off, on, sampled...) so that a machine whose load changes treats both
alike. "On" sets ``OTEL_EXPORTER_OTLP_ENDPOINT`` for the dispatcher process only, pointing at a receiver in this
process that reads and discards each export (it only counts requests and bytes, to show the spans were sent).
"Off" is the dispatcher exactly as every other drain step runs it; "sampled_10pct" is "on" keeping one trace in ten
(``OTEL_TRACES_SAMPLER=traceidratio``), to show what sampling saves.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from statistics import median
from typing import Any

from . import scenarios


class _Counts:
    def __init__(self) -> None:
        self.requests = 0
        self.bytes = 0
        self.lock = threading.Lock()


@contextmanager
def discarding_receiver() -> Iterator[tuple[str, _Counts]]:
    counts = _Counts()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            size = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(size)
            with counts.lock:
                counts.requests += 1
                counts.bytes += size
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", counts
    finally:
        server.shutdown()
        server.server_close()


async def run(*, n: int, concurrency: int, noop_bin: str, pairs: int = 2) -> dict[str, Any]:
    out: dict[str, Any] = {"n": n, "pairs": pairs}
    runs: dict[str, list[dict[str, Any]]] = {"off": [], "on": [], "sampled_10pct": []}
    with discarding_receiver() as (endpoint, counts):
        on = {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_SERVICE_NAME": "jetbridge-bench"}
        # By trace id, so a task's spans are all kept or all dropped (its trace id is its producer's or its own).
        sampled = {**on, "OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.1"}
        envs: dict[str, dict[str, str] | None] = {"off": None, "on": on, "sampled_10pct": sampled}
        for _ in range(pairs):
            for mode, env in envs.items():
                runs[mode].append(await scenarios.drain(handler="go", n=n, concurrency=concurrency,
                                                        noop_bin=noop_bin, dispatcher_env=env))
        out["otlp_requests"], out["otlp_bytes"] = counts.requests, counts.bytes
    for mode, results in runs.items():
        cpu = [r["dispatcher_cpu_us_per_task"] for r in results if r.get("dispatcher_cpu_us_per_task")]
        rate = [r["tasks_per_s"] for r in results if r.get("tasks_per_s")]
        out[mode] = {"dispatcher_cpu_us_per_task": median(cpu) if cpu else None, "runs_cpu_us_per_task": cpu,
                     "tasks_per_s": median(rate) if rate else None,
                     "errors": [r["error"] for r in results if r.get("error")]}
    off, on = out["off"]["dispatcher_cpu_us_per_task"], out["on"]["dispatcher_cpu_us_per_task"]
    if off and on:
        out["on_over_off"] = round(on / off, 3)
        out["tracing_cpu_us_per_task"] = round(on - off, 1)
    if off and (some := out["sampled_10pct"]["dispatcher_cpu_us_per_task"]):
        out["sampled_10pct_cpu_us_per_task"] = round(some - off, 1)
    return out
