"""Counters, gauges and a histogram for the per-task path: plain numbers, exported at scrape time.

prometheus_client's ``metric.labels(...).inc()`` takes a lock and runs four Python calls per change; the seven
changes a task makes were 3.8 % of the dispatcher's CPU (bench/README.md). The dispatcher changes these from its one
event-loop thread and ``/metrics`` is served from the same loop, so a dict of numbers per metric is enough. A
:class:`Tallies` collector exports them under the same names, types and label names that prometheus_client's own
classes would, ``_created`` samples included.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Iterator, Sequence
from typing import Literal

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

Labels = tuple[str, ...]


class Tally:
    """A labelled counter or gauge: label values -> number."""

    __slots__ = ("name", "doc", "label_names", "kind", "values", "created")

    def __init__(self, name: str, doc: str, label_names: Sequence[str], kind: Literal["counter", "gauge"]) -> None:
        self.name, self.doc, self.label_names, self.kind = name, doc, tuple(label_names), kind
        self.values: dict[Labels, float] = {}
        self.created: dict[Labels, float] = {}

    def inc(self, *labels: str) -> None:
        values = self.values
        if labels in values:
            values[labels] += 1
        else:
            values[labels] = 1
            self.created[labels] = time.time()

    def dec(self, *labels: str) -> None:
        """Gauges only."""
        self.values[labels] = self.values.get(labels, 0) - 1

    def set(self, value: float, *labels: str) -> None:
        """Gauges only."""
        self.values[labels] = value

    def get(self, *labels: str) -> float:
        return self.values.get(labels, 0)

    def family(self) -> Metric:
        if self.kind == "gauge":
            gauge = GaugeMetricFamily(self.name, self.doc, labels=self.label_names)
            for labels, value in list(self.values.items()):
                gauge.add_metric(labels, value)
            return gauge
        counter = CounterMetricFamily(self.name, self.doc, labels=self.label_names)
        for labels, value in list(self.values.items()):
            counter.add_metric(labels, value, created=self.created.get(labels))
        return counter


class TallyHistogram:
    """A labelled histogram: label values -> [count per bucket..., count above the last bound], sum."""

    __slots__ = ("name", "doc", "label_names", "bounds", "edges", "rows", "sums", "created")

    def __init__(self, name: str, doc: str, label_names: Sequence[str], bounds: Sequence[float]) -> None:
        self.name, self.doc, self.label_names = name, doc, tuple(label_names)
        self.bounds = tuple(sorted(bounds))
        #: the ``le`` label of each bucket, written as prometheus_client writes it
        self.edges = [floatToGoString(b) for b in self.bounds] + ["+Inf"]  # type: ignore[no-untyped-call]
        self.rows: dict[Labels, list[int]] = {}
        self.sums: dict[Labels, float] = {}
        self.created: dict[Labels, float] = {}

    def observe(self, value: float, *labels: str) -> None:
        row = self.rows.get(labels)
        if row is None:
            row = self.rows[labels] = [0] * (len(self.bounds) + 1)
            self.sums[labels] = 0.0
            self.created[labels] = time.time()
        row[bisect.bisect_left(self.bounds, value)] += 1  # a bucket counts values <= its bound
        self.sums[labels] += value

    def family(self) -> Metric:
        histogram = HistogramMetricFamily(self.name, self.doc, labels=self.label_names)
        for labels, row in list(self.rows.items()):
            cumulative, buckets = 0, []
            for edge, n in zip(self.edges, row, strict=True):
                cumulative += n
                buckets.append((edge, cumulative))
            histogram.add_metric(labels, buckets, self.sums[labels])
            histogram.samples.append(Sample(f"{self.name}_created", dict(zip(self.label_names, labels, strict=True)),
                                            self.created[labels]))
        return histogram


class Tallies(Collector):
    """Exports tallies through a registry (which refuses names already taken, as for its own metrics)."""

    def __init__(self, registry: CollectorRegistry, tallies: Sequence[Tally | TallyHistogram]) -> None:
        self._tallies = tuple(tallies)
        registry.register(self)

    def collect(self) -> Iterator[Metric]:
        for tally in self._tallies:
            yield tally.family()

    def describe(self) -> Iterator[Metric]:
        return self.collect()
