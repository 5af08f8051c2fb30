"""The faults of a history (SIGKILL and SIGSTOP/SIGCONT of dispatchers and handlers, nats-server restart, cluster
node loss), as a part of :class:`tests.faults.history_run.HistoryRun`: each records when it struck, and the handler
pauses and kills that the checker needs to judge liveness."""

from __future__ import annotations

import signal
import time

import anyio
from jetbridge import _names as names
from jetbridge._requester import Requester

from tests.faults.generator import Op
from tests.faults.rig import Proc, Rig, wait_stream_current


class FaultInjector:
    rig: Rig
    rq: Requester
    fault_times: list[int]
    pauses: dict[str, list[tuple[int, int]]]
    deaths: dict[str, int]
    instance: dict[str, str]

    def _start_handler(self, proc: Proc) -> Proc:
        raise NotImplementedError

    async def dispatcher_kill(self, op: Op) -> None:
        d = self.rig.dispatchers[op.args["victim"] % len(self.rig.dispatchers)]
        self.fault_times.append(time.time_ns())
        d.send(signal.SIGKILL)
        await d.wait_exit(10)
        await self.rig.restart(d)

    async def dispatcher_stop(self, op: Op) -> None:
        d = self.rig.dispatchers[op.args["victim"] % len(self.rig.dispatchers)]
        self.fault_times.append(time.time_ns())
        d.send(signal.SIGSTOP)
        try:
            await anyio.sleep(op.args["seconds"])  # the pause is the fault
        finally:
            d.send(signal.SIGCONT)
            self.fault_times.append(time.time_ns())

    async def handler_kill(self, op: Op) -> None:
        h = self.rig.handlers[op.args["victim"] % len(self.rig.handlers)]
        self.fault_times.append(time.time_ns())
        h.send(signal.SIGKILL)
        self.deaths[self.instance[h.name]] = time.time_ns()
        await h.wait_exit(10)
        self._start_handler(h)
        await h.wait_ready()

    async def handler_stop(self, op: Op) -> None:
        h = self.rig.handlers[op.args["victim"] % len(self.rig.handlers)]
        stopped = time.time_ns()
        self.fault_times.append(stopped)
        h.send(signal.SIGSTOP)
        try:
            await anyio.sleep(op.args["seconds"])
        finally:
            h.send(signal.SIGCONT)
            self.pauses.setdefault(self.instance[h.name], []).append((stopped, time.time_ns()))

    async def server_restart(self, op: Op) -> None:
        server = self.rig.servers[0]
        self.fault_times.append(time.time_ns())
        server.kill() if op.args["victim"] % 2 else server.stop()
        await anyio.sleep(1.0)  # a second of outage
        await anyio.to_thread.run_sync(server.start)
        self.fault_times.append(time.time_ns())

    async def node_kill(self, op: Op) -> None:
        victim = self.rig.servers[op.args["victim"] % len(self.rig.servers)]
        self.fault_times.append(time.time_ns())
        victim.kill()
        await anyio.sleep(2.0)  # two seconds with two nodes
        await anyio.to_thread.run_sync(victim.start)
        for stream in (names.TASKS_STREAM, names.SCHEDULE_STREAM, *(names.queue_stream(q) for q in self.rig.queues)):
            await wait_stream_current(self.rq, stream, 3)
        self.fault_times.append(time.time_ns())
