"""Prometheus metrics. Each dispatcher has its own registry, so several can run in one process (tests).

The ones every task changes are tallies (:mod:`bridge.tally`): plain numbers, exported under the same names.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from .tally import Tallies, Tally, TallyHistogram

_DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)


class Metrics:
    """Every metric the dispatcher exports (names are listed in README.md)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.tasks = Tally("jetbridge_tasks", "Task transitions made by this dispatcher, by resulting state",
                           ["queue", "type", "state"], "counter")
        self.attempts = Tally("jetbridge_attempts", "Attempts started", ["queue", "type"], "counter")
        self.attempt_duration = TallyHistogram("jetbridge_attempt_duration_seconds", "Attempt duration by outcome",
                                               ["queue", "type", "outcome"], _DURATION_BUCKETS)
        self.retries = Tally("jetbridge_retries", "Retries decided (scheduled or delayed)", ["queue", "type"],
                             "counter")
        self.in_flight = Tally("jetbridge_in_flight", "Work items being processed now", ["queue"], "gauge")
        self.handler_available = Tally("jetbridge_handler_available",
                                       "1 when the last request to the subject found a handler, 0 when none answered",
                                       ["subject"], "gauge")
        Tallies(r, [self.tasks, self.attempts, self.attempt_duration, self.retries, self.in_flight,
                    self.handler_available])
        self.stale_messages = Counter("jetbridge_stale_messages", "Replies and heartbeats for attempts not running",
                                      ["kind"], registry=r)
        self.protocol_errors = Counter("jetbridge_protocol_errors", "Replies that were not valid protocol",
                                       ["queue", "type"], registry=r)
        self.dropped_items = Counter("jetbridge_dropped_items", "Work items removed without running a task",
                                     ["queue", "reason"], registry=r)
        self.save_conflicts = Counter("jetbridge_save_conflicts", "Task saves that lost a compare-and-set",
                                      ["queue"], registry=r)
        self.save_failures = Counter("jetbridge_save_failures",
                                     "Task saves the store refused (full, unavailable); the item is tried again later",
                                     ["queue"], registry=r)
        self.handler_probes = Counter("jetbridge_handler_probes",
                                      "Presence probes of handler subjects that had no handler, by result",
                                      ["found"], registry=r)
        self.takeovers = Counter("jetbridge_active_task_items",
                                 "Work items that arrived for a task already active, by what was done with them",
                                 ["queue", "verdict"], registry=r)
        self.nats_connected = Gauge("jetbridge_nats_connected", "1 while connected to NATS", registry=r)
        self.ready = Gauge("jetbridge_ready", "1 while the dispatcher is pulling work", registry=r)
