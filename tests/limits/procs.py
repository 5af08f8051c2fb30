"""Real ``jetbridge`` processes for the limits tests: dispatchers (``jetbridge run``) and CLI calls."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from bridge.embedded import NatsServer
from tests.harness import Harness


def cli(server: NatsServer, *args: str) -> subprocess.CompletedProcess[str]:
    """``jetbridge --server URL ARGS...``, its output captured."""
    return subprocess.run([sys.executable, "-m", "bridge", "--server", server.url, *args], capture_output=True,
                          text=True, timeout=60, check=False)


def start_dispatcher(server: NatsServer, h: Harness, *queues: str, extra: tuple[str, ...] = (),
                     dispatcher_id: str = "") -> subprocess.Popen[bytes]:
    log = open(os.environ["LIMITS_TEST_LOG"], "ab") if os.environ.get("LIMITS_TEST_LOG") else subprocess.DEVNULL  # noqa: SIM115
    args = [a for q in (queues or (h.queue,)) for a in ("--queue", q)]
    env = {**os.environ, "JETBRIDGE_SUBJECT_PREFIX": h.prefix, "JETBRIDGE_CREATE_QUEUES": "false",
           "JETBRIDGE_FIRE_SCHEDULES": "false", **({"JETBRIDGE_DISPATCHER_ID": dispatcher_id} if dispatcher_id else {}), "JETBRIDGE_LOG_LEVEL": os.environ.get("LIMITS_TEST_LOG_LEVEL", "warning")}
    return subprocess.Popen([sys.executable, "-m", "bridge", "--server", server.url, "run", *args, *extra,
                             "--log-format", "json"], env=env, stdout=log, stderr=log)


@contextmanager
def dispatchers(server: NatsServer, h: Harness, count: int, *queues: str,
                extra: tuple[str, ...] = ()) -> Iterator[list[subprocess.Popen[bytes]]]:
    """``count`` dispatchers with ids ``d0<unique>``, ``d1<unique>``..."""
    procs = [start_dispatcher(server, h, *queues, extra=extra, dispatcher_id=f"d{i}{h.unique}") for i in range(count)]
    try:
        yield procs
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
