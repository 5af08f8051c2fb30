"""The fault-matrix rig: real nats-servers, dispatchers and conformance handlers as processes, a steady load, and
a ledger of every task's fate.

Everything is a real process that can be signalled: dispatchers run as ``python -m bridge run``, handlers as
``interop/python/conformance.sh`` (two replicas by default), nats-servers through :class:`bridge.embedded.NatsServer`.
The test process produces tasks at a steady rate and watches two event streams: the dispatcher's task-state events
(``CHORIA_AJ.E.task_state.*``) and the conformance handlers' ``started`` events, one per handler execution.

At the end every task accepted by the producer is read back from the store and judged:

* lost: not in the store;
* stuck: still not terminal when the bounded wait ends;
* wrong: terminal, but not in the state its type must end in (or with the wrong result);
* duplicated completion: completed more than once (two ``complete`` events), or completed with the result of an
  attempt other than its last one (a stale reply stored);
* duplicated execution: one attempt number started twice on the handlers (an attempt sent twice).

Recovery time of a fault: from the moment it was injected until every task that was ``active`` at that moment
reached a terminal state (the longest over a scenario's faults).
"""

from __future__ import annotations

import collections
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import anyio
import msgspec
import nats
from jetbridge import _names as names
from jetbridge._errors import (
    ConfigError,
    DuplicateTaskError,
    JetbridgeError,
    TaskNotFoundError,
)
from jetbridge._events import decode_event
from jetbridge._producer import Producer
from jetbridge._requester import Requester
from jetbridge._store import JetStreamError, TaskStore, js_api, js_publish
from jetbridge._task import TaskRecord, TaskState
from jetbridge._timeutil import NS, parse_ns
from nats.aio.client import Client
from nats.aio.msg import Msg

from bridge.embedded import NatsServer, free_port
from bridge.queues import QueueAdmin, QueueConfig
from bridge.tasks import iter_tasks

REPO = Path(__file__).resolve().parents[2]
CONFORMANCE = REPO / "interop" / "python" / "conformance.sh"
CONFORMANCE_EVENTS = "jetbridge.conformance.events"
PREFIX = "jb.faults"
TERMINAL = {s.value for s in TaskState if s.terminal}


# Processes ------------------------------------------------------------------------------------------------------


class Proc:
    """A child process whose stdout and stderr go to a log file; ``ready`` once a marker line appears.

    Restarting runs the same command again (a new log file per start). Only this object's own pid is ever signalled.
    """

    def __init__(self, name: str, cmd: list[str], env: dict[str, str], log_dir: Path, marker: bytes) -> None:
        self.name = name
        self.cmd = cmd
        self.env = env
        self.log_dir = log_dir
        self.marker = marker
        self.starts = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.tail: collections.deque[str] = collections.deque(maxlen=60)
        self._ready = threading.Event()
        self._log: IO[bytes] | None = None
        self._lock = threading.Lock()

    def start(self) -> Proc:
        assert not self.alive, f"{self.name} is already running"
        self.starts += 1
        self._ready = threading.Event()
        self._log = open(self.log_dir / f"{self.name}.{self.starts}.log", "wb")  # noqa: SIM115 - closed by the pumps
        self.proc = subprocess.Popen(self.cmd, env=self.env, cwd=REPO, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        open_pipes = [2]
        for stream in (self.proc.stdout, self.proc.stderr):
            threading.Thread(target=self._pump, args=(stream, self._ready, self._log, open_pipes), daemon=True).start()
        return self

    def _pump(self, stream: IO[bytes], ready: threading.Event, log: IO[bytes], open_pipes: list[int]) -> None:
        for line in stream:
            with self._lock:
                log.write(line)
            self.tail.append(line.decode(errors="replace").rstrip())
            if self.marker in line:
                ready.set()
        with self._lock:
            open_pipes[0] -= 1
            if open_pipes[0] == 0:
                log.close()
        ready.set()  # the process ended: wake a waiter, which then sees it is not alive

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def wait_ready(self, within: float = 60.0) -> None:
        ok = await anyio.to_thread.run_sync(self._ready.wait, within, abandon_on_cancel=True)
        if not ok or not self.alive:
            tail = "\n".join(list(self.tail)[-25:])
            code = self.proc.poll() if self.proc else None
            raise RuntimeError(f"{self.name} did not become ready within {within}s (exit code {code}):\n{tail}")

    def send(self, sig: int) -> None:
        if self.alive:
            assert self.proc is not None
            self.proc.send_signal(sig)

    async def wait_exit(self, within: float) -> int | None:
        assert self.proc is not None
        try:
            return await anyio.to_thread.run_sync(self.proc.wait, within, abandon_on_cancel=True)
        except subprocess.TimeoutExpired:
            return None

    async def kill(self) -> None:
        """SIGKILL and reap."""
        if self.alive:
            self.send(signal.SIGKILL)
            await self.wait_exit(10)

    def rss_kib(self) -> int | None:
        """Resident set size from /proc/<pid>/status (None when not running)."""
        if not self.alive:
            return None
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        except OSError:
            return None
        return None


def _clean_env() -> dict[str, str]:
    """The test's environment without settings that would leak into the children."""
    return {k: v for k, v in os.environ.items() if not k.startswith("JETBRIDGE_") and k != "NATS_URL"}


# Cluster --------------------------------------------------------------------------------------------------------


def cluster(base: Path, size: int = 3, name: str = "jbfaults") -> list[NatsServer]:
    """``size`` nats-servers with JetStream routed into one cluster, each with its own store and name."""
    cluster_ports = [free_port() for _ in range(size)]
    servers = []
    for i in range(size):
        routes = ",".join(f"nats://127.0.0.1:{p}" for j, p in enumerate(cluster_ports) if j != i)
        servers.append(NatsServer(base / f"n{i + 1}", name=f"n{i + 1}", extra_args=[
            "--cluster", f"nats://127.0.0.1:{cluster_ports[i]}", "--routes", routes, "--cluster_name", name]))
    return servers


async def wait_for_jetstream(nc: Client, within: float = 60.0) -> None:
    """A clustered JetStream answers only once it has a meta leader: ask until it does (bounded)."""
    rq = Requester(nc)
    with anyio.fail_after(within):
        while True:
            try:
                await js_api(rq, "INFO", timeout=2.0)
                break
            except (JetbridgeError, JetStreamError):
                await anyio.sleep(0.25)
    await rq.close()


async def stream_leader(rq: Requester, stream: str) -> str:
    info = await js_api(rq, f"STREAM.INFO.{stream}")
    return str(info.get("cluster", {}).get("leader", ""))


async def wait_stream_current(rq: Requester, stream: str, replicas: int, within: float = 60.0) -> None:
    """Wait (bounded) until the stream has a leader and all its replicas are current again."""
    with anyio.fail_after(within):
        while True:
            try:
                info = await js_api(rq, f"STREAM.INFO.{stream}", timeout=2.0)
                c = info.get("cluster", {})
                peers = c.get("replicas") or []
                if c.get("leader") and len(peers) == replicas - 1 and all(p.get("current") for p in peers):
                    return
            except (JetbridgeError, JetStreamError):
                pass
            await anyio.sleep(0.25)


# Observation ----------------------------------------------------------------------------------------------------


class _StartedEvent(msgspec.Struct):
    event: str
    task_id: str
    attempt: int
    instance: str = ""


_started_decoder = msgspec.json.Decoder(_StartedEvent)


class Observer:
    """Follows task-state events and handler ``started`` events for the tasks of one scenario."""

    def __init__(self, nc: Client) -> None:
        self.nc = nc
        self.state: dict[str, str] = {}
        self.completes: collections.Counter[str] = collections.Counter()
        self.terminal_at: dict[str, float] = {}
        self.starts: collections.Counter[tuple[str, int]] = collections.Counter()
        self.started_at: dict[tuple[str, int], float] = {}
        self.tries: dict[str, int] = {}
        self.executions = 0
        self._next_start = anyio.Event()
        self._terminal_change = anyio.Event()
        self._subs: list[Any] = []

    async def start(self) -> None:
        msgs, size = 5_000_000, 4 << 30
        self._subs = [await self.nc.subscribe(f"{names.EVENT_SUBJECT_PREFIX}.task_state.*", cb=self._on_state,
                                              pending_msgs_limit=msgs, pending_bytes_limit=size),
                      await self.nc.subscribe(CONFORMANCE_EVENTS, cb=self._on_handler_event,
                                              pending_msgs_limit=msgs, pending_bytes_limit=size)]

    async def stop(self) -> None:
        for sub in self._subs:
            try:
                await sub.unsubscribe()
            except Exception:  # noqa: BLE001 - the connection may be gone already
                pass

    async def _on_state(self, msg: Msg) -> None:
        try:
            event = decode_event(msg.data)
        except (msgspec.DecodeError, ValueError):
            return
        self.state[event.task_id] = event.state
        self.tries[event.task_id] = event.tries
        if event.state == TaskState.COMPLETE.value:
            self.completes[event.task_id] += 1
        if event.state in TERMINAL and event.task_id not in self.terminal_at:
            self.terminal_at[event.task_id] = time.monotonic()
            self._terminal_change.set()

    async def _on_handler_event(self, msg: Msg) -> None:
        try:
            event = _started_decoder.decode(msg.data)
        except (msgspec.DecodeError, ValueError):
            return
        if event.event == "started":
            self.starts[(event.task_id, event.attempt)] += 1
            self.started_at.setdefault((event.task_id, event.attempt), time.monotonic())
            self.executions += 1
            self._next_start.set()

    def active(self) -> dict[str, int]:
        """The tasks running now, with their attempt numbers."""
        return {task_id: self.tries.get(task_id, 0) for task_id, state in self.state.items()
                if state == TaskState.ACTIVE.value}

    def resumed_at(self, task_id: str, attempt: int, after: float) -> float | None:
        """When the task went on after attempt ``attempt`` was hit: its next attempt started, or it ended."""
        times = [t for (tid, a), t in self.started_at.items() if tid == task_id and a > attempt and t >= after]
        if task_id in self.terminal_at:
            times.append(self.terminal_at[task_id])
        return min(times, default=None)

    async def next_start(self, within: float = 30.0) -> bool:
        """Wait for the next handler execution to start; False if none starts within ``within`` seconds."""
        self._next_start = anyio.Event()
        with anyio.move_on_after(within):
            await self._next_start.wait()
            return True
        return False

    async def terminal_progress(self, within: float) -> None:
        """Return when another task becomes terminal, or after ``within`` seconds."""
        self._terminal_change = anyio.Event()
        with anyio.move_on_after(within):
            await self._terminal_change.wait()


# The load -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Spec:
    task_id: str
    type: str
    payload: Any
    max_tries: int
    queue: str
    expect: str  # the terminal state it must end in

    def problem(self, record: TaskRecord) -> str | None:
        """Why ``record`` is not the end this task must have (None when it is)."""
        if record.state != self.expect:
            return f"{self.task_id} ({self.type}) ended {record.state}, expected {self.expect}: {record.last_err}"
        if self.expect != "complete":
            return None
        value = record.result.value() if record.result is not None else None
        if self.type == "conf:echo":
            return None if value == self.payload else f"{self.task_id}: echo result {value!r} != payload {self.payload!r}"
        if not isinstance(value, dict) or "attempt" not in value:
            return f"{self.task_id}: result {value!r} has no attempt"
        return None


def mix(prefix: str, n: int, queues: Sequence[str], *, seed: int = 1, kinds: str = "mixed") -> list[Spec]:
    """``n`` tasks: mostly short sleeps (so faults hit running attempts), echoes, planned failures that succeed on
    a later attempt, terminations, and tasks that exhaust their tries. ``kinds="echo"`` is for the soak."""
    rng = random.Random(seed)
    prefix = "".join(c if c.isalnum() else "-" for c in prefix)
    specs = []
    for i in range(n):
        task_id, queue = f"{prefix}-{i}", queues[i % len(queues)]
        slot = i % 20
        if kinds == "echo":
            if slot == 19:
                specs.append(Spec(task_id, "conf:fail", {"times": 1}, 25, queue, "complete"))
            else:
                specs.append(Spec(task_id, "conf:echo", {"i": i}, 25, queue, "complete"))
        elif slot < 11:
            ms = rng.choice((80, 150, 300, 600))
            specs.append(Spec(task_id, "conf:sleep", {"ms": ms, "steps": 3}, 25, queue, "complete"))
        elif slot < 15:
            specs.append(Spec(task_id, "conf:echo", {"i": i, "s": "x" * rng.randint(0, 200)}, 25, queue, "complete"))
        elif slot < 18:
            specs.append(Spec(task_id, "conf:fail", {"times": rng.randint(1, 2)}, 25, queue, "complete"))
        elif slot == 18:
            specs.append(Spec(task_id, "conf:terminate", {"message": "planned"}, 25, queue, "terminated"))
        else:
            specs.append(Spec(task_id, "conf:fail", {"times": 1000}, 3, queue, "expired"))
    return specs


class Load:
    """Enqueues specs at a steady rate, as a careful client would: an enqueue that failed is tried again with the
    same task id, and one that turns out to have been stored already is made sure to be on its queue."""

    def __init__(self, nc: Client, specs: list[Spec], rate: float) -> None:
        self.nc = nc
        self.specs = specs
        self.rate = rate
        self.producer = Producer(nc, queue=specs[0].queue)
        self._rq = Requester(nc)
        self.accepted: list[Spec] = []
        self.enqueue_errors = 0
        self.errors: collections.Counter[str] = collections.Counter()
        self.requeued = 0
        self.done = anyio.Event()
        self._milestones: list[tuple[int, anyio.Event]] = []
        #: index -> event: the load holds before enqueueing that task until the event is set (so that the load
        #: cannot run out before fault j, however long the recovery from fault j-1 took)
        self.gates: dict[int, anyio.Event] = {}

    def reached(self, count: int) -> anyio.Event:
        """An event set once ``count`` tasks are accepted."""
        event = anyio.Event()
        if len(self.accepted) >= count:
            event.set()
        else:
            self._milestones.append((count, event))
        return event

    async def run(self) -> None:
        batch = max(1, int(self.rate / 20))
        started = time.monotonic()
        held = 0.0
        async with anyio.create_task_group() as tg:
            limiter = anyio.Semaphore(400)
            for i in range(len(self.specs)):
                gate = self.gates.get(i)
                if gate is not None and not gate.is_set():
                    hold_from = time.monotonic()
                    await gate.wait()
                    held += time.monotonic() - hold_from
                if i % batch == 0:
                    delay = started + held + i / self.rate - time.monotonic()
                    if delay > 0:
                        await anyio.sleep(delay)  # pacing, not synchronisation
                await limiter.acquire()
                tg.start_soon(self._one, self.specs[i], limiter)
        self.done.set()

    async def _one(self, spec: Spec, limiter: anyio.Semaphore) -> None:
        try:
            for _ in range(240):
                try:
                    await self.producer.enqueue(spec.type, spec.payload, queue=spec.queue, task_id=spec.task_id,
                                                max_tries=spec.max_tries)
                    break
                except DuplicateTaskError:  # an earlier try stored it, and may or may not have queued it
                    await self._ensure_queued(spec)
                    break
                except ConfigError:
                    raise
                except JetbridgeError as exc:
                    self.enqueue_errors += 1
                    self.errors[f"{type(exc).__name__}: {str(exc).replace(spec.task_id, '<id>')[:90]}"] += 1
                    await anyio.sleep(0.5)
            else:
                raise RuntimeError(f"could not enqueue {spec.task_id} in 2 minutes")
        finally:
            limiter.release()
        self.accepted.append(spec)
        for count, event in list(self._milestones):
            if len(self.accepted) >= count:
                event.set()
                self._milestones.remove((count, event))

    async def _ensure_queued(self, spec: Spec) -> None:
        for _ in range(120):
            try:
                record = await self.producer.get(spec.task_id)
                if record.state == TaskState.QUEUE_ERROR.value:
                    await self.producer.retry(spec.task_id)  # the documented way back for a task that missed its queue
                    self.requeued += 1
                elif record.state == TaskState.NEW.value and not await self._has_item(spec):
                    item = msgspec.json.encode({"kind": 0, "job": spec.task_id})
                    await js_publish(self._rq, names.queue_subject(spec.queue, spec.task_id), item)
                    self.requeued += 1
                return
            except (JetbridgeError, JetStreamError):
                await anyio.sleep(0.5)

    async def _has_item(self, spec: Spec) -> bool:
        try:
            await js_api(self._rq, f"STREAM.MSG.GET.{names.queue_stream(spec.queue)}",
                         {"last_by_subj": names.queue_subject(spec.queue, spec.task_id)})
        except JetStreamError:
            return False
        return True


# Fates ----------------------------------------------------------------------------------------------------------


@dataclass
class Fates:
    tasks: int = 0
    lost: list[str] = field(default_factory=list)
    stuck: list[str] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    duplicate_executions: list[str] = field(default_factory=list)
    executions: int = 0
    attempts: int = 0
    states: collections.Counter[str] = field(default_factory=collections.Counter)
    records: dict[str, TaskRecord | None] = field(default_factory=dict, repr=False)

    @property
    def ok(self) -> bool:
        return not (self.lost or self.stuck or self.wrong or self.duplicated or self.duplicate_executions)

    def explain(self) -> str:
        parts = []
        for label in ("lost", "stuck", "wrong", "duplicated", "duplicate_executions"):
            items = getattr(self, label)
            if items:
                parts.append(f"{label} ({len(items)}): " + "; ".join(items[:8]))
        return "\n".join(parts)


async def read_tasks(nc: Client, ids: set[str]) -> dict[str, TaskRecord | None]:
    """The stored record of each id (None: not in the store): one pass over the store, then single reads for any
    the pass missed."""
    found: dict[str, TaskRecord | None] = {}
    if len(ids) > 2000:
        try:
            async for record in iter_tasks(nc):
                if record.id in ids:
                    found[record.id] = record
        except Exception:  # noqa: BLE001 - the single reads below cover whatever the pass missed
            pass
    store = TaskStore(Requester(nc))
    limiter = anyio.Semaphore(100)

    async def one(task_id: str) -> None:
        async with limiter:
            for _ in range(10):
                try:
                    found[task_id], _seq = await store.load(task_id)
                    return
                except TaskNotFoundError:
                    found[task_id] = None
                    return
                except JetbridgeError:
                    await anyio.sleep(0.5)

    async with anyio.create_task_group() as tg:
        for task_id in ids - found.keys():
            tg.start_soon(one, task_id)
    return found


async def settle(nc: Client, observer: Observer, specs: list[Spec], within: float) -> tuple[Fates, float]:
    """Wait (at most ``within`` seconds) until every task is terminal, then judge each one. Returns the fates and when
    the wait ended."""
    ids = {s.task_id for s in specs}
    deadline = time.monotonic() + within
    records: dict[str, TaskRecord | None] = {}
    while True:
        with anyio.move_on_after(max(0.0, min(10.0, deadline - time.monotonic()))):
            while ids - observer.terminal_at.keys():  # events are best effort: the store decides below
                await observer.terminal_progress(1.0)
        pending = ids - {k for k, r in records.items() if r is not None and r.state in TERMINAL}
        records.update(await read_tasks(nc, pending))
        if all(r is not None and r.state in TERMINAL for r in records.values()) or time.monotonic() >= deadline:
            break
        await observer.terminal_progress(1.0)
    ended = time.monotonic()
    fates = Fates(tasks=len(specs), records=records)
    for spec in specs:
        record = records.get(spec.task_id)
        if record is None:
            fates.lost.append(spec.task_id)
            continue
        fates.states[record.state] += 1
        fates.attempts += record.tries
        if record.state not in TERMINAL:
            fates.stuck.append(f"{spec.task_id} ({spec.type}) {record.state} tries={record.tries} {record.last_err}")
            continue
        problem = spec.problem(record)
        if problem:
            fates.wrong.append(problem)
        completes = observer.completes.get(spec.task_id, 0)
        value = record.result.value() if record.result is not None else None
        if completes > 1:
            fates.duplicated.append(f"{spec.task_id}: {completes} complete events")
        elif isinstance(value, dict) and "attempt" in value and record.state == "complete" and value["attempt"] != record.tries:
            fates.duplicated.append(f"{spec.task_id}: stored the result of attempt {value['attempt']}, "
                                    f"but the task ended at attempt {record.tries}")
    for (task_id, attempt), count in observer.starts.items():
        if task_id in ids and count > 1:
            fates.duplicate_executions.append(f"{task_id} attempt {attempt} started {count} times")
    fates.executions = sum(c for (t, _), c in observer.starts.items() if t in ids)
    return fates, ended


# Reporting ------------------------------------------------------------------------------------------------------


@dataclass
class Row:
    scenario: str
    tasks: int
    lost: int
    duplicated: int
    stuck: int
    wrong: int
    dup_exec: int
    executions: int
    faults: int
    recovery: float | None
    seconds: float
    notes: str = ""
    passed: bool = False
    enqueue_errors: dict[str, int] = field(default_factory=dict)
    log_summary: str = ""
    fault_details: list[str] = field(default_factory=list)
    #: the history checker's columns: overlapping attempt pairs and attempts given unverified content
    overlapping: int | None = None
    unverified: int | None = None


ROWS: list[Row] = []


def summarise_logs(log_dir: Path) -> str:
    """The dispatchers' warnings and errors, counted by event (their JSON logs)."""
    counts: collections.Counter[str] = collections.Counter()
    for path in sorted(log_dir.glob("dispatcher*.log")):
        with open(path, "rb") as f:
            for line in f:
                if b'"level": "warning"' not in line and b'"level": "error"' not in line:
                    continue
                try:
                    entry = msgspec.json.decode(line)
                except msgspec.DecodeError:
                    continue
                counts[f"{entry.get('event')}"] += 1
    return ", ".join(f"{n} {event}" for event, n in counts.most_common(8))


class Faults:
    """Records injected faults and what was running at each, to measure recovery: the time from a fault until every
    attempt it hit has been resumed (the task's next attempt started) or its task has ended."""

    def __init__(self, observer: Observer) -> None:
        self.observer = observer
        self.marks: list[tuple[str, float, int, dict[str, int]]] = []
        self.details: list[str] = []

    def mark(self, what: str) -> None:
        self.marks.append((what, time.monotonic(), time.time_ns(), self.observer.active()))

    def _resumed(self, task_id: str, attempt: int, at: float, at_wall: int, record: TaskRecord | None,
                 settled_at: float) -> float | None:
        """When the task went on after the fault (monotonic); None if it had in fact ended before it."""
        seen = self.observer.resumed_at(task_id, attempt, at)
        if seen is not None:
            return seen
        # Its events were lost (the test's own connection was down too): the stored record says when it last moved.
        if record is not None and record.tried:
            try:
                moved = parse_ns(record.tried)
            except ValueError:
                return settled_at
            if moved < at_wall and record.task_state.terminal:
                return None  # it had ended before the fault; only its event went missing
            return at + max(0, moved - at_wall) / NS
        return settled_at

    def recovery(self, settled_at: float, records: dict[str, TaskRecord | None]) -> float | None:
        worst: float | None = None
        self.details = []
        for what, at, at_wall, hit in self.marks:
            running = {t: a for t, a in hit.items()
                       if self._resumed(t, a, at, at_wall, records.get(t), settled_at) is not None}
            ends = {t: (self._resumed(t, a, at, at_wall, records.get(t), settled_at) or settled_at) - at
                    for t, a in running.items()}
            slowest = max(ends, key=ends.__getitem__, default=None)
            took = ends[slowest] if slowest is not None else 0.0
            self.details.append(f"{what}: {len(running)} running, all resumed after {took:.1f}s (slowest {slowest})")
            worst = took if worst is None else max(worst, took)
        return worst


class Rig:
    """Servers, a connection, queues, dispatcher and handler processes, for one scenario."""

    def __init__(self, tmp: Path, servers: list[NatsServer], *, queues: Sequence[str] = ("FQ",), lease: float = 2.0,
                 replicas: int = 1, dispatcher_env: dict[str, str] | None = None, max_run_time: float = 30.0,
                 max_tries: int = -1) -> None:
        self.tmp = tmp
        self.max_run_time = max_run_time
        self.max_tries = max_tries
        self.servers = servers
        self.queues = list(queues)
        self.lease = lease
        self.replicas = replicas
        self.dispatcher_env = dispatcher_env or {}
        self.logs = tmp / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.dispatchers: list[Proc] = []
        self.handlers: list[Proc] = []
        self.nc: Client | None = None
        self.observer: Observer | None = None

    @property
    def urls(self) -> str:
        return ",".join(s.url for s in self.servers)

    async def __aenter__(self) -> Rig:
        async def quiet(exc: Exception) -> None:  # reconnect attempts during outages are expected
            pass

        self.nc = await nats.connect(servers=[s.url for s in self.servers], max_reconnect_attempts=-1,
                                     reconnect_time_wait=0.2, connect_timeout=2, error_cb=quiet)
        if len(self.servers) > 1:
            await wait_for_jetstream(self.nc)
        rq = Requester(self.nc)
        admin = QueueAdmin(rq, replicas=self.replicas)
        for q in self.queues:
            await admin.add(QueueConfig(name=q, lease=self.lease, max_run_time=self.max_run_time, retry="fixed:0.05",
                                        max_tries=self.max_tries,
                                        replicas=self.replicas, max_concurrent=200))
        self.observer = Observer(self.nc)
        await self.observer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        for proc in self.dispatchers + self.handlers:
            await proc.kill()
        if self.observer is not None:
            await self.observer.stop()
        if self.nc is not None:
            try:
                await self.nc.close()
            except Exception:  # noqa: BLE001
                pass

    async def diagnose(self) -> str:
        """What the rig looks like now: for the message of an assertion that found it stalled."""
        assert self.nc is not None and self.observer is not None
        rq = Requester(self.nc)
        lines = [f"processes: {[(p.name, p.alive) for p in self.dispatchers + self.handlers]}",
                 f"servers: {[(s.name or s.url, s.proc is not None and s.proc.poll() is None) for s in self.servers]}",
                 f"task states seen: {collections.Counter(self.observer.state.values())}"]
        streams = [names.TASKS_STREAM, names.SCHEDULE_STREAM] + [names.queue_stream(q) for q in self.queues]
        for stream in streams:
            try:
                info = await js_api(rq, f"STREAM.INFO.{stream}", timeout=2.0)
                lines.append(f"{stream}: {info.get('state', {}).get('messages')} msgs, cluster {info.get('cluster')}")
            except (JetbridgeError, JetStreamError) as exc:
                lines.append(f"{stream}: {exc}")
        for q in self.queues:
            try:
                info = await js_api(rq, f"CONSUMER.INFO.{names.queue_stream(q)}.{names.QUEUE_CONSUMER}", timeout=2.0)
                lines.append(f"{q} WORKERS: pending {info.get('num_pending')} ack_pending {info.get('num_ack_pending')} "
                             f"waiting {info.get('num_waiting')} redelivered {info.get('num_redelivered')} "
                             f"cluster {info.get('cluster')}")
            except (JetbridgeError, JetStreamError) as exc:
                lines.append(f"{q} WORKERS: {exc}")
        for p in self.dispatchers + self.handlers:
            lines.append(f"{p.name} tail: " + " | ".join(list(p.tail)[-3:])[:600])
        await rq.close()
        return "\n".join(lines)

    def dispatcher(self, *, url: str | None = None) -> Proc:
        n = len(self.dispatchers) + 1
        cmd = [sys.executable, "-m", "bridge", "--server", url or self.urls, "run", "--log-format", "json"]
        for q in self.queues:
            cmd += ["--queue", q]
        env = {**_clean_env(), "JETBRIDGE_SUBJECT_PREFIX": PREFIX, "JETBRIDGE_CREATE_QUEUES": "false",
               "JETBRIDGE_NO_HANDLER_DELAY": "1s", "JETBRIDGE_SHUTDOWN_GRACE": "20s", **self.dispatcher_env}
        proc = Proc(f"dispatcher{n}", cmd, env, self.logs, b'"dispatcher_started"')
        self.dispatchers.append(proc)
        return proc.start()

    def handler(self, *, url: str | None = None) -> Proc:
        n = len(self.handlers) + 1
        env = {**_clean_env(), "NATS_URL": url or self.servers[(n - 1) % len(self.servers)].url,
               "JETBRIDGE_SUBJECT_PREFIX": PREFIX, "JETBRIDGE_INSTANCE": f"h{n}", "JETBRIDGE_CONCURRENCY": "64"}
        proc = Proc(f"handler{n}", ["bash", str(CONFORMANCE)], env, self.logs, b"ready")
        self.handlers.append(proc)
        return proc.start()

    async def start(self, *, dispatchers: int = 1, handlers: int = 2) -> None:
        procs = [self.handler() for _ in range(handlers)] + [self.dispatcher() for _ in range(dispatchers)]
        for proc in procs:
            await proc.wait_ready()

    async def restart(self, proc: Proc) -> None:
        proc.start()
        await proc.wait_ready()


#: ``inject(rig, marks, j)``: inject fault ``j`` (``marks.mark`` it) and restore what it broke
FaultPlan = Callable[[Rig, Faults, int], Awaitable[None]]


async def scenario(
    name: str, rig: Rig, *, tasks: int, rate: float, faults: int, inject: FaultPlan, kinds: str = "mixed",
    settle_timeout: float = 120.0, notes: Callable[[], str] | None = None,
) -> tuple[Row, Fates]:
    """Run a steady load of ``tasks`` at ``rate``/s; inject ``faults`` faults spread over the load (fault j once
    j/(faults+1) of the tasks are accepted); wait for every task to end; judge and record the row."""
    assert rig.nc is not None and rig.observer is not None
    specs = mix(name, tasks, rig.queues, kinds=kinds)
    load = Load(rig.nc, specs, rate)
    marks = Faults(rig.observer)
    began = time.monotonic()
    boundaries = [j * tasks // (faults + 1) for j in range(1, faults + 1)]
    load.gates = {b: anyio.Event() for b in boundaries}
    async with anyio.create_task_group() as tg:
        tg.start_soon(load.run)
        for j, boundary in enumerate(boundaries, 1):
            await load.reached(boundary).wait()
            load.gates[boundary].set()  # the load goes on (up to the next boundary) while fault j is injected
            await inject(rig, marks, j)
        await load.done.wait()
    fates, settled_at = await settle(rig.nc, rig.observer, load.accepted, settle_timeout)
    extra = [f"{fates.executions - fates.attempts:+d} executions vs attempts"] if fates.executions else []
    if load.enqueue_errors:
        extra.append(f"{load.enqueue_errors} enqueue retries, {load.requeued} requeued")
    if notes is not None:
        extra.append(notes())
    row = Row(name, fates.tasks, len(fates.lost), len(fates.duplicated), len(fates.stuck), len(fates.wrong),
              len(fates.duplicate_executions), fates.executions, len(marks.marks), marks.recovery(settled_at, fates.records),
              time.monotonic() - began, "; ".join(e for e in extra if e))
    row.passed = fates.ok and len(marks.marks) == faults
    row.enqueue_errors = dict(load.errors)
    row.log_summary = summarise_logs(rig.logs)
    row.fault_details = marks.details
    ROWS.append(row)
    return row, fates
