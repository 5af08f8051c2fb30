"""The cluster failover case: a 3-node JetStream cluster loses the node the handlers are connected to.

This case builds its own world beside the language's single-server one (a cluster, an R3 queue, a dispatcher and
two more replicas of the handler), because the rest of the suite must not pay for a cluster. The handlers are
given only the first node's URL: like any NATS client they learn the other nodes from the server's INFO and must
reconnect to one of them when the first node dies (SPEC §2), then finish their work.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import anyio
import jetbridge
import nats
from bridge.dispatcher import Dispatcher
from bridge.embedded import NatsServer, free_port
from bridge.queues import QueueAdmin, QueueConfig
from bridge.settings import Settings
from jetbridge._errors import JetbridgeError
from jetbridge._requester import Requester
from jetbridge._store import JetStreamError, js_api
from nats.aio.client import Client

from .env import EVENTS_SUBJECT, LanguageEnv
from .inbox import Inbox
from .processes import Replica
from .registry import CaseFailure, Registry, check, describe

registry = Registry()
case = registry.case
QUEUE = "CONF_FAILOVER"


def _cluster(base: Path, size: int = 3) -> list[NatsServer]:
    ports = [free_port() for _ in range(size)]
    servers = []
    for i in range(size):
        routes = ",".join(f"nats://127.0.0.1:{p}" for j, p in enumerate(ports) if j != i)
        servers.append(NatsServer(base / f"n{i + 1}", name=f"conf-n{i + 1}", extra_args=[
            "--cluster", f"nats://127.0.0.1:{ports[i]}", "--routes", routes, "--cluster_name", "conformance"]))
    return servers


async def _connect(servers: list[NatsServer]) -> Client:
    async def quiet(exc: Exception) -> None:
        """A node going away is the point of the case; its errors surface as failed waits."""

    return await nats.connect(servers=[s.url for s in servers], error_cb=quiet, max_reconnect_attempts=-1,
                              reconnect_time_wait=0.25)


async def _until_jetstream(nc: Client, within: float) -> None:
    """A clustered JetStream answers only once it has a meta leader: ask until it does (bounded)."""
    rq = Requester(nc)
    try:
        with anyio.fail_after(within):
            while True:
                try:
                    await js_api(rq, "INFO", timeout=2.0)
                    return
                except (JetbridgeError, JetStreamError):
                    await anyio.sleep(0.25)  # noqa: ASYNC110 - an election has no event to await
    except TimeoutError:
        raise CaseFailure(f"the 3-node cluster had no JetStream leader within {within:g}s") from None
    finally:
        await rq.close()


@asynccontextmanager
async def _cluster_world(env: LanguageEnv) -> AsyncIterator[tuple[list[NatsServer], Client, Inbox, list[Replica]]]:
    """Cluster, R3 queue, dispatcher and two replicas ``<lang>-fa``/``-fb`` connected to node 1; all torn down."""
    base = Path(tempfile.mkdtemp(prefix=f"jetbridge-conformance-{env.lang}-cluster-"))
    servers = _cluster(base)
    prefix = f"conf.{env.lang}.fo{secrets.token_hex(3)}"
    async with AsyncExitStack() as stack:
        stack.callback(shutil.rmtree, base, True)
        for server in servers:
            stack.callback(server.kill)
        async def start(server: NatsServer) -> None:
            await anyio.to_thread.run_sync(server.start)

        async with anyio.create_task_group() as starting:
            for server in servers:
                starting.start_soon(start, server)
        nc = await _connect(servers)
        stack.push_async_callback(nc.close)
        await _until_jetstream(nc, 60)
        requester = Requester(nc)
        try:
            await QueueAdmin(requester, replicas=3).add(QueueConfig(
                name=QUEUE, lease=env.timing.lease, retry=env.timing.retry, max_run_time=env.timing.max_run_time,
                replicas=3))
        finally:
            await requester.close()
        dnc = await _connect(servers)
        stack.push_async_callback(dnc.close)
        tg = await stack.enter_async_context(anyio.create_task_group())
        settings = Settings(queues=(QUEUE,), subject_prefix=prefix, create_queues=False, no_handler_delay=0.1,
                            shutdown_grace=2.0, store_replicas=3, dispatcher_id=f"conf-fo-{secrets.token_hex(4)}")
        with anyio.fail_after(env.timing.dispatcher):
            dispatcher: Dispatcher = await tg.start(Dispatcher(dnc, settings).run)
        stack.callback(dispatcher.stop)
        events = await Inbox(nc, EVENTS_SUBJECT).start()
        stack.push_async_callback(events.stop)
        replicas = []
        for suffix in ("fa", "fb"):
            replica = Replica(instance=f"{env.lang}-{suffix}", script=env.script, log_dir=env.log_dir, env={
                **os.environ, "NATS_URL": servers[0].url, "JETBRIDGE_SUBJECT_PREFIX": prefix,
                "JETBRIDGE_INSTANCE": f"{env.lang}-{suffix}", "JETBRIDGE_CONCURRENCY": "8"})
            await replica.start(tg, timeout=env.timing.ready)
            stack.push_async_callback(replica.kill)
            stack.push_async_callback(replica.stop)
            replicas.append(replica)
        yield servers, nc, events, replicas


async def _ended(producer: jetbridge.Producer, task_id: str, within: float, what: str) -> jetbridge.TaskRecord:
    """The task once it ended. The suite's own reads may fail while the cluster elects new leaders (that is the
    dispatcher's and the SDK's business, not the handler's), so a failed read is asked again until ``within``."""
    deadline = anyio.current_time() + within
    last = ""
    while (left := deadline - anyio.current_time()) > 0:
        try:
            return await producer.wait(task_id, timeout=left)
        except TimeoutError:
            break
        except JetbridgeError as exc:  # e.g. the task store's leader is being elected
            last = f" (last read error: {exc})"
            await anyio.sleep(0.5)
    try:
        state = describe(await producer.get(task_id))
    except JetbridgeError as exc:
        state = f"unreadable: {exc}"
    raise CaseFailure(f"{what} did not end within {within:g}s: {state}{last}")


@case("failover:cluster", timeout=180)
async def cluster_failover(env: LanguageEnv) -> None:
    """On a 3-node cluster the node both replicas are connected to is killed while a 3 s conf:sleep runs: the
    replicas reconnect to another node, that task completes, and a task enqueued afterwards completes too."""
    async with _cluster_world(env) as (servers, nc, events, replicas):
        producer = jetbridge.Producer(nc, queue=QUEUE)
        task_id = await producer.enqueue("conf:sleep", {"ms": 3000, "steps": 3}, max_tries=10)
        await events.wait_for(f"`started` event for task {task_id}", timeout=30, event="started", task_id=task_id)
        await anyio.to_thread.run_sync(servers[0].kill)  # SIGKILL: the handlers' node is gone, no goodbye
        record = await _ended(producer, task_id, 90, "the task running during the failover")
        check(record.state == "complete", f"the task running during the failover: {describe(record)}")
        after = await producer.enqueue("conf:echo", {"after": "failover"}, max_tries=10)
        record = await _ended(producer, after, 60, "a task enqueued after the failover")
        check(record.state == "complete", f"a task after the failover: {describe(record)}")
        down = [r.instance for r in replicas if not r.alive]
        check(not down, f"replica(s) {down} exited after losing their server (SPEC §2: reconnect to another node)")
