"""The Python peers on NATS, measured in the same run as the dispatcher (issue 21): taskiq + taskiq-nats 0.7 and
FastStream 0.7.8, each with the settings of research/peer_bench.md's headline.

They run from a virtual environment of their own, ``.build/bench/peers-venv`` (git-ignored), created here from
``bench/peers/requirements.txt`` (every version pinned) the first time and again only when that file changes.

Each peer gets a fresh nats-server. Its producer process enqueues N no-op tasks with 100 publishes in flight (each
awaiting its PubAck); then its worker process drains them. The drain is timed like the dispatcher's
(:func:`bench.workload.measure_drain`): the clock starts at the first poll that sees a task acknowledged and stops at
the first that sees all acknowledged; CPU is the worker's (all processes of its session) over that window. Loss and
duplicate checks: the stream held exactly N after the enqueue, the handlers ran N calls for N distinct tasks, and
the consumer reports nothing pending, nothing unacknowledged and nothing redelivered.
"""

from __future__ import annotations

import asyncio
import glob
import hashlib
import json
import subprocess
import sys
import time
from typing import Any

import nats

from .infra import BUILD_DIR, CLK_TCK, REPO, Proc, Server, child_env, log

PEERS_DIR = REPO / "bench" / "peers"
VENV = BUILD_DIR / "peers-venv"
REQUIREMENTS = PEERS_DIR / "requirements.txt"

#: stream, durable consumer and how to start the worker, per peer
PEERS: dict[str, dict[str, Any]] = {
    "taskiq": {"stream": "PEER_TASKIQ", "durable": "taskiq_durable", "script": "peer_taskiq.py",
               "worker": ["-m", "taskiq", "worker", "peer_taskiq:broker", "--workers", "1",
                          "--max-async-tasks", "100", "--log-level", "WARNING"],
               "settings": "PullBasedJetStreamBroker(pull_consume_batch=100), taskiq worker --workers 1 "
                           "--max-async-tasks 100 --log-level WARNING; kiq() with 100 in flight"},
    "faststream": {"stream": "PEER_FASTSTREAM", "durable": "faststream_durable", "script": "peer_faststream.py",
                   "worker": ["peer_faststream.py", "worker"],
                   "settings": "subscriber(stream=JStream, pull_sub=PullSub(batch_size=100), max_workers=100), "
                               "log level DEBUG, anyio.run(app.run); publisher.publish() with 100 in flight"},
}


def ensure_venv(timeout: float = 600.0) -> tuple[str | None, str | None]:
    """The peers' Python (creating or updating its venv when the pinned requirements changed); (python, error)."""
    python = VENV / "bin" / "python"
    stamp = VENV / f".installed-{hashlib.sha1(REQUIREMENTS.read_bytes()).hexdigest()[:12]}"
    if stamp.exists():
        return str(python), None
    try:
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True, timeout=300, capture_output=True)
        proc = subprocess.run([str(python), "-m", "pip", "install", "-q", "-r", str(REQUIREMENTS)],
                              capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"could not create the peers' venv: {exc}"
    if proc.returncode:
        return None, f"pip install -r {REQUIREMENTS.name} failed: {proc.stderr.strip()[-500:]}"
    for old in VENV.glob(".installed-*"):
        old.unlink()
    stamp.touch()
    return str(python), None


def session_cpu(sid: int) -> float:
    """User + system CPU seconds of every live process in session ``sid`` (a worker and the children it forks)."""
    total = 0
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            with open(stat) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid:
            total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


async def _consumer(nc: nats.NATS, stream: str, durable: str) -> dict[str, Any]:
    msg = await nc.request(f"$JS.API.CONSUMER.INFO.{stream}.{durable}", b"", timeout=5)
    info: dict[str, Any] = json.loads(msg.data)
    if "error" in info:
        raise RuntimeError(str(info["error"]))
    return info


async def _stream_messages(nc: nats.NATS, stream: str) -> int:
    msg = await nc.request(f"$JS.API.STREAM.INFO.{stream}", b"", timeout=5)
    return int(json.loads(msg.data).get("state", {}).get("messages", -1))


def _handler_stats(prefix: str) -> dict[str, Any]:
    calls, ns = 0, set()
    for path in glob.glob(f"{prefix}.*"):
        if path.endswith(".tmp"):
            continue
        with open(path) as f:
            data = json.load(f)
        calls += data["calls"]
        ns.update(data["ns"])
    return {"calls": calls, "distinct": len(ns), "ns": ns}


async def _wait_stats(prefix: str, n: int, limit_s: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + limit_s
    stats = _handler_stats(prefix)
    while stats["calls"] < n and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        stats = _handler_stats(prefix)
    return stats


async def peer(name: str, n: int, *, limit_s: float = 90.0) -> dict[str, Any]:
    """One run of one peer: enqueue ``n``, then drain them; rates, the worker's CPU per task and the checks."""
    python, error = ensure_venv()
    if error or python is None:
        return {"error": error}
    spec = PEERS[name]
    result: dict[str, Any] = {"peer": name, "settings": spec["settings"], "n": n}
    with Server() as srv:
        stats_prefix = str(srv.dir / "handler-stats")
        env = {**child_env(), "PEER_URL": srv.url, "PEER_STATS": stats_prefix, "PYTHONPATH": str(PEERS_DIR)}
        produced = await asyncio.to_thread(subprocess.run, [python, spec["script"], "produce", str(n)],
                                           cwd=PEERS_DIR, env=env, capture_output=True, text=True, timeout=120)
        lines = [line for line in produced.stdout.splitlines() if line.startswith("{")]
        if produced.returncode or not lines:
            return {**result, "error": f"{name} producer exited {produced.returncode}: {produced.stderr[-800:]}"}
        enqueue = json.loads(lines[-1])
        cpu_s = enqueue.pop("cpu_s")  # the whole producer process, start-up included
        result["enqueue"] = {**enqueue, "producer_cpu_us_per_task": round(cpu_s * 1e6 / n, 1)}
        nc = await nats.connect(srv.url)
        try:
            stored = await _stream_messages(nc, spec["stream"])
            worker = Proc(f"{name}-worker", [python, *spec["worker"]], ready="ready", env=env, cwd=PEERS_DIR)
            try:
                worker.start(60)
                result["drain"] = await _time_drain(nc, spec, n, worker.pid, limit_s)
                stats = await _wait_stats(stats_prefix, n)
                consumer = await _consumer(nc, spec["stream"], spec["durable"])
            finally:
                worker.stop(timeout=5)
        finally:
            await nc.close()
    missing = n - len(stats["ns"] & set(range(n)))
    result["check"] = {
        "stored_after_enqueue": stored, "handler_calls": stats["calls"], "distinct_tasks": stats["distinct"],
        "missing": missing, "duplicates": stats["calls"] - stats["distinct"],
        "num_pending": consumer.get("num_pending"), "num_ack_pending": consumer.get("num_ack_pending"),
        "num_redelivered": consumer.get("num_redelivered"),
    }
    c = result["check"]
    c["ok"] = (stored == n and c["handler_calls"] == n and missing == 0 and c["duplicates"] == 0
               and c["num_pending"] == 0 and c["num_ack_pending"] == 0 and c["num_redelivered"] == 0)
    result["enqueue_tasks_per_s"] = result["enqueue"].get("tasks_per_s")
    result["drain_tasks_per_s"] = result.get("drain", {}).get("tasks_per_s")
    result["worker_cpu_us_per_task"] = result.get("drain", {}).get("worker_cpu_us_per_task")
    if not c["ok"]:
        result["error"] = f"{name}: loss or duplicate check failed: {c}"
    log(f"{name}: enqueue {result['enqueue_tasks_per_s']}/s, drain {result['drain_tasks_per_s']}/s, "
        f"check {'ok' if c['ok'] else 'FAILED'}")
    return result


async def _time_drain(nc: nats.NATS, spec: dict[str, Any], n: int, sid: int, limit_s: float) -> dict[str, Any]:
    t_start = t_end = 0.0
    cpu_start = cpu_end = 0.0
    acked = 0
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        await asyncio.sleep(0.02)
        try:
            info = await _consumer(nc, spec["stream"], spec["durable"])
        except (RuntimeError, TimeoutError, nats.errors.Error):
            continue
        acked = n - int(info.get("num_pending", 0)) - int(info.get("num_ack_pending", 0))
        now = time.perf_counter()
        if not t_start and acked > 0:
            t_start, cpu_start, at_start = now, session_cpu(sid), acked
        if acked >= n:
            t_end, cpu_end = now, session_cpu(sid)
            break
    if not t_start or not t_end:
        return {"error": f"did not drain within {limit_s:.0f}s: {acked} of {n} acknowledged"}
    seconds, done = t_end - t_start, n - at_start
    return {"tasks": done, "seconds": round(seconds, 3), "tasks_per_s": round(done / seconds, 1),
            "worker_cpu_us_per_task": round((cpu_end - cpu_start) * 1e6 / max(done, 1), 1)}


def run(name: str, n: int) -> dict[str, Any]:
    return asyncio.run(peer(name, n))


if __name__ == "__main__":
    print(json.dumps(run(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 20_000), indent=2, default=str))
