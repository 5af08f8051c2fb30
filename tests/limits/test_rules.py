"""The pure rules of global limits (bridge/limits.py): rates, patterns, GCRA, permit slots."""

from __future__ import annotations

import pytest
from jetbridge._errors import ConfigError

from bridge.limits import (
    NS,
    LimitSpec,
    Permit,
    free_slots,
    gcra,
    hold_cap,
    make_spec,
    matching,
    next_expiry,
    overflow_delay,
    parse_rate,
)


@pytest.mark.parametrize(("text", "per_second"), [("100/s", 100.0), ("6000/m", 100.0), ("10/5s", 2.0),
                                                  ("2.5/h", 2.5 / 3600), (" 3 / s ", 3.0)])
def test_rates(text: str, per_second: float) -> None:
    assert parse_rate(text) == pytest.approx(per_second)


@pytest.mark.parametrize("text", ["100", "1/d", "x/s", "0/s", "/s", "5/0s"])
def test_bad_rates(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_rate(text)


def test_patterns_match_types_and_queues_in_a_fixed_order() -> None:
    email = LimitSpec(types="email:*", concurrency=2)
    bulk = LimitSpec(queues="BULK", rate=5.0)
    other = LimitSpec(types="sms", concurrency=1)
    found = matching([email, bulk, other], "BULK", "email:send")
    assert set(found) == {email, bulk} and found == sorted(found, key=lambda s: s.id)
    assert matching([email, bulk, other], "DEFAULT", "email:send") == [email]
    assert matching([email, bulk, other], "DEFAULT", "emails") == []


def test_gcra_allows_the_burst_then_one_start_per_interval() -> None:
    now, tat, allowed = 10 * NS, 0, 0
    for _ in range(10):
        verdict = gcra(tat, now, 50.0, 5)
        if verdict.allowed:
            tat, allowed = verdict.tat_ns, allowed + 1
    assert allowed == 5
    verdict = gcra(tat, now, 50.0, 5)
    assert not verdict.allowed and verdict.wait_ns == NS // 50
    assert gcra(tat, now + NS // 50, 50.0, 5).allowed
    # idle time builds up at most the burst
    later = now + 100 * NS
    assert sum(gcra(tat, later, 50.0, 5).allowed for _ in range(1)) == 1


def test_starts_over_time_never_exceed_the_rate() -> None:
    tat, starts = 0, 0
    for step in range(0, 10 * NS, NS // 1000):  # a start tried every millisecond for 10 s
        verdict = gcra(tat, step, 50.0, 5)
        if verdict.allowed:
            tat, starts = verdict.tat_ns, starts + 1
    assert 500 <= starts <= 505


def test_permit_slots() -> None:
    now = 100 * NS
    slots: dict[int, Permit | None] = {0: Permit(task="a", expires=now + NS), 1: Permit(task="b", expires=now - 1),
                                       2: None, 3: Permit(task="", expires=now + NS), 5: Permit(task="c", expires=now + 5)}
    assert free_slots(slots, 5, now) == [1, 2, 3, 4]
    assert free_slots(slots, 1, now) == []
    assert next_expiry(slots, 5, now) == NS
    assert next_expiry(slots, 6, now) == 5
    assert next_expiry({}, 3, now) is None


def test_hold_cap_and_overflow_delay() -> None:
    assert hold_cap(LimitSpec(concurrency=3)) == 6
    assert hold_cap(LimitSpec(rate=50.0, burst=5)) == 105
    assert hold_cap(LimitSpec(concurrency=10_000)) == 256
    assert overflow_delay(0, 0.02) == 1.0
    assert overflow_delay(99, 0.1) == pytest.approx(10.0)
    assert overflow_delay(10**9, 1.0) == 600.0


def test_make_spec_keeps_what_the_operator_wrote() -> None:
    spec = make_spec("email:*", "*", 3, "6000/m", 10)
    assert (spec.concurrency, spec.rate, spec.rate_text, spec.burst) == (3, 100.0, "6000/m", 10)
    assert spec.describe() == "email:*" and make_spec("*", "BULK", 1, None, None).describe() == "* on queue BULK"


def test_weighted_chooser_follows_the_weights_and_never_starves() -> None:
    from bridge.priorities import Chooser

    chooser = Chooser([("C", 6), ("D", 3), ("L", 1)], strict=False)
    picks = [chooser.pick({"C", "D", "L"}) for _ in range(1000)]
    assert [picks.count(q) for q in "CDL"] == [600, 300, 100]
    low = [i for i, p in enumerate(picks) if p == "L"]
    assert max(b - a for a, b in zip(low, low[1:], strict=False)) == 10
    assert chooser.pick({"L"}) == "L" and chooser.pick(set()) is None


def test_a_refilling_queue_catches_up() -> None:
    from bridge.priorities import Chooser

    chooser = Chooser([("C", 1), ("L", 1)], strict=False)
    assert [chooser.pick({"L"}, {"C"}) for _ in range(4)] == ["L"] * 4
    assert [chooser.pick({"C", "L"}) for _ in range(4)] == ["C"] * 4  # the credit it earned meanwhile


def test_strict_chooser_waits_for_a_refilling_higher_queue() -> None:
    from bridge.priorities import Chooser, parse_priorities

    chooser = Chooser(parse_priorities("LOW:1,CRITICAL:6,DEFAULT"), strict=True)
    assert chooser.order == ["CRITICAL", "LOW", "DEFAULT"]
    assert chooser.pick({"LOW", "DEFAULT"}) == "LOW"
    assert chooser.pick({"LOW"}, {"CRITICAL"}) is None
    assert chooser.pick({"CRITICAL", "LOW"}) == "CRITICAL"


def test_tokens_are_taken_in_chunks_only_at_high_rates() -> None:
    from bridge.limits import gcra_take, token_chunk

    assert token_chunk(LimitSpec(rate=50.0, burst=5)) == 1
    assert token_chunk(LimitSpec(rate=1e6, burst=100_000)) == 10_000
    assert token_chunk(LimitSpec(rate=1e6, burst=100)) == 100
    now = 10 * NS
    got, tat, _ = gcra_take(0, now, 100.0, 10, 4)
    assert (got, tat) == (4, now + 4 * NS // 100)
    got, tat, _ = gcra_take(tat, now, 100.0, 10, 100)
    assert got == 6  # never more than the burst allows
    assert gcra_take(tat, now, 100.0, 10, 1)[0] == 0


def test_adaptive_rate_halves_once_a_second_and_climbs_back() -> None:
    from bridge.limits import MIN_FACTOR, Adapt, lowered, rate_factor

    now = 100 * NS
    first = lowered(None, now)
    assert first == Adapt(0.5, now)
    assert lowered(first, now + NS // 2) is None  # replies of attempts already under way say nothing new
    assert rate_factor(first, now + 3 * NS) == pytest.approx(0.6)
    assert rate_factor(first, now + 60 * NS) == 1.0
    second = lowered(first, now + NS)
    assert second is not None and second.factor == pytest.approx((0.5 + 1 / 30) / 2)
    floor = Adapt(MIN_FACTOR, now)
    assert lowered(floor, now + NS) == Adapt(MIN_FACTOR, now + NS)
    with pytest.raises(ConfigError, match="--adaptive only applies with --rate"):
        make_spec("x", "*", 2, None, None, adaptive=True)
