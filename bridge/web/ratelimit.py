"""Rate limits per client: a token bucket per bearer token (or dashboard cookie, or else client address), so one
runaway script cannot starve the others. Over the limit: 429 ``rate_limited`` in the envelope, with Retry-After.

Why by hand: the rule is a dozen lines of arithmetic (:class:`Buckets`, pure, clock passed in), and the libraries
for it (slowapi over limits) bring per-route decorators and storage backends this single process does not need.
Tokens are keyed by a hash, so the table never holds a secret. Probes and static files are not limited.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from starlette.types import ASGIApp, Receive, Scope, Send

from . import errors

#: clients remembered at once; the least recently seen is forgotten first (it starts again with a full bucket)
MAX_CLIENTS = 10_000
UNLIMITED_PREFIXES = ("/healthz", "/readyz", "/static/")


@dataclass
class Bucket:
    tokens: float
    at: float


class Buckets:
    """``rate`` requests a second per key, ``burst`` at once. :meth:`take` says how long to wait (0: go ahead)."""

    def __init__(self, rate: float, burst: int, max_keys: int = MAX_CLIENTS) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate, self.burst, self.max_keys = rate, burst, max_keys
        self._buckets: OrderedDict[str, Bucket] = OrderedDict()

    def take(self, key: str, now: float) -> float:
        b = self._buckets.pop(key, None) or Bucket(float(self.burst), now)
        b.tokens = min(float(self.burst), b.tokens + max(0.0, now - b.at) * self.rate)
        b.at = now
        self._buckets[key] = b
        if len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        if b.tokens >= 1.0:
            b.tokens -= 1.0
            return 0.0
        return (1.0 - b.tokens) / self.rate

    def __len__(self) -> int:
        return len(self._buckets)


def client_key(scope: Scope) -> str:
    """Who is asking: the bearer token or ``jb_token`` cookie (hashed), else the client's address."""
    headers = dict(scope.get("headers") or [])
    auth = headers.get(b"authorization", b"")
    token = auth[7:].strip() if auth[:7].lower() == b"bearer " else b""
    if not token:
        for part in headers.get(b"cookie", b"").split(b";"):
            name, _, value = part.strip().partition(b"=")
            if name == b"jb_token":
                token = value
    if token:
        return "t:" + hashlib.sha256(token).hexdigest()[:32]
    client = scope.get("client")
    return f"a:{client[0] if client else '?'}"


class RateLimit:
    """ASGI middleware applying :class:`Buckets` to every HTTP request but probes and static files."""

    def __init__(self, app: ASGIApp, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.app, self.buckets, self.clock = app, Buckets(rate, burst), clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or str(scope.get("path", "")).startswith(UNLIMITED_PREFIXES):
            return await self.app(scope, receive, send)
        wait = self.buckets.take(client_key(scope), self.clock())
        if wait <= 0:
            return await self.app(scope, receive, send)
        response = errors.envelope(429, "rate_limited", f"too many requests: at most {self.buckets.rate:g} a second "
                                   f"(bursts of {self.buckets.burst}) per client; retry in {wait:.1f}s",
                                   "rate_limited", headers={"Retry-After": str(max(1, math.ceil(wait)))})
        await response(scope, receive, send)
