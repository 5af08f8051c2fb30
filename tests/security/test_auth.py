"""Authentication against real nats-servers: token, user/password, nkey, creds (operator mode, JWTs) and mutual TLS,
each given to Jetbridge three ways (CLI flags, JETBRIDGE_* variables, a NATS CLI context).

For every combination the CLI creates a queue, enqueues a task and waits for it, and reads it back, as subprocesses;
meanwhile a dispatcher and a handler service connected with ``bridge.connect.connect`` run the task in process.
Wrong or missing credentials fail fast with a clear error, exit code 2 and no secret in the output.
"""

from __future__ import annotations

import ssl
import time
from pathlib import Path
from typing import Any

import jetbridge
import pytest
from jetbridge._errors import ConfigError, TransportError

from bridge.connect import connect, connect_options

from .conftest import (
    WAYS,
    AuthServers,
    Cli,
    assert_no_secrets,
    cli_auth,
    connected,
    running_dispatcher,
    running_service,
    settings_for,
    write_context,
)

pytestmark = pytest.mark.anyio

MODES = ("token", "userpass", "nkey", "creds", "tls")


@pytest.mark.parametrize("way", WAYS)
@pytest.mark.parametrize("mode_name", MODES)
async def test_cli_and_dispatcher_authenticate(
    auth_servers: AuthServers, cli: Cli, xdg: Path, monkeypatch: pytest.MonkeyPatch, unique: str, mode_name: str,
    way: str,
) -> None:
    mode = auth_servers[mode_name]
    queue, prefix = f"A{unique}{way}", f"jb.{unique}.{way}"
    args, env = cli_auth(mode, way, xdg)

    added = await cli(*args, "queue", "add", queue, "--retry", "fixed:0.05", "--lease", "2s", "--json", env=env)
    assert added.code == 0, added.output
    assert added.json()["name"] == queue

    settings = settings_for(mode, way, xdg, monkeypatch, queues=(queue,), subject_prefix=prefix, create_queues=False,
                            no_handler_delay=0.1, shutdown_grace=5.0)

    async def echo(task: jetbridge.Task) -> Any:
        return {"echo": task.payload, "queue": task.queue}

    async with connected(settings) as nc_dispatcher, connected(settings) as nc_service:
        async with running_dispatcher(nc_dispatcher, settings), \
                running_service(nc_service, f"svc-{unique}", prefix, {"echo": echo}):
            enqueued = await cli(*args, "enqueue", "echo", '{"n": 1}', "--queue", queue, "--wait", "20", "--json",
                                 env=env)
            assert enqueued.code == 0, enqueued.output
            record = enqueued.json()
            assert record["state"] == "complete", record

    shown = await cli(*args, "task", "get", record["id"], "--json", env=env)
    assert shown.code == 0, shown.output
    got = shown.json()
    assert (got["id"], got["state"], got["queue"], got["tries"]) == (record["id"], "complete", queue, 1)
    assert got["result"]["payload"] == {"echo": {"n": 1}, "queue": queue}
    for run in (added, enqueued, shown):
        assert_no_secrets(run.output, mode.secrets)


@pytest.mark.parametrize("mode_name", MODES)
async def test_wrong_credentials_fail_fast_and_clearly(
    auth_servers: AuthServers, cli: Cli, xdg: Path, mode_name: str,
) -> None:
    """No hang, no traceback, no secret: one line naming the server and the reason, exit code 2."""
    mode = auth_servers[mode_name]
    write_context(xdg, "wrong", mode.context(auth=mode.wrong))
    attempts = {
        "flags": (mode.flags(auth=mode.wrong), {}),
        "env": ([], mode.env(auth=mode.wrong)),
        "context": (["--context", "wrong"], {}),
        "none": (["--server", mode.url], {}),
    }
    for way, (args, env) in attempts.items():
        started = time.monotonic()
        run = await cli(*args, "queue", "list", "--json", env=env, within=30)
        elapsed = time.monotonic() - started
        assert run.code == 2, f"{way}: {run.output}"
        assert "cannot connect to NATS" in run.stderr and "Traceback" not in run.output, f"{way}: {run.output}"
        assert elapsed < 20, f"{way}: took {elapsed:.1f}s to give up"
        assert_no_secrets(run.output, mode.secrets, f"{mode_name} {way}")
    if mode_name in ("token", "userpass", "nkey", "creds"):
        assert "Authorization Violation" in run.stderr or "authorization" in run.stderr.lower(), run.stderr


async def test_wrong_credentials_in_process_raise_transport_error(auth_servers: AuthServers) -> None:
    from bridge.settings import load_settings

    mode = auth_servers["userpass"]
    settings = load_settings(env={}, flags=mode.settings_values(auth=mode.wrong))
    with pytest.raises(TransportError, match="Authorization Violation") as caught:
        await connect(settings)
    assert_no_secrets(str(caught.value), mode.secrets + [mode.wrong["password"]])


async def test_tls_refuses_a_server_signed_by_an_unknown_ca(auth_servers: AuthServers, cli: Cli) -> None:
    mode, pki = auth_servers["tls"], auth_servers.pki
    run = await cli(*mode.flags(tls_ca=str(pki.other_ca)), "queue", "list", within=30)
    assert run.code == 2 and "CERTIFICATE_VERIFY_FAILED" in run.stderr, run.output


async def test_tls_without_a_client_certificate_is_refused(auth_servers: AuthServers, cli: Cli) -> None:
    mode = auth_servers["tls"]
    run = await cli("--server", mode.url, "--tls-ca", mode.auth["tls_ca"], "queue", "list", within=30)
    assert run.code == 2 and "cannot connect to NATS" in run.stderr, run.output


async def test_plain_connection_to_a_tls_server_is_refused(auth_servers: AuthServers, cli: Cli) -> None:
    mode = auth_servers["tls"]
    run = await cli("--server", f"nats://127.0.0.1:{mode.server.port}", "queue", "list", within=30)
    assert run.code == 2 and "cannot connect to NATS" in run.stderr, run.output


def test_configuration_problems_are_config_errors_before_connecting(tmp_path: Path) -> None:
    from bridge.settings import load_settings

    def opts(**values: str) -> dict[str, Any]:
        return connect_options(load_settings(env={}, flags={"server": "nats://127.0.0.1:1", **values}))

    with pytest.raises(ConfigError, match="creds file .* does not exist"):
        opts(creds=str(tmp_path / "missing.creds"))
    with pytest.raises(ConfigError, match="TLS CA file .* does not exist"):
        opts(tls_ca=str(tmp_path / "missing.pem"))
    with pytest.raises(ConfigError, match="tls_key needs tls_cert"):
        opts(tls_key=str(tmp_path / "k.pem"))
    (tmp_path / "bad.pem").write_text("not a certificate")
    with pytest.raises(ConfigError, match="cannot load the TLS files"):
        opts(tls_ca=str(tmp_path / "bad.pem"))
    secret_looking = "SUA0" + "1" * 54  # not base32: no valid seed, and no file
    with pytest.raises(ConfigError, match="neither an existing file nor a valid NKey seed") as caught:
        opts(nkey_seed=secret_looking)
    assert secret_looking not in str(caught.value)


def test_context_paths_expand_home_and_variables(tmp_path: Path, xdg: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``nats context save`` stores paths as given; the nats CLI expands ``~`` (and ``$VARS`` in creds)."""
    from bridge.settings import load_settings

    home = tmp_path / "home"
    (home / "keys").mkdir(parents=True)
    (home / "keys" / "u.creds").write_text("x")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(xdg))
    monkeypatch.setenv("KEYDIR", str(home / "keys"))
    write_context(xdg, "home", {"url": "nats://127.0.0.1:1", "creds": "~/keys/u.creds", "inbox_prefix": "_INBOX.me"})
    write_context(xdg, "vars", {"url": "nats://127.0.0.1:1", "creds": "$KEYDIR/u.creds"})
    for name in ("home", "vars"):
        options = connect_options(load_settings(env={"JETBRIDGE_CONTEXT": name}))
        assert options["user_credentials"] == str(home / "keys" / "u.creds")
    assert connect_options(load_settings(env={"JETBRIDGE_CONTEXT": "home"}))["inbox_prefix"] == "_INBOX.me"
    with pytest.raises(ConfigError, match="context name"):
        connect_options(load_settings(env={"JETBRIDGE_CONTEXT": "../../etc/passwd"}))


def test_flags_override_the_context(xdg: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bridge.settings import load_settings

    monkeypatch.setenv("XDG_CONFIG_HOME", str(xdg))
    write_context(xdg, "c", {"url": "nats://ctx:4222", "user": "ctx-user", "password": "ctx-pw"})
    options = connect_options(load_settings(env={"JETBRIDGE_CONTEXT": "c"},
                                            flags={"server": "nats://flag:4222", "password": "flag-pw"}))
    assert (options["servers"], options["user"], options["password"]) == (["nats://flag:4222"], "ctx-user", "flag-pw")


def test_tls_context_verifies_the_server(auth_servers: AuthServers) -> None:
    from bridge.settings import load_settings

    mode = auth_servers["tls"]
    options = connect_options(load_settings(env={}, flags=mode.settings_values()))
    ctx: ssl.SSLContext = options["tls"]
    assert ctx.verify_mode is ssl.CERT_REQUIRED and ctx.check_hostname


async def test_after_the_first_connection_it_reconnects_forever(tmp_path: Path) -> None:
    """The first connection gives up after a few tries; an established one keeps trying through a long outage."""
    import anyio

    from bridge.connect import INITIAL_TRIES
    from bridge.embedded import NatsServer
    from bridge.settings import load_settings

    from .conftest import start_server
    from .natsauth import quote

    config = f"authorization {{ users = [ {{user: bob, password: {quote('pw-reconnect')}}} ] }}\n"
    server = start_server(tmp_path / "nats", config)
    failures, reconnected = 0, anyio.Event()
    enough_failures = anyio.Event()

    async def on_error(exc: BaseException) -> None:
        nonlocal failures
        failures += 1
        if failures > 2 * INITIAL_TRIES:
            enough_failures.set()

    async def on_reconnected() -> None:
        reconnected.set()

    settings = load_settings(env={}, flags={"server": server.url, "user": "bob", "password": "pw-reconnect"})
    nc = await connect(settings, error_cb=on_error, reconnected_cb=on_reconnected)
    try:
        server.stop()
        with anyio.fail_after(30):
            await enough_failures.wait()  # more failed reconnects than a first connection is allowed
        restarted = NatsServer(tmp_path / "nats" / "store", port=server.port,
                               extra_args=["-c", str(tmp_path / "nats" / "server.conf")]).start()
        try:
            with anyio.fail_after(30):
                await reconnected.wait()
            assert nc.is_connected
            await nc.flush(timeout=5)
        finally:
            restarted.stop()
    finally:
        await nc.close()
