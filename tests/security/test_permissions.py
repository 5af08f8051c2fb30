"""Least privilege: each role works with exactly the permission set docs/security.md documents, and no more.

The server runs the documented configuration verbatim (the ``<!-- conf:... -->`` blocks). A dispatcher, a handler
service and a producer, each connected as its own user, run tasks through every path that needs a permission
(attempts with heartbeats and progress, a delayed retry through the schedule stream and the mover, the reconciler
re-queueing an orphan, the CLI enqueueing and waiting) without a single permissions violation. Then the handler and
the producer try what they must not do, and the server refuses each with a permissions violation while the store
and the queues stay as they were.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import anyio
import jetbridge
import msgspec
import pytest
from jetbridge._errors import TransportError
from jetbridge._requester import Requester
from jetbridge._store import TaskStore
from jetbridge._task import new_task
from jetbridge._timeutil import NS, now_ns
from nats.aio.client import Client

from bridge.connect import connect
from bridge.embedded import NatsServer
from bridge.queues import QueueAdmin, QueueConfig
from bridge.settings import Settings

from .conftest import Cli, running_dispatcher, running_service, start_server
from .natsauth import documented_blocks

pytestmark = pytest.mark.anyio

QUEUE, OTHER_QUEUE = "EMAIL", "BILLING"
DISPATCHER_ID, PREFIX, SERVICE, TASK_TYPE = "d1", "jetbridge.task", "email-svc", "email:send"
PRODUCER_INBOX = "_INBOX.web"
HANDLER_INBOX = "_INBOX.email-svc"  # heartbeat acks (protocol 1.1) arrive here
ROLES = ("admin", "dispatcher", "handler", "producer")


class Violations:
    """Collects a connection's async errors; waits for a given permissions violation."""

    def __init__(self) -> None:
        self.messages: list[str] = []
        self._changed = anyio.Event()

    async def error_cb(self, exc: BaseException) -> None:
        self.messages.append(str(exc))
        changed, self._changed = self._changed, anyio.Event()
        changed.set()

    def permission_errors(self) -> list[str]:
        # nats-py lowercases the server's "-ERR 'Permissions Violation for Publish to "X"'" (the subject too)
        return [m for m in self.messages if "permissions violation" in m.lower()]

    async def expect(self, kind: str, subject: str, within: float = 5.0) -> None:
        """Wait until the server refuses ``kind`` (``Publish`` or ``Subscription``) to ``subject``."""
        needle = f'permissions violation for {kind} to "{subject}"'.lower()
        with anyio.fail_after(within):
            while not any(needle in m.lower() for m in self.messages):
                await self._changed.wait()


@dataclass
class Site:
    server: NatsServer
    passwords: dict[str, str]

    def settings(self, role: str, **overrides: Any) -> Settings:
        base = Settings(server=self.server.url, user=role, password=self.passwords[role])
        return replace(base, **overrides)

    def cli_args(self, role: str) -> list[str]:
        return ["--server", self.server.url, "--user", role]

    def cli_env(self, role: str, **extra: str) -> dict[str, str]:
        return {"JETBRIDGE_PASSWORD": self.passwords[role], **extra}


def documented_config() -> str:
    blocks = documented_blocks()
    missing = {"dispatcher", "handler", "producer", "users"} - set(blocks)
    assert not missing, f"docs/security.md lacks the config blocks {sorted(missing)}"
    return "\n".join(blocks[name] for name in ("dispatcher", "handler", "producer", "users"))


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    passwords = {role: f"{role}-{os.urandom(8).hex()}" for role in ROLES}
    with pytest.MonkeyPatch.context() as mp:  # the documented config reads the passwords from the environment
        for role, password in passwords.items():
            mp.setenv(f"{role.upper()}_PASSWORD", password)
        server = start_server(tmp_path / "nats", documented_config())
    yield Site(server, passwords)
    server.stop()


@asynccontextmanager
async def as_role(site: Site, role: str, **overrides: Any) -> AsyncIterator[tuple[Client, Violations]]:
    violations = Violations()
    nc = await connect(site.settings(role, **overrides), error_cb=violations.error_cb)
    try:
        yield nc, violations
    finally:
        await nc.close()


async def make_queues(admin: Client) -> QueueAdmin:
    queues = QueueAdmin(Requester(admin))
    for name in (QUEUE, OTHER_QUEUE):
        await queues.add(QueueConfig(name=name, retry="fixed:0.05", lease=1.0, max_run_time=10.0))
    return queues


def dispatcher_settings(site: Site, **overrides: Any) -> Settings:
    return site.settings("dispatcher", dispatcher_id=DISPATCHER_ID, queues=(QUEUE,), subject_prefix=PREFIX,
                         create_queues=False, no_handler_delay=0.1, shutdown_grace=5.0, **overrides)


async def test_the_documented_config_is_valid_and_nothing_else_gets_in(site: Site) -> None:
    """Sanity: the users exist with their passwords, an unknown user or a wrong password is refused."""
    for role in ROLES:
        async with as_role(site, role) as (nc, _):
            assert nc.is_connected
    with pytest.raises(TransportError, match="Authorization Violation"):
        await connect(replace(site.settings("dispatcher"), password=site.passwords["handler"]))


async def test_each_role_works_with_exactly_its_set(site: Site, cli: Cli) -> None:
    attempts: dict[str, int] = {}
    blocking, cancelled = anyio.Event(), anyio.Event()

    async def send(task: jetbridge.Task) -> Any:
        attempts[task.id] = task.attempt
        mode = task.payload.get("mode") if isinstance(task.payload, dict) else None
        if mode == "block":  # runs until an operator cancels it: the dispatcher's cancel must reach the handler
            blocking.set()
            try:
                await anyio.sleep_forever()
            finally:
                if task.cancel_reason == "operator":
                    cancelled.set()
        if mode == "later" and task.attempt == 1:
            raise jetbridge.Retry("try again in a second", after=1.1)  # a scheduled retry: schedule stream + mover
        await task.heartbeat(0.5, "half way")
        await anyio.sleep(0.7)  # several heartbeats at lease 1s
        return {"sent": task.payload, "attempt": task.attempt}

    async with as_role(site, "admin") as (admin, admin_errors):
        await make_queues(admin)
        # A global limit on the type (never reached here): the dispatcher follows KV JETBRIDGE_LIMITS and takes,
        # renews and gives back a permit per attempt with the permissions docs/security.md lists (issue 18).
        from bridge.limit_store import open_bucket, save_spec
        from bridge.limits import make_spec

        limits = await open_bucket(admin, create=True)
        assert limits is not None
        await save_spec(limits, make_spec(TASK_TYPE, "*", 20, "1000/s", 100))
        # An orphan: a task in the store, an hour old, without a work item. The reconciler must re-queue it.
        store = TaskStore(Requester(admin))
        orphan = new_task(task_id="orphan-1", task_type=TASK_TYPE, queue=QUEUE, payload=b'{"mode": "orphan"}',
                          content_type="application/json", max_tries=3, created_ns=now_ns() - 3600 * NS,
                          deadline_ns=None)
        await store.create(orphan)

        settings = dispatcher_settings(site, reconcile_interval=1.0)
        async with as_role(site, "dispatcher", dispatcher_id=DISPATCHER_ID) as (nc_d, d_errors), \
                as_role(site, "handler", inbox_prefix=HANDLER_INBOX) as (nc_h, h_errors), \
                as_role(site, "producer", inbox_prefix=PRODUCER_INBOX) as (nc_p, p_errors):
            async with running_dispatcher(nc_d, settings), running_service(nc_h, SERVICE, PREFIX, {TASK_TYPE: send}):
                producer = jetbridge.Producer(nc_p, queue=QUEUE)
                plain = await producer.enqueue(TASK_TYPE, {"mode": "now"})
                later = await producer.enqueue(TASK_TYPE, {"mode": "later"})
                done = [await producer.wait(tid, timeout=30) for tid in (plain, later)]
                done.append(await producer.wait(orphan.id, timeout=30))
                fetched = await producer.get(plain)

                # An operator (admin) cancels a running attempt; the handler hears of it at once.
                blocked = await producer.enqueue(TASK_TYPE, {"mode": "block"})
                with anyio.fail_after(10):
                    await blocking.wait()
                await jetbridge.Producer(admin).cancel(blocked, reason="operator says stop")
                with anyio.fail_after(5):  # well before the attempt's 10 s budget
                    await cancelled.wait()
                stopped = await producer.wait(blocked, timeout=10)

                # The CLI as the producer: enqueue and wait, then task get.
                env = site.cli_env("producer", JETBRIDGE_INBOX_PREFIX=PRODUCER_INBOX)
                enqueued = await cli(*site.cli_args("producer"), "enqueue", TASK_TYPE, '{"mode": "cli"}',
                                     "--queue", QUEUE, "--wait", "20", "--json", env=env)
                assert enqueued.code == 0, enqueued.output
                shown = await cli(*site.cli_args("producer"), "task", "get", enqueued.json()["id"], "--json", env=env)
                assert shown.code == 0, shown.output
                await producer.close()

            for name, errors in (("dispatcher", d_errors), ("handler", h_errors), ("producer", p_errors)):
                assert errors.permission_errors() == [], f"{name} needed more than its set: {errors.messages}"
            # The recorder is not blind: a subject outside the set is reported.
            await nc_h.publish("not.in.the.set", b"")
            await h_errors.expect("Publish", "not.in.the.set")
        assert admin_errors.permission_errors() == []

    assert [(t.state, t.tries) for t in done] == [("complete", 1), ("complete", 2), ("complete", 1)]
    assert done[0].progress == 0.5 and done[0].progress_message == "half way"
    assert (stopped.state, stopped.last_err_code) == ("terminated", "cancelled")
    assert fetched.result is not None and fetched.result.value() == {"sent": {"mode": "now"}, "attempt": 1}
    assert shown.json()["state"] == "complete" and shown.json()["result"]["payload"]["sent"] == {"mode": "cli"}


async def waiting(admin: Client, queue: str) -> tuple[int, int]:
    info = await QueueAdmin(Requester(admin)).info(queue)
    return info.waiting, info.in_flight


async def test_a_handler_cannot_read_or_change_the_store_nor_take_work(site: Site) -> None:
    async with as_role(site, "admin") as (admin, _):
        await make_queues(admin)
        producer = jetbridge.Producer(admin, queue=QUEUE)
        task_id = await producer.enqueue(TASK_TYPE, {"to": "someone@example.com"})
        other_id = await producer.enqueue("billing:charge", {"cents": 100}, queue=OTHER_QUEUE)
        store = TaskStore(Requester(admin), direct=True)
        before, seq = await store.load_raw(task_id)  # the direct get works for the administrator
        assert await waiting(admin, QUEUE) == (1, 0)

        async with as_role(site, "handler", inbox_prefix=HANDLER_INBOX) as (nc, violations):
            reply = "_INBOX.handler.x"
            refused_publishes = [
                f"$JS.API.DIRECT.GET.CHORIA_AJ_TASKS.CHORIA_AJ.T.{task_id}",  # read a task (direct get)
                "$JS.API.STREAM.MSG.GET.CHORIA_AJ_TASKS",                     # read a task (stream get)
                f"CHORIA_AJ.T.{task_id}",                                     # change a task
                f"$JS.API.CONSUMER.MSG.NEXT.CHORIA_AJ_Q_{QUEUE}.WORKERS",     # take its own queue's items
                f"$JS.API.CONSUMER.MSG.NEXT.CHORIA_AJ_Q_{OTHER_QUEUE}.WORKERS",  # or another queue's
                f"$JS.API.CONSUMER.CREATE.CHORIA_AJ_Q_{OTHER_QUEUE}.spy",    # or make a consumer to read them
                f"CHORIA_AJ.Q.{QUEUE}.injected",                              # enqueue
                "jetbridge.control.cancel",                                   # cancel other tasks
            ]
            tampered = before.replace(b'"someone@example.com"', b'"attacker@example.com"')
            for subject in refused_publishes:
                body = tampered if subject.startswith("CHORIA_AJ.T.") else msgspec.json.encode({"last_by_subj": "x"})
                await nc.publish(subject, body, reply=reply)
                await violations.expect("Publish", subject)
            refused_subscriptions = [
                "CHORIA_AJ.T.>",                         # watch task documents being written
                "CHORIA_AJ.Q.>",                         # watch work items being queued
                f"_INBOX.jetbridge.{DISPATCHER_ID}.>",   # the dispatcher's replies: tasks, pulled items
                f"{PREFIX}.billing:charge",              # serve a task type that is not its own
                f"{PREFIX}.>",
            ]
            for subject in refused_subscriptions:
                await nc.subscribe(subject)
                await violations.expect("Subscription", subject)

            # Through the SDK the same refusals surface as errors, not data.
            with pytest.raises(TransportError):
                await TaskStore(Requester(nc), direct=True).load(task_id)

        after, seq_after = await store.load_raw(task_id)
        assert (after, seq_after) == (before, seq)
        assert await waiting(admin, QUEUE) == (1, 0) and await waiting(admin, OTHER_QUEUE) == (1, 0)
        assert (await producer.get(other_id)).state == "new"
        await producer.close()


async def test_a_producer_cannot_consume_work_items(site: Site) -> None:
    async with as_role(site, "admin") as (admin, _):
        await make_queues(admin)
        async with as_role(site, "producer", inbox_prefix=PRODUCER_INBOX) as (nc, violations):
            producer = jetbridge.Producer(nc, queue=QUEUE)
            task_id = await producer.enqueue(TASK_TYPE, {"n": 1})  # allowed: enqueue and get
            assert (await producer.get(task_id)).state == "new"
            assert violations.permission_errors() == []
            assert await waiting(admin, QUEUE) == (1, 0)

            refused_publishes = [
                f"$JS.API.CONSUMER.MSG.NEXT.CHORIA_AJ_Q_{QUEUE}.WORKERS",    # pull its items
                f"$JS.API.CONSUMER.CREATE.CHORIA_AJ_Q_{QUEUE}.mine",         # its own consumer on the queue
                f"$JS.API.CONSUMER.DELETE.CHORIA_AJ_Q_{QUEUE}.WORKERS",      # break the dispatchers' consumer
                f"$JS.API.STREAM.MSG.GET.CHORIA_AJ_Q_{QUEUE}",               # read items by sequence
                f"$JS.API.STREAM.PURGE.CHORIA_AJ_Q_{QUEUE}",                 # drop items
                f"$JS.ACK.CHORIA_AJ_Q_{QUEUE}.WORKERS.1.1.1.0.0",             # acknowledge an item
                f"$JS.API.DIRECT.GET.CHORIA_AJ_TASKS.CHORIA_AJ.T.{task_id}",  # (reads go through MSG.GET only)
                f"CHORIA_AJ.Q.{OTHER_QUEUE}.{task_id}",                       # enqueue on another queue
                f"{PREFIX}.{TASK_TYPE}",                                      # call a handler directly
            ]
            for subject in refused_publishes:
                await nc.publish(subject, b"{}", reply=f"{PRODUCER_INBOX}.x")
                await violations.expect("Publish", subject)
            refused_subscriptions = [
                "CHORIA_AJ.Q.>",
                f"_INBOX.jetbridge.{DISPATCHER_ID}.>",
                f"{PREFIX}.{TASK_TYPE}",                                      # pose as a handler
                "_INBOX.>",
            ]
            for subject in refused_subscriptions:
                await nc.subscribe(subject)
                await violations.expect("Subscription", subject)

            # The SDK refuses on its own too: enqueueing on another queue fails, leaving the task queue_error.
            with pytest.raises(TransportError):
                await producer.enqueue(TASK_TYPE, {"n": 2}, queue=OTHER_QUEUE)
            await producer.close()
        assert await waiting(admin, QUEUE) == (1, 0) and await waiting(admin, OTHER_QUEUE) == (0, 0)


async def test_a_dispatcher_serves_only_its_queues_and_cannot_administer(site: Site) -> None:
    async with as_role(site, "admin") as (admin, _):
        await make_queues(admin)
        async with as_role(site, "dispatcher", dispatcher_id=DISPATCHER_ID) as (nc, violations):
            for subject in (f"$JS.API.CONSUMER.MSG.NEXT.CHORIA_AJ_Q_{OTHER_QUEUE}.WORKERS",
                            f"$JS.API.STREAM.DELETE.CHORIA_AJ_Q_{QUEUE}",
                            "$JS.API.STREAM.PURGE.CHORIA_AJ_TASKS",
                            "$JS.API.STREAM.DELETE.CHORIA_AJ_TASKS"):
                await nc.publish(subject, b"{}", reply=f"_INBOX.jetbridge.{DISPATCHER_ID}.x")
                await violations.expect("Publish", subject)
            for subject in ("_INBOX.>", "jetbridge.hb.d2.*"):
                await nc.subscribe(subject)
                await violations.expect("Subscription", subject)


def test_the_documented_sets_name_no_wildcard_inbox() -> None:
    """No role gets ``_INBOX.>``: with it, one role could read every other role's replies."""
    blocks = documented_blocks()
    for role in ("dispatcher", "handler", "producer"):
        assert '"_INBOX.>"' not in blocks[role], role
