"""Tallies export exactly what prometheus_client's own Counter, Gauge and Histogram would for the same changes."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from bridge.tally import Tallies, Tally, TallyHistogram

BOUNDS = (0.001, 0.0025, 0.5, 1, 10, 3600)
label_values = st.sampled_from(["a", "b", 'q"x\\y\nz'])
values = st.sampled_from([0.0, 0.001, 0.0011, 0.0025, 0.3, 1.0, 7.5, 3600.0, 4000.0])
ops = st.lists(st.tuples(st.sampled_from(["inc", "gauge_inc", "gauge_dec", "gauge_set", "observe"]),
                         label_values, label_values, values), max_size=40)


def _samples(registry: CollectorRegistry) -> tuple[dict[tuple[object, ...], float], set[tuple[object, ...]]]:
    """Every sample's value, and the _created ones apart (their times differ between the two sides)."""
    found, created = {}, set()
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in family.samples:
            key = (family.type, family.documentation, s.name, tuple(sorted(s.labels.items())))
            if s.name.endswith("_created"):
                created.add(key)
            else:
                found[key] = s.value
    return found, created


@given(ops)
def test_tallies_export_what_prometheus_client_exports(changes: list[tuple[str, str, str, float]]) -> None:
    theirs, ours = CollectorRegistry(), CollectorRegistry()
    counter = Counter("t_tasks", "Tasks", ["queue", "type"], registry=theirs)
    gauge = Gauge("t_in_flight", "In flight", ["queue"], registry=theirs)
    histogram = Histogram("t_seconds", "Durations", ["queue", "type"], buckets=BOUNDS, registry=theirs)
    tasks = Tally("t_tasks", "Tasks", ["queue", "type"], "counter")
    in_flight = Tally("t_in_flight", "In flight", ["queue"], "gauge")
    seconds = TallyHistogram("t_seconds", "Durations", ["queue", "type"], BOUNDS)
    Tallies(ours, [tasks, in_flight, seconds])
    for op, a, b, value in changes:
        if op == "inc":
            counter.labels(a, b).inc()
            tasks.inc(a, b)
        elif op == "gauge_inc":
            gauge.labels(a).inc()
            in_flight.inc(a)
        elif op == "gauge_dec":
            gauge.labels(a).dec()
            in_flight.dec(a)
        elif op == "gauge_set":
            gauge.labels(a).set(value)
            in_flight.set(value, a)
        else:
            histogram.labels(a, b).observe(value)
            seconds.observe(value, a, b)
    assert _samples(ours) == _samples(theirs)
    assert tasks.get("a", "b") == sum(1 for op, a, b, _ in changes if (op, a, b) == ("inc", "a", "b"))


def test_a_tally_name_already_taken_is_refused() -> None:
    registry = CollectorRegistry()
    Counter("t_tasks", "Tasks", registry=registry)
    try:
        Tallies(registry, [Tally("t_tasks", "Tasks", [], "counter")])
    except ValueError as exc:
        assert "t_tasks" in str(exc)
    else:
        raise AssertionError("a duplicate name was accepted")
