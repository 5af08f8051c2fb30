"""The history checker's generator: a seeded, deterministic plan of operations and faults (pure: no I/O).

``plan(seed, scale)`` draws everything from ``random.Random(seed)``: the tasks (ids, dedup keys, signed or not,
max tries, and each task's per-attempt behaviour), the client operations that follow them (retry, cancel, delete and
re-enqueue under the same id, queue limit changes, tampering with the stored task, forged work items: duplicates,
stale ones and items on another queue's stream) and the faults (SIGKILL and SIGSTOP/SIGCONT of dispatchers and
handlers, nats-server restart or cluster node loss). The same seed gives the same plan; only timing varies.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

QUEUES = ("CQA", "CQB")


@dataclass(frozen=True)
class Scale:
    tasks: int
    seconds: float
    faults: int
    cluster: bool = False
    dispatchers: int = 2
    handlers: int = 2
    #: queue lease (seconds) and attempt budget
    lease: float = 2.0
    max_run_time: float = 6.0


SHORT = Scale(tasks=70, seconds=30.0, faults=4)
LONG = Scale(tasks=600, seconds=150.0, faults=14)


@dataclass(frozen=True)
class Op:
    at: float  # seconds from the start of the run
    kind: str
    #: the task the op is about: an index into the plan's enqueues
    task: int = -1
    args: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        what = f" task#{self.task}" if self.task >= 0 else ""
        return f"{self.at:7.2f}s {self.kind}{what} {self.args if self.args else ''}".rstrip()


def _step(rng: random.Random, last: bool) -> dict[str, Any]:
    ms = rng.choice((0, 0, 20, 80, 200, 400, 900))
    if last:
        return {"do": rng.choices(("ok", "terminate", "flood"), (90, 6, 4))[0], "ms": ms, "s": 0.5}
    do = rng.choices(("retry", "crash", "noreply", "flood", "retry_after"), (50, 10, 6, 4, 30))[0]
    if do == "retry_after":
        # the extremes: immediate, one millisecond, a second, and far beyond any sane maximum (1e15 ms)
        return {"do": "retry", "after": rng.choice((0.0, 0.001, 1.0, 1e12)), "ms": ms}
    if do == "noreply":
        return {"do": "noreply", "linger": rng.choice((0.5, 2.0)), "ms": 0}
    return {"do": do, "ms": ms, "s": 0.5}


def task_plan(rng: random.Random) -> list[dict[str, Any]]:
    """One task's behaviour, attempt by attempt (the last step repeats)."""
    failures = rng.choices((0, 1, 2, 3), (45, 30, 15, 10))[0]
    return [_step(rng, False) for _ in range(failures)] + [_step(rng, True)]


def plan(seed: int, scale: Scale) -> list[Op]:
    rng = random.Random(seed)
    ops: list[Op] = []
    enqueue_times = sorted(rng.uniform(0.0, scale.seconds * 0.8) for _ in range(scale.tasks))
    dedup_keys: list[str] = []
    for k, at in enumerate(enqueue_times):
        dedup = None
        if rng.random() < 0.15:
            dedup = rng.choice(dedup_keys) if dedup_keys and rng.random() < 0.3 else f"d{seed}-{k}"
            dedup_keys.append(dedup)
        ops.append(Op(at, "enqueue", k, {
            "queue": rng.choice(QUEUES), "max_tries": rng.choice((0, 1, 2, 3, 4, 6, 10)),
            "signed": rng.random() > 0.04, "dedup": dedup, "plan": task_plan(rng), "salt": rng.getrandbits(32),
            "tamper_ms": rng.choice((0, 2, 10, 40)) if rng.random() < 0.08 else None}))
        # Follow-ups on this task, a little later.
        for kind, p in (("retry", 0.10), ("cancel", 0.05), ("reuse", 0.04), ("dup_item", 0.10), ("cross_item", 0.06),
                        ("stale_item", 0.05)):
            if rng.random() < p:
                delay = rng.choice((0.01, 0.05, 0.2, 0.5, 1.0, 2.0, 5.0)) if kind != "stale_item" else rng.uniform(4, 10)
                args: dict[str, Any] = {}
                if kind == "reuse":
                    args = {"plan": task_plan(rng), "salt": rng.getrandbits(32)}
                ops.append(Op(min(at + delay, scale.seconds), kind, k, args))
    for _ in range(3):
        ops.append(Op(rng.uniform(0.0, scale.seconds), "queue_limit",
                      args={"queue": rng.choice(QUEUES), "max_tries": rng.choice((-1, 2, 3, 5))}))
    fault_kinds = ["dispatcher_kill", "dispatcher_stop", "handler_kill", "handler_stop",
                   "node_kill" if scale.cluster else "server_restart"]
    for j in range(scale.faults):
        at = scale.seconds * (j + 1) / (scale.faults + 1) + rng.uniform(-1.0, 1.0)
        kind = rng.choice(fault_kinds)
        args = {"victim": rng.randrange(scale.handlers if kind.startswith("handler") else
                                        3 if kind == "node_kill" else scale.dispatchers)}
        if kind.endswith("_stop"):
            args["seconds"] = rng.choice((0.5, scale.lease, 3 * scale.lease))
        ops.append(Op(max(0.0, at), kind, args=args))
    ops += _extras(seed, scale, enqueue_times)
    return sorted(ops, key=lambda op: op.at)


def _extras(seed: int, scale: Scale, enqueue_times: list[float]) -> list[Op]:
    """Operations added after the first findings, drawn from their own stream so that older seeds keep their plans:
    ``task retry --queue`` of a signed task onto the other queue, and items whose body names another task than
    their subject."""
    rng = random.Random(f"{seed}/extras")
    ops = []
    for k, at in enumerate(enqueue_times):
        if rng.random() < 0.04:
            ops.append(Op(min(at + rng.choice((0.05, 1.0, 3.0)), scale.seconds), "move", k))
        if k and rng.random() < 0.05:
            ops.append(Op(min(at + rng.choice((0.01, 0.3, 2.0)), scale.seconds), "mismatched_item", k,
                          {"job": rng.randrange(k)}))
    return ops
