"""Retry backoff policies: pure functions from an attempt number to a delay.

asyncjobs' linear presets are reproduced exactly (``retrypolicy.go``): ``Intervals[i] = min + i*(max-min)/steps``,
the delay for attempt ``n`` (clamped to the last interval) is ``d*jitter + uniform[0, d)``. Exponential backoff with
jitter and a fixed delay complete the set.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Protocol

from jetbridge.internal import ConfigError

# One duration format everywhere: bridge.durations (re-exported here for existing callers).
from .durations import parse_duration

__all__ = ["parse_duration", "parse_policy", "PRESETS"]


class RetryPolicy(Protocol):
    @property
    def name(self) -> str: ...

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before the attempt after ``attempt`` (1-based) failed."""
        ...


@dataclass(frozen=True)
class LinearPolicy:
    """asyncjobs' linear policy."""

    name: str
    steps: int
    minimum: float
    maximum: float
    jitter: float

    @property
    def intervals(self) -> list[float]:
        step = (self.maximum - self.minimum) / self.steps
        return [self.minimum + i * step for i in range(self.steps)]

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        intervals = self.intervals
        d = intervals[min(max(attempt, 0), len(intervals) - 1)]
        value = d * self.jitter + (rng or random).uniform(0, d)
        return round(value, 3) or intervals[0]


@dataclass(frozen=True)
class ExponentialPolicy:
    """``initial * factor**(attempt-1)``, capped at ``maximum``, times a random factor in ``[1-jitter, 1+jitter]``."""

    name: str
    initial: float = 1.0
    maximum: float = 600.0
    factor: float = 2.0
    jitter: float = 0.2

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        base = min(self.maximum, self.initial * self.factor ** max(attempt - 1, 0))
        return max(0.0, base * (rng or random).uniform(1 - self.jitter, 1 + self.jitter))


@dataclass(frozen=True)
class FixedPolicy:
    name: str
    seconds: float

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        return self.seconds


PRESETS: dict[str, RetryPolicy] = {
    "default": LinearPolicy("default", 50, 60.0, 600.0, 0.9),
    "10m": LinearPolicy("10m", 50, 60.0, 600.0, 0.9),
    "1h": LinearPolicy("1h", 20, 600.0, 3600.0, 0.9),
    "1m": LinearPolicy("1m", 20, 1.0, 60.0, 0.5),
    "exponential": ExponentialPolicy("exponential"),
}

def parse_policy(spec: str) -> RetryPolicy:
    """A policy by name: ``default``, ``10m``, ``1h``, ``1m``, ``exponential[:INITIAL[:MAX]]``, ``fixed:DELAY``."""
    spec = spec.strip()
    if spec in PRESETS:
        return PRESETS[spec]
    kind, _, rest = spec.partition(":")
    args = [a for a in rest.split(":") if a] if rest else []
    try:
        if kind == "fixed" and len(args) == 1:
            return FixedPolicy(spec, parse_duration(args[0], what="fixed retry delay"))
        if kind == "exponential" and len(args) <= 2:
            initial = parse_duration(args[0], what="initial retry delay") if args else 1.0
            maximum = parse_duration(args[1], what="maximum retry delay") if len(args) > 1 else 600.0
            if initial <= 0 or maximum < initial:
                raise ConfigError(f"retry policy {spec!r}: need 0 < initial <= max")
            return ExponentialPolicy(spec, initial=initial, maximum=maximum)
    except ConfigError as exc:
        raise ConfigError(f"retry policy {spec!r}: {exc}") from None
    raise ConfigError(
        f"unknown retry policy {spec!r}: use default, 10m, 1h, 1m, exponential[:INITIAL[:MAX]] or fixed:DELAY")
