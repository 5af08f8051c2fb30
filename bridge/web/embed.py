"""The HTTP API and dashboard inside ``jetbridge run`` (setting ``http_listen``): the same app as
``jetbridge serve``, on the dispatcher's NATS connection, in the dispatcher's task group.

Why a uvicorn ``Server`` driven by hand: ``uvicorn.run`` owns the event loop and SIGTERM/SIGINT, but here the
dispatcher owns both (a signal starts its drain). So the server's signal capture is switched off, it runs as a
task of the dispatcher's loop, and when the dispatcher's task group is cancelled (after the drain) the server is
asked to exit (event streams end at once) and given :data:`SHUTDOWN_GRACE` seconds to close its connections
before it is forced. While the dispatcher drains, the API keeps answering, so an operator can watch.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
from collections.abc import Iterator, Mapping

import anyio
import structlog
import uvicorn
from anyio.abc import TaskStatus
from jetbridge.internal import ConfigError
from nats.aio.client import Client

from ..settings import Settings
from .app import MAX_BODY, RATE, create_app
from .auth import Tokens, is_loopback, load_tokens
from .backend import Backend

log = structlog.get_logger("jetbridge.web")
SHUTDOWN_GRACE = 5.0


def parse_listen(text: str, setting: str = "http_listen") -> tuple[str, int]:
    """``host:port`` (``[::1]:8080`` for IPv6; port 0 picks a free one) into its parts; a clear error otherwise."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ConfigError(f"{setting} {text!r} is not host:port, e.g. 127.0.0.1:8080")
    return (host.strip("[]") or "0.0.0.0"), int(port)


def check(settings: Settings, env: Mapping[str, str]) -> Tokens:
    """The tokens the API will use; a one-line :class:`ConfigError` for anything ``http_*`` gets wrong.

    As with ``jetbridge serve``: without tokens (``JB_API_TOKENS`` or the ``http_tokens`` file) the API may
    listen only on a loopback address.
    """
    host, _ = parse_listen(settings.http_listen)
    tokens = load_tokens(dict(env), settings.http_tokens or None)
    if not tokens.enabled and not is_loopback(host):
        raise ConfigError(f"http_listen {settings.http_listen} is not a loopback address: configure API tokens "
                          "(JB_API_TOKENS or http_tokens) before exposing the API")
    if bool(settings.http_tls_cert) != bool(settings.http_tls_key):
        raise ConfigError("http_tls_cert and http_tls_key go together")
    for path in (settings.http_tls_cert, settings.http_tls_key):
        if path and not os.path.isfile(path):
            raise ConfigError(f"cannot read the HTTPS file {path}")
    return tokens


class _Embedded(uvicorn.Server):
    """A uvicorn server that leaves the process's signals to the dispatcher."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve_http(settings: Settings, nc: Client, *, env: Mapping[str, str] | None = None,
                     task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED) -> None:
    """Serve the API on ``settings.http_listen`` until cancelled; reports the bound port once listening."""
    tokens = check(settings, os.environ if env is None else env)
    host, port = parse_listen(settings.http_listen)

    async def make_backend() -> Backend:
        backend = Backend(nc)
        await backend.start(share_index=False)  # `dlq keep` or `serve` answer index queries; not every dispatcher
        return backend

    app = create_app(make_backend, tokens=tokens, max_body=MAX_BODY, rate=RATE)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"http_listen {settings.http_listen}: {exc.strerror}") from None
    sock.listen(128)
    sock.setblocking(False)
    bound = int(sock.getsockname()[1])
    config = uvicorn.Config(app, log_config=None, log_level="warning", access_log=False, lifespan="on",
                            ssl_certfile=settings.http_tls_cert or None, ssl_keyfile=settings.http_tls_key or None,
                            timeout_graceful_shutdown=int(SHUTDOWN_GRACE))
    server = _Embedded(config)
    serving = asyncio.ensure_future(server.serve(sockets=[sock]))  # an asyncio task: uvicorn is asyncio-only
    scheme = "https" if settings.http_tls_cert else "http"
    log.info("http_listening", listen=settings.http_listen, url=f"{scheme}://{host}:{bound}/", auth=tokens.enabled)
    task_status.started(bound)
    try:
        await asyncio.shield(serving)
    except SystemExit:  # uvicorn exits the process when the app cannot start
        raise ConfigError("the HTTP API did not start (see the log)") from None
    finally:
        # As a signal would (with capture_signals off it is not re-raised): sse-starlette hooks this to end its
        # event streams at once, instead of uvicorn cutting them after its graceful timeout.
        server.handle_exit(signal.SIGTERM, None)
        with anyio.CancelScope(shield=True):
            with anyio.move_on_after(SHUTDOWN_GRACE * 2):
                await asyncio.wait({serving})
            if not serving.done():
                server.force_exit = True
                await asyncio.wait({serving})
            sock.close()
        log.info("http_stopped", listen=settings.http_listen, forced=server.force_exit)
