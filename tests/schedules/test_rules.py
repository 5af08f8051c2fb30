"""Pure tests: next-fire computation (every accepted form, daylight-saving edges) and the firing decisions."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import msgspec
import pytest
from jetbridge._cron import format_slot, jitter_ns, parse_cron, parse_go_duration, slot_task_id
from jetbridge._errors import ConfigError
from jetbridge._schedule import ScheduleDoc, ScheduleState
from jetbridge._timeutil import NS, format_ns

from bridge.schedules import StepKind, apply_step, next_step

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def ns(dt: datetime) -> int:
    return int(dt.timestamp()) * NS


def local(t: int, zone: ZoneInfo = BERLIN) -> str:
    return datetime.fromtimestamp(t // NS, zone).isoformat()


def fires(text: str, start: datetime, n: int, tz: str | None = None, zone: ZoneInfo = BERLIN) -> list[str]:
    spec = parse_cron(text, tz)
    out, t = [], ns(start)
    for _ in range(n):
        t = spec.next_after(t)
        out.append(local(t, zone))
    return out


# Daylight saving -------------------------------------------------------------------------------------------------


def test_fixed_time_in_the_spring_forward_gap_runs_right_after_the_jump() -> None:
    # 2026-03-29: Berlin jumps from 02:00 to 03:00; 02:30 does not exist that day
    assert fires("30 2 * * *", datetime(2026, 3, 28, 12, tzinfo=BERLIN), 3, "Europe/Berlin") == [
        "2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00", "2026-03-31T02:30:00+02:00"]


def test_fixed_time_in_the_repeated_autumn_hour_runs_once() -> None:
    # 2026-10-25: Berlin goes from 03:00 CEST back to 02:00 CET; 02:30 happens twice, fires at the first
    assert fires("30 2 * * *", datetime(2026, 10, 24, 12, tzinfo=BERLIN), 2, "Europe/Berlin") == [
        "2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"]


def test_hourly_job_runs_in_both_copies_of_the_repeated_hour_and_skips_the_missing_one() -> None:
    autumn = fires("CRON_TZ=Europe/Berlin 30 * * * *", datetime(2026, 10, 25, 1, 45, tzinfo=BERLIN), 3)
    assert autumn == ["2026-10-25T02:30:00+02:00", "2026-10-25T02:30:00+01:00", "2026-10-25T03:30:00+01:00"]
    spring = fires("CRON_TZ=Europe/Berlin 30 * * * *", datetime(2026, 3, 29, 1, 45, tzinfo=BERLIN), 2)
    assert spring == ["2026-03-29T03:30:00+02:00", "2026-03-29T04:30:00+02:00"]


def test_starting_inside_the_repeated_hour_never_goes_back_in_time() -> None:
    spec = parse_cron("45 2 * * *", "Europe/Berlin")
    second_0230 = ns(datetime(2026, 10, 25, 2, 30, fold=1, tzinfo=BERLIN))  # 02:30 CET, after the 02:45 CEST slot
    nxt = spec.next_after(second_0230)
    assert nxt > second_0230
    assert local(nxt) == "2026-10-26T02:45:00+01:00"


def test_other_zone_and_utc_default() -> None:
    assert fires("0 2 * * *", datetime(2026, 3, 7, 12, tzinfo=NEW_YORK), 2, "America/New_York", NEW_YORK) == [
        "2026-03-08T03:00:00-04:00", "2026-03-09T02:00:00-04:00"]
    assert parse_cron("0 9 * * *").text == "CRON_TZ=UTC 0 9 * * *"
    assert fires("0 9 * * *", datetime(2026, 3, 29, 0, tzinfo=UTC), 1, zone=ZoneInfo("UTC")) == [
        "2026-03-29T09:00:00+00:00"]


# Every accepted form -------------------------------------------------------------------------------------------

START = datetime(2026, 1, 1, 0, 0, 30, tzinfo=UTC)  # a Thursday


@pytest.mark.parametrize(("text", "expected"), [
    ("* * * * *", ["2026-01-01T00:01:00+00:00", "2026-01-01T00:02:00+00:00"]),
    ("*/15 * * * *", ["2026-01-01T00:15:00+00:00", "2026-01-01T00:30:00+00:00"]),
    ("5,10 3 * * *", ["2026-01-01T03:05:00+00:00", "2026-01-01T03:10:00+00:00"]),
    ("0 9-10 * * *", ["2026-01-01T09:00:00+00:00", "2026-01-01T10:00:00+00:00"]),
    ("0 0 1-31/10 * *", ["2026-01-11T00:00:00+00:00", "2026-01-21T00:00:00+00:00"]),
    ("0 12 * * MON-FRI", ["2026-01-01T12:00:00+00:00", "2026-01-02T12:00:00+00:00"]),
    ("0 12 * JAN,FEB SAT", ["2026-01-03T12:00:00+00:00", "2026-01-10T12:00:00+00:00"]),
    ("0 12 ? * 0", ["2026-01-04T12:00:00+00:00", "2026-01-11T12:00:00+00:00"]),
    ("0 0 13 * 5", ["2026-01-02T00:00:00+00:00", "2026-01-09T00:00:00+00:00"]),  # dom OR dow, as cron does
    ("@yearly", ["2027-01-01T00:00:00+00:00", "2028-01-01T00:00:00+00:00"]),
    ("@annually", ["2027-01-01T00:00:00+00:00", "2028-01-01T00:00:00+00:00"]),
    ("@monthly", ["2026-02-01T00:00:00+00:00", "2026-03-01T00:00:00+00:00"]),
    ("@weekly", ["2026-01-04T00:00:00+00:00", "2026-01-11T00:00:00+00:00"]),
    ("@daily", ["2026-01-02T00:00:00+00:00", "2026-01-03T00:00:00+00:00"]),
    ("@midnight", ["2026-01-02T00:00:00+00:00", "2026-01-03T00:00:00+00:00"]),
    ("@hourly", ["2026-01-01T01:00:00+00:00", "2026-01-01T02:00:00+00:00"]),
    ("hourly", ["2026-01-01T01:00:00+00:00", "2026-01-01T02:00:00+00:00"]),
    ("@every 1s", ["2026-01-01T00:00:31+00:00", "2026-01-01T00:00:32+00:00"]),
    ("@every 1m30s", ["2026-01-01T00:01:30+00:00", "2026-01-01T00:03:00+00:00"]),
    ("every 1h", ["2026-01-01T01:00:00+00:00", "2026-01-01T02:00:00+00:00"]),
    ("TZ=Europe/Berlin 0 1 * * *", ["2026-01-02T00:00:00+00:00", "2026-01-03T00:00:00+00:00"]),
    ("CRON_TZ=Europe/Berlin @daily", ["2026-01-01T23:00:00+00:00", "2026-01-02T23:00:00+00:00"]),
])
def test_every_accepted_form(text: str, expected: list[str]) -> None:
    assert fires(text, START, 2, zone=ZoneInfo("UTC")) == expected


@pytest.mark.parametrize(("text", "message"), [
    ("", "empty"), ("* * * *", "4 fields"), ("0 * * * * *", "6 fields"), ("0 0 L * *", "not a cron field"),
    ("0 0 * * MON#2", "not a cron field"), ("0 0 15W * *", "not a cron field"), ("61 * * * *", "not valid cron"),
    ("@reboot", "unknown descriptor"), ("@every 500ms", "whole number of seconds"), ("@every soon", "not a duration"),
    ("CRON_TZ=Mars/Base 0 * * * *", "unknown"), ("0 */x * * *", "step"),
])
def test_refused_forms_say_why(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_cron(text)


def test_zone_given_twice_must_agree() -> None:
    with pytest.raises(ConfigError, match="give one"):
        parse_cron("CRON_TZ=UTC 0 * * * *", "Europe/Berlin")
    assert parse_cron("CRON_TZ=Europe/Berlin 0 * * * *", "Europe/Berlin").tz == "Europe/Berlin"


def test_go_durations_slot_ids_and_jitter() -> None:
    assert parse_go_duration("1h30m") == 5400 * NS
    assert parse_go_duration("1.5h") == 5400 * NS
    slot = ns(datetime(2026, 12, 24, 17, tzinfo=UTC))
    assert format_slot(slot) == "20261224T170000Z"
    assert slot_task_id("nightly", slot) == "nightly:20261224T170000Z"
    assert len(slot_task_id("x" * 200, slot)) <= 256
    assert jitter_ns("a", slot, 0) == 0
    assert 0 <= jitter_ns("a", slot, 30 * NS) <= 30 * NS
    assert jitter_ns("a", slot, 30 * NS) == jitter_ns("a", slot, 30 * NS)
    assert len({jitter_ns("a", slot + i * NS, 30 * NS) for i in range(20)}) > 1


# Decisions -----------------------------------------------------------------------------------------------------

T0 = ns(datetime(2026, 6, 1, 12, tzinfo=UTC))


def doc(**changes: object) -> ScheduleDoc:
    base = ScheduleDoc(name="s", schedule="@every 10s", queue="Q", task_type="t", payload=b"{}", max_tries=10,
                       created_at=format_ns(T0), catchup=60 * NS, overlap="allow")
    return msgspec.structs.replace(base, **changes)


def test_waits_until_the_next_slot_then_fires_it() -> None:
    d, s = doc(), ScheduleState()
    step = next_step(d, s, T0 + 5 * NS, False)
    assert (step.kind, step.at) == (StepKind.WAIT, T0 + 10 * NS)
    step = next_step(d, s, T0 + 10 * NS, False)
    assert (step.kind, step.slot) == (StepKind.FIRE, T0 + 10 * NS)
    s = apply_step(d, s, step, T0 + 10 * NS, "s:x")
    assert (s.cursor, s.fires, s.last_task) == (T0 + 10 * NS, 1, "s:x")
    assert s.next_fire == format_ns(T0 + 20 * NS)


def test_jitter_delays_the_fire_but_not_the_slot() -> None:
    d = doc(jitter=5 * NS, schedule="@every 1m")
    slot = parse_cron("@every 1m").next_after(T0)
    delay = jitter_ns("s", slot, 5 * NS)
    assert next_step(d, ScheduleState(), slot + delay - 1, False).kind is StepKind.WAIT
    step = next_step(d, ScheduleState(), slot + delay, False)
    assert (step.kind, step.slot) == (StepKind.FIRE, slot)


def test_slots_older_than_the_catchup_window_are_missed_in_one_batch_then_recent_ones_fire() -> None:
    d, s = doc(), ScheduleState()
    now = T0 + 125 * NS  # slots 10..120; the window reaches back to 65
    step = next_step(d, s, now, False)
    assert (step.kind, step.count, step.first, step.slot) == (StepKind.MISS, 6, T0 + 10 * NS, T0 + 60 * NS)
    s = apply_step(d, s, step, now)
    assert s.missed == 6
    fired = []
    while (step := next_step(d, s, now, False)).kind is StepKind.FIRE:
        s = apply_step(d, s, step, now, "id")
        fired.append((step.slot - T0) // NS)
    assert fired == [70, 80, 90, 100, 110, 120]
    assert (s.fires, s.missed) == (6, 6)


@pytest.mark.parametrize(("overlap", "expected"), [
    ("allow", [StepKind.FIRE, StepKind.FIRE, StepKind.FIRE]),
    ("skip", [StepKind.SKIP, StepKind.SKIP, StepKind.SKIP]),
    ("buffer_one", [StepKind.BUFFER, StepKind.SKIP, StepKind.SKIP]),
])
def test_overlap_policies_while_the_previous_task_runs(overlap: str, expected: list[StepKind]) -> None:
    d, s = doc(overlap=overlap), ScheduleState(last_task="s:prev")
    kinds = []
    for i in range(1, 4):
        step = next_step(d, s, T0 + i * 10 * NS, True)
        kinds.append(step.kind)
        s = apply_step(d, s, step, T0 + i * 10 * NS)
    assert kinds == expected


def test_buffered_slot_fires_when_the_previous_task_ends() -> None:
    d = doc(overlap="buffer_one")
    s = ScheduleState(last_task="s:prev", cursor=T0 + 20 * NS, buffered=T0 + 10 * NS)
    assert next_step(d, s, T0 + 25 * NS, True).kind is StepKind.WAIT
    step = next_step(d, s, T0 + 25 * NS, False)
    assert (step.kind, step.slot) == (StepKind.FIRE_BUFFERED, T0 + 10 * NS)
    s = apply_step(d, s, step, T0 + 25 * NS, "s:b")
    assert (s.buffered, s.cursor, s.fires) == (0, T0 + 20 * NS, 1)


def test_paused_and_updated_definitions() -> None:
    assert next_step(doc(paused=True), ScheduleState(), T0 + 100 * NS, False).kind is StepKind.PAUSED
    updated = doc(updated_at=format_ns(T0 + 55 * NS))  # slots before the update belong to the old definition
    step = next_step(updated, ScheduleState(cursor=T0 + 10 * NS), T0 + 61 * NS, False)
    assert (step.kind, step.slot) == (StepKind.FIRE, T0 + 60 * NS)


def test_a_scheduled_task_delivered_before_due_waits_without_a_slot() -> None:
    from jetbridge._task import TaskState, new_task

    from bridge.states import ItemAction, Limits, on_delivery

    task = new_task(task_id="t", task_type="x", queue="Q", payload=b"{}", content_type="application/json",
                    max_tries=3, created_ns=T0, deadline_ns=None)
    task.state, task.due = TaskState.SCHEDULED.value, format_ns(T0 + 10 * NS)
    early = on_delivery(task, T0, Limits())
    assert (early.action, early.delay, early.saves) == (ItemAction.SCHEDULE, 10.0, False)
    assert on_delivery(task, T0 + 9_500_000_000, Limits()).action is ItemAction.NAK  # under a second: a short NAK
    assert on_delivery(task, T0 + 10 * NS, Limits()).action is ItemAction.RUN
