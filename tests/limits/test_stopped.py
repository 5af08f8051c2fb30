"""Issue 18 under attack: a paused permit holder, a careless operator, and garbage in the limits bucket.

- A dispatcher SIGSTOPped while its attempt runs under a concurrency limit of 1: its protocol 1.1 handler fences
  the attempt, the permit expires and a second dispatcher takes it over; after SIGCONT the paused one must not
  believe it still holds the permit (no renewal over the new holder, no release of the new holder's permit), and
  no task is lost or run to completion twice.
- ``limit set`` with absurd values: one line, exit code 2, nothing stored.
- One dispatcher's own bookkeeping: a renewal racing the release of the same permit, a permit lost before its
  attempt started, and a slot held again while its lost holding is being given back.
- A hand-written garbage entry in ``JETBRIDGE_LIMITS``: logged once, ignored; the dispatcher keeps following the
  bucket and other types keep flowing.

Every wait here is for an event or a state (bounded by generous timeouts): the machine is a loaded 2-core one.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any, cast

import anyio
import jetbridge
import msgspec
import pytest
from jetbridge.internal import TaskRecord, names, now_ns
from nats.aio.client import Client
from nats.aio.msg import Msg

from bridge.embedded import NatsServer
from bridge.limit_store import LimitKV, LimitMirror, open_bucket, save_spec
from bridge.limiter import Limiter
from bridge.limits import LimitSpec, Permit, limit_id, make_spec
from bridge.metrics import Metrics
from bridge.presence import PROBE_HEADER
from bridge.queues import QueueConfig
from bridge.states import Limits
from bridge.worker import QueueWorker
from tests.harness import Harness
from tests.limits.procs import cli, start_dispatcher
from tests.limits.test_concurrency import holds_a_permit

pytestmark = pytest.mark.anyio

#: the queue's lease: short so the permit expiry (2 x lease + 1 s) passes quickly, long enough that a loaded machine
#: never misses a heartbeat acknowledgement by accident (a 1.1 handler fences itself one lease after the last one)
LEASE = 1.0


class Attempts:
    """What the handler saw: attempts running now, the most at once, starts in order, returns per task."""

    def __init__(self) -> None:
        self.running = 0
        self.most = 0
        self.returned: Counter[str] = Counter()
        self.send, self.starts = anyio.create_memory_object_stream[str](100)

    def enter(self, task_id: str) -> None:
        self.running += 1
        self.most = max(self.most, self.running)
        self.send.send_nowait(task_id)


async def _log_line(path: Path, event: str, timeout: float) -> dict[str, Any]:
    """The first JSON log line of ``event`` in a dispatcher's log file (written by another process)."""
    with anyio.fail_after(timeout):
        while True:
            text = await anyio.Path(path).read_text() if await anyio.Path(path).exists() else ""
            for line in text.splitlines():
                if f'"{event}"' in line:
                    return dict(json.loads(line))
            await anyio.sleep(0.05)  # another process's file: nothing announces a new line


async def _until(check: Any, timeout: float) -> None:
    with anyio.fail_after(timeout):
        while not check():  # noqa: ASYNC110 - the limiter's mirror, a handler's counters: nothing announces them
            await anyio.sleep(0.01)


def _end(*procs: subprocess.Popen[bytes] | None) -> None:
    for p in procs:
        if p is not None:
            if p.poll() is None:
                p.send_signal(signal.SIGCONT)
                p.kill()
            p.wait()


async def _event(events: Any, task_id: str, state: str) -> None:
    with anyio.fail_after(60):
        async for event in events:
            if event.task_id == task_id and event.state == state:
                return


async def test_a_paused_permit_holder_is_fenced_and_never_takes_the_permit_back(
        nats_server: NatsServer, nc: Client, unique: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    h = Harness(nc, unique)
    await h.make_queue(lease=LEASE, max_run_time=120, retry="fixed:0.05")
    task_type = f"stop{unique}"
    assert cli(nats_server, "limit", "set", task_type, "--concurrency", "1").returncode == 0
    kv = await open_bucket(nc, create=False)
    assert kv is not None
    slot = f"permit.{limit_id(task_type, '*')}.0"
    seen = Attempts()
    release = anyio.Event()

    async def work(task: jetbridge.Task) -> Any:
        seen.enter(task.id)
        try:
            await release.wait()  # a fenced attempt is cancelled here
        finally:
            seen.running -= 1
        seen.returned[task.id] += 1
        return "ok"

    a_log, b_log = tmp_path / "a.log", tmp_path / "b.log"
    monkeypatch.setenv("LIMITS_TEST_LOG_LEVEL", "info")
    async with h.service({task_type: work}):
        monkeypatch.setenv("LIMITS_TEST_LOG", str(a_log))
        a = start_dispatcher(nats_server, h, dispatcher_id=f"a{unique}")
        monkeypatch.setenv("LIMITS_TEST_LOG", str(b_log))
        b: subprocess.Popen[bytes] | None = None
        try:
            first = await h.producer.enqueue(task_type)
            with anyio.fail_after(60):
                assert await seen.starts.receive() == first  # A runs the first task's attempt ...
                await holds_a_permit(nc, f"a{unique}")  # ... under the limit's only permit
            b = start_dispatcher(nats_server, h, dispatcher_id=f"b{unique}")
            a.send_signal(signal.SIGSTOP)
            async with h.events(first) as first_events:
                second = await h.producer.enqueue(task_type)  # only B can pull it now
                with anyio.fail_after(90):  # the permit expires 2 x lease + 1 s after A's last renewal
                    next_start = await seen.starts.receive()
                assert seen.most == 1, "B's attempt started while A's fenced attempt still ran"
                held = msgspec.json.decode((await kv.get(slot)).value or b"", type=Permit)
                assert held.dispatcher == f"b{unique}" and held.task == next_start
                a.send_signal(signal.SIGCONT)
                with anyio.fail_after(60):  # A wakes up, finds its attempt lost and saves that (task back to retry)
                    async for event in first_events:
                        if event.state != "active":
                            break
            lost = await h.producer.get(first)
            assert lost.state in ("retry", "active") and lost.tries == 1, lost
            assert lost.last_err_code in ("handler_lost", "cancelled"), lost
            # A noticed the permit is gone: it neither renewed it over B nor gave B's permit back on its way out
            after = msgspec.json.decode((await kv.get(slot)).value or b"", type=Permit)
            assert (after.dispatcher, after.task) == (f"b{unique}", next_start), after
            assert seen.running == 1 and seen.most == 1
            release.set()
            for task_id in (first, second):
                record = await h.producer.wait(task_id, timeout=90)
                assert record.state == "complete", record
        finally:
            _end(a, b)
    assert seen.most == 1, f"{seen.most} attempts of a type limited to 1 ran at once"
    assert seen.returned == {first: 1, second: 1}, seen.returned  # none lost, none completed twice
    # which of A's timers fires first on waking decides whether A also logs limit_permit_lost: its attempt's
    # watchdog (silent for over a lease: lost) or its permit renewal (taken over: lost); both end the attempt
    for log in (a_log, b_log):
        text = await anyio.Path(log).read_text()
        assert '"level": "error"' not in text and "Traceback" not in text, text



async def test_an_attempt_whose_permit_expired_during_a_pause_is_never_sent(
        nats_server: NatsServer, nc: Client, unique: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A is paused after taking the permit but before sending its attempt (here: while it probes for a handler,
    which it does holding the permit); B takes the expired permit over and runs its attempt; A wakes up. A's attempt
    must not be sent while B's runs: A sees by its own clock that its permit outlived its expiry (or its renewal
    finds it taken) and ends the attempt unsent, as lost; the retry waits for the permit.

    The dispatchers serve different queues (the limit is on the type, across queues), so B never takes A's task.
    """
    h = Harness(nc, unique)
    await h.make_queue(lease=LEASE, max_run_time=120, retry="fixed:0.05")
    queue_b = f"QB{unique}"
    await h.admin.add(QueueConfig(name=queue_b, lease=LEASE, max_run_time=120, retry="fixed:0.05"))
    producer_b = jetbridge.Producer(nc, queue=queue_b)
    task_type = f"late{unique}"
    assert cli(nats_server, "limit", "set", task_type, "--concurrency", "1").returncode == 0
    seen = Attempts()
    release = anyio.Event()
    cancelled: dict[str, float] = {}

    async def work(task: jetbridge.Task) -> Any:
        seen.enter(task.id)
        began = time.monotonic()
        try:
            await release.wait()
        except BaseException:  # cancelled: by its dispatcher, or fenced
            cancelled[task.id] = time.monotonic() - began
            raise
        finally:
            seen.running -= 1
        seen.returned[task.id] += 1
        return "ok"

    probed = anyio.Event()

    async def on_probe(msg: Msg) -> None:
        if (msg.headers or {}).get(PROBE_HEADER):
            probed.set()

    a_log = tmp_path / "a.log"
    monkeypatch.setenv("LIMITS_TEST_LOG_LEVEL", "info")
    monkeypatch.setenv("LIMITS_TEST_LOG", str(a_log))
    monkeypatch.setenv("JETBRIDGE_NO_HANDLER_DELAY", "0.2")
    a = start_dispatcher(nats_server, h, h.queue, dispatcher_id=f"a{unique}")
    b: subprocess.Popen[bytes] | None = None
    try:
        async with h.events() as events:
            late = await h.producer.enqueue(task_type)  # no handler yet: A's attempt finds none
            await _event(events, late, "no_handler")
        probe = await nc.subscribe(names.handler_subject(task_type, h.prefix), cb=on_probe)
        with anyio.fail_after(60):
            await probed.wait()  # A holds the permit and waits (at most 1 s) for the probe's answer: pause it now
        a.send_signal(signal.SIGSTOP)
        await probe.unsubscribe()
        async with h.service({task_type: work}), h.events(late) as late_events:
            b = start_dispatcher(nats_server, h, queue_b, dispatcher_id=f"b{unique}")
            other = await producer_b.enqueue(task_type)
            with anyio.fail_after(90):  # after A's permit expired
                assert await seen.starts.receive() == other
            a.send_signal(signal.SIGCONT)
            # A's probe times out and it claims its task (saved active); the attempt is not sent (saved retry)
            # while B's still runs: its permit is B's.
            states = []
            with anyio.fail_after(60):
                async for event in late_events:
                    states.append(event.state)
                    if event.state == "retry":
                        break
            assert states == ["active", "retry"], states
            assert (await h.producer.get(late)).last_err_code == "handler_lost"
            assert seen.running == 1 and seen.most == 1, "A's attempt reached the handler beside B's"
            assert other not in cancelled and late not in cancelled and seen.returned[late] == 0
            release.set()
            for task_id, producer in ((late, h.producer), (other, producer_b)):
                record = await producer.wait(task_id, timeout=90)
                assert record.state == "complete", record
    finally:
        _end(a, b)
    assert seen.returned == {late: 1, other: 1}, seen.returned
    assert seen.most == 1, "two attempts ran at once under a concurrency limit of 1"
    # A's own clock, or its renewal round, noticed first: either way it said so, naming the task
    noticed = await _log_line(a_log, "attempt_not_sent", 5)
    assert noticed["task_id"] == late


@pytest.mark.parametrize(("args", "message"), [
    (["x", "--concurrency", "-1"], "--concurrency must be between 1 and 10000, got -1"),
    (["x", "--concurrency", str(10**12)], f"--concurrency must be between 1 and 10000, got {10**12}"),
    (["x", "--rate", "abc"], "--rate 'abc' is not a rate: write COUNT/UNIT, e.g. 100/s, 6000/m or 10/5s"),
    (["x", "--rate", "5/fortnight"], "--rate '5/fortnight' is not a rate: write COUNT/UNIT, e.g. 100/s, 6000/m or "
                                     "10/5s"),
    (["x", "--rate", "0." + "0" * 320 + "1/s"], None),  # more than 0, but its interval is infinite
    (["x", "--rate", "1/25h"], "--rate '1/25h' is less than one start a day: the slowest rate is 1/24h"),
    (["x", "--rate", "5/s", "--burst", "0"], "--burst must be between 1 and 100000, got 0"),
    (["x", "--burst", "3"], "a limit needs --concurrency N, --rate COUNT/UNIT, or both"),
    (["x", "--concurrency", "1", "--adaptive"], "--adaptive only applies with --rate"),
    (["x.>", "--concurrency", "1"], "PATTERN 'x.>' must be a task type or fnmatch pattern of letters, digits and "
                                    "_-:. with * ? [ ] (for example email:*)"),
    (["x", "--queue", "Q >", "--concurrency", "1"], "--queue 'Q >' must be a task type or fnmatch pattern of "
                                                    "letters, digits and _-:. with * ? [ ] (for example email:*)"),
    (["a" * 5000, "--concurrency", "1"], "PATTERN 'aaaaaaaaaaaaaaaaaaaa...' is 5000 characters long: at most 200"),
])
def test_absurd_limits_are_one_line_and_store_nothing(nats_server: NatsServer, args: list[str],
                                                      message: str | None) -> None:
    """What tests/limits/test_cli.py does not cover yet; each is refused before anything is written."""
    before = cli(nats_server, "limit", "list", "--json")
    done = cli(nats_server, "limit", "set", *args)
    assert done.returncode == 2, done
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    if message is not None:
        assert done.stderr.strip() == f"error: {message}"
    else:
        assert done.stderr.startswith("error: --rate '0.000"), done.stderr
    after = cli(nats_server, "limit", "list", "--json")
    assert {r["id"] for r in json.loads(after.stdout)} == {r["id"] for r in json.loads(before.stdout)}


async def test_garbage_in_the_limits_bucket_is_logged_once_and_ignored(
        nats_server: NatsServer, nc: Client, unique: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    h = Harness(nc, unique)
    await h.make_queue(lease=2.0, max_run_time=60)
    limited, other = f"lim{unique}", f"other{unique}"
    assert cli(nats_server, "limit", "set", limited, "--concurrency", "1").returncode == 0
    kv = await open_bucket(nc, create=False)
    assert kv is not None
    started = Attempts()
    release = anyio.Event()

    async def limited_work(task: jetbridge.Task) -> Any:
        started.enter(task.id)
        try:
            await release.wait()
        finally:
            started.running -= 1
        return "ok"

    async def other_work(task: jetbridge.Task) -> Any:
        return "ok"

    # written by hand, only for this test's queue (the server is shared); each one used to crash or stall something
    garbage = {
        f"def.{limit_id(f'gone{unique}', '*')}": b"{not json",
        # valid JSON: every type on the queue, a concurrency that makes the permit scan raise
        f"def.{limit_id('*', h.queue)}": json.dumps({"types": "*", "queues": h.queue, "concurrency": -1}).encode(),
        # a rate whose GCRA interval overflows
        f"def.{limit_id('*', h.queue + '*')}": json.dumps({"types": "*", "queues": h.queue + "*",
                                                           "rate": 1e-300}).encode(),
        # not a slot number: ended the KV watch, again at every restart
        f"permit.{limit_id(limited, '*')}.x{unique}": msgspec.json.encode(
            Permit(task="hand", dispatcher="made", expires=now_ns() + 3600 * 10**9)),
    }
    log = tmp_path / "d.log"
    monkeypatch.setenv("LIMITS_TEST_LOG", str(log))
    monkeypatch.setenv("LIMITS_TEST_LOG_LEVEL", "info")
    try:
        async with h.service({limited: limited_work, other: other_work}):
            d = start_dispatcher(nats_server, h, dispatcher_id=f"g{unique}")
            try:
                await h.run(other, timeout=60)  # serving, and following the bucket
                for key, value in garbage.items():
                    await kv.put(key, value)
                first, second = await h.producer.enqueue(limited), await h.producer.enqueue(limited)
                with anyio.fail_after(60):
                    assert await started.starts.receive() in (first, second)
                for task_id in await h.producer.enqueue_many([jetbridge.TaskSpec(type=other) for _ in range(20)]):
                    assert isinstance(task_id, str)
                    assert (await h.producer.wait(task_id, timeout=60)).state == "complete"
                assert started.running == 1, "the limit of 1 no longer holds"
                listed = cli(nats_server, "limit", "list", "--json")  # a slot key without a number made it raise
                assert listed.returncode == 0 and "Traceback" not in listed.stderr, listed.stderr
                mine = [r for r in json.loads(listed.stdout) if unique in str(r["types"]) + str(r["queues"])]
                assert [(r["types"], r["running"]) for r in mine] == [(limited, 1)], mine
                assert cli(nats_server, "limit", "delete", limited).returncode == 0
                with anyio.fail_after(30):  # the dispatcher still follows the bucket: the waiting task starts
                    await started.starts.receive()
                release.set()
                for task_id in (first, second):
                    assert (await h.producer.wait(task_id, timeout=60)).state == "complete"
            finally:
                d.kill()
                d.wait()
    finally:
        for key in garbage:
            await kv.purge(key)
    text = await anyio.Path(log).read_text()
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    bad = Counter(line["key"] for line in lines if line["event"] == "bad_limit_entry")
    assert bad == dict.fromkeys(garbage, 1), bad  # logged once each
    assert not [line for line in lines if line["level"] == "error" or "watch_failed" in line["event"]
                or line["event"] == "limit_check_failed"], text
    assert "Traceback" not in text


async def test_a_renewal_and_the_release_of_one_permit_never_cross(nc: Client, unique: str) -> None:
    """Both orders, sent back to back on one connection (as the renewer and an ending attempt can)."""
    kv = await open_bucket(nc, create=True)
    assert kv is not None
    store = LimitKV(kv, LimitMirror(), f"a{unique}", now_ns)
    for n, renew_first in enumerate((True, False)):
        spec = LimitSpec(types=f"race{n}{unique}", concurrency=1)
        held = await store.take_permit(spec, "t", 1.0, time.monotonic())
        assert held is not None
        renewed: list[bool] = []

        async def renew(held: Any = held, renewed: list[bool] = renewed) -> None:
            renewed.append(await store.renew(held, time.monotonic()))

        async with anyio.create_task_group() as tg:
            for job in ((renew, store.release) if renew_first else (store.release, renew)):
                tg.start_soon(job, *(() if job is renew else (held,)))
        # before: a release sent behind an unacknowledged renewal failed its compare-and-set (the permit stayed
        # held until it expired); a renewal behind the release found the slot empty and called the permit lost
        assert not (await kv.get(held.key)).value, f"renew first: {renew_first}: the permit was not given back"
        assert renewed == [True] and not held.lost


async def test_a_lost_permit_stops_its_attempt_until_given_back_and_never_touches_the_next_holding(
        nc: Client, unique: str) -> None:
    kv = await open_bucket(nc, create=True)
    assert kv is not None
    spec = make_spec(f"held{unique}", "*", 1, None, None)
    await save_spec(kv, spec)
    slot = f"permit.{spec.id}.0"
    stops: list[str] = []
    metrics = Metrics()
    limiter = Limiter(nc, f"a{unique}", metrics, cast(Any, None), on_lost=stops.append)
    worker = QueueWorker(config=QueueConfig(name=f"Q{unique}", lease=0.3, max_run_time=10), limits=Limits(),
                         capacity=10)
    msg = Msg(nc, subject="item", reply="reply")

    def task(task_id: str) -> TaskRecord:
        return TaskRecord(id=task_id, type=spec.types, queue=worker.name, payload=None, max_tries=1, state="new",
                          created="2026-01-01T00:00:00Z", tries=0)

    def holder() -> Permit:
        return limiter.mirror.permits.get(spec.id, {}).get(0) or Permit()

    async with anyio.create_task_group() as tg:
        tg.start_soon(limiter.run)
        await _until(lambda: spec.id in limiter.mirror.specs, 10)
        first = await limiter.admit(worker, msg, task("t1"))
        assert first is not None and len(first.permits) == 1
        # another dispatcher took the slot over (this one was paused past the expiry), perhaps before t1's attempt
        # had even started: the stop is repeated until the attempt ends and gives the permit back
        await kv.put(slot, msgspec.json.encode(Permit(task="other", dispatcher="b", expires=now_ns() + 60 * 10**9)))
        await _until(lambda: stops.count("t1") >= 3, 20)
        assert metrics.registry.get_sample_value("jetbridge_limit_permits_lost_total") == 1  # logged once
        await kv.put(slot, b"")  # ... which gave it back meanwhile
        await _until(lambda: not holder().task, 10)
        second = await limiter.admit(worker, msg, task("t2"))
        assert second is not None and second.permits[0].key == slot
        await first.release()  # t1's attempt ends: nothing of t1's to write, and t2's holding stays listed
        stopped = stops.count("t1")
        renewals = 0
        watcher = await kv.watch(slot)
        try:
            with anyio.fail_after(20):
                async for entry in watcher:
                    if entry is not None and entry.value:
                        assert msgspec.json.decode(entry.value, type=Permit).task == "t2"
                        renewals += 1
                        if renewals == 3:  # the current value, then two renewals: t2's permit is still renewed
                            break
        finally:
            await watcher.stop()  # type: ignore[no-untyped-call]
        assert stops.count("t1") <= stopped + 1 and "t2" not in stops
        await second.release()
        assert not (await kv.get(slot)).value
        tg.cancel_scope.cancel()


def test_what_a_dispatcher_applies_from_the_bucket() -> None:
    from bridge.limits import permit_slot, stored_problem

    good = LimitSpec(types="email:*", concurrency=3)
    assert stored_problem(good, good.id) is None
    assert stored_problem(LimitSpec(types="x", rate=1 / (48 * 3600)), limit_id("x", "*")) is None  # older limits
    for bad in (LimitSpec(types="x"), LimitSpec(types="x", concurrency=-1), LimitSpec(types="x", concurrency=10**12),
                LimitSpec(types="x", rate=1e-300), LimitSpec(types="x", rate=-5.0), LimitSpec(types="x", rate=1e7),
                LimitSpec(types="x", rate=1.0, burst=0), LimitSpec(types="x y", concurrency=1),
                LimitSpec(types="a" * 201, concurrency=1)):
        assert stored_problem(bad, bad.id) is not None, bad
    assert stored_problem(good, "someotherkey") is not None
    assert permit_slot("permit.abc.7") == ("abc", 7)
    for key in ("permit.abc", "permit.abc.x", "permit..1", "permit.abc.-1", "permit.abc.١", "def.abc.1"):
        assert permit_slot(key) is None, key
