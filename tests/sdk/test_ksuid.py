"""Task ids: the fast KSUID text is svix-ksuid's (and so asyncjobs'), digit for digit."""

from __future__ import annotations

import time

from hypothesis import given, settings
from hypothesis import strategies as st
from jetbridge._ksuid import EPOCH, encode, new_ksuid
from ksuid import Ksuid


@settings(max_examples=500)
@given(st.binary(min_size=20, max_size=20))
def test_the_text_is_svix_ksuids(raw: bytes) -> None:
    assert encode(raw) == str(Ksuid.from_bytes(raw))


def test_the_extremes() -> None:
    for raw in (bytes(20), b"\xff" * 20, b"\x00" * 19 + b"\x01"):
        assert encode(raw) == str(Ksuid.from_bytes(raw))
        assert len(encode(raw)) == 27


def test_a_new_id_carries_its_second_and_is_unique() -> None:
    now = time.time()
    ids = {new_ksuid() for _ in range(10_000)}
    assert len(ids) == 10_000
    one = Ksuid.from_base62(next(iter(ids)))
    assert abs(int.from_bytes(bytes(one)[:4], "big") + EPOCH - now) <= 2
    assert bytes(Ksuid.from_base62(new_ksuid(now=EPOCH + 5)))[:4] == (5).to_bytes(4, "big")
