"""A tiny HTTP server for ``/metrics``, ``/healthz`` and ``/readyz``.

``/healthz`` answers 200 while the process runs its event loop (a liveness probe: restart me if this fails).
``/readyz`` answers 200 only while the dispatcher is connected to NATS and pulling work, 503 otherwise (a
readiness probe: do not count me as serving). It is a plain asyncio server, so no web framework is needed.
"""

from __future__ import annotations

from collections.abc import Callable

import anyio
from anyio.abc import SocketStream, TaskStatus
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .metrics import Metrics


def _response(status: str, body: bytes, content_type: str = "text/plain; charset=utf-8") -> bytes:
    head = f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    return head.encode() + body


async def serve_health(
    listen: str, metrics: Metrics, is_ready: Callable[[], bool], *,
    task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve on ``host:port`` until cancelled; reports the bound port (``:0`` picks a free one)."""
    host, _, port = listen.rpartition(":")

    async def handle(stream: SocketStream) -> None:
        async with stream:
            try:
                with anyio.fail_after(5):
                    request = await stream.receive(4096)
            except (TimeoutError, anyio.EndOfStream, anyio.BrokenResourceError):
                return
            path = request.split(b" ", 2)[1].decode(errors="replace") if request.count(b" ") >= 2 else "/"
            if path == "/metrics":
                reply = _response("200 OK", generate_latest(metrics.registry), CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                reply = _response("200 OK", b"ok\n")
            elif path == "/readyz":
                ready = is_ready()
                reply = _response("200 OK" if ready else "503 Service Unavailable", b"ready\n" if ready else b"not ready\n")
            else:
                reply = _response("404 Not Found", b"try /metrics, /healthz or /readyz\n")
            try:
                await stream.send(reply)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                pass

    listener = await anyio.create_tcp_listener(local_host=host or "0.0.0.0", local_port=int(port))
    bound = listener.extra(anyio.abc.SocketAttribute.local_port)
    task_status.started(bound)
    await listener.serve(handle)
