"""Connecting to NATS: flags and environment, a NATS CLI context, or an embedded server.

Secrets given here are passed to nats-py and never logged; :func:`describe` names a connection without them.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import nats
import nats.errors
from jetbridge._errors import ConfigError, TransportError
from nats.aio.client import Client

from .embedded import NatsServer, free_port
from .settings import Settings, _redact_url


@dataclass(frozen=True)
class NatsContext:
    """The parts of a ``nats`` CLI context file that a connection needs."""

    url: str = ""
    user: str = ""
    password: str = ""
    token: str = ""
    creds: str = ""
    nkey: str = ""
    ca: str = ""
    cert: str = ""
    key: str = ""


def context_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "nats"


def load_context(name: str) -> NatsContext:
    """Read ``~/.config/nats/context/<name>.json`` (``nats context save`` writes it)."""
    if not name:
        selected = context_dir() / "context.txt"
        name = selected.read_text().strip() if selected.exists() else ""
        if not name:
            raise ConfigError("no NATS context selected: pass --context NAME")
    path = context_dir() / "context" / f"{name}.json"
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"NATS context {name!r} not found at {path}: create it with `nats context save {name}`") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"NATS context {name!r} at {path} is not valid JSON: {exc}") from None
    return NatsContext(**{k: str(doc.get(k) or "") for k in NatsContext.__dataclass_fields__})


def connect_options(settings: Settings) -> dict[str, Any]:
    """nats-py ``connect`` keyword arguments for ``settings`` (the context fills what flags leave empty)."""
    s = settings
    if s.context:
        c = load_context(s.context)
        s = replace(s, server=s.server or c.url, user=s.user or c.user, password=s.password or c.password,
                    token=s.token or c.token, creds=s.creds or c.creds, nkey_seed=s.nkey_seed or c.nkey,
                    tls_ca=s.tls_ca or c.ca, tls_cert=s.tls_cert or c.cert, tls_key=s.tls_key or c.key)
    opts: dict[str, Any] = {"servers": [u.strip() for u in s.server.split(",") if u.strip()],
                            "max_reconnect_attempts": -1, "reconnect_time_wait": 0.5, "name": "jetbridge"}
    if s.user:
        opts["user"], opts["password"] = s.user, s.password
    if s.token:
        opts["token"] = s.token
    if s.creds:
        if not Path(s.creds).exists():
            raise ConfigError(f"creds file {s.creds} does not exist")
        opts["user_credentials"] = s.creds
    if s.nkey_seed:
        seed = Path(s.nkey_seed)
        opts["nkeys_seed_str" if not seed.exists() else "nkeys_seed"] = s.nkey_seed
    if s.tls_ca or s.tls_cert:
        import ssl

        ctx = ssl.create_default_context(cafile=s.tls_ca or None)
        if s.tls_cert:
            ctx.load_cert_chain(s.tls_cert, s.tls_key or None)
        opts["tls"] = ctx
    return opts


def describe(settings: Settings) -> str:
    return _redact_url(settings.server) if settings.server else f"context {settings.context}"


async def connect(settings: Settings, **callbacks: Any) -> Client:
    opts = connect_options(settings)
    try:
        return await nats.connect(**opts, allow_reconnect=True, connect_timeout=3, **callbacks)
    except (OSError, nats.errors.NoServersError, nats.errors.Error) as exc:
        raise TransportError(f"cannot connect to NATS at {describe(settings)}: {exc}: check the URL, that the "
                             "server runs, and the credentials") from None


def _marker(data_dir: Path) -> Path:
    return data_dir / "server.json"


def running_embedded(data_dir: Path) -> str | None:
    """The URL of an embedded server another jetbridge process runs on ``data_dir``, if any."""
    try:
        doc = json.loads(_marker(data_dir).read_text())
        os.kill(int(doc["pid"]), 0)
        return str(doc["url"])
    except (OSError, ValueError, KeyError):
        return None


def start_embedded(data_dir: Path) -> NatsServer:
    data_dir.mkdir(parents=True, exist_ok=True)
    port = 4222
    try:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", port))
    except OSError:
        port = free_port()
    server = NatsServer(data_dir / "jetstream", port=port).start()
    assert server.proc is not None
    _marker(data_dir).write_text(json.dumps({"url": server.url, "pid": server.proc.pid}))
    print(f"jetbridge: started an embedded nats-server at {server.url} (data in {data_dir.resolve()})",
          file=sys.stderr)
    return server


@asynccontextmanager
async def session(settings: Settings) -> AsyncIterator[tuple[Client, Settings]]:
    """Connect as ``settings`` say; with no server or context, use (or start) the embedded server."""
    server: NatsServer | None = None
    if not settings.server and not settings.context:
        data_dir = Path(settings.data_dir)
        url = running_embedded(data_dir)
        if url is None:
            server = start_embedded(data_dir)
            url = server.url
        settings = replace(settings, server=url)
    try:
        nc = await connect(settings)
        try:
            yield nc, settings
        finally:
            await nc.drain() if nc.is_connected else await nc.close()
    finally:
        if server is not None:
            server.stop()
            _marker(Path(settings.data_dir)).unlink(missing_ok=True)
