"""The scenarios: drain, enqueue, latency, cost and scaling. Each runs on a fresh nats-server.

The dispatcher always runs as its own process (``python -m bridge --server URL run --queue Q``), so its CPU time
and peak RSS are its own; handlers run in their own processes too.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import nats
import nats.errors
from jetbridge._producer import Producer, TaskSpec

from . import profile as pyspy
from .infra import (
    BUILD_DIR,
    Children,
    Proc,
    Server,
    child_pids,
    dispatcher_proc,
    go_noop_proc,
    load_avg,
    log,
    percentile,
    proc_cpu,
    proc_mem_kb,
    py_noop_proc,
)
from .workload import PAYLOAD, check_drained, create_queue, fill, measure_drain, task_requests

QUEUE = "BENCH"


def _kb_to_mb(kb: int | None) -> float | None:
    return round(kb / 1024, 1) if kb else None


async def drain(*, handler: str, n: int, concurrency: int, noop_bin: str | None, dispatchers: int = 1,
                window: int | None = None, limit_s: float = 120.0, py_spy: str | None = None,
                loop: str = "cli", dispatcher_env: dict[str, str] | None = None, processes: int = 1,
                limit: dict[str, Any] | None = None, root: Path | None = None) -> dict[str, Any]:
    """Queue ``n`` no-op tasks, then start the handler and ``dispatchers`` dispatcher processes and time the drain.

    With ``window``, only that many tasks are timed (the queue stays deep); with ``py_spy``, the first dispatcher
    is sampled by py-spy for the whole drain; with ``processes`` > 1, one `jetbridge run --processes N` (each of its
    processes counts as a dispatcher); with ``root``, the dispatcher of that source tree (an older commit).
    """
    result: dict[str, Any] = {"handler": handler, "dispatchers": dispatchers, "concurrency": concurrency,
                              "queue_max_concurrent": concurrency, "dispatcher_runs_as": loop, "load_avg": load_avg()}
    with Server() as srv, Children() as kids:
        nc = await nats.connect(srv.url)
        try:
            await create_queue(nc, QUEUE, concurrency)
            ids = await fill(nc, QUEUE, n)
            if limit is not None:  # a global limit on the tasks' type (issue 18), as `jetbridge limit set` stores it
                from bridge.limit_store import open_bucket, save_spec
                from bridge.limits import make_spec

                kv = await open_bucket(nc, create=True)
                assert kv is not None
                await save_spec(kv, make_spec("noop", "*", limit.get("concurrency"), limit.get("rate"),
                                              limit.get("burst")))
                result["limit"] = limit
            if handler == "go":
                assert noop_bin is not None
                hproc = kids.start(go_noop_proc(noop_bin, srv.url, concurrency))
            else:
                hproc = kids.start(py_noop_proc(srv.url, concurrency))
            # Start every dispatcher before waiting for any, so that they begin together.
            dprocs = [kids.start(dispatcher_proc(srv.url, QUEUE, concurrency, name=f"dispatcher{i + 1}", loop=loop,
                                                 env=dispatcher_env, processes=processes, root=root),
                                 wait=False) for i in range(dispatchers)]
            for p in dprocs:
                p.wait_ready()
            spy = _start_py_spy(py_spy, dprocs[0].pid) if py_spy else None
            procs: dict[str, Proc | int] = {p.name: p for p in dprocs}
            if processes > 1:
                result["processes"] = processes
                procs = {"supervisor": dprocs[0]}
                procs.update({f"dispatcher{i + 1}": pid for i, pid in enumerate(child_pids(dprocs[0].pid))})
            procs.update(handler=hproc, server=srv.pid)
            result.update(await measure_drain(nc, QUEUE, n, procs, limit_s=limit_s, window=window))
            for name, p in procs.items():
                if name.startswith("dispatcher"):
                    mem = p.mem_kb() if isinstance(p, Proc) else proc_mem_kb(p)
                    result.setdefault("dispatcher_peak_rss_mb", {})[name] = _kb_to_mb(mem.get("VmHWM"))
            result["handler_peak_rss_mb"] = _kb_to_mb(hproc.mem_kb().get("VmHWM"))
            if spy is not None:
                result["profile"] = _stop_py_spy(*spy)
            if window is None and "error" not in result:
                result["check"] = await check_drained(nc, QUEUE, ids)
            _summarise_dispatcher_cost(result, [name for name in procs if name.startswith("dispatcher")])
            for p in dprocs:
                errors = [line for line in p.tail if '"level": "error"' in line or "Traceback" in line]
                if errors:
                    result.setdefault("dispatcher_errors", []).extend(errors[-3:])
        finally:
            await nc.close()
    return result


async def limits_cost(*, n: int, concurrency: int, noop_bin: str) -> dict[str, Any]:
    """The dispatcher's CPU per task draining ``n`` Go no-op tasks with no limit, then with a global limit in force
    that never throttles (so only the limit's own work is measured: a permit taken and given back, or a rate token
    taken, each a compare-and-set in KV JETBRIDGE_LIMITS, plus the KV watch traffic). A limit that throttles is
    not timed here: the drain's clock (items leaving the queue stream) would stop while rescheduled tasks wait."""
    cases: dict[str, dict[str, Any] | None] = {
        "none": None, "concurrency_not_throttling": {"concurrency": concurrency},
        "rate_not_throttling": {"rate": "1000000/s", "burst": 100_000}}
    out: dict[str, Any] = {"n": n}
    for name, limit in cases.items():
        run = await drain(handler="go", n=n, concurrency=concurrency, noop_bin=noop_bin, limit=limit)
        out[name] = {k: run.get(k) for k in ("tasks_per_s", "dispatcher_cpu_us_per_task", "limit", "error", "check")
                     if run.get(k) is not None}
    base = (out["none"] or {}).get("dispatcher_cpu_us_per_task")
    for name in cases:
        cost = out[name].get("dispatcher_cpu_us_per_task")
        if base and cost:
            out[name]["cpu_over_none"] = round(cost / base, 2)
    return out


def _summarise_dispatcher_cost(result: dict[str, Any], names: list[str]) -> None:
    cpu = result.get("cpu_us_per_task") or {}
    values = [cpu.get(name) for name in names]
    if values and all(v is not None for v in values):
        total = sum(v for v in values if v is not None)
        result["dispatcher_cpu_us_per_task"] = round(total, 1)
        # One dispatcher is one Python thread: this is its rate if it had a core to itself.
        result["dispatcher_cpu_bound_tasks_per_s"] = round(len(names) * 1e6 / total) if total else None
    rss = result.get("dispatcher_peak_rss_mb") or {}
    if rss:
        result["dispatcher_peak_rss_mb_max"] = max(v for v in rss.values() if v is not None)


def _start_py_spy(binary: str, pid: int) -> tuple[subprocess.Popen[bytes], Path]:
    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    out = BUILD_DIR / "dispatcher-drain.collapsed"  # kept for flame graphs (flamegraph.pl, speedscope)
    out.unlink(missing_ok=True)
    # Blocking sampling (py-spy pauses the process for each sample): complete stacks, at a few % of overhead.
    argv = [binary, "record", "--pid", str(pid), "--format", "raw", "--function", "--rate", "400",
            "--output", str(out)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    return proc, out


def _stop_py_spy(proc: subprocess.Popen[bytes], out: Path) -> dict[str, Any]:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)  # py-spy writes its output on Ctrl-C
    try:
        text = proc.communicate(timeout=30)[0].decode(errors="replace")
    except subprocess.TimeoutExpired:
        proc.kill()
        text = proc.communicate()[0].decode(errors="replace")
    if not out.exists():
        return {"error": "py-spy wrote no profile: " + text.strip()[-500:]}
    parsed = pyspy.parse(out)
    parsed["py_spy"] = [line for line in text.splitlines() if "Samples" in line]
    parsed["collapsed_stacks"] = str(out)
    return parsed


# Enqueue ------------------------------------------------------------------------------------------------------


async def enqueue(*, n: int, chunk: int) -> dict[str, Any]:
    """``Producer.enqueue_many`` of ``n`` no-op tasks, pipelined in chunks of ``chunk``, in this (otherwise idle) process."""
    result: dict[str, Any] = {"n": n, "chunk": chunk, "load_avg": load_avg()}
    with Server() as srv:
        nc = await nats.connect(srv.url)
        try:
            await create_queue(nc, QUEUE, 1000)
            producer = Producer(nc, queue=QUEUE)
            await producer.enqueue_many([TaskSpec(type="noop", payload=PAYLOAD) for _ in range(200)])  # warm-up
            specs = [TaskSpec(type="noop", payload=PAYLOAD) for _ in range(n)]
            server_cpu = proc_cpu(srv.pid)
            cpu = time.process_time()
            start = time.perf_counter()
            results = await asyncio.wait_for(producer.enqueue_many(specs, chunk=chunk), 120)
            seconds = time.perf_counter() - start
            cpu = time.process_time() - cpu
            server_end = proc_cpu(srv.pid)
            if server_cpu is not None and server_end is not None:
                result["server_cpu_us_per_task"] = round((server_end - server_cpu) * 1e6 / n, 1)
            errors = [r for r in results if not isinstance(r, str)]
            await producer.close()
            # The reference: the same documents and publishes, a chunk at a time, every publish of a step in flight.
            await create_queue(nc, "BENCH2", 1000)
            pipe_cpu = time.process_time()
            start = time.perf_counter()
            await fill(nc, "BENCH2", n, events=True)
            pipe_seconds = time.perf_counter() - start
            pipe_cpu = time.process_time() - pipe_cpu
        finally:
            await nc.close()
    result.update(seconds=round(seconds, 3), tasks_per_s=round((n - len(errors)) / seconds, 1), errors=len(errors),
                  producer_cpu_us_per_task=round(cpu * 1e6 / n, 1),
                  per_task="JetStream publish of the task (CAS create) + publish of the work item, each awaiting "
                           "its ack, + a core publish of the lifecycle event")
    result["pipelined_two_phase"] = {
        "tasks_per_s": round(n / pipe_seconds, 1), "cpu_us_per_task": round(pipe_cpu * 1e6 / n, 1),
        "how": "bench.workload.fill: chunks of 2000; all creates in flight, then all work items, then the events"}
    if errors:
        result["first_error"] = str(errors[0])
    return result


# Latency ------------------------------------------------------------------------------------------------------


def _latency_summary(samples_ms: list[float], sent: int, seconds: float) -> dict[str, Any]:
    def r(v: float | None) -> float | None:
        return round(v, 3) if v is not None else None

    return {"sent": sent, "completed": len(samples_ms), "offered_seconds": round(seconds, 2),
            "p50_ms": r(percentile(samples_ms, 50)), "p90_ms": r(percentile(samples_ms, 90)),
            "p99_ms": r(percentile(samples_ms, 99)), "max_ms": r(max(samples_ms) if samples_ms else None)}


async def _open_loop(rate: float, n: int, fire: Any) -> float:
    """Call ``fire(i)`` (a coroutine function, not awaited in turn) ``n`` times at ``rate`` per second."""
    tasks = set()
    start = time.perf_counter()
    for i in range(n):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.ensure_future(fire(i))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    seconds = time.perf_counter() - start
    if tasks:
        await asyncio.wait(tasks, timeout=30)
    return seconds


async def _e2e(nc: Any, rate: int, n: int) -> dict[str, Any]:
    """Enqueue ``n`` tasks at ``rate``; the clock runs from the enqueue call to the ``complete`` event's arrival.

    The phases: ``enqueue`` (the call: two JetStream round trips), ``to_active`` (enqueue returned → ``active``
    event: the item waits, is pulled, the task loaded and saved ``active``), ``to_complete`` (``active`` →
    ``complete`` event: the request to the handler, then the ``complete`` save).
    """
    producer = Producer(nc, queue=QUEUE)
    started: dict[str, float] = {}
    enqueued: dict[str, float] = {}
    active: dict[str, float] = {}
    finished: dict[str, float] = {}
    prefix = f"lat{rate}x"
    all_done = asyncio.Event()

    async def on_event(msg: Any) -> None:
        data = msg.data
        if b'"state":"complete"' in data:
            finished[msg.subject.rsplit(".", 1)[1]] = time.perf_counter()
            if len(finished) >= n:
                all_done.set()
        elif b'"state":"active"' in data:
            active[msg.subject.rsplit(".", 1)[1]] = time.perf_counter()

    sub = await nc.subscribe("CHORIA_AJ.E.task_state.*", cb=on_event, pending_msgs_limit=1_000_000)

    async def fire(i: int) -> None:
        task_id = f"{prefix}{i}"
        started[task_id] = time.perf_counter()
        await producer.enqueue("noop", PAYLOAD, task_id=task_id)
        enqueued[task_id] = time.perf_counter()

    seconds = await _open_loop(rate, n, fire)
    try:
        await asyncio.wait_for(all_done.wait(), 15)
    except TimeoutError:
        pass  # reported as completed < sent
    await sub.unsubscribe()
    await producer.close()
    samples = [(finished[k] - t) * 1000 for k, t in started.items() if k in finished]
    out = _latency_summary(samples, n, seconds)
    phases = {
        "enqueue": [(enqueued[k] - t) * 1000 for k, t in started.items() if k in enqueued],
        "to_active": [(active[k] - t) * 1000 for k, t in enqueued.items() if k in active],
        "to_complete": [(finished[k] - t) * 1000 for k, t in active.items() if k in finished],
    }
    out["phases"] = {name: {"p50_ms": _ms(percentile(v, 50)), "p99_ms": _ms(percentile(v, 99))}
                     for name, v in phases.items()}
    return out


def _ms(v: float | None) -> float | None:
    return round(v, 3) if v is not None else None


async def _raw(nc: Any, rate: int, n: int) -> dict[str, Any]:
    bodies = task_requests(1000)
    samples: list[float] = []
    errors = 0

    async def fire(i: int) -> None:
        nonlocal errors
        body, headers = bodies[i % len(bodies)]
        t = time.perf_counter()
        try:
            await nc.request("jetbridge.task.noop", body, headers=headers, timeout=10)
        except nats.errors.Error:
            errors += 1
            return
        samples.append((time.perf_counter() - t) * 1000)

    seconds = await _open_loop(rate, n, fire)
    out = _latency_summary(samples, n, seconds)
    out["errors"] = errors
    return out


async def latency(*, rates: list[int], seconds: float, noop_bin: str, concurrency: int) -> dict[str, Any]:
    """End-to-end latency (enqueue call → ``complete`` event) at fixed offered rates, and raw request-reply to the
    same Go handler at the same rates, on the same server."""
    result: dict[str, Any] = {"load_avg": load_avg(), "concurrency": concurrency}
    with Server() as srv, Children() as kids:
        nc = await nats.connect(srv.url)
        try:
            await create_queue(nc, QUEUE, concurrency)
            kids.start(go_noop_proc(noop_bin, srv.url, concurrency))
            kids.start(dispatcher_proc(srv.url, QUEUE, concurrency))
            await _e2e(nc, 50, 100)  # warm-up: connections, code paths, the dispatcher's first pulls
            for rate in rates:
                n = int(rate * seconds)
                e2e = await _e2e(nc, rate, n)
                raw = await _raw(nc, rate, n)
                row: dict[str, Any] = {"offered_per_s": rate, "end_to_end": e2e, "raw_request_reply": raw}
                if e2e["p99_ms"] is not None and raw["p99_ms"] is not None:
                    row["overhead_p50_ms"] = round(e2e["p50_ms"] - raw["p50_ms"], 3)
                    row["overhead_p99_ms"] = round(e2e["p99_ms"] - raw["p99_ms"], 3)
                result[f"rate_{rate}"] = row
                log(f"latency at {rate}/s: e2e p50 {e2e['p50_ms']} p99 {e2e['p99_ms']} ms, "
                    f"raw p50 {raw['p50_ms']} p99 {raw['p99_ms']} ms")
        finally:
            await nc.close()
    return result


async def delayed_accuracy(*, n: int, concurrency: int) -> dict[str, Any]:
    """Fire-time accuracy of delayed tasks: ``n`` tasks due within one second, spread over it (i/n s past the
    second), each enqueued with ``at=``. Lateness is the ``active`` event's arrival (the attempt started) minus the
    task's due time; a negative value would be a task started early. The Python no-op handler, so no Go needed."""
    import math
    from datetime import UTC, datetime

    result: dict[str, Any] = {"tasks": n, "concurrency": concurrency, "load_avg": load_avg()}
    with Server() as srv, Children() as kids:
        nc = await nats.connect(srv.url)
        try:
            await create_queue(nc, QUEUE, concurrency)
            kids.start(py_noop_proc(srv.url, concurrency))
            kids.start(dispatcher_proc(srv.url, QUEUE, concurrency))
            producer = Producer(nc, queue=QUEUE)
            due: dict[str, int] = {}
            started: dict[str, int] = {}
            done = asyncio.Event()

            async def on_event(msg: Any) -> None:
                if b'"state":"active"' in msg.data:
                    task_id = msg.subject.rsplit(".", 1)[1]
                    started.setdefault(task_id, time.time_ns())
                    if len(started) >= n:
                        done.set()

            sub = await nc.subscribe("CHORIA_AJ.E.task_state.*", cb=on_event, pending_msgs_limit=1_000_000)
            second = (math.floor(time.time()) + 8) * 1_000_000_000
            t0 = time.perf_counter()
            for start in range(0, n, 100):
                async def one(i: int) -> None:
                    at = second + i * 1_000_000_000 // n
                    task_id = f"delayed{i}"
                    due[task_id] = at
                    await producer.enqueue("noop", PAYLOAD, task_id=task_id,
                                           at=datetime.fromtimestamp(at / 1e9, UTC))
                await asyncio.gather(*(one(i) for i in range(start, min(n, start + 100))))
            result["enqueue_seconds"] = round(time.perf_counter() - t0, 3)
            result["due_in_s_after_enqueue"] = round((second - time.time_ns()) / 1e9, 3)
            try:
                await asyncio.wait_for(done.wait(), (second - time.time_ns()) / 1e9 + 30)
            except TimeoutError:
                pass
            await sub.unsubscribe()
            await producer.close()
            late = [(started[k] - due[k]) / 1e6 for k in due if k in started]
            result.update({
                "started": len(late), "early": sum(1 for v in late if v < 0),
                "p50_late_ms": _ms(percentile(late, 50)), "p99_late_ms": _ms(percentile(late, 99)),
                "max_late_ms": _ms(max(late) if late else None),
            })
            log(f"delayed: {len(late)}/{n} started, lateness p50 {result['p50_late_ms']} ms, "
                f"p99 {result['p99_late_ms']} ms, early {result['early']}")
        finally:
            await nc.close()
    return result


# Experiment ---------------------------------------------------------------------------------------------------


async def uvloop_ab(*, n: int, concurrency: int, noop_bin: str, pairs: int = 1) -> dict[str, Any]:
    """The same drain with the dispatcher in-process on asyncio, then on uvloop (``pairs`` times, alternating)."""
    runs: dict[str, list[dict[str, Any]]] = {"asyncio": [], "uvloop": []}
    for _ in range(pairs):
        for loop in ("asyncio", "uvloop"):
            runs[loop].append(await drain(handler="go", n=n, concurrency=concurrency, noop_bin=noop_bin, loop=loop))
    out: dict[str, Any] = {"n": n, "load_avg": load_avg()}
    for loop, results in runs.items():
        cpu = [r["dispatcher_cpu_us_per_task"] for r in results if r.get("dispatcher_cpu_us_per_task")]
        rate = [r["tasks_per_s"] for r in results if r.get("tasks_per_s")]
        out[loop] = {"dispatcher_cpu_us_per_task": cpu, "tasks_per_s": rate,
                     "load_avg": [r.get("load_avg") for r in results]}
    a, b = out["asyncio"]["dispatcher_cpu_us_per_task"], out["uvloop"]["dispatcher_cpu_us_per_task"]
    if a and b:
        out["uvloop_cpu_over_asyncio_cpu"] = round(min(b) / min(a), 3)
    return out
