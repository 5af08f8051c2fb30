"""Times on the wire and in the store: RFC 3339 strings, handled as integer nanoseconds.

asyncjobs (Go) writes nanosecond times, and signs tasks over ``created`` in nanoseconds, so times are kept as
integers and formatted the way Go's RFC3339Nano does; a datetime would silently drop the last three digits.
"""

from __future__ import annotations

import calendar
import functools
import re
import time

_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?([Zz]|[+-]\d{2}:\d{2})$"
)
NS = 1_000_000_000
MS = 1_000_000


def now_ns() -> int:
    return time.time_ns()


#: UTC second -> "YYYY-MM-DDTHH:MM:SS". A dispatcher formats a few distinct seconds in turn (now, a task's
#: created, an attempt's deadline), so a one-entry cache would be replaced on almost every call
_seconds: dict[int, str] = {}


def _second(secs: int) -> str:
    if len(_seconds) >= 4096:
        _seconds.clear()
    text = _seconds[secs] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs))
    return text


def format_ns(ns: int, *, digits: int | None = None) -> str:
    """Format UTC nanoseconds as RFC 3339: Go RFC3339Nano style, or with exactly ``digits`` fraction digits."""
    secs, frac = divmod(ns, NS)
    base = _seconds.get(secs) or _second(secs)
    if digits is not None:
        if digits == 0:
            return base + "Z"
        return f"{base}.{frac // 10 ** (9 - digits):0{digits}d}Z"
    if frac == 0:
        return base + "Z"
    return f"{base}.{frac:09d}".rstrip("0") + "Z"


def format_ms(ns: int) -> str:
    """The protocol's form: UTC with millisecond precision (``format_ns(ns, digits=3)``, without its branches)."""
    secs, frac = divmod(ns, NS)
    return f"{_seconds.get(secs) or _second(secs)}.{frac // MS:03d}Z"


@functools.lru_cache(maxsize=8192)
def parse_ns(text: str) -> int:
    """Parse an RFC 3339 time with any offset into UTC nanoseconds; raises ValueError with the text.

    The form Jetbridge and asyncjobs write (``YYYY-MM-DDTHH:MM:SS[.fraction]Z``) takes a fast path: the seconds part
    is parsed once per distinct second (cached), the fraction by ``int``. Every other form goes through the full
    parser; both accept exactly the same texts. Recent texts are cached: the dispatcher reads a task's ``created``
    several times while it handles it.
    """
    if len(text) >= 20 and text[-1] == "Z" and text[19] in ".Z":
        frac = text[20:-1]
        if text[19] == "Z" and len(text) == 20:
            return _parse_second(text[:19]) * NS
        if 1 <= len(frac) <= 9 and frac.isascii() and frac.isdigit():
            return _parse_second(text[:19]) * NS + int(frac) * _SCALE[len(frac)]
    return _parse_full(text)


#: nanoseconds per unit of the last digit of a fraction with that many digits
_SCALE: list[int] = [10 ** (9 - digits) for digits in range(10)]


@functools.lru_cache(maxsize=4096)
def _parse_second(text: str) -> int:
    """``YYYY-MM-DDTHH:MM:SS`` as UTC seconds (the full parser's checks apply; ValueError names ``text``)."""
    try:
        seconds: int = _parse_full(text + "Z") // NS
        return seconds
    except ValueError:
        raise ValueError(f"not an RFC 3339 time: {text!r}") from None


@functools.lru_cache(maxsize=65536)
def _parse_full(text: str) -> int:
    m = _RFC3339.match(text)
    if m is None:
        raise ValueError(f"not an RFC 3339 time: {text!r}")
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    frac = int((m.group(7) or "0").ljust(9, "0"))
    offset = m.group(8)
    try:
        secs = calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0))
        time.gmtime(secs)  # range check
    except (OverflowError, ValueError) as exc:
        raise ValueError(f"not an RFC 3339 time: {text!r}") from exc
    if not (1 <= month <= 12 and 1 <= day <= 31 and hour <= 23 and minute <= 59 and second <= 60):
        raise ValueError(f"not an RFC 3339 time: {text!r}")
    if offset not in ("Z", "z"):
        sign = 1 if offset[0] == "+" else -1
        secs -= sign * (int(offset[1:3]) * 3600 + int(offset[4:6]) * 60)
    return secs * NS + frac
