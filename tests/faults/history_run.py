"""Runs one generated history on the fault rig and records it for the checker.

:class:`HistoryRun` starts recording handlers (``tests/faults/recording_handler.py``, one process per instance)
and dispatchers that require signed tasks, executes a :func:`tests.faults.generator.plan` op by op at its planned
time (client operations concurrently; faults one at a time), waits (bounded) for the tasks to settle, and collects a
:class:`tests.faults.checker.History`: the handlers' attempt lines, the producer's accepted tasks, every stored
version of every task (a recording stream sources ``CHORIA_AJ_TASKS``, whose own history keeps one message per
task), the final records with their work items and retry schedules, queue limit changes, pauses and kills.
"""

from __future__ import annotations

import base64
import collections
import dataclasses
import hashlib
import re
import sys
import time
from typing import Any

import anyio
import jetbridge
import msgspec
from jetbridge import _names as names
from jetbridge._errors import ConflictError, DuplicateTaskError, JetbridgeError
from jetbridge._requester import Requester
from jetbridge._signing import signing_message
from jetbridge._store import JetStreamError, TaskStore, js_api, js_publish
from jetbridge._task import TaskRecord, decode_task, new_task
from jetbridge._timeutil import parse_ns
from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from bridge.queues import QueueAdmin
from bridge.reconcile import _has_message
from bridge.retries import due_subject, schedule_subject
from tests.faults import checker as ck
from tests.faults.generator import QUEUES, Op, Scale
from tests.faults.history_faults import FaultInjector
from tests.faults.rig import REPO, Proc, Rig, _clean_env, read_tasks

RECORD_STREAM = "JBCHECK_TASKS"
TASK_TYPE = "chk:work"
FAULTS = {"dispatcher_kill", "dispatcher_stop", "handler_kill", "handler_stop", "server_restart", "node_kill"}


def keys(seed: int) -> tuple[str, str]:
    """The run's signing seed and public key (hex), derived from the seed so that a replay signs alike."""
    key = SigningKey(hashlib.sha256(f"jetbridge-checker-{seed}".encode()).digest())
    return key.encode().hex(), key.verify_key.encode().hex()


def verifier(public_key: str) -> Any:
    key = VerifyKey(bytes.fromhex(public_key))

    def verify(c: ck.Content) -> bool:
        doc = new_task(task_id=c.task_id, task_type=c.type, queue=c.queue, payload=base64.b64decode(c.payload),
                       content_type="application/octet-stream", max_tries=c.max_tries, created_ns=0, deadline_ns=None)
        doc.created, doc.deadline = c.created, c.deadline
        try:
            key.verify(signing_message(doc), bytes.fromhex(c.signature))
        except (BadSignatureError, ValueError):
            return False
        return True

    return verify


def content(doc: TaskRecord, seq: int = 0) -> ck.Content:
    return ck.Content(task_id=doc.id, queue=doc.queue, type=doc.type, max_tries=doc.max_tries, created=doc.created,
                      deadline=doc.deadline, payload=base64.b64encode(doc.payload or b"").decode(),
                      signature=doc.signature, state=doc.state, seq=seq)


class HistoryRun(FaultInjector):
    def __init__(self, rig: Rig, seed: int, scale: Scale) -> None:
        assert rig.nc is not None
        self.rig, self.seed, self.scale = rig, seed, scale
        self.nc = rig.nc
        self.rq = Requester(rig.nc)
        self.store = TaskStore(self.rq)
        self.signing_seed, self.public_key = keys(seed)
        self.signed = jetbridge.Producer(rig.nc, signer=jetbridge.Signer(self.signing_seed))
        self.plain = jetbridge.Producer(rig.nc)
        self.log = rig.tmp / "attempts.jsonl"
        self.accepted: dict[str, ck.Accepted] = {}
        self.uncertain: dict[str, ck.Accepted] = {}
        self.versions: list[ck.Content] = []
        self.queue_limits: dict[str, list[tuple[int, int]]] = {q: [(0, rig.max_tries)] for q in rig.queues}
        self.pauses: dict[str, list[tuple[int, int]]] = {}
        self.deaths: dict[str, int] = {}
        self.instance: dict[str, str] = {}
        self.touched: set[str] = set()
        self.reused: set[str] = set()
        self.retried: set[str] = set()
        self.fault_times: list[int] = []
        self.done: list[str] = []  # what was executed, for the report
        #: what the client operations were told when they failed (not anomalies: a careful client handles them)
        self.errors: collections.Counter[str] = collections.Counter()
        self._fault_lock = anyio.Lock()
        self.began = time.time_ns()

    # Setup --------------------------------------------------------------------------------------------------------

    async def start(self) -> None:
        await js_api(self.rq, f"STREAM.CREATE.{RECORD_STREAM}", {
            "name": RECORD_STREAM, "sources": [{"name": names.TASKS_STREAM}], "retention": "limits",
            "storage": "file", "num_replicas": 1, "max_msgs": -1, "max_bytes": -1, "discard": "old"})
        procs = [self._handler(i) for i in range(self.scale.handlers)]
        procs += [self.rig.dispatcher() for _ in range(self.scale.dispatchers)]
        for proc in procs:
            await proc.wait_ready()

    def _handler(self, i: int) -> Proc:
        name = f"recorder{i + 1}"
        env = {**_clean_env(), "NATS_URL": self.rig.urls, "JETBRIDGE_SUBJECT_PREFIX": "jb.faults",
               "CHECK_LOG": str(self.log), "PYTHONPATH": str(REPO)}
        proc = Proc(name, [sys.executable, "-m", "tests.faults.recording_handler"], env, self.rig.logs, b"ready")
        self.rig.handlers.append(proc)
        return self._start_handler(proc)

    def _start_handler(self, proc: Proc) -> Proc:
        self.instance[proc.name] = f"{proc.name}.{proc.starts + 1}"
        proc.env["CHECK_INSTANCE"] = self.instance[proc.name]
        return proc.start()

    # Operations ---------------------------------------------------------------------------------------------------

    def task_id(self, k: int) -> str:
        return f"c{self.seed}-{k}"

    async def execute(self, ops: list[Op]) -> None:
        began = time.monotonic()
        self.began = time.time_ns()
        async with anyio.create_task_group() as tg:
            for op in ops:
                await anyio.sleep(max(0.0, began + op.at - time.monotonic()))  # the planned time of the op
                tg.start_soon(self._run_op, op)

    async def _run_op(self, op: Op) -> None:
        started = f"[at {(time.time_ns() - self.began) / 1e9:7.2f}s] "
        try:
            with anyio.fail_after(60):
                if op.kind in FAULTS:
                    async with self._fault_lock:
                        await getattr(self, op.kind)(op)
                else:
                    await getattr(self, "op_" + op.kind)(op)
            self.done.append(started + op.describe())
        except (JetbridgeError, JetStreamError, TimeoutError) as exc:
            self.done.append(f"{started}{op.describe()} -> {type(exc).__name__}: {str(exc)[:100]}")
            message = re.sub(r"c\d+-\d+", "<id>", re.sub(r"sequence \d+", "sequence <n>", str(exc)))[:90]
            self.errors[f"{op.kind}: {type(exc).__name__}: {message}"] += 1

    async def op_enqueue(self, op: Op) -> None:
        a = op.args
        await self._enqueue(self.task_id(op.task), a["queue"], a["max_tries"], a["signed"], a["dedup"], a["plan"],
                            a["salt"])
        if a["tamper_ms"] is not None:
            await anyio.sleep(a["tamper_ms"] / 1000)
            await self._tamper(self.task_id(op.task))

    async def _enqueue(self, task_id: str, queue: str, max_tries: int, signed: bool, dedup: str | None,
                       plan: list[dict[str, Any]], salt: int) -> None:
        payload = msgspec.json.encode({"plan": plan, "salt": salt})
        acc = ck.Accepted(task_id, queue, max_tries, signed, time.time_ns(), payload=base64.b64encode(payload).decode())
        producer = self.signed if signed else self.plain
        try:
            await producer.enqueue(TASK_TYPE, payload, queue=queue, task_id=task_id, dedup_key=dedup,
                                   max_tries=max_tries)
        except DuplicateTaskError:
            return
        except JetbridgeError:
            self.uncertain[task_id] = dataclasses.replace(acc, acknowledged=False)
            raise
        self.accepted[task_id] = acc
        self.uncertain.pop(task_id, None)
        try:
            doc, _ = await self.store.load(task_id)
            self.versions.append(content(doc))
        except JetbridgeError:
            pass

    async def _tamper(self, task_id: str) -> None:
        """A hostile producer with write access to the store changes the payload of a stored (signed) task."""
        self.touched.add(task_id)
        for _ in range(3):  # a determined attacker tries again when the dispatcher's write won the race
            doc, seq = await self.store.load(task_id)
            doc.payload = msgspec.json.encode({"plan": [{"do": "ok"}], "salt": 0, "tampered": True})
            try:
                await self.store.save(doc, seq)
                return
            except ConflictError:
                continue

    async def op_retry(self, op: Op) -> None:
        self.touched.add(self.task_id(op.task))
        self.retried.add(self.task_id(op.task))  # before the call: a retry that timed out may still have happened
        try:
            await self.signed.retry(self.task_id(op.task))
        except ConflictError:  # refused (running, or changed meanwhile): it did not happen
            self.retried.discard(self.task_id(op.task))
            raise

    async def op_cancel(self, op: Op) -> None:
        self.touched.add(self.task_id(op.task))
        await self.signed.cancel(self.task_id(op.task), reason="cancelled by the checker")

    async def op_reuse(self, op: Op) -> None:
        """Delete the task and enqueue a new one under the same id at once (within the dedup window)."""
        task_id = self.task_id(op.task)
        old = self.accepted.get(task_id)
        if old is None:
            return
        self.touched.add(task_id)
        self.reused.add(task_id)
        await self.signed.delete(task_id)
        self.accepted[task_id] = ck.Accepted(task_id, old.queue, old.max_tries, old.signed, old.accepted_at,
                                             deleted=True, payload=old.payload)
        await self._enqueue(task_id, old.queue, old.max_tries, True, None, op.args["plan"], op.args["salt"])

    async def _item(self, op: Op, other_queue: bool) -> None:
        task_id = self.task_id(op.task)
        acc = self.accepted.get(task_id)
        if acc is None:
            return
        self.touched.add(task_id)
        queue = next(q for q in QUEUES if q != acc.queue) if other_queue else acc.queue
        item = msgspec.json.encode({"kind": 0, "job": task_id})
        await js_publish(self.rq, names.queue_subject(queue, task_id), item)

    async def op_dup_item(self, op: Op) -> None:
        await self._item(op, False)

    async def op_stale_item(self, op: Op) -> None:
        await self._item(op, False)

    async def op_cross_item(self, op: Op) -> None:
        await self._item(op, True)

    async def op_move(self, op: Op) -> None:
        """``task retry --queue OTHER`` of a (signed) task: refused, or the task now belongs to the other queue."""
        task_id = self.task_id(op.task)
        acc = self.accepted.get(task_id)
        if acc is None:
            return
        self.touched.add(task_id)
        self.retried.add(task_id)
        other = next(q for q in QUEUES if q != acc.queue)
        try:
            await self.signed.retry(task_id, queue=other)
        except ConflictError:
            self.retried.discard(task_id)
            raise
        self.accepted[task_id] = dataclasses.replace(acc, queue=other, moved_from=acc.moved_from | {acc.queue})

    async def op_mismatched_item(self, op: Op) -> None:
        """An item on task A's subject whose body names task B (of the same queue, or not)."""
        task_id, job = self.task_id(op.task), self.task_id(op.args["job"])
        acc = self.accepted.get(task_id)
        if acc is None:
            return
        self.touched.update((task_id, job))
        item = msgspec.json.encode({"kind": 0, "job": job})
        await js_publish(self.rq, names.queue_subject(acc.queue, task_id), item)

    async def op_queue_limit(self, op: Op) -> None:
        await QueueAdmin(self.rq).update(op.args["queue"], max_tries=op.args["max_tries"])
        self.queue_limits[op.args["queue"]].append((time.time_ns(), op.args["max_tries"]))

    # Settling and collecting --------------------------------------------------------------------------------------

    def expected(self) -> set[str]:
        return {t for t, a in self.accepted.items() if not a.deleted} | set(self.uncertain)

    async def settle(self, within: float) -> dict[str, ck.Final | None]:
        """Wait (bounded) until every task is terminal or waits on a retry schedule; return the final records.

        With every process up and the faults over, a correct system runs every waiting item within seconds: whatever
        is left at the end of the wait (``within`` is generous) is reported."""
        deadline = time.monotonic() + within
        while True:
            finals = await self.finals(self.expected())
            waiting = [t for t, f in finals.items() if f is not None and f.state not in ck.TERMINAL
                       and not f.has_schedule]
            if not waiting or time.monotonic() >= deadline:
                return finals
            await anyio.sleep(1.0)  # the store is polled: the tasks end on their own time

    async def finals(self, ids: set[str]) -> dict[str, ck.Final | None]:
        records = await read_tasks(self.nc, ids)
        out: dict[str, ck.Final | None] = {}
        for task_id, doc in records.items():
            if doc is None:
                out[task_id] = None
                continue
            item = schedule = False
            if not doc.task_state.terminal:
                item = await _has_message(self.rq, names.queue_stream(doc.queue), names.queue_subject(doc.queue, doc.id))
                # a due retry waiting for the mover is an item like any other: only a retry time ahead is a reason
                schedule = await self._due_later(doc.queue, doc.id)
                item = item or await _has_message(self.rq, names.SCHEDULE_STREAM, due_subject(doc.queue, doc.id))
            result = doc.result.value() if doc.result is not None else None
            note = await self._where(doc.queue, doc.id) if item and not schedule else ""
            out[task_id] = ck.Final(doc.state, doc.tries, result, base64.b64encode(doc.payload or b"").decode(),
                                    item, schedule, doc.last_err, note)
        return out

    async def _where(self, queue: str, task_id: str) -> str:
        """The work item's stream sequence against the queue consumer's delivery state."""
        try:
            msg = await js_api(self.rq, f"STREAM.MSG.GET.{names.queue_stream(queue)}",
                               {"last_by_subj": names.queue_subject(queue, task_id)})
            info = await js_api(self.rq, f"CONSUMER.INFO.{names.queue_stream(queue)}.{names.QUEUE_CONSUMER}")
        except (JetStreamError, JetbridgeError) as exc:
            return f"[item: {exc}]"
        m = msg.get("message", {})
        body = base64.b64decode(m.get("data") or b"").decode(errors="replace")
        return (f"[item seq {m.get('seq')} at {m.get('time')} body {body}; consumer delivered stream seq "
                f"{info.get('delivered', {}).get('stream_seq')}, ack floor {info.get('ack_floor', {}).get('stream_seq')},"
                f" pending {info.get('num_pending')}, ack pending {info.get('num_ack_pending')}, redelivered "
                f"{info.get('num_redelivered')}]")

    async def _due_later(self, queue: str, task_id: str) -> bool:
        """Whether the task has a retry schedule whose time is still ahead (a few seconds of slack)."""
        try:
            reply = await js_api(self.rq, f"STREAM.MSG.GET.{names.SCHEDULE_STREAM}",
                                 {"last_by_subj": schedule_subject(queue, task_id)})
        except JetStreamError:
            return False
        raw = base64.b64decode(reply.get("message", {}).get("hdrs") or b"").decode(errors="replace")
        found = re.search(rf"{names.H_SCHEDULE}:\s*@at\s+(\S+)", raw)
        if found is None:
            return True  # not a timed schedule: leave the judgement to the rest of the history
        try:
            return parse_ns(found.group(1)) > time.time_ns() - 5 * 1_000_000_000
        except ValueError:
            return True

    async def stored_versions(self) -> list[ck.Content]:
        """Every version the recording stream sourced from the task store (waits, bounded, for it to catch up)."""
        with anyio.move_on_after(20):
            while True:
                tasks = await js_api(self.rq, f"STREAM.INFO.{names.TASKS_STREAM}")
                mine = await js_api(self.rq, f"STREAM.INFO.{RECORD_STREAM}")
                lag = [s.get("lag", 0) for s in mine.get("sources") or []]
                if not any(lag) and mine["state"]["last_seq"] >= 1 and tasks["state"]["last_seq"] >= 1:
                    break
                await anyio.sleep(0.5)
        last = int((await js_api(self.rq, f"STREAM.INFO.{RECORD_STREAM}"))["state"]["last_seq"])
        out: list[ck.Content] = []
        limiter = anyio.Semaphore(64)

        async def one(seq: int) -> None:
            async with limiter:
                try:
                    reply = await js_api(self.rq, f"STREAM.MSG.GET.{RECORD_STREAM}", {"seq": seq})
                    out.append(content(decode_task(base64.b64decode(reply["message"]["data"])), seq))
                except (JetStreamError, JetbridgeError, KeyError, ValueError, msgspec.DecodeError):
                    pass  # a delete marker, or a document that is not a task

        async with anyio.create_task_group() as tg:
            for seq in range(1, last + 1):
                tg.start_soon(one, seq)
        return out

    async def collect(self, finals: dict[str, ck.Final | None]) -> ck.History:
        versions = self.versions + await self.stored_versions()
        ended = time.time_ns()
        for proc in self.rig.dispatchers + self.rig.handlers:
            await proc.kill()
        raw = await anyio.Path(self.log).read_bytes()
        lines = [msgspec.json.decode(line) for line in raw.splitlines() if line.strip()]
        tasks = dict(self.accepted)
        for task_id, acc in self.uncertain.items():
            if finals.get(task_id) is not None:
                tasks[task_id] = acc
        return ck.History(attempts=ck.attempts_from_lines(lines), tasks=tasks, versions=versions, finals=finals,
                          queue_limits=self.queue_limits, pauses=self.pauses, deaths=self.deaths,
                          signed_queues=frozenset(self.rig.queues), touched=frozenset(self.touched), reused=frozenset(self.reused),
                          retried=frozenset(self.retried),
                          faults=self.fault_times, ended=ended, began=self.began)
