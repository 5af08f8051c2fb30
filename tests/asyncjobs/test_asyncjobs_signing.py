"""ed25519 task signatures between Jetbridge and asyncjobs, in both directions.

Against asyncjobs v0.3.0 the Go side is asyncjobs' own code: ``ajcompat enqueue --sign`` is ``Client.EnqueueTask``
with ``TaskSigningKey``, ``ajcompat verify`` is ``Client.LoadTaskByID`` with ``TaskVerificationKey`` (and
``TaskSignaturesOptional``), ``ajcompat worker --verify`` is asyncjobs' processor on such a client. Against v0.1.2,
which has no signing, the Go side is interop/asyncjobs/signing_v012.go, a transcription of v0.3.0's scheme.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import jetbridge
import pytest
from jetbridge._requester import Requester
from jetbridge._signing import Verifier, signing_message
from jetbridge._store import TaskStore
from jetbridge._timeutil import NS, format_ns, parse_ns
from nats.aio.client import Client

from tests.asyncjobs.conftest import AJ
from tests.harness import Harness

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(300)]


@pytest.fixture
def h(nc: Client, unique: str) -> Harness:
    return Harness(nc, unique)


@pytest.fixture
def keys() -> tuple[str, str]:
    seed = os.urandom(32).hex()
    return seed, jetbridge.Signer(seed).public_key


async def _edit(nc: Client, task_id: str, change: Callable[[dict[str, Any]], None]) -> None:
    """Change a stored task document in place (what an attacker with write access to the task store can do)."""
    store = TaskStore(Requester(nc))
    raw, seq = await store.load_raw(task_id)
    doc = json.loads(raw)
    change(doc)
    await store.save_raw(task_id, json.dumps(doc).encode(), seq)


async def _tamper(nc: Client, task_id: str, payload: bytes) -> None:
    def swap(doc: dict[str, Any]) -> None:
        doc["payload"] = base64.b64encode(payload).decode()
    await _edit(nc, task_id, swap)


def _shift(member: str, ns: int) -> Callable[[dict[str, Any]], None]:
    def change(doc: dict[str, Any]) -> None:
        doc[member] = format_ns(parse_ns(doc[member]) + ns)
    return change


def _same_instant_in_another_zone(doc: dict[str, Any]) -> None:
    """``created`` rewritten as +02:00 local time: the same UnixNano, so the same signed message."""
    doc["created"] = format_ns(parse_ns(doc["created"]) + 2 * 3600 * NS)[:-1] + "+02:00"


def _set(**members: Any) -> Callable[[dict[str, Any]], None]:
    def change(doc: dict[str, Any]) -> None:
        for key, value in members.items():
            if value is None:
                doc.pop(key, None)
            elif callable(value):
                doc[key] = value(doc[key])
            else:
                doc[key] = value
    return change


# (case, the task's payload, the change to the stored document, other key signs, expected verdict)
CASES: list[tuple[str, Any, Callable[[dict[str, Any]], None] | None, bool, str]] = [
    ("untouched", {"n": 1}, None, False, "valid"),
    ("state, tries, result and last_err changed (not signed)", {"n": 1},
     _set(state="complete", tries=3, last_err="x", result={"payload": 1, "completed": "2026-01-01T00:00:00Z"}),
     False, "valid"),
    ("signature in upper case hex", {"n": 1}, _set(signature=str.upper), False, "valid"),
    ("created in another zone, same instant", {"n": 1}, _same_instant_in_another_zone, False, "valid"),
    ("nil payload stored as empty", None, _set(payload=""), False, "valid"),
    ("payload changed", {"n": 1}, _set(payload=base64.b64encode(b'{"n":2}').decode()), False, "invalid"),
    ("type changed", {"n": 1}, _set(type="sig:other"), False, "invalid"),
    ("queue changed", {"n": 1}, _set(queue="ELSEWHERE"), False, "invalid"),
    ("max_tries changed", {"n": 1}, _set(max_tries=lambda v: v + 1), False, "invalid"),
    ("created 1ns later", {"n": 1}, _shift("created", 1), False, "invalid"),
    ("deadline 1ns later", {"n": 1}, _shift("deadline", 1), False, "invalid"),
    ("deadline removed", {"n": 1}, _set(deadline=None), False, "invalid"),
    ("signature truncated", {"n": 1}, _set(signature=lambda v: v[:-2]), False, "invalid"),
    ("signature not hex", {"n": 1}, _set(signature=lambda v: "zz" + v[2:]), False, "invalid"),
    ("signed with another key", {"n": 1}, None, True, "invalid"),
    ("signature removed (unsigned)", {"n": 1}, _set(signature=None), False, "unsigned"),
]


def _jetbridge_verdict(problem: str | None) -> str:
    if problem is None:
        return "valid"
    return "unsigned" if "is not signed" in problem else "invalid"


def _asyncjobs_verdict(result: dict[str, Any]) -> str:
    if result["valid"]:
        return "valid"
    reason = str(result["reason"])
    if reason == "task is not signed":
        return "unsigned"
    assert reason.startswith("invalid task signature"), reason
    return "invalid"


@pytest.mark.parametrize("signer", ["jetbridge", "asyncjobs"])
async def test_both_sides_accept_and_refuse_the_same_tasks(
    h: Harness, aj: AJ, nc: Client, keys: tuple[str, str], signer: str,
) -> None:
    """Each case is a signed task, possibly changed in the store: Jetbridge's Verifier and asyncjobs agree on it."""
    seed, public = keys
    await h.make_queue()
    other_seed = os.urandom(32).hex()
    ids: list[str] = []
    for _, payload, _, other_key, _ in CASES:
        key = other_seed if other_key else seed
        if signer == "jetbridge":
            producer = jetbridge.Producer(nc, queue=h.queue, signer=jetbridge.Signer(key))
            ids.append(await producer.enqueue("sig:t", payload, max_tries=3, deadline=timedelta(hours=1)))
        else:
            ids.append(await aj.enqueue(h.queue, "sig:t", payload, "--sign", key, "--tries", "3", "--deadline", "1h"))
    for task_id, (_, _, change, _, _) in zip(ids, CASES, strict=True):
        if change is not None:
            await _edit(nc, task_id, change)

    for optional in (False, True):
        verifier = Verifier(public, optional=optional)
        flags = ("--optional",) if optional else ()
        theirs = await aj.lines("verify", "--pub", public, *flags, *ids)
        for task_id, result, (case, _, _, _, expected) in zip(ids, theirs, CASES, strict=True):
            if optional and expected == "unsigned":
                expected = "valid"
            if signer == "jetbridge" and case.startswith("nil payload"):
                expected = "invalid"  # Producer.enqueue(t, None) stores the JSON text null, not asyncjobs' nil
            ours = _jetbridge_verdict(verifier.problem(await h.producer.get(task_id)))
            assert result["task_id"] == task_id
            assert (case, ours, _asyncjobs_verdict(result)) == (case, expected, expected), result


async def test_the_same_key_makes_the_same_signature(h: Harness, aj: AJ, nc: Client, keys: tuple[str, str]) -> None:
    """ed25519 is deterministic: Jetbridge re-signing asyncjobs' task gives asyncjobs' signature byte for byte,
    so both sign the same message. Deadlines written in another zone and nil payloads included."""
    seed, _ = keys
    await h.make_queue()
    signer = jetbridge.Signer(seed)
    tasks = [
        await aj.enqueue(h.queue, "sig:t", {"n": 1}, "--sign", seed),
        await aj.enqueue(h.queue, "sig:t", None, "--sign", seed, "--tries", "0"),
        await aj.enqueue(h.queue, "sig:t", [1, "two"], "--sign", seed, "--deadline", "90m", "--deadline-zone", "-330"),
        await aj.enqueue(h.queue, "sig:t", "x", "--sign", seed, "--deadline", "1h", "--deadline-zone", "120"),
    ]
    for task_id in tasks:
        record = await h.producer.get(task_id)
        assert record.signature and signer.sign(record) == record.signature, task_id
    assert (await h.producer.get(tasks[2])).deadline.endswith("-05:30")  # type: ignore[union-attr]


async def test_go_signed_tasks_are_verified_by_the_dispatcher(
    h: Harness, aj: AJ, nc: Client, keys: tuple[str, str],
) -> None:
    seed, public = keys
    await h.make_queue()
    good = await aj.enqueue(h.queue, "sig:t", {"n": 6}, "--sign", seed, "--tries", "4", "--deadline", "1h")
    no_payload = await aj.enqueue(h.queue, "sig:t", None, "--sign", seed)
    tampered = await aj.enqueue(h.queue, "sig:t", {"n": 7}, "--sign", seed)
    await _tamper(nc, tampered, b'{"n":700}')
    unsigned = await aj.enqueue(h.queue, "sig:t", {"n": 8})
    other_key = await aj.enqueue(h.queue, "sig:t", {"n": 9}, "--sign", os.urandom(32).hex())

    async def run(task: jetbridge.Task) -> Any:
        return {"got": task.payload.data.hex() if isinstance(task.payload, jetbridge.Bytes) else task.payload}

    async with h.dispatcher(verify_key=public), h.service({"sig:t": run}):
        for task_id in (good, no_payload, tampered, unsigned, other_key):
            await h.producer.wait(task_id, timeout=20)

    doc = await aj.get(good)
    assert (doc["state"], doc["result"]["payload"]["got"], doc["max_tries"]) == ("complete", {"n": 6}, 4)
    assert "deadline" in doc
    doc = await aj.get(no_payload)
    assert (doc["state"], doc["payload"], doc["result"]["payload"]["got"]) == ("complete", None, "")
    for task_id, why in ((tampered, "has an invalid signature"), (other_key, "has an invalid signature"),
                         (unsigned, "is not signed and this dispatcher requires signed tasks")):
        doc = await aj.get(task_id)
        assert (doc["state"], doc["tries"]) == ("terminated", 0), doc
        assert doc["last_err"].startswith(f"task {task_id} {why}"), doc["last_err"]
        assert (await h.producer.get(task_id)).last_err_code == "signature"
    info = await h.admin.info(h.queue)
    assert (info.waiting, info.in_flight) == (0, 0)


async def test_jetbridge_signed_tasks_verify_in_go(
    h: Harness, aj: AJ, nc: Client, keys: tuple[str, str],
) -> None:
    seed, public = keys
    await h.make_queue()
    signed = jetbridge.Producer(nc, queue=h.queue, signer=jetbridge.Signer(seed))
    deadline_task = await signed.enqueue("sig:t", {"n": 10}, max_tries=3, deadline=timedelta(hours=1))
    plain_task = await signed.enqueue("sig:t", jetbridge.Bytes(b"\x00\xff", "application/x-thing"))
    unsigned_task = await h.producer.enqueue("sig:t", {"n": 11})

    for task_id in (deadline_task, plain_task):
        if aj.version == "v0.1.2":  # the transcription can show its message; v0.3.0 keeps it private
            go = await aj.json("sign-message", task_id)
            assert go["message"].encode() == signing_message(await h.producer.get(task_id))
        assert (await aj.json("verify", "--pub", public, task_id))["valid"] is True
        assert (await aj.json("verify", "--pub", jetbridge.Signer(os.urandom(32).hex()).public_key, task_id)) == {
            "task_id": task_id, "valid": False, "reason": "invalid task signature"}

    await _tamper(nc, deadline_task, b'{"n":1000}')
    assert (await aj.json("verify", "--pub", public, deadline_task))["reason"] == "invalid task signature"
    assert (await aj.json("verify", "--pub", public, unsigned_task))["reason"] == "task is not signed"
    assert (await aj.json("verify", "--optional", "--pub", public, unsigned_task))["valid"] is True


async def test_asyncjobs_processor_runs_only_jetbridge_tasks_signed_by_its_key(
    h: Harness, aj: AJ, nc: Client, keys: tuple[str, str],
) -> None:
    """v0.3.0's processor with TaskVerificationKey: a good Jetbridge-signed task runs and keeps its signature; a
    tampered, unsigned or wrongly signed one is refused at load (never handled, left ``new``, its item redelivered
    later), where a Jetbridge dispatcher would end it ``terminated``. v0.1.2 cannot verify."""
    if aj.version == "v0.1.2":
        with pytest.raises(AssertionError, match="--verify needs asyncjobs v0.3.0"):
            await aj.json("worker", "--queue", "DEFAULT", "--verify", keys[1])
        return
    seed, public = keys
    await h.make_queue()
    signed = jetbridge.Producer(nc, queue=h.queue, signer=jetbridge.Signer(seed))
    tampered = await signed.enqueue("go:work", {"n": 1})
    await _tamper(nc, tampered, b'{"n":2}')
    unsigned = await h.producer.enqueue("go:work", {"n": 3})
    other = await jetbridge.Producer(nc, queue=h.queue, signer=jetbridge.Signer(os.urandom(32).hex())).enqueue(
        "go:work", {"n": 4})
    good = await signed.enqueue("go:work", {"n": 5})  # last: the processor pulls (and refuses) the others first

    async with aj.start("worker", "--queue", h.queue, "--type", "go:work", "--verify", public, "--count", "1") as w:
        await w.ready()
        lines = await w.objects()
        log = w.stderr()
    assert [line["handled"] for line in lines if "handled" in line] == [good]
    record = await h.producer.get(good)
    assert record.state == "complete" and Verifier(public).problem(record) is None, "asyncjobs kept the signature"
    for task_id, reason in ((tampered, "invalid task signature"), (unsigned, "task is not signed"),
                            (other, "invalid task signature")):
        assert f"Processing job {task_id} failed: loading task failed: {reason}" in log, log
        assert (await h.producer.get(task_id)).state == "new"


async def test_asyncjobs_v012_processor_drops_the_signature(
    h: Harness, aj: AJ, nc: Client, keys: tuple[str, str],
) -> None:
    """v0.1.2's Task has no signature member: its first save of a signed task removes the signature. v0.3.0 keeps it."""
    seed, public = keys
    await h.make_queue()
    task_id = await jetbridge.Producer(nc, queue=h.queue, signer=jetbridge.Signer(seed)).enqueue("go:work", 1)
    signature = (await h.producer.get(task_id)).signature
    async with aj.start("worker", "--queue", h.queue, "--type", "go:work") as worker:
        await worker.ready()
        await worker.objects()
    record = await h.producer.get(task_id)
    assert (record.state, record.signature) == ("complete", "" if aj.version == "v0.1.2" else signature)
