"""Durations: one format read and printed everywhere (flags, config files, tables).

Read: a number of seconds, or a number with a unit (``250ms``, ``5s``, ``10m``, ``1h``, ``7d``), or several joined
(``1h30m``). Printed: the same units, largest first (``3600`` prints as ``1h``), so what a command shows can be
pasted back into a flag or a config file.
"""

from __future__ import annotations

import math
import re

from jetbridge.internal import ConfigError

UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
#: the longest duration accepted: a century, far beyond any queue setting, and inside every clock's range
#: (datetime, nanosecond int64 timestamps), so nothing later overflows.
MAX_SECONDS = 100 * 365 * 86400.0
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_HINT = "use a number of seconds or e.g. 250ms, 5s, 10m, 1h, 7d, 1h30m"


def parse_duration(text: str | float | int, *, what: str = "duration") -> float:
    """Seconds in ``text``; raises :class:`ConfigError` naming ``what`` for anything else (or over a century)."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        if not math.isfinite(text):
            raise ConfigError(f"{what} must be a finite number of seconds, got {text}")
        if text < 0:
            raise ConfigError(f"{what} must not be negative, got {text}")
        seconds = float(text)
    else:
        raw = str(text).strip()
        if _NUMBER.fullmatch(raw):
            seconds = float(raw)
        else:
            parts = _PART.findall(raw)
            if not raw or "".join(n + u for n, u in parts) != raw:
                raise ConfigError(f"{what} {text!r} is not a duration: {_HINT}")
            seconds = sum(float(n) * UNITS[u] for n, u in parts)
    if seconds > MAX_SECONDS:
        raise ConfigError(f"{what} {text!r} is too long: at most 100 years ({int(MAX_SECONDS // 86400)}d)")
    return seconds


def format_duration(seconds: float | None) -> str:
    """``seconds`` as :func:`parse_duration` reads it: ``1h30m``, ``250ms``, ``0s``; empty for ``None``."""
    if seconds is None:
        return ""
    if seconds < 0:
        return "-" + format_duration(-seconds)
    if seconds == 0:
        return "0s"
    if seconds < 1:
        return f"{round(seconds * 1000):d}ms"
    whole, out = round(seconds), []
    if abs(seconds - whole) > 0.0005:
        return f"{seconds:.3f}".rstrip("0").rstrip(".") + "s"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if whole >= size:
            out.append(f"{whole // size}{unit}")
            whole %= size
    return "".join(out)
