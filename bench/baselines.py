"""Baselines, measured in the same run on the same machine as the scenarios they are compared with.

- raw request-reply: nats-py ``nc.request`` to the Go no-op handler with the dispatcher's concurrency in flight,
  each request a valid ``task_request`` (the handler does the same work as for the dispatcher);
- raw JetStream: ``js.publish_async`` of task-sized messages, then ``fetch(100)`` + ``ack()`` of them from a
  work-queue stream (research/nats.md §1.7 rows b and c);
- the naive per-task loop of research/nats.md §1.7 row e: ``fetch(100)``, then for each job concurrently KV
  create, request, KV update, ack; its responder is the Go no-op handler here;
- asyncjobs itself: bench/go/asyncjobs enqueues N and drains them with an in-process Go no-op handler.

Every loop is bounded in count and in time.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import nats
import nats.errors
from nats.js.api import AckPolicy, ConsumerConfig, KeyValueConfig, RetentionPolicy, StorageType, StreamConfig

from .infra import Children, Proc, Server, go_noop_proc, log
from .workload import task_requests

MAX_SECONDS = 30.0
#: a stored task document is about this big (the no-op task of bench.workload)
DOC_BYTES = 280


def _rate(n: int, seconds: float) -> float:
    return round(n / seconds, 1) if seconds > 0 else 0.0


async def request_reply(noop_bin: str, *, n: int, concurrency: int) -> dict[str, Any]:
    """``concurrency`` coroutines, each sending requests back to back until ``n`` are answered."""
    with Server() as srv, Children() as kids:
        kids.start(go_noop_proc(noop_bin, srv.url))
        nc = await nats.connect(srv.url)
        bodies = task_requests(concurrency)
        for body, headers in bodies[:200]:  # warm-up
            await nc.request("jetbridge.task.noop", body, headers=headers, timeout=5)
        counter = {"n": 0, "errors": 0}
        start = time.perf_counter()

        async def worker(k: int) -> None:
            body, headers = bodies[k]
            while counter["n"] < n and time.perf_counter() - start < MAX_SECONDS:
                counter["n"] += 1
                try:
                    await nc.request("jetbridge.task.noop", body, headers=headers, timeout=10)
                except nats.errors.Error:
                    counter["errors"] += 1

        await asyncio.gather(*(worker(k) for k in range(concurrency)))
        seconds = time.perf_counter() - start
        await nc.close()
    return {"n": counter["n"], "concurrency": concurrency, "errors": counter["errors"], "seconds": round(seconds, 3),
            "requests_per_s": _rate(counter["n"], seconds)}


async def jetstream(n: int) -> dict[str, Any]:
    """``publish_async`` of ``n`` task-sized messages to a work-queue stream, then ``fetch(100)`` + ``ack()``."""
    with Server() as srv:
        nc = await nats.connect(srv.url)
        js = nc.jetstream(timeout=10)
        await js.add_stream(StreamConfig(name="RAW", subjects=["raw.>"], retention=RetentionPolicy.WORK_QUEUE,
                                         storage=StorageType.FILE))
        body = b"x" * DOC_BYTES
        start = time.perf_counter()
        futures = []
        for i in range(n):
            futures.append(await js.publish_async(f"raw.job.{i}", body))
            if time.perf_counter() - start > MAX_SECONDS:
                break
        await asyncio.wait_for(js.publish_async_completed(), MAX_SECONDS)
        pub_seconds = time.perf_counter() - start
        errors = sum(1 for f in futures if f.exception() is not None)
        published = len(futures)

        sub = await js.pull_subscribe("raw.>", durable="workers", stream="RAW",
                                      config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, max_ack_pending=10_000))
        got = 0
        start = time.perf_counter()
        while got < published and time.perf_counter() - start < MAX_SECONDS:
            try:
                msgs = await sub.fetch(100, timeout=2)
            except (TimeoutError, nats.errors.TimeoutError):
                break
            for m in msgs:
                await m.ack()
            got += len(msgs)
        await nc.flush()
        fetch_seconds = time.perf_counter() - start
        await nc.close()
    return {
        "publish_async": {"n": published, "errors": errors, "message_bytes": DOC_BYTES,
                          "seconds": round(pub_seconds, 3), "msgs_per_s": _rate(published, pub_seconds)},
        "fetch_ack": {"n": got, "batch": 100, "seconds": round(fetch_seconds, 3),
                      "msgs_per_s": _rate(got, fetch_seconds)},
    }


async def naive_loop(noop_bin: str, n: int) -> dict[str, Any]:
    """research/nats.md §1.7 (e): fetch(100); per job, concurrently: KV create, request, KV update, ack."""
    with Server() as srv, Children() as kids:
        kids.start(go_noop_proc(noop_bin, srv.url))
        nc = await nats.connect(srv.url)
        js = nc.jetstream(timeout=10)
        await js.add_stream(StreamConfig(name="NAIVE", subjects=["naive.>"], retention=RetentionPolicy.WORK_QUEUE))
        kv = await js.create_key_value(KeyValueConfig(bucket="NAIVE_STATE", history=1))
        for i in range(n):
            await js.publish_async(f"naive.jobs.{i}", b'{"kind":0,"job":"x"}')
        await asyncio.wait_for(js.publish_async_completed(), MAX_SECONDS)
        sub = await js.pull_subscribe("naive.>", durable="dispatch", stream="NAIVE",
                                      config=ConsumerConfig(max_ack_pending=10_000, ack_wait=30))
        bodies = task_requests(100)

        async def handle(k: int, m: Any) -> None:
            key = f"job.{m.metadata.sequence.stream}"
            rev = await kv.create(key, b'{"state":"running"}')
            body, headers = bodies[k]
            r = await nc.request("jetbridge.task.noop", body, headers=headers, timeout=10)
            await kv.update(key, b'{"state":"done","result":' + str(len(r.data)).encode() + b"}", last=rev)
            await m.ack()

        done = 0
        cpu = time.process_time()
        start = time.perf_counter()
        while done < n and time.perf_counter() - start < MAX_SECONDS:
            try:
                msgs = await sub.fetch(100, timeout=2)
            except (TimeoutError, nats.errors.TimeoutError):
                break
            await asyncio.gather(*(handle(k, m) for k, m in enumerate(msgs)))
            done += len(msgs)
        await nc.flush()
        seconds = time.perf_counter() - start
        cpu = time.process_time() - cpu
        await nc.close()
    return {"jobs": done, "batch": 100, "seconds": round(seconds, 3), "jobs_per_s": _rate(done, seconds),
            "cpu_us_per_job": round(cpu * 1e6 / max(done, 1), 1),
            "per_job": "fetch/100 + KV create + request (Go no-op) + KV update + ack"}


def asyncjobs(binary: str, n: int, concurrency: int) -> dict[str, Any]:
    """bench/go/asyncjobs on a fresh server: enqueue ``n`` with 100 in flight, then drain them."""
    with Server() as srv:
        proc = Proc("asyncjobs", [binary, "-server", srv.url, "-n", str(n), "-concurrency", str(concurrency),
                                  "-timeout", "90s"])
        proc.start()
        assert proc.popen is not None
        try:
            proc.popen.wait(120)
        except Exception:  # noqa: BLE001 - a hung baseline is reported, not fatal
            proc.stop()
            return {"error": "asyncjobs did not finish in 120s"}
        lines = [line for line in proc.tail if line.startswith("{")]
        if proc.popen.returncode != 0 or not lines:
            return {"error": f"asyncjobs exited {proc.popen.returncode}: " + "\n".join(list(proc.tail)[-5:])}
        result: dict[str, Any] = json.loads(lines[-1])
    for key, value in list(result.items()):
        if isinstance(value, float):
            result[key] = round(value, 3 if "seconds" in key else 1)
    log(f"asyncjobs: enqueue {result.get('enqueue_tasks_per_s')}/s, drain {result.get('drain_tasks_per_s')}/s")
    return result
