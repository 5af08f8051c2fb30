"""Task signing: a dispatcher with ``verify_key`` runs signed tasks and ends unsigned or tampered ones ``terminated``
with ``last_err_code = "signature"``, without calling their handler.

(Byte compatibility with asyncjobs' Go signatures is tested elsewhere; this is Jetbridge's own behaviour.)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import jetbridge
import pytest
from jetbridge._errors import ConfigError
from jetbridge._requester import Requester
from jetbridge._store import TaskStore
from jetbridge._timeutil import NS, format_ns
from nacl.signing import SigningKey
from nats.aio.client import Client

from bridge.settings import load_settings
from tests.harness import Harness

pytestmark = pytest.mark.anyio

KEY = SigningKey.generate()
SEED, PUBLIC = KEY.encode().hex(), KEY.verify_key.encode().hex()
OTHER_SEED = SigningKey.generate().encode().hex()


class Calls:
    def __init__(self) -> None:
        self.ids: list[str] = []

    def handler(self) -> Callable[[jetbridge.Task], Awaitable[Any]]:
        async def work(task: jetbridge.Task) -> Any:
            self.ids.append(task.id)
            return {"done": task.payload}

        return work


@pytest.fixture
async def h(nc: Client, unique: str) -> Harness:
    harness = Harness(nc, unique)
    await harness.make_queue()
    return harness


def signed(h: Harness, seed: str = SEED) -> jetbridge.Producer:
    return jetbridge.Producer(h.nc, queue=h.queue, signer=jetbridge.Signer(seed))


async def tamper(h: Harness, task_id: str, **changes: Any) -> None:
    """Change a stored task behind the producer's back, as anyone with write access to the store could."""
    store = TaskStore(Requester(h.nc))
    task, seq = await store.load(task_id)
    for key, value in changes.items():
        setattr(task, key, value)
    await store.save(task, seq)


async def test_signed_tasks_run(h: Harness) -> None:
    calls = Calls()
    producer = signed(h)
    async with h.dispatcher(verify_key=PUBLIC), h.service({"work": calls.handler()}):
        ids = [await producer.enqueue("work", {"n": n}, deadline=timedelta(minutes=5)) for n in range(3)]
        records = [await producer.wait(tid, timeout=20) for tid in ids]
    assert [(r.state, r.tries) for r in records] == [("complete", 1)] * 3
    assert all(len(r.signature) == 128 for r in records)
    assert sorted(calls.ids) == sorted(ids)
    await producer.close()


async def test_unsigned_tasks_are_terminated_with_a_signature_error(h: Harness) -> None:
    calls = Calls()
    async with h.dispatcher(verify_key=PUBLIC), h.service({"work": calls.handler()}):
        record = await h.run("work", {"n": 1})
    assert (record.state, record.last_err_code, record.tries) == ("terminated", "signature", 0)
    assert record.last_err == (f"task {record.id} is not signed and this dispatcher requires signed tasks: "
                               "sign it at enqueue")
    assert calls.ids == []


def _changes(task_type: str, queue: str) -> dict[str, dict[str, Any]]:
    return {
        "payload": {"payload": b'{"n": 2}'},
        "type": {"type": task_type},
        "queue": {"queue": queue},
        "max_tries": {"max_tries": 1000},
        "deadline": {"deadline": format_ns(4_102_444_800 * NS)},
        "created": {"created": format_ns(1_700_000_000 * NS)},
        "id-bound signature": {"signature": ""},
    }


@pytest.mark.parametrize("what", list(_changes("x", "y")))
async def test_tampered_tasks_are_terminated_with_a_signature_error(h: Harness, what: str) -> None:
    calls = Calls()
    producer = signed(h)
    task_id = await producer.enqueue("work", {"n": 1}, max_tries=5)
    other = await producer.enqueue("work", {"n": 3}, max_tries=5)  # an untouched neighbour still runs
    changes = _changes("other-type", f"{h.queue}x")[what]
    if what == "id-bound signature":  # a valid signature of another task, copied over
        changes = {"signature": (await producer.get(other)).signature}
    await tamper(h, task_id, **changes)
    async with h.dispatcher(verify_key=PUBLIC), h.service({"work": calls.handler(), "other-type": calls.handler()}):
        record = await producer.wait(task_id, timeout=20)
        neighbour = await producer.wait(other, timeout=20)
    assert (record.state, record.last_err_code, record.tries) == ("terminated", "signature", 0)
    assert record.last_err == (f"task {task_id} has an invalid signature: it was changed after signing or signed "
                               "with another key")
    assert calls.ids == [other] and neighbour.state == "complete"
    await producer.close()


@pytest.mark.parametrize("signature", ["zz" * 64, "ab" * 10, "not hex at all"])
async def test_malformed_signatures_are_refused(h: Harness, signature: str) -> None:
    calls = Calls()
    producer = signed(h)
    task_id = await producer.enqueue("work", {"n": 1})
    await tamper(h, task_id, signature=signature)
    async with h.dispatcher(verify_key=PUBLIC), h.service({"work": calls.handler()}):
        record = await producer.wait(task_id, timeout=20)
    assert (record.state, record.last_err_code) == ("terminated", "signature") and calls.ids == []
    await producer.close()


async def test_tasks_signed_with_another_key_are_refused(h: Harness) -> None:
    calls = Calls()
    producer = signed(h, OTHER_SEED)
    async with h.dispatcher(verify_key=PUBLIC), h.service({"work": calls.handler()}):
        task_id = await producer.enqueue("work", {"n": 1})
        record = await producer.wait(task_id, timeout=20)
    assert (record.state, record.last_err_code) == ("terminated", "signature") and calls.ids == []
    assert "invalid signature" in record.last_err
    await producer.close()


async def test_optional_signatures_run_unsigned_tasks_but_still_refuse_bad_ones(h: Harness) -> None:
    calls = Calls()
    producer = signed(h)
    bad = await producer.enqueue("work", {"n": 1})
    await tamper(h, bad, payload=b'{"n": 666}')
    async with h.dispatcher(verify_key=PUBLIC, signatures_optional=True), h.service({"work": calls.handler()}):
        unsigned = await h.run("work", {"n": 2})
        good_id = await producer.enqueue("work", {"n": 3})
        good = await producer.wait(good_id, timeout=20)
        refused = await producer.wait(bad, timeout=20)
    assert (unsigned.state, good.state) == ("complete", "complete")
    assert (refused.state, refused.last_err_code) == ("terminated", "signature")
    assert bad not in calls.ids
    await producer.close()


async def test_without_a_verify_key_signatures_are_not_checked(h: Harness) -> None:
    producer = signed(h)
    task_id = await producer.enqueue("work", {"n": 1})
    await tamper(h, task_id, payload=b'{"n": 2}')
    calls = Calls()
    async with h.dispatcher(), h.service({"work": calls.handler()}):
        record = await producer.wait(task_id, timeout=20)
    assert record.state == "complete" and calls.ids == [task_id]
    await producer.close()


def test_verify_key_settings() -> None:
    assert load_settings(env={"JETBRIDGE_VERIFY_KEY": PUBLIC}).verify_key == PUBLIC
    settings = load_settings(env={"JETBRIDGE_VERIFY_KEY": PUBLIC, "JETBRIDGE_SIGNATURES_OPTIONAL": "true"})
    assert settings.signatures_optional is True
    for bad in ("abc", "g" * 64, PUBLIC + "00"):
        with pytest.raises(ConfigError, match="verify_key must be a 64-character hex ed25519 public key"):
            load_settings(env={"JETBRIDGE_VERIFY_KEY": bad})
