"""Bearer tokens with roles: ``read`` sees, ``producer`` also enqueues and retries, ``operator`` does everything.

Tokens come from ``JB_API_TOKENS`` (``role:token`` entries separated by commas; not ``JETBRIDGE_…``, which
names dispatcher settings) or a file given with
``--tokens`` (one ``role:token`` a line, ``#`` comments). With no token configured the API is open, which
``jetbridge serve`` allows only on a loopback address. The dashboard sends the same token as a cookie
(``jb_token``), set on its sign-in page.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from jetbridge.internal import ConfigError

from .errors import ApiError

ROLES = ("read", "producer", "operator")
COOKIE = "jb_token"
_bearer = HTTPBearer(auto_error=False, description="A token from JB_API_TOKENS (role:token).")


@dataclass(frozen=True)
class Tokens:
    """Configured tokens; empty means authentication is off."""

    by_token: dict[str, str] = field(default_factory=dict)

    @property
    def enabled(self) -> bool:
        return bool(self.by_token)

    def role_of(self, token: str) -> str | None:
        for known, role in self.by_token.items():
            if hmac.compare_digest(known.encode(), token.encode()):
                return role
        return None


def parse_tokens(text: str, *, source: str) -> Tokens:
    """``role:token`` entries, by commas or lines; a clear error names the bad entry's position, not the token."""
    found: dict[str, str] = {}
    entries = [e.strip() for line in text.splitlines() for e in line.split("#", 1)[0].split(",")]
    for n, entry in enumerate((e for e in entries if e), 1):
        role, sep, token = entry.partition(":")
        if not sep or role.strip() not in ROLES or not token.strip():
            raise ConfigError(f"{source}: entry {n} is not role:token with role one of {', '.join(ROLES)}")
        if len(token.strip()) < 16:
            raise ConfigError(f"{source}: entry {n}: tokens must be at least 16 characters")
        found[token.strip()] = role.strip()
    return Tokens(found)


def load_tokens(env: dict[str, str], path: str | None) -> Tokens:
    text = env.get("JB_API_TOKENS", "")
    source = "JB_API_TOKENS"
    if path:
        try:
            text, source = Path(path).read_text(), path
        except OSError as exc:
            raise ConfigError(f"cannot read the tokens file {path}: {exc.strerror}") from None
    return parse_tokens(text, source=source)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _rank(role: str) -> int:
    return ROLES.index(role)


def role_of_request(request: Request, credentials: HTTPAuthorizationCredentials | None) -> str:
    """The caller's role; raises 401 without a known token when tokens are configured."""
    tokens: Tokens = request.app.state.tokens
    if not tokens.enabled:
        return "operator"
    token = credentials.credentials if credentials is not None else request.cookies.get(COOKIE, "")
    role = tokens.role_of(token) if token else None
    if role is None:
        raise ApiError(401, "unauthenticated", "a valid bearer token is required (Authorization: Bearer TOKEN)",
                       reason="token_missing" if not token else "token_invalid")
    return role


def need(role: str) -> Callable[..., Coroutine[Any, Any, str]]:
    """A dependency that lets only ``role`` and the roles above it through."""

    async def check(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> str:
        have = role_of_request(request, credentials)
        if _rank(have) < _rank(role):
            raise ApiError(403, "permission_denied", f"this needs the {role} role; your token has {have}",
                           reason="role_insufficient")
        return have

    return check
