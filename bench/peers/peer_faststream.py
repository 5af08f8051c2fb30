"""FastStream 0.7.8: a JetStream pull subscriber, batch 100, 100 workers, with a no-op handler (peers' venv).

    python peer_faststream.py produce N   # N publisher.publish() calls, 100 in flight
    python peer_faststream.py worker      # runs the app as `faststream run` does: anyio.run(app.run)

Settings as research/peer_bench.md's headline: ``PullSub(batch_size=100)``, ``max_workers=100``, the default ack
policy (ack after the handler returns), per-message logs off (broker log level DEBUG).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from typing import Any

import anyio
from common import body, produce, record, start_stats
from faststream import FastStream
from faststream.nats import JStream, NatsBroker, PullSub

SUBJECT = "peers.faststream"
stream = JStream("PEER_FASTSTREAM", subjects=[SUBJECT])
broker = NatsBroker(os.environ.get("PEER_URL", "nats://127.0.0.1:4222"), log_level=logging.DEBUG)
app = FastStream(broker)


async def noop(msg: dict[str, Any]) -> None:
    record(int(msg["n"]))


@app.after_startup
async def ready() -> None:
    print("ready", flush=True)


def _subscribe() -> None:
    """Only the worker subscribes: a producer that started the subscriber would take tasks itself."""
    broker.subscriber(SUBJECT, stream=stream, durable="faststream_durable", pull_sub=PullSub(batch_size=100),
                      max_workers=100)(noop)


async def _produce(n: int) -> None:
    publisher = broker.publisher(SUBJECT, stream=stream)
    await broker.start()
    try:
        await produce(n, 100, lambda i: publisher.publish(body(i)))
    finally:
        await broker.stop()


if __name__ == "__main__":
    if sys.argv[1:2] == ["produce"]:
        asyncio.run(_produce(int(sys.argv[2])))
    else:
        start_stats()
        _subscribe()
        anyio.run(app.run)
