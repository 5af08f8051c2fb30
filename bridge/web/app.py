"""The ASGI app: the REST API, Jetbridge's additions and the dashboard, with auth, a body cap and the envelope."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import api, errors, extra, ops
from .auth import Tokens
from .backend import Backend
from .ratelimit import RateLimit

#: asyncjobs' default body cap (``--max-body``)
MAX_BODY = 512 * 1024
#: requests a second per client that ``jetbridge serve`` and ``run --http`` allow by default (bursts of twice that)
RATE = 100.0


class BodyLimit:
    """Refuse bodies over ``limit`` bytes with 413 in the envelope, whether or not Content-Length says so."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            return await self._too_large(scope, receive, send)
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            msg = await receive()
            seen += len(msg.get("body", b""))
            if seen > self.limit:
                raise errors.ApiError(413, "payload_too_large", f"request body over {self.limit} bytes",
                                      reason="body_too_large")
            return msg

        await self.app(scope, counted, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = errors.envelope(413, "payload_too_large", f"request body over {self.limit} bytes",
                                   "body_too_large")
        await response(scope, receive, send)


def create_app(make_backend: Callable[[], Awaitable[Backend]], *, tokens: Tokens | None = None,
               max_body: int = MAX_BODY, on_close: Callable[[], Awaitable[None]] | None = None,
               dashboard: bool = True, rate: float = 0.0, burst: int = 0) -> FastAPI:
    """The app; ``make_backend`` runs at startup (so ``jetbridge serve`` connects once the server listens).

    ``rate`` (requests a second per client, ``burst`` at once; 0: unlimited) is bridge/web/ratelimit.py.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        backend = await make_backend()
        app.state.backend = backend
        try:
            yield
        finally:
            await backend.close()
            if on_close is not None:
                await on_close()

    app = FastAPI(title="Jetbridge API", version="1.0.0", lifespan=lifespan, openapi_url="/openapi.json",
                  docs_url="/docs", redoc_url=None,
                  description="asyncjobs' REST API (same paths, bodies and errors) plus Jetbridge's dead letters, "
                              "pause, handlers, history and live events.")
    app.state.tokens = tokens or Tokens()
    app.state.idempotency = {}
    errors.install(app)
    app.include_router(api.router)
    app.include_router(extra.router)
    app.include_router(ops.router)
    if dashboard:
        from . import dashboard as dash

        dash.mount(app)
    app.add_middleware(BodyLimit, limit=max_body)
    if rate > 0:  # outermost: a limited client costs no body reading, auth or backend work
        app.add_middleware(RateLimit, rate=rate, burst=max(1, burst or math.ceil(rate * 2)))
    return app


def openapi_document(app: FastAPI) -> dict[str, Any]:
    return app.openapi()
