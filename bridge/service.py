"""``jetbridge run``: the dispatcher as a long-running process (connection, logs, metrics, signals)."""

from __future__ import annotations

import gc
import signal
from collections.abc import Callable

import anyio
import structlog

from .connect import describe, session
from .dispatcher import Dispatcher
from .health import serve_health
from .logs import configure_logging
from .metrics import Metrics
from .settings import Settings

log = structlog.get_logger("jetbridge")


#: young objects between collections of the youngest generation (Python's default: 700)
GC_THRESHOLD = (20_000, 20, 20)


def tune_gc() -> None:
    """Once serving: keep what start-up made out of every later collection (``gc.freeze``), and collect the youngest
    generation every 20,000 container allocations instead of 700. A task allocates hundreds of short-lived containers
    (futures, coroutines, messages) that reference counting frees; the default threshold ran a collection every few
    tasks for nothing: -2.7 % instructions per task (bench/README.md).
    """
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLD)


async def run_dispatcher(settings: Settings, *, on_ready: Callable[[str], None] | None = None) -> None:
    """Serve until SIGTERM/SIGINT; ``on_ready(url)`` is called once the dispatcher serves (``run --background``)."""
    configure_logging(settings.log_format, settings.log_level)
    metrics = Metrics()
    async with session(settings, start_server=True) as (nc, settings):
        metrics.nats_connected.set(1 if nc.is_connected else 0)
        log.info("connected", server=describe(settings), max_payload=nc.max_payload)
        dispatcher = Dispatcher(nc, settings, metrics=metrics)

        def ready() -> bool:
            connected = nc.is_connected
            metrics.nats_connected.set(1 if connected else 0)
            return connected and dispatcher.ready

        async with anyio.create_task_group() as tg:
            if settings.metrics_listen:
                port = await tg.start(serve_health, settings.metrics_listen, metrics, ready)
                log.info("metrics_listening", listen=settings.metrics_listen, port=port)
            if settings.http_listen:  # the HTTP API and dashboard in this process (bridge/web/embed.py)
                from .web.embed import serve_http

                await tg.start(serve_http, settings, nc)
            await tg.start(dispatcher.run)
            tune_gc()
            if on_ready is not None:
                on_ready(describe(settings))
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for signum in signals:
                    log.info("signal", signal=signal.Signals(signum).name, action="draining")
                    dispatcher.stop()
                    break
            await dispatcher.stopped.wait()
            tg.cancel_scope.cancel()

