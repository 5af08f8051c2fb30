"""The history checker's recording handler: a process on the public SDK (``jetbridge.Service``) that runs the task type
``chk:work`` as its payload's plan says, and appends one JSON line per attempt event to a file, as it saw it.

Run as ``python -m tests.faults.recording_handler``; settings come from the environment: ``NATS_URL``,
``JETBRIDGE_SUBJECT_PREFIX`` (task subjects are ``<prefix>.<type>``), ``CHECK_INSTANCE`` (this process's name,
unique per start) and ``CHECK_LOG`` (the JSONL file; several processes may append to one file: every line is one
``write`` of less than PIPE_BUF on an ``O_APPEND`` descriptor).

Lines: ``{"ev": "start", ...}`` when the handler function begins (the attempt is live from here), and
``{"ev": "end", ...}`` when it returns what the SDK replies, or observes a cancel (``how`` = ``cancel`` and the
reason; an attempt is not live after that even if it goes on without replying); ``{"ev": "reply", ...}`` when a
cancelled attempt returns a result anyway (the SDK sends it; the dispatcher may store it if it never saw the cancel). The payload is bytes (the JSON plan,
``{"plan": [step, ...], "salt": n}``), recorded in base64 with the request's created/deadline/queue/type so that
the checker can verify it against a signed version of the task.
"""

from __future__ import annotations

import base64
import os
import secrets
import time
from typing import Any

import anyio
import anyio.lowlevel
import jetbridge
import msgspec
import nats
from jetbridge import _protocol as proto

INSTANCE = os.environ.get("CHECK_INSTANCE") or f"h-{secrets.token_hex(3)}"
TASK_TYPE = "chk:work"
_encode = msgspec.json.Encoder().encode


class Recorder:
    def __init__(self, path: str) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def line(self, **fields: Any) -> None:
        os.write(self._fd, _encode(fields) + b"\n")


def _step(task: jetbridge.Task, payload: bytes) -> dict[str, Any]:
    """This attempt's step of the plan: the attempt-th entry, or the last one."""
    try:
        plan = msgspec.json.decode(payload).get("plan") or [{"do": "ok"}]
    except (msgspec.DecodeError, AttributeError):
        return {"do": "ok"}
    step = plan[min(task.attempt, len(plan)) - 1]
    return step if isinstance(step, dict) else {"do": "ok"}


class Work:
    def __init__(self, nc: Any, recorder: Recorder) -> None:
        self.nc = nc
        self.rec = recorder

    async def flood(self, task: jetbridge.Task, subject: str, seconds: float) -> None:
        """Bogus heartbeats (random tokens) and real ones as fast as the connection takes them, for ``seconds``."""
        until = time.monotonic() + seconds
        n = 0
        while time.monotonic() < until:
            for _ in range(200):
                await self.nc.publish(subject, proto.encode_heartbeat(task.id, secrets.token_urlsafe(12)))
                n += 1
            await self.nc.publish(subject, proto.encode_heartbeat(task.id, task.token))
            await anyio.lowlevel.checkpoint()

    async def run(self, task: jetbridge.Task) -> Any:
        request = task._request  # the wire view: exact created/deadline strings and the heartbeat subject
        data = task.payload.data if isinstance(task.payload, proto.Bytes) else msgspec.json.encode(task.payload)
        common = {"task_id": task.id, "attempt": task.attempt, "token": task.token, "instance": INSTANCE}
        self.rec.line(ev="start", t=time.time_ns(), queue=task.queue, type=task.type, max_attempts=task.max_attempts,
                      created=request.created, deadline=request.deadline,
                      payload=base64.b64encode(data).decode(), **common)
        step = _step(task, data)
        do = str(step.get("do", "ok"))
        result = {"task_id": task.id, "attempt": task.attempt, "token": task.token, "instance": INSTANCE,
                  "salt": msgspec.json.decode(data).get("salt") if data.startswith(b"{") else None}
        try:
            if step.get("ms"):
                await anyio.sleep(float(step["ms"]) / 1000)
            if do == "flood":
                await self.flood(task, request.heartbeat_subject, float(step.get("s", 1.0)))
            elif do == "noreply":
                await anyio.sleep_forever()
            if do == "retry":
                after = step.get("after")
                self.rec.line(ev="end", t=time.time_ns(), how="retry", after=after, **common)
                raise jetbridge.Retry("planned retry", after=None if after is None else float(after))
            if do == "terminate":
                self.rec.line(ev="end", t=time.time_ns(), how="terminate", **common)
                raise jetbridge.Terminate("planned termination")
            if do == "crash":
                self.rec.line(ev="end", t=time.time_ns(), how="error", **common)
                raise RuntimeError("planned crash")
            self.rec.line(ev="end", t=time.time_ns(), how="ok", result=result, **common)
            return result
        except anyio.get_cancelled_exc_class():
            self.rec.line(ev="end", t=time.time_ns(), how="cancel", reason=task.cancel_reason or "timeout", **common)
            if do == "noreply":  # a handler that ignores the cancel for a while, then returns something
                with anyio.CancelScope(shield=True):
                    await anyio.sleep(float(step.get("linger", 1.0)))
                late = {**result, "late": True}
                self.rec.line(ev="reply", t=time.time_ns(), result=late, **common)  # sent, though no longer live
                return late
            raise
        except (jetbridge.Retry, jetbridge.Terminate):
            raise  # planned: its end is recorded
        except Exception as exc:  # an unplanned failure (a publish refused while reconnecting) ends it too
            if str(exc) != "planned crash":
                self.rec.line(ev="end", t=time.time_ns(), how="error", error=repr(exc), **common)
            raise


async def main() -> None:
    recorder = Recorder(os.environ["CHECK_LOG"])
    nc = await nats.connect(servers=os.environ.get("NATS_URL", "nats://127.0.0.1:4222").split(","),
                            max_reconnect_attempts=-1,
                            reconnect_time_wait=0.2)
    prefix = os.environ.get("JETBRIDGE_SUBJECT_PREFIX", "jetbridge.task")
    service = jetbridge.Service(nc, "chk-recorder", prefix=prefix, concurrency=64, drain_timeout=10.0)
    service.add_handler(TASK_TYPE, Work(nc, recorder).run)
    await jetbridge.serve(service, on_ready=lambda: print("ready", flush=True))
    await nc.drain()


if __name__ == "__main__":
    anyio.run(main)
