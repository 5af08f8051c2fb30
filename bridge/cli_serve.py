"""``jetbridge serve``: the HTTP API (asyncjobs-compatible ``/v1``) and the dashboard at ``/``.

Authentication: bearer tokens with roles, from ``JB_API_TOKENS`` or ``--tokens FILE`` (see
bridge/web/auth.py). Without tokens the server listens only on a loopback address; anything else is refused.
"""

from __future__ import annotations

import os
from typing import Annotated

import typer
from jetbridge.internal import ConfigError


def parse_listen(text: str) -> tuple[str, int]:
    """``host:port`` (``[::1]:8080`` for IPv6) into its parts; a clear error otherwise."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"--listen {text!r} is not host:port, e.g. 127.0.0.1:8080")
    return (host.strip("[]") or "0.0.0.0"), int(port)


def serve(
    ctx: typer.Context,
    listen: Annotated[str, typer.Option("--listen", "-l", help="host:port to listen on.")] = "127.0.0.1:8080",
    queue: Annotated[str, typer.Option("--queue", "-q", help="Queue for tasks that name none.")] = "DEFAULT",
    tokens_file: Annotated[str | None, typer.Option("--tokens", help="File of role:token lines "
                                                    "(else JB_API_TOKENS).")] = None,
    max_body: Annotated[int, typer.Option(help="Largest request body in bytes.")] = 512 * 1024,
    # Not asyncjobs' --tls-cert/--tls-key: those are the global NATS client certificate options (taken anywhere).
    tls_cert: Annotated[str | None, typer.Option("--http-tls-cert", help="Serve HTTPS with this certificate.")] = None,
    tls_key: Annotated[str | None, typer.Option("--http-tls-key", help="The certificate's key.")] = None,
    rate: Annotated[float, typer.Option(help="Requests a second per client (token or address); 0: no limit.")] = 100.0,
    burst: Annotated[int, typer.Option(help="Requests at once per client (default: twice --rate).")] = 0,
) -> None:
    """Serve the HTTP API and the dashboard until Ctrl-C."""
    from .web.auth import is_loopback, load_tokens

    host, port = parse_listen(listen)
    tokens = load_tokens(ctx.obj["env"], tokens_file)
    if not tokens.enabled and not is_loopback(host):
        raise ConfigError(f"--listen {listen} is not a loopback address: configure API tokens "
                          "(JB_API_TOKENS or --tokens) before exposing the API")
    if bool(tls_cert) != bool(tls_key):
        raise ConfigError("--http-tls-cert and --http-tls-key go together")
    for path in (tls_cert, tls_key):
        if path and not os.path.isfile(path):
            raise ConfigError(f"cannot read the HTTPS file {path}")
    if max_body < 1024:
        raise ConfigError("--max-body must be at least 1024 bytes")
    if rate < 0 or burst < 0:
        raise ConfigError("--rate and --burst must not be negative")
    run_server(ctx.obj["settings"], host, port, queue=queue, tokens=tokens, max_body=max_body,
               tls_cert=tls_cert, tls_key=tls_key, rate=rate, burst=burst)


def run_server(settings: object, host: str, port: int, *, queue: str, tokens: object, max_body: int,
               tls_cert: str | None = None, tls_key: str | None = None, announce: bool = True,
               rate: float = 0.0, burst: int = 0) -> None:
    import contextlib

    import uvicorn

    from .connect import session
    from .web.app import create_app
    from .web.auth import Tokens
    from .web.backend import Backend

    stack = contextlib.AsyncExitStack()

    async def make_backend() -> Backend:
        nc, _ = await stack.enter_async_context(session(settings))  # type: ignore[arg-type]
        backend = Backend(nc, queue=queue)
        await backend.start()
        return backend

    app = create_app(make_backend, tokens=tokens if isinstance(tokens, Tokens) else None, max_body=max_body,
                     on_close=stack.aclose, rate=rate, burst=burst)

    scheme = "https" if tls_cert else "http"
    if announce:
        print(f"jetbridge: dashboard and API at {scheme}://{host}:{port}/ (Ctrl-C to stop)", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning", ssl_certfile=tls_cert, ssl_keyfile=tls_key,
                timeout_graceful_shutdown=5)
