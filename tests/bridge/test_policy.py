"""Retry policies: asyncjobs' presets exactly, exponential with jitter, and clear errors for bad names."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st
from jetbridge._errors import ConfigError

from bridge.policy import ExponentialPolicy, LinearPolicy, parse_duration, parse_policy


def test_asyncjobs_presets_have_asyncjobs_intervals() -> None:
    ten = parse_policy("default")
    assert isinstance(ten, LinearPolicy)
    assert ten.intervals[0] == 60 and ten.intervals[1] == pytest.approx(70.8) and ten.intervals[-1] == pytest.approx(589.2)
    hour = parse_policy("1h")
    assert isinstance(hour, LinearPolicy) and len(hour.intervals) == 20 and hour.intervals[-1] == pytest.approx(3450)
    minute = parse_policy("1m")
    assert isinstance(minute, LinearPolicy) and minute.intervals[1] == pytest.approx(3.95)


@given(attempt=st.integers(0, 100), seed=st.integers(0, 10_000))
def test_linear_delay_is_within_jitter_bounds(attempt: int, seed: int) -> None:
    p = parse_policy("1m")
    assert isinstance(p, LinearPolicy)
    d = p.intervals[min(attempt, len(p.intervals) - 1)]
    delay = p.delay(attempt, random.Random(seed))
    assert p.jitter * d - 0.001 <= delay <= (1 + p.jitter) * d + 0.001


@given(attempt=st.integers(1, 60), seed=st.integers(0, 10_000))
def test_exponential_grows_and_caps(attempt: int, seed: int) -> None:
    p = parse_policy("exponential:1s:5m")
    assert isinstance(p, ExponentialPolicy)
    assert 0 < p.delay(attempt, random.Random(seed)) <= 300 * 1.2 + 1e-9


@pytest.mark.parametrize("bad", ["nope", "fixed", "fixed:abc", "exponential:5s:1s", "exponential:1:2:3"])
def test_bad_policies_are_named(bad: str) -> None:
    with pytest.raises(ConfigError, match="retry policy"):
        parse_policy(bad)


def test_durations() -> None:
    assert parse_duration("250ms") == 0.25 and parse_duration("2m") == 120 and parse_duration(3) == 3.0
    with pytest.raises(ConfigError, match="not a duration"):
        parse_duration("soon")
