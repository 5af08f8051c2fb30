"""structlog set-up: JSON lines in containers and pipes, readable lines on a terminal."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import structlog

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def configure_logging(fmt: str = "auto", level: str = "info", stream: object = None) -> None:
    out = stream or sys.stderr
    json_lines = fmt == "json" or (fmt == "auto" and not getattr(out, "isatty", lambda: False)())
    processors: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if json_lines:
        processors += [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
    else:
        processors += [structlog.dev.ConsoleRenderer(colors=getattr(out, "isatty", lambda: False)(),
                                                  exception_formatter=structlog.dev.plain_traceback)]
    _route_stdlib(processors[:-1], processors[-1], out)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(file=out),  # type: ignore[arg-type]
        cache_logger_on_first_use=True,
    )


def _route_stdlib(chain: list[structlog.types.Processor], renderer: structlog.types.Processor, out: object) -> None:
    """Send standard-library log records (nats-py, asyncio) through the same renderer, as one line each."""
    handler: logging.Handler = logging.StreamHandler(out)  # type: ignore[call-overload]
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.add_logger_name, *chain],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer]))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)


class RateLimitedLog:
    """One log event that is written at most once per ``every`` seconds, with the count of the ones left out.

    For messages a hostile or broken peer can make arbitrarily many of (forged heartbeats, stale replies, forged
    work items): counting them is the metric's job; the log only has to say that it happens, in bounded space.
    """

    def __init__(self, logger: Any, event: str, every: float = 1.0) -> None:
        self._log = logger
        self._event = event
        self._every = every
        self._next = 0.0
        self._suppressed = 0

    def _emit(self, level: str, fields: dict[str, Any]) -> None:
        now = time.monotonic()
        if now < self._next:
            self._suppressed += 1
            return
        self._next = now + self._every
        if self._suppressed:
            fields["suppressed"] = self._suppressed
            self._suppressed = 0
        getattr(self._log, level)(self._event, **fields)

    def info(self, **fields: Any) -> None:
        self._emit("info", fields)

    def warning(self, **fields: Any) -> None:
        self._emit("warning", fields)
