"""Truthful ``nats micro stats`` for endpoints whose requests finish after the endpoint handler returns.

nats-py's micro endpoint times and counts its handler call. A Jetbridge service must return from that call at
once (nats-py delivers an endpoint's messages one at a time, and a request waiting for a worker must already be
heartbeating), so nats-py alone would report microseconds per request and no errors. SPEC §2 wants the real
wall time from receipt to reply and every retry, terminate and rejection counted as an error, so the service
adds them when the reply is sent. nats-py 2.16 (pinned) keeps these counters as private attributes of its
``Endpoint``; this module is the one place that touches them.
"""

from __future__ import annotations

from typing import Any


class MicroStats:
    """Adds finished requests to the stats of a nats-py micro service's endpoints, by endpoint name."""

    def __init__(self, micro: Any) -> None:
        self._endpoints: dict[str, Any] = {ep._name: ep for ep in getattr(micro, "_endpoints", [])}

    def record(self, endpoint: str, elapsed_ns: int, error: str | None) -> None:
        """Count ``elapsed_ns`` of processing, and an error (its message) unless ``error`` is None."""
        ep = self._endpoints.get(endpoint)
        if ep is None:
            return
        ep._processing_time += elapsed_ns
        ep._average_processing_time = int(ep._processing_time / max(1, ep._num_requests))
        if error is not None:
            ep._num_errors += 1
            ep._last_error = error
