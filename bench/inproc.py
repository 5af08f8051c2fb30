"""The dispatcher run in-process (``Dispatcher(nc, Settings(...)).run`` under an anyio task group), on the plain
asyncio loop or on uvloop: the ``experiment_uvloop`` step's A/B pair.

    python -m bench.inproc --server URL --queue Q --concurrency 1000 [--uvloop]

Prints ``dispatcher_started`` once it pulls work; SIGTERM or SIGINT drains it.
"""

from __future__ import annotations

import argparse
import signal

import anyio

from bridge.connect import session
from bridge.dispatcher import Dispatcher
from bridge.logs import configure_logging
from bridge.settings import Settings


async def main(args: argparse.Namespace) -> None:
    configure_logging("json", "warning")
    settings = Settings(server=args.server, queues=(args.queue,), concurrency=args.concurrency, log_level="warning",
                        log_format="json")
    async with session(settings) as (nc, settings):
        dispatcher = Dispatcher(nc, settings)
        async with anyio.create_task_group() as tg:
            await tg.start(dispatcher.run)
            print("dispatcher_started", flush=True)
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for _ in signals:
                    dispatcher.stop()
                    break
            await dispatcher.stopped.wait()
            tg.cancel_scope.cancel()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--server", required=True)
    parser.add_argument("--queue", required=True)
    parser.add_argument("--concurrency", type=int, default=1000)
    parser.add_argument("--uvloop", action="store_true")
    args = parser.parse_args()
    anyio.run(main, args, backend_options={"use_uvloop": args.uvloop})
