"""The history checker, end to end: a seeded random history of operations and faults on real processes, recorded
and checked (see tests/faults/checker.py for the invariants, generator.py for what a history holds).

``pytest tests/faults/test_history.py`` (part of ``make test``) runs a short history with the fixed seed 79;
``make faults`` runs a long one with a fresh seed, and ``make faults SEED=N`` (or ``--seed N``) replays the history of
seed N. The seed is printed on every run; a failure lists every anomaly and says how to replay it.
"""

from __future__ import annotations

import collections
import json
import os
import random
import time
from pathlib import Path

import pytest
from jetbridge import _names as names
from jetbridge._requester import Requester

from bridge.embedded import NatsServer
from tests.faults import checker as ck
from tests.faults.conftest import Scale
from tests.faults.generator import LONG, QUEUES, SHORT, plan
from tests.faults.generator import Scale as HistoryScale
from tests.faults.history_run import FAULTS, HistoryRun, keys, verifier
from tests.faults.rig import ROWS, Rig, Row, cluster, wait_stream_current

pytestmark = pytest.mark.anyio

#: its short plan has a 6 s dispatcher SIGSTOP, a 6 s handler SIGSTOP, a handler SIGKILL, a nats-server restart,
#: tampering, heartbeat floods, huge retry_after, reused ids and every kind of forged item
CI_SEED = 79


def _debug_env() -> dict[str, str]:
    """``FAULTS_DEBUG=1``: the dispatchers log at debug level (to read what happened to one task)."""
    return {"JETBRIDGE_LOG_LEVEL": "debug"} if os.environ.get("FAULTS_DEBUG") else {}


def _seed(request: pytest.FixtureRequest, scale: Scale) -> int:
    seed = request.config.getoption("seed", default=None)
    if seed is not None:
        return int(seed)
    return random.SystemRandom().randrange(1, 1_000_000) if scale.full else CI_SEED


def _report(seed: int, anomalies: list[ck.Anomaly], out: Path) -> str:
    by_kind: dict[str, list[ck.Anomaly]] = collections.defaultdict(list)
    for a in anomalies:
        by_kind[a.kind].append(a)
    lines = [f"history seed {seed}: {len(anomalies)} anomalies {ck.summary(anomalies)}"]
    for kind, found in sorted(by_kind.items()):
        lines += [f"  {a}" for a in found[:6]]
        if len(found) > 6:
            lines.append(f"  ... and {len(found) - 6} more {kind}")
    lines.append(f"all of them: {out}")
    lines.append(f"replay: make faults SEED={seed}  (quicker: .venv/bin/pytest -q tests/faults/test_history.py "
                 f"--seed {seed} -s)")
    return "\n".join(lines)


async def run_history(tmp: Path, seed: int, hs: HistoryScale, label: str) -> tuple[list[ck.Anomaly], Row]:
    print(f"\n{label}: seed {seed} ({hs.tasks} tasks, {hs.seconds:.0f}s, {hs.faults} faults"
          f"{', 3-node cluster' if hs.cluster else ''}); replay with make faults SEED={seed}", flush=True)
    servers = cluster(tmp / "cluster") if hs.cluster else [NatsServer(tmp / "nats")]
    for s in servers:
        s.start()
    _, public = keys(seed)
    ops = plan(seed, hs)
    began = time.monotonic()
    try:
        async with Rig(tmp, servers, queues=QUEUES, lease=hs.lease, replicas=3 if hs.cluster else 1,
                       max_run_time=hs.max_run_time,
                       dispatcher_env={"JETBRIDGE_VERIFY_KEY": public, **_debug_env()}) as rig:
            assert rig.nc is not None
            if hs.cluster:
                rq = Requester(rig.nc)
                for st in (names.TASKS_STREAM, names.SCHEDULE_STREAM, *(names.queue_stream(q) for q in QUEUES)):
                    await wait_stream_current(rq, st, 3)
            run = HistoryRun(rig, seed, hs)
            await run.start()
            await run.execute(ops)
            finals = await run.settle(60.0 if hs is SHORT else 240.0)
            history = await run.collect(finals)
    finally:
        for s in servers:
            s.stop()
    anomalies = ck.check(history, verifier(public))
    out = tmp / "anomalies.txt"
    errors = [f"{n:5d} x {what}" for what, n in run.errors.most_common()]
    out.write_text("\n".join(str(a) for a in anomalies) + "\n\nclient errors:\n" + "\n".join(errors)
                   + "\n\nops:\n" + "\n".join(run.done) + "\n")
    if errors:
        print(f"{label}: what failed client operations were told:\n  " + "\n  ".join(errors), flush=True)
    (tmp / "history.json").write_text(json.dumps({
        "seed": seed, "attempts": [a.__dict__ for a in history.attempts],
        "versions": [v.__dict__ for v in history.versions],
        "finals": {k: (v.__dict__ if v else None) for k, v in history.finals.items()}}, default=str))
    counts = ck.summary(anomalies)
    states = collections.Counter(f.state for f in history.finals.values() if f is not None)
    row = Row(label, len(history.tasks), counts.get("lost", 0), counts.get("foreign-result", 0),
              counts.get("stuck", 0), counts.get("tries", 0) + counts.get("cross-queue", 0)
              + counts.get("early-retry", 0), counts.get("number-reused", 0), len(history.attempts),
              sum(op.kind in FAULTS for op in ops),
              None, time.monotonic() - began,
              f"seed {seed}; {dict(states)}; anomalies {counts}")
    row.overlapping, row.unverified = counts.get("overlap", 0), counts.get("unverified", 0)
    row.passed = not anomalies
    ROWS.append(row)
    return anomalies, row


async def test_history(tmp_path: Path, scale: Scale, request: pytest.FixtureRequest) -> None:
    """A random history of operations and faults (short in make test, long in make faults) holds every invariant."""
    seed = _seed(request, scale)
    hs = LONG if scale.full else SHORT
    anomalies, _ = await run_history(tmp_path, seed, hs, "history" + (" (long)" if scale.full else " (short)"))
    assert not anomalies, _report(seed, anomalies, tmp_path / "anomalies.txt")


async def test_history_cluster(tmp_path: Path, scale: Scale, request: pytest.FixtureRequest) -> None:
    """The same on a 3-node cluster with node loss (make faults only)."""
    if not scale.full:
        pytest.skip("the cluster history runs at full scale only (make faults)")
    seed = _seed(request, scale)
    hs = HistoryScale(tasks=LONG.tasks // 2, seconds=LONG.seconds, faults=LONG.faults, cluster=True)
    anomalies, _ = await run_history(tmp_path, seed, hs, "history, 3-node cluster")
    assert not anomalies, _report(seed, anomalies, tmp_path / "anomalies.txt")
