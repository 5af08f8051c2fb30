"""Times on the wire: the cached formatting and parsing agree with a datetime reference for any instant."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st
from jetbridge._timeutil import NS, format_ms, format_ns, parse_ns

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: 1970 to 2200, in nanoseconds
instants = st.integers(min_value=0, max_value=7_258_118_400 * NS)


def _reference(ns: int) -> tuple[str, str]:
    """(seconds part, nine fraction digits) by datetime."""
    secs, frac = divmod(ns, NS)
    return (EPOCH + timedelta(seconds=secs)).strftime("%Y-%m-%dT%H:%M:%S"), f"{frac:09d}"


@given(st.lists(instants, min_size=1, max_size=20))
def test_formatting_matches_datetime_whatever_order_the_seconds_come_in(values: list[int]) -> None:
    for ns in values:
        base, frac = _reference(ns)
        assert format_ms(ns) == format_ns(ns, digits=3) == f"{base}.{frac[:3]}Z"
        assert format_ns(ns, digits=0) == f"{base}Z"
        assert format_ns(ns, digits=6) == f"{base}.{frac[:6]}Z"
        nano = format_ns(ns)
        assert nano == (f"{base}.{frac.rstrip('0')}Z" if int(frac) else f"{base}Z")
        assert parse_ns(nano) == ns
