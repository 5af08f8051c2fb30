"""The benchmark's Python handler: an SDK ``Service`` that answers the given task types with an empty result.

    python -m bench.pyhandler --server URL [--types noop] [--prefix jetbridge.task] [--concurrency 1000]

Prints ``ready`` once its endpoints are live; SIGTERM or SIGINT drains it.
"""

from __future__ import annotations

import argparse

import anyio
import nats
from jetbridge import Service, Task, serve


async def noop(task: Task) -> None:
    return None


async def main(args: argparse.Namespace) -> None:
    nc = await nats.connect(args.server, name="jetbridge-bench-noop-py")
    service = Service(nc, "jetbridge-bench-noop-py", prefix=args.prefix, concurrency=args.concurrency,
                      drain_timeout=5.0)
    for task_type in args.types.split(","):
        if task_type.strip():
            service.add_handler(task_type.strip(), noop)
    await serve(service, on_ready=lambda: print("ready", flush=True))
    await nc.drain()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--server", required=True)
    parser.add_argument("--types", default="noop")
    parser.add_argument("--prefix", default="jetbridge.task")
    parser.add_argument("--concurrency", type=int, default=1000)
    anyio.run(main, parser.parse_args())
