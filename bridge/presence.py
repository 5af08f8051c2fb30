"""Waiting for a handler without phantom attempts.

When no handler serves a task type, NATS answers a request with "no responders" at once. Finding that out by
running an attempt costs two saves (``active`` with the try counted, then ``no_handler`` with it given back) and a
phantom ``active`` event, every few seconds, forever. Instead, once a subject has had no handler, the next tasks
for it are first **probed**: a request whose body is empty, which every conforming handler rejects without running
anything (SPEC §3.3: a body that is not a JSON object is refused) and which costs nothing when nobody listens. Only
a probe that finds someone lets the attempt start; otherwise the task waits, with a growing delay, without a write.
"""

from __future__ import annotations

import time

import nats.errors
import structlog
from jetbridge.internal import Requester

from .metrics import Metrics

log = structlog.get_logger("jetbridge.presence")

#: the header that marks a presence probe, so a handler (or a tap) can tell it from a task
PROBE_HEADER = "Jetbridge-Probe"
#: the longest wait between probes of a task that waits for a handler
MAX_PROBE_DELAY = 60.0


def probe_delay(base: float, deliveries: int) -> float:
    """The wait before probing again: ``base`` doubling with each delivery of the item, at most a minute."""
    return float(min(MAX_PROBE_DELAY, base * 2.0 ** max(0, min(deliveries - 1, 10))))


class HandlerPresence:
    """Which handler subjects have been seen without a handler, and the probe that checks them again."""

    def __init__(self, requester: Requester, metrics: Metrics, *, timeout: float = 1.0) -> None:
        self._rq = requester
        self._metrics = metrics
        self._timeout = timeout
        self._absent: dict[str, float] = {}

    def suspect(self, subject: str) -> bool:
        """True when the last word on ``subject`` was "no handler": probe before running an attempt."""
        return subject in self._absent

    def absent(self, subject: str) -> None:
        if subject not in self._absent:
            self._absent[subject] = time.monotonic()
            log.warning("no_handler", subject=subject,
                        hint="tasks for it wait (probed with a growing delay, no attempts spent) until one is online")

    def present(self, subject: str) -> None:
        since = self._absent.pop(subject, None)
        if since is not None:
            log.info("handler_online", subject=subject, waited_s=round(time.monotonic() - since, 3))

    async def probe(self, subject: str) -> bool:
        """True when some handler answers (or is too busy to answer in time) on ``subject``."""
        try:
            await self._rq.request(subject, b"", headers={PROBE_HEADER: "1"}, timeout=self._timeout)
        except nats.errors.NoRespondersError:
            self._metrics.handler_probes.labels(found="no").inc()
            self.absent(subject)
            return False
        except nats.errors.TimeoutError:
            pass  # someone holds the subscription: let the attempt find out
        except Exception as exc:  # noqa: BLE001 - a connection problem: let the attempt run and decide
            log.warning("probe_failed", subject=subject, error=str(exc))
        self._metrics.handler_probes.labels(found="yes").inc()
        self.present(subject)
        return True
