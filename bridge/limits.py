"""Global limits per task type and queue: the pure rules (what a limit is, what it matches, when it lets a task in).

A limit names task types and queues by fnmatch patterns (``email:*``, ``*``) and caps either or both of

- **concurrency**: attempts of matching tasks running at once across every dispatcher. Each running attempt holds
  one *permit*, a slot ``0..N-1`` stored in the limits KV bucket and claimed with a compare-and-set; a permit carries
  an expiry its holder renews with the attempt's lease, so a dead dispatcher's permits come free by themselves.
- **rate**: attempts started per second across every dispatcher, a GCRA token bucket (one "theoretical arrival
  time" in the bucket, advanced by a compare-and-set per start) that allows ``burst`` starts at once.

Everything here is arithmetic on values already read; :mod:`bridge.limit_store` does the I/O and
:mod:`bridge.limiter` the waiting.
"""

from __future__ import annotations

import fnmatch
import hashlib
import math
import re
from dataclasses import dataclass

import msgspec
from jetbridge.internal import ConfigError

NS = 1_000_000_000
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}
_RATE_RE = re.compile(r"(\d+(?:\.\d+)?)\s*/\s*(\d*)\s*([smh])")
_PATTERN_RE = re.compile(r"[A-Za-z0-9_\-:.*?\[\]!]+")
MAX_PATTERN = 200
MAX_CONCURRENCY, MAX_BURST, MAX_RATE = 10_000, 100_000, 1_000_000.0
#: the slowest rate, one start a day: slower ones are mistakes, and their interval (1/rate in ns) overflows the GCRA
#: arithmetic long before 0 (``1e-320/s`` is more than 0, its interval is infinite)
MIN_RATE = 1 / 86_400
#: the slowest rate a dispatcher applies from the bucket (an interval of 31 years)
_MIN_STORED_RATE = 1e-9


class LimitSpec(msgspec.Struct, frozen=True, omit_defaults=True):
    """One limit as stored (JSON) under ``def.<id>`` in the limits bucket."""

    types: str = "*"
    queues: str = "*"
    concurrency: int = 0
    #: starts per second (0: no rate limit); ``rate_text`` keeps what the operator wrote (``6000/m``)
    rate: float = 0.0
    rate_text: str = ""
    burst: int = 1
    #: lower the rate for a while when handlers reply "overloaded" (see :func:`lowered`)
    adaptive: bool = False

    @property
    def id(self) -> str:
        return limit_id(self.types, self.queues)

    def describe(self) -> str:
        """``email:* on queue BULK`` for logs and tables."""
        return self.types + ("" if self.queues == "*" else f" on queue {self.queues}")

    def matches(self, queue: str, task_type: str) -> bool:
        return fnmatch.fnmatchcase(task_type, self.types) and fnmatch.fnmatchcase(queue, self.queues)


def limit_id(types: str, queues: str) -> str:
    """A KV-safe key part for a (types, queues) pair of patterns (patterns hold ``*``, which keys cannot)."""
    return hashlib.sha256(f"{queues}\0{types}".encode()).hexdigest()[:16]


def parse_rate(text: str) -> float:
    """``100/s``, ``6000/m``, ``10/5s`` or ``2.5/h`` -> starts per second; ConfigError naming the mistake."""
    m = _RATE_RE.fullmatch(text.strip())
    if not m:
        raise ConfigError(f"--rate {text!r} is not a rate: write COUNT/UNIT, e.g. 100/s, 6000/m or 10/5s")
    count, every, unit = float(m.group(1)), float(m.group(2) or 1), _UNITS[m.group(3)]
    per_second = count / (every * unit) if every > 0 else 0.0
    if not 0 < per_second <= MAX_RATE:
        raise ConfigError(f"--rate {text!r} must be more than 0 and at most 1000000/s")
    if per_second < MIN_RATE * (1 - 1e-9):
        raise ConfigError(f"--rate {text!r} is less than one start a day: the slowest rate is 1/24h")
    return per_second


def check_pattern(pattern: str, what: str) -> str:
    if len(pattern) > MAX_PATTERN:
        raise ConfigError(f"{what} {pattern[:20] + '...'!r} is {len(pattern)} characters long: at most {MAX_PATTERN}")
    if not _PATTERN_RE.fullmatch(pattern):
        raise ConfigError(f"{what} {pattern!r} must be a task type or fnmatch pattern of letters, digits and "
                          "_-:. with * ? [ ] (for example email:*)")
    return pattern


def make_spec(types: str, queues: str, concurrency: int | None, rate: str | None, burst: int | None,
              adaptive: bool = False) -> LimitSpec:
    """A checked limit from the CLI's options; ConfigError with one line for any mistake."""
    check_pattern(types, "PATTERN")
    check_pattern(queues, "--queue")
    if concurrency is None and rate is None:
        raise ConfigError("a limit needs --concurrency N, --rate COUNT/UNIT, or both")
    if concurrency is not None and not 1 <= concurrency <= MAX_CONCURRENCY:
        raise ConfigError(f"--concurrency must be between 1 and {MAX_CONCURRENCY}, got {concurrency}")
    if burst is not None and rate is None:
        raise ConfigError("--burst only applies with --rate")
    if adaptive and rate is None:
        raise ConfigError("--adaptive only applies with --rate")
    if burst is not None and not 1 <= burst <= MAX_BURST:
        raise ConfigError(f"--burst must be between 1 and {MAX_BURST}, got {burst}")
    return LimitSpec(types=types, queues=queues, concurrency=concurrency or 0,
                     rate=parse_rate(rate) if rate is not None else 0.0, rate_text=(rate or "").replace(" ", ""),
                     burst=burst or 1, adaptive=adaptive)


def stored_problem(spec: LimitSpec, key_id: str) -> str | None:
    """Why a limit read from the bucket cannot be applied, or None.

    ``limit set`` only stores checked limits, but the bucket is writable by hand (or by an older or newer
    Jetbridge): a definition the dispatcher cannot apply exactly (a negative concurrency makes the permit scan
    raise, a rate of ``1e-300`` overflows the GCRA interval, both for every task it matches) is ignored as a
    whole rather than applied in part or allowed to stall the tasks it names.
    """
    for pattern in (spec.types, spec.queues):
        if len(pattern) > MAX_PATTERN or not _PATTERN_RE.fullmatch(pattern):
            return f"pattern {pattern[:40]!r} is not a task type or fnmatch pattern"
    if key_id != spec.id:
        return f"stored under id {key_id!r}, but its patterns give id {spec.id!r}"
    if not (spec.concurrency or spec.rate):
        return "it has neither a concurrency nor a rate"
    if not 0 <= spec.concurrency <= MAX_CONCURRENCY:
        return f"concurrency {spec.concurrency} is not between 1 and {MAX_CONCURRENCY}"
    # slower than limit set allows (a limit stored by an older version stays in force), but not so slow that
    # its interval overflows; NaN fails this too
    if spec.rate and not _MIN_STORED_RATE <= spec.rate <= MAX_RATE:
        return f"rate {spec.rate}/s is not between {_MIN_STORED_RATE}/s and {MAX_RATE:.0f}/s"
    if not 1 <= spec.burst <= MAX_BURST:
        return f"burst {spec.burst} is not between 1 and {MAX_BURST}"
    return None


def permit_slot(key: str) -> tuple[str, int] | None:
    """``permit.<id>.<n>`` -> (id, n); None for a key of another shape (written by hand: ignored)."""
    kind, _, rest = key.partition(".")
    spec_id, _, slot = rest.partition(".")
    if kind != "permit" or not spec_id or not slot.isascii() or not slot.isdigit():
        return None
    return spec_id, int(slot)


def matching(specs: list[LimitSpec], queue: str, task_type: str) -> list[LimitSpec]:
    """The limits that apply to a task, in a fixed order (by id), so every dispatcher takes permits alike."""
    return sorted((s for s in specs if s.matches(queue, task_type)), key=lambda s: s.id)


# Rate: GCRA -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RateVerdict:
    allowed: bool
    #: the bucket's theoretical arrival time after this start (store it when allowed)
    tat_ns: int
    #: when not allowed: how long until a start would be
    wait_ns: int = 0


def gcra(tat_ns: int, now: int, rate: float, burst: int) -> RateVerdict:
    """Generic cell rate algorithm: one start at ``now`` against a bucket whose arrival time is ``tat_ns``.

    Each start moves the arrival time on by one interval (1/rate); a start is allowed while the arrival time is at
    most ``burst`` intervals ahead of now. Idle time builds up at most ``burst`` starts of credit.
    """
    got, new_tat, wait = gcra_take(tat_ns, now, rate, burst, 1)
    return RateVerdict(True, new_tat) if got else RateVerdict(False, tat_ns, wait)


def gcra_take(tat_ns: int, now: int, rate: float, burst: int, want: int) -> tuple[int, int, int]:
    """Up to ``want`` starts at once (a dispatcher takes a few tokens per compare-and-set at high rates):
    (starts granted, the new arrival time, ns to wait when none is granted)."""
    interval = max(1, round(NS / rate))
    base = max(tat_ns, now)
    room = (now + burst * interval - base) // interval
    got = max(0, min(want, room))
    if got:
        return got, base + got * interval, 0
    return 0, tat_ns, base + interval - now - burst * interval


def token_chunk(spec: LimitSpec) -> int:
    """Tokens one compare-and-set takes: 10 ms worth at the limit's rate, at most the burst (1 below 200/s), so a
    high rate costs one write per many starts while a low one stays exact."""
    return max(1, min(spec.burst, int(spec.rate * 0.01)))


# Concurrency: leased permits --------------------------------------------------------------------------------------


class Permit(msgspec.Struct, frozen=True, omit_defaults=True):
    """A permit slot's value: who holds it and until when (wall clock, ns). An empty value is a free slot."""

    task: str = ""
    dispatcher: str = ""
    expires: int = 0


def permit_expiry(lease: float) -> float:
    """How long a permit lasts past its last renewal (renewed every lease/3).

    A dispatcher that dies had renewed at most lease/3 before; its protocol 1.1 handler fences itself one lease
    after the last acknowledged heartbeat. Two leases and a second therefore outlast the handler's attempt, so a
    permit is never handed on while the attempt it counted still runs.
    """
    return 2 * lease + 1.0


def is_free(permit: Permit | None, now: int) -> bool:
    return permit is None or not permit.task or permit.expires <= now


def free_slots(slots: dict[int, Permit | None], concurrency: int, now: int) -> list[int]:
    """Slots ``0..concurrency-1`` that a compare-and-set may claim now (free, expired, or never written)."""
    return [n for n in range(concurrency) if is_free(slots.get(n), now)]


def next_expiry(slots: dict[int, Permit | None], concurrency: int, now: int) -> int | None:
    """Nanoseconds until the first held slot expires (when to look again if no release is seen), or None."""
    times = [p.expires - now for n, p in slots.items() if n < concurrency and p is not None and p.task
             and p.expires > now]
    return min(times) if times else None


def hold_cap(spec: LimitSpec) -> int:
    """How many throttled items one dispatcher keeps waiting in memory for a limit (the rest are rescheduled).

    Enough to keep the limit busy for a couple of seconds (so a freed permit or a token is used at once), few enough
    that held items (which the server counts against the queue's ``max_ack_pending``) leave room for other types.
    """
    want = max(spec.concurrency * 2, math.ceil(spec.rate * 2) + spec.burst if spec.rate else 0, 4)
    return min(want, 256)


def overflow_delay(waiting: int, per_item: float) -> float:
    """The delay for an item rescheduled because too many wait here: about when its turn comes, 1 s to 10 min."""
    return min(600.0, max(1.0, (waiting + 1) * per_item))


# Adaptive rate: handlers push back -------------------------------------------------------------------------------

#: retry codes that say "too much": a reply ``retry`` with one of these lowers an adaptive limit's rate
OVERLOAD_CODES = frozenset({"overloaded", "rate_limited", "too_many_requests", "429", "503"})
#: the lowest share of its rate an adaptive limit goes down to, and how fast it climbs back (share per second)
MIN_FACTOR, RECOVERY_PER_S = 0.05, 1 / 30


class Adapt(msgspec.Struct, frozen=True):
    """An adaptive limit's state under ``adapt.<id>``: its rate share when last lowered, and when (ns)."""

    factor: float = 1.0
    at: int = 0


def rate_factor(adapt: Adapt | None, now: int) -> float:
    """The share of its rate an adaptive limit allows now: halved by each push-back, climbing back linearly
    (a halving from full rate is undone in 15 s)."""
    if adapt is None:
        return 1.0
    # never below MIN_FACTOR, whatever is stored: a hand-written factor of 0 would divide by zero, a negative one
    # would never climb back
    return min(1.0, max(MIN_FACTOR, adapt.factor + max(0, now - adapt.at) / NS * RECOVERY_PER_S))


def lowered(adapt: Adapt | None, now: int) -> Adapt | None:
    """The state after an overloaded reply at ``now``, or None when it was lowered less than a second ago (the
    replies of attempts already under way say nothing new)."""
    if adapt is not None and now - adapt.at < NS:
        return None
    return Adapt(max(MIN_FACTOR, rate_factor(adapt, now) / 2), now)
