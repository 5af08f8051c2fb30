"""The handler metrics of :func:`jetbridge.middleware.prometheus_metrics`: one set per registry.

Kept apart so that prometheus_client (the SDK's ``metrics`` extra) is imported only by services that ask for it.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass

from ._errors import ConfigError

try:
    from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
except ImportError:  # pragma: no cover - depends on the install
    raise ConfigError("prometheus_metrics() needs prometheus_client: pip install 'jetbridge-sdk[metrics]'") from None

_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)


@dataclass(frozen=True)
class Collectors:
    attempts: Counter
    duration: Histogram
    in_progress: Gauge


_made: weakref.WeakKeyDictionary[CollectorRegistry, Collectors] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def collectors(registry: CollectorRegistry | None) -> Collectors:
    """The metrics registered in ``registry`` (the global one by default), made on first use: registering a name
    twice in one registry is an error in prometheus_client, and two services of one process share them."""
    r = registry if registry is not None else REGISTRY
    with _lock:
        found = _made.get(r)
        if found is None:
            found = _made[r] = Collectors(
                attempts=Counter("jetbridge_handler_attempts", "Handler attempts that ended, by task type and outcome",
                                 ["type", "outcome"], registry=r),
                duration=Histogram("jetbridge_handler_duration_seconds", "Handler attempt duration by outcome",
                                   ["type", "outcome"], buckets=_BUCKETS, registry=r),
                in_progress=Gauge("jetbridge_handler_in_progress", "Handler attempts running now", ["type"],
                                  registry=r))
        return found
