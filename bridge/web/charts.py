"""The overview's last hour: tasks finished per minute (complete, failed) overall and per queue, the failure share,
and small inline SVG bar charts rendered here, so the page needs no chart library, CDN or script.

Counted from the task index (each task's last change), so the hour before this process started is there too: a task
counts in the minute it last changed, under its state then (a retry waiting counts as ``retrying``). The counting
is pure (entries and a clock in, numbers out); :class:`HourCache` keeps one pass over the index per
:data:`CACHE_S` once it holds :data:`CACHE_FROM` tasks, so live refreshes stay cheap with 100,000 tasks.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from jetbridge.internal import NS

from ..index import Entry, Query, TaskIndex

MINUTES = 60
CACHE_S = 10.0
#: below this many tasks a pass is cheap enough to make on every refresh
CACHE_FROM = 20_000
FAILED = frozenset({"terminated", "expired", "unreachable", "queue_error"})
KINDS = ("complete", "failed", "retrying")


def kind_of(state: str) -> str | None:
    if state == "complete":
        return "complete"
    if state in FAILED:
        return "failed"
    if state == "retry":
        return "retrying"
    return None


@dataclass
class Series:
    """Per-minute counts, oldest first; index ``MINUTES - 1`` is the current minute."""

    counts: dict[str, list[int]] = field(default_factory=lambda: {k: [0] * MINUTES for k in KINDS})

    def total(self, kind: str) -> int:
        return sum(self.counts[kind])

    @property
    def per_minute(self) -> float:
        """Finished (complete or failed) a minute, over the hour."""
        return round((self.total("complete") + self.total("failed")) / MINUTES, 2)

    @property
    def failure_share(self) -> float | None:
        """Failed among finished, 0..1; None when nothing finished."""
        done = self.total("complete") + self.total("failed")
        return round(self.total("failed") / done, 4) if done else None


def last_hour(entries: Iterable[Entry], now_ns: int) -> tuple[Series, dict[str, Series]]:
    """``(all queues, by queue)`` for the hour up to ``now_ns``."""
    start = now_ns - MINUTES * 60 * NS
    overall, by_queue = Series(), dict[str, Series]()
    for e in entries:
        kind = kind_of(e.state)
        if kind is None or not start < e.updated_ns <= now_ns:
            continue
        minute = min(MINUTES - 1, int((e.updated_ns - start) // (60 * NS)))
        overall.counts[kind][minute] += 1
        q = by_queue.get(e.queue)
        if q is None:
            q = by_queue[e.queue] = Series()
        q.counts[kind][minute] += 1
    return overall, by_queue


def bars(series: Series, *, width: int = 360, height: int = 60, label: str = "") -> str:
    """Stacked bars (complete under failed) per minute as an SVG element; colours come from the page's CSS."""
    tops = [series.counts["complete"][i] + series.counts["failed"][i] for i in range(MINUTES)]
    peak = max(tops) or 1
    step = width / MINUTES
    parts = [f'<svg class="chart" role="img" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
             f'preserveAspectRatio="none"><title>{_escape(label)}: peak {max(tops)} a minute</title>']
    for i in range(MINUTES):
        ok, bad = series.counts["complete"][i], series.counts["failed"][i]
        x = round(i * step + 0.5, 2)
        w = round(max(step - 1, 1), 2)
        h_ok, h_bad = height * ok / peak, height * bad / peak
        ago = MINUTES - 1 - i
        if ok:
            parts.append(f'<rect class="c-ok" x="{x}" y="{round(height - h_ok, 2)}" width="{w}" height="{round(h_ok, 2)}">'
                         f"<title>{ago} min ago: {ok} complete</title></rect>")
        if bad:
            parts.append(f'<rect class="c-bad" x="{x}" y="{round(height - h_ok - h_bad, 2)}" width="{w}" '
                         f'height="{round(h_bad, 2)}"><title>{ago} min ago: {bad} failed</title></rect>')
    parts.append(f'<line class="c-axis" x1="0" y1="{height - 0.5}" x2="{width}" y2="{height - 0.5}"/></svg>')
    return "".join(parts)


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


class HourCache:
    """:func:`last_hour` over an index, recomputed at most every :data:`CACHE_S` seconds."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._at = -1e18
        self._value: tuple[Series, dict[str, Series]] = (Series(), {})

    def get(self, index: TaskIndex, now_ns: int) -> tuple[Series, dict[str, Series]]:
        if len(index) < CACHE_FROM or self.clock() - self._at >= CACHE_S:
            since = now_ns - MINUTES * 60 * NS
            entries = index.page(Query(since_ns=since), limit=len(index) + 1).entries
            self._value, self._at = last_hour(entries, now_ns), self.clock()
        return self._value
