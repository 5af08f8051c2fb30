"""A Python producer with tracing on (``OTEL_*`` variables), for tests/tracing.

``producer.py URL QUEUE TYPE...`` enqueues, inside one span ``produce`` (so that they share one trace), one task per
type whose first attempt fails (``fail_attempts`` 1), prints the ids as a JSON object (type -> id), and flushes its
spans before it exits.
"""

from __future__ import annotations

import json
import sys

import anyio
import nats
from jetbridge import Producer, tracing
from opentelemetry import trace


async def main(url: str, queue: str, types: list[str]) -> None:
    if not tracing.configure("traced-producer"):
        raise SystemExit("tracing is off: set OTEL_EXPORTER_OTLP_ENDPOINT")
    nc = await nats.connect(url)
    try:
        producer = Producer(nc, queue=queue)
        with trace.get_tracer("tests.tracing").start_as_current_span("produce"):  # one trace for every task
            ids = {t: await producer.enqueue(t, {"fail_attempts": 1}) for t in types}
    finally:
        await nc.close()
        tracing.shutdown()
    print(json.dumps(ids), flush=True)


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], sys.argv[2], sys.argv[3:])
