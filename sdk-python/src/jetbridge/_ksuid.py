"""Task ids: KSUIDs (segment.io's format, as asyncjobs' ``ksuid.New()``), made in a few microseconds.

A KSUID is 4 bytes of seconds since 2014-05-13 (1,400,000,000) and 16 random bytes, written as 27 base-62 digits, so
ids sort by creation second and never collide in practice. ``str(ksuid.Ksuid())`` of svix-ksuid builds the same
string digit by digit with ``str.index`` in pure Python: 30 µs, a fifth of the producer's time per task in
``enqueue_many`` (bench/README.md, issue 21). Here the number is divided by 62² at a time into a table of digit
pairs. ``tests/sdk/test_ksuid.py`` checks the result against svix-ksuid on random inputs.
"""

from __future__ import annotations

import time

from ._random import RandomPool

EPOCH = 1_400_000_000
_DIGITS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_PAIRS = [a + b for a in _DIGITS for b in _DIGITS]
_PAIR = 62 * 62


def encode(raw: bytes) -> str:
    """The 27-digit base-62 text of a 20-byte KSUID (62**27 > 2**160, so 28 digits always start with 0)."""
    n = int.from_bytes(raw, "big")
    pairs = _PAIRS
    out = []
    for _ in range(14):
        n, r = divmod(n, _PAIR)
        out.append(pairs[r])
    out.reverse()
    return "".join(out)[1:]


#: the random part of every id (16 bytes each)
_random = RandomPool()


def new_ksuid(now: float | None = None) -> str:
    """A new KSUID for the current second (or ``now``, a Unix time), with 128 bits from the system's CSPRNG.

    The random bytes come from a pool (:mod:`._random`: one system call for many ids, a few per cent of
    ``enqueue_many``'s CPU); no byte is used twice.
    """
    seconds = int(time.time() if now is None else now) - EPOCH
    return encode(seconds.to_bytes(4, "big") + _random.take(16))
