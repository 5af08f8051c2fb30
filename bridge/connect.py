"""Connecting to NATS: flags and environment, a NATS CLI context, or an embedded server.

Secrets given here are passed to nats-py and never logged; :func:`describe` names a connection without them.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import nats
import nats.errors
import structlog
from jetbridge.internal import ConfigError, TransportError, harden
from nats.aio.client import Client

from .embedded import NatsServer, no_server_error, running_server, start_local_server, stop_local_server
from .settings import Settings, _redact_url

log = structlog.get_logger("jetbridge.connect")


@dataclass(frozen=True)
class NatsContext:
    """The parts of a ``nats`` CLI context file that a connection needs (secrets are left out of ``repr``)."""

    url: str = ""
    user: str = ""
    password: str = field(default="", repr=False)
    token: str = field(default="", repr=False)
    creds: str = ""
    nkey: str = ""
    ca: str = ""
    cert: str = ""
    key: str = ""
    inbox_prefix: str = ""
    tls_first: bool = False


def context_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "nats"


def _expand(path: str) -> str:
    """A context's file path as the nats CLI reads it: ``~`` and ``$VARIABLES`` expanded."""
    return os.path.expandvars(os.path.expanduser(path)) if path else path


def load_context(name: str) -> NatsContext:
    """Read ``~/.config/nats/context/<name>.json`` (``nats context save`` writes it)."""
    if not name:
        selected = context_dir() / "context.txt"
        name = selected.read_text().strip() if selected.exists() else ""
        if not name:
            raise ConfigError("no NATS context selected: pass --context NAME")
    if name in (".", "..") or "/" in name or os.sep in name:
        raise ConfigError(f"NATS context name {name!r} is invalid: give the name `nats context ls` shows")
    path = context_dir() / "context" / f"{name}.json"
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"NATS context {name!r} not found at {path}: create it with `nats context save {name}`") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"NATS context {name!r} at {path} is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"NATS context {name!r} at {path} is not a JSON object")
    text = {k: str(doc.get(k) or "") for k in ("url", "user", "password", "token", "inbox_prefix")}
    files = {k: _expand(str(doc.get(k) or "")) for k in ("creds", "nkey", "ca", "cert", "key")}
    return NatsContext(**text, **files, tls_first=bool(doc.get("tls_first")))


def _need_file(path: str, what: str) -> None:
    if not Path(path).is_file():
        raise ConfigError(f"{what} {path} does not exist or is not a file")


def _nkeys_module() -> Any:
    try:
        return importlib.import_module("nkeys")
    except ImportError:
        raise ConfigError("nkey and creds authentication need the nkeys package: pip install nkeys") from None


def _nkey_option(value: str) -> tuple[str, str]:
    """``nkeys_seed`` (a file) or ``nkeys_seed_str`` (the seed itself); the value is never echoed in errors."""
    nkeys = _nkeys_module()
    seed = Path(value)
    if seed.is_file():
        return "nkeys_seed", value
    try:
        nkeys.from_seed(bytearray(value.strip().encode())).wipe()
    except Exception:  # noqa: BLE001 - nkeys raises several error types; the message must not show the value
        raise ConfigError("nkey_seed is neither an existing file nor a valid NKey seed (the value is not shown)") from None
    return "nkeys_seed_str", value


def _tls_context(ca: str, cert: str, key: str) -> ssl.SSLContext:
    if key and not cert:
        raise ConfigError("tls_key needs tls_cert: give the client certificate too")
    for path, what in ((ca, "TLS CA file"), (cert, "TLS certificate"), (key, "TLS key")):
        if path:
            _need_file(path, what)
    try:
        ctx = ssl.create_default_context(cafile=ca or None)
        if cert:
            ctx.load_cert_chain(cert, key or None)
    except ssl.SSLError as exc:
        raise ConfigError(f"cannot load the TLS files (ca {ca or '-'}, cert {cert or '-'}, key {key or '-'}): "
                          f"{exc.reason or exc}") from None
    return ctx


def connect_options(settings: Settings) -> dict[str, Any]:
    """nats-py ``connect`` keyword arguments for ``settings`` (the context fills what flags leave empty).

    Raises :class:`ConfigError` for missing files and unusable keys, before any connection is tried.
    """
    s = settings
    tls_first = False
    if s.context:
        c = load_context(s.context)
        s = replace(s, server=s.server or c.url, user=s.user or c.user, password=s.password or c.password,
                    token=s.token or c.token, creds=s.creds or c.creds, nkey_seed=s.nkey_seed or c.nkey,
                    tls_ca=s.tls_ca or c.ca, tls_cert=s.tls_cert or c.cert, tls_key=s.tls_key or c.key,
                    inbox_prefix=s.inbox_prefix or c.inbox_prefix)
        tls_first = c.tls_first
    servers = [u.strip() for u in s.server.split(",") if u.strip()]
    if not servers:
        raise ConfigError("no NATS server: pass --server URL, set JETBRIDGE_SERVER, or put a url in the NATS context")
    opts: dict[str, Any] = {"servers": servers, "max_reconnect_attempts": -1, "reconnect_time_wait": 0.5,
                            "name": "jetbridge",
                            # Every reply subject of the connection under one prefix that permissions can name.
                            "inbox_prefix": s.inbox_prefix or f"_INBOX.jetbridge.{s.dispatcher_id}"}
    if s.user:
        opts["user"], opts["password"] = s.user, s.password
    if s.token:
        opts["token"] = s.token
    if s.creds:
        _need_file(s.creds, "creds file")
        _nkeys_module()
        opts["user_credentials"] = s.creds
    elif s.nkey_seed:
        key, value = _nkey_option(s.nkey_seed)
        opts[key] = value
    if s.tls_ca or s.tls_cert or s.tls_key:
        opts["tls"] = _tls_context(s.tls_ca, s.tls_cert, s.tls_key)
    if tls_first:
        opts["tls_handshake_first"] = True
    return opts


def describe(settings: Settings) -> str:
    return _redact_url(settings.server) if settings.server else f"context {settings.context}"


#: Tries per server before the first connection gives up: a server that is not there fails in about a second
#: with one clear error instead of retrying forever.
INITIAL_TRIES = 3
CONNECT_TIMEOUT = 3.0


def _hopeless(exc: BaseException) -> bool:
    """Errors no retry can fix: a TLS failure or a refusal of the credentials."""
    text = str(exc).lower()
    return isinstance(exc, ssl.SSLError) or isinstance(exc, nats.errors.AuthorizationError) or (
        isinstance(exc, nats.errors.Error) and ("authorization violation" in text or "authentication" in text))


def _connect_error(settings: Settings, seen: list[BaseException], exc: BaseException | None) -> TransportError:
    # The server's own refusal (or a TLS failure) says more than the connection reset that follows it.
    telling = [e for e in seen if isinstance(e, (ssl.SSLError, nats.errors.Error))
               and not isinstance(e, nats.errors.NoServersError)]
    found = telling or seen or ([exc] if exc is not None else [])
    reason = (str(found[-1]) or type(found[-1]).__name__) if found else "no answer in time"
    return TransportError(f"cannot connect to NATS at {describe(settings)}: {reason}: check the URL, that the "
                          "server runs, and the credentials")


async def connect(settings: Settings, **callbacks: Any) -> Client:
    """Connect as ``settings`` say; raises :class:`TransportError` (no secrets in it) when that fails.

    The first connection gives up after :data:`INITIAL_TRIES` tries per server, and at once on a TLS failure or
    refused credentials (nats-py alone would retry those forever, and can hang after a failed TLS handshake).
    Once connected the client reconnects forever. Errors after that are logged as one line each (nats-py's
    default prints a traceback per reconnect attempt); pass ``error_cb`` to handle them yourself.
    """
    opts = connect_options(settings)
    seen: list[BaseException] = []
    hopeless = asyncio.Event()
    user_error_cb = callbacks.pop("error_cb", None)
    connected = False

    async def error_cb(exc: BaseException) -> None:
        if not seen or seen[-1] is not exc:
            seen.append(exc)
        if not connected and _hopeless(exc):
            hopeless.set()
        if user_error_cb is not None:
            await user_error_cb(exc)
        elif connected:
            log.warning("nats_error", server=describe(settings), error=str(exc) or type(exc).__name__)

    opts["max_reconnect_attempts"] = INITIAL_TRIES - 1
    attempt = asyncio.ensure_future(nats.connect(**opts, allow_reconnect=True, connect_timeout=CONNECT_TIMEOUT,
                                                 error_cb=error_cb, **callbacks))
    gave_up = asyncio.ensure_future(hopeless.wait())
    budget = len(opts["servers"]) * INITIAL_TRIES * (CONNECT_TIMEOUT + 1.0) + 2.0
    try:
        await asyncio.wait({attempt, gave_up}, timeout=budget, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gave_up.cancel()
        if not attempt.done():
            attempt.cancel()
            await asyncio.wait({attempt}, timeout=2.0)
    if attempt.cancelled():
        raise _connect_error(settings, seen, None)
    exc = attempt.exception()
    if exc is not None:
        if isinstance(exc, (OSError, TimeoutError, nats.errors.Error)):
            raise _connect_error(settings, seen, exc) from None
        raise exc
    nc = attempt.result()
    nc.options["max_reconnect_attempts"] = -1
    harden(nc)  # a flush given up (a server paused for 2 s) must not end the read loop: see jetbridge._fastread
    connected = True
    return nc


@asynccontextmanager
async def session(settings: Settings, *, start_server: bool = False) -> AsyncIterator[tuple[Client, Settings]]:
    """Connect as ``settings`` say; with no server or context, use the data directory's running server.

    With ``start_server`` (``jetbridge run``) a data directory without a running server gets one, at its recorded
    address, stopped again at the end; otherwise :class:`NoServerError` says how to start one (a server started
    for one command would vanish with it, and with everything enqueued into it).
    """
    server: NatsServer | None = None
    data_dir = Path(settings.data_dir)
    if not settings.server and not settings.context:
        found = running_server(data_dir)
        if found is not None:
            url = found[0]
        elif start_server:
            server = start_local_server(data_dir)
            url = server.url
        else:
            raise no_server_error(data_dir)
        settings = replace(settings, server=url)
    try:
        nc = await connect(settings)
        try:
            yield nc, settings
        finally:
            await nc.drain() if nc.is_connected else await nc.close()
    finally:
        if server is not None:
            stop_local_server(data_dir, server)
