"""No secret in logs, errors or CLI output.

The CLI and the dispatcher run with passwords, tokens, NKey seeds, creds files and TLS keys, given by flags,
environment variables or a config file; every byte they print (``config show``, connection errors, the dispatcher's
structured logs at debug level, its /metrics) is scanned for the secret strings, unwrapped.
"""

from __future__ import annotations

import json
import signal
import sys
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import jetbridge
import pytest
from anyio.abc import ByteReceiveStream, Process
from jetbridge._requester import Requester

from bridge.connect import NatsContext
from bridge.queues import QueueAdmin, QueueConfig
from bridge.settings import load_settings

from .conftest import (
    AuthServers,
    Cli,
    assert_no_secrets,
    clean_environment,
    connected,
    running_dispatcher,
    running_service,
    write_context,
)
from .natsauth import user_key

pytestmark = pytest.mark.anyio


class Live:
    """A running CLI process whose output is collected line by line and can be awaited."""

    def __init__(self, proc: Process) -> None:
        self.proc = proc
        self.lines: dict[str, list[str]] = {"stdout": [], "stderr": []}
        self._changed = anyio.Event()

    @property
    def output(self) -> str:
        return "\n".join(self.lines["stdout"] + self.lines["stderr"])

    async def pump(self, name: str, stream: ByteReceiveStream) -> None:
        buffer = b""
        async for chunk in stream:
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                self._add(name, line)
        if buffer:
            self._add(name, buffer)

    def _add(self, name: str, line: bytes) -> None:
        self.lines[name].append(line.decode(errors="replace"))
        changed, self._changed = self._changed, anyio.Event()
        changed.set()

    async def wait_for(self, name: str, needle: str, within: float = 20.0) -> str:
        with anyio.fail_after(within):
            while True:
                for line in self.lines[name]:
                    if needle in line:
                        return line
                if self.proc.returncode is not None:
                    raise AssertionError(f"the process ended ({self.proc.returncode}) before {needle!r}:\n{self.output}")
                await self._changed.wait()


@asynccontextmanager
async def live_cli(xdg: Path, cwd: Path, args: list[str], env: dict[str, str]) -> AsyncIterator[Live]:
    """``jetbridge ARGS`` running; on exit it gets SIGTERM and must stop within 20 seconds."""
    proc = await anyio.open_process([sys.executable, "-m", "bridge", *args], env={**clean_environment(xdg), **env},
                                    cwd=cwd)
    live = Live(proc)
    async with anyio.create_task_group() as tg:
        assert proc.stdout is not None and proc.stderr is not None
        tg.start_soon(live.pump, "stdout", proc.stdout)
        tg.start_soon(live.pump, "stderr", proc.stderr)
        try:
            yield live
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
            try:
                with anyio.fail_after(20):
                    await proc.wait()
            finally:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()


# Configuration output ---------------------------------------------------------------------------------------------


SECRETS = {"password": "pw-Zq81-9xK", "token": "tok-Hh27-aa0", "url_password": "urlpw-Tr44",
           "other_url_password": "p@ss-Ww90"}


def _seed() -> str:
    return user_key().seed


async def test_config_show_redacts_every_secret(cli: Cli, tmp_path: Path) -> None:
    seed = _seed()
    creds = str(tmp_path / "very-secret-name.creds")
    server = f"nats://bob:{SECRETS['url_password']}@h1:4222,carol:{SECRETS['other_url_password']}@h2:4222"
    secrets = [*SECRETS.values(), seed, creds]
    flags = ["--server", server, "--user", "alice", "--password", SECRETS["password"], "--token", SECRETS["token"],
             "--nkey", seed, "--creds", creds]
    env = {"JETBRIDGE_SERVER": server, "JETBRIDGE_USER": "alice", "JETBRIDGE_PASSWORD": SECRETS["password"],
           "JETBRIDGE_TOKEN": SECRETS["token"], "JETBRIDGE_NKEY_SEED": seed, "JETBRIDGE_CREDS": creds}
    toml = tmp_path / "jetbridge.toml"
    toml.write_text("".join(f"{k.removeprefix('JETBRIDGE_').lower()} = {json.dumps(v)}\n" for k, v in env.items()))
    for label, args, extra_env in (("flags", flags, {}), ("env", [], env), ("file", ["--config", str(toml)], {}),
                                   ("NATS_URL", [], {"NATS_URL": server})):
        run = await cli(*args, "config", "show", env=extra_env)
        assert run.code == 0, run.output
        shown = run.json()
        assert shown["server"] == "nats://<redacted>@h1:4222,<redacted>@h2:4222", label
        if label != "NATS_URL":
            assert {k: shown[k] for k in ("password", "token", "nkey_seed", "creds")} == dict.fromkeys(
                ("password", "token", "nkey_seed", "creds"), "<redacted>"), label
            assert shown["user"] == "alice"
        assert_no_secrets(run.output, secrets, f"config show ({label})")
        check = await cli(*args, "config", "check", env=extra_env)
        assert check.code == 0 and check.stdout.strip() == "configuration is valid"
        assert_no_secrets(check.output, secrets, f"config check ({label})")


async def test_usage_and_setting_errors_do_not_echo_secrets(cli: Cli) -> None:
    secrets = [SECRETS["password"], SECRETS["token"]]
    env = {"JETBRIDGE_PASSWORD": SECRETS["password"], "JETBRIDGE_TOKEN": SECRETS["token"]}
    cases = [
        (["--password", SECRETS["password"], "--no-such-flag", "config", "show"], {}),
        (["--token", SECRETS["token"], "config", "show"], {"JETBRIDGE_CONCURRENCY": "many"}),
        (["config", "show"], {**env, "JETBRIDGE_PASWORD": SECRETS["password"]}),  # a typo'd variable name
        (["--server", f"nats://u:{SECRETS['url_password']}@127.0.0.1:1", "queue", "list"], env),
    ]
    for args, extra in cases:
        run = await cli(*args, env=extra, within=30)
        assert run.code == 2, run.output
        assert_no_secrets(run.output, [*secrets, SECRETS["url_password"]], " ".join(args))


def test_settings_and_context_reprs_are_redacted() -> None:
    seed = _seed()
    settings = load_settings(env={"JETBRIDGE_PASSWORD": SECRETS["password"], "JETBRIDGE_TOKEN": SECRETS["token"],
                                  "JETBRIDGE_NKEY_SEED": seed,
                                  "JETBRIDGE_SERVER": f"u:{SECRETS['url_password']}@h:4222"})
    for text in (repr(settings), str(settings), f"{settings!r}", repr([settings])):
        assert_no_secrets(text, [SECRETS["password"], SECRETS["token"], seed, SECRETS["url_password"]], "repr")
    assert "password='<redacted>'" in repr(settings)
    context = NatsContext(url="nats://h:4222", user="u", password=SECRETS["password"], token=SECRETS["token"])
    assert_no_secrets(repr(context), [SECRETS["password"], SECRETS["token"]], "NatsContext repr")


async def test_connection_errors_redact_url_credentials(auth_servers: AuthServers, cli: Cli, xdg: Path) -> None:
    mode = auth_servers["userpass"]
    port = mode.server.port
    right = mode.auth["password"]
    for wrong in ("wrong-Bq55", "wr@ng-Cc12"):
        for server in (f"nats://alice:{wrong}@127.0.0.1:{port}", f"alice:{wrong}@127.0.0.1:{port}"):
            run = await cli("--server", server, "queue", "list", within=30)
            assert run.code == 2 and "cannot connect to NATS at" in run.stderr, run.output
            assert "<redacted>@127.0.0.1" in run.stderr, run.stderr
            assert_no_secrets(run.output, [wrong, right], server)
    write_context(xdg, "bad", mode.context(auth={"user": "alice", "password": "wrong-ctx-Uu71"}))
    run = await cli("--context", "bad", "queue", "list", within=30)
    assert run.code == 2 and "cannot connect to NATS at" in run.stderr, run.output
    assert_no_secrets(run.output, ["wrong-ctx-Uu71", right], "context")


# The dispatcher's logs ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode_name", ["userpass", "token", "nkey", "creds", "tls"])
async def test_dispatcher_logs_and_metrics_carry_no_secret(
    auth_servers: AuthServers, xdg: Path, tmp_path: Path, unique: str, mode_name: str,
) -> None:
    mode = auth_servers[mode_name]
    queue, prefix = f"L{unique}", f"jb.{unique}"
    settings = load_settings(env=mode.env())
    failed_once: set[str] = set()

    async def flaky(task: jetbridge.Task) -> Any:
        if task.id not in failed_once:
            failed_once.add(task.id)
            raise RuntimeError("first attempt fails, to get warnings logged")
        await task.heartbeat(0.5, "progress")
        return {"ok": task.payload}

    env = {**mode.env(), "JETBRIDGE_SUBJECT_PREFIX": prefix, "JETBRIDGE_CREATE_QUEUES": "false",
           "JETBRIDGE_NO_HANDLER_DELAY": "0.1", "JETBRIDGE_SHUTDOWN_GRACE": "5s"}
    if mode_name == "userpass":  # the URL carries the credentials too
        env["JETBRIDGE_SERVER"] = mode.url.replace("nats://", f"nats://alice:{mode.auth['password']}@")
    args = ["run", "--queue", queue, "--log-format", "json", "--log-level", "debug", "--metrics", "127.0.0.1:0"]
    async with connected(settings) as nc:
        await QueueAdmin(Requester(nc)).add(QueueConfig(name=queue, retry="fixed:0.05", lease=2.0, max_run_time=10.0))
        async with live_cli(xdg, tmp_path, args, env) as dispatcher:
            await dispatcher.wait_for("stderr", "dispatcher_started")
            port = json.loads(await dispatcher.wait_for("stderr", "metrics_listening"))["port"]
            async with running_service(nc, f"svc-{unique}", prefix, {"work": flaky}):
                producer = jetbridge.Producer(nc, queue=queue)
                ids = [await producer.enqueue("work", {"n": n}) for n in range(2)]
                records = [await producer.wait(tid, timeout=30) for tid in ids]
                await producer.close()
            metrics = await anyio.to_thread.run_sync(
                lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode())
        assert dispatcher.proc.returncode == 0, dispatcher.output
    assert [(r.state, r.tries) for r in records] == [("complete", 2), ("complete", 2)]

    events, plain = [], []
    for line in dispatcher.lines["stderr"]:
        if line.startswith("{"):
            events.append(json.loads(line)["event"])
        elif line.strip():
            plain.append(line)
    assert {"connected", "dispatcher_started", "dispatcher_stopped"} <= set(events), events
    # Every line is structured, but for asyncio's own warning when a TLS connection closes (printed at shutdown, at
    # times): bridge/logs.py configures structlog only, so stdlib logging bypasses the JSON renderer.
    assert set(plain) <= {ASYNCIO_TLS_WARNING}, plain
    assert_no_secrets(dispatcher.output, mode.secrets, f"jetbridge run ({mode_name})")
    assert_no_secrets(metrics, mode.secrets, f"/metrics ({mode_name})")
    if mode_name == "userpass":
        connected_line = next(json.loads(x) for x in dispatcher.lines["stderr"] if '"connected"' in x)
        assert connected_line["server"].startswith("nats://<redacted>@127.0.0.1:")


ASYNCIO_TLS_WARNING = "returning true from eof_received() has no effect when using ssl"


async def test_handle_does_not_give_nats_credentials_to_commands(
    auth_servers: AuthServers, xdg: Path, tmp_path: Path, unique: str,
) -> None:
    mode = auth_servers["userpass"]
    queue, prefix = f"H{unique}", f"jb.{unique}"
    settings = load_settings(env=mode.env())
    from dataclasses import replace

    dispatcher_settings = replace(settings, queues=(queue,), subject_prefix=prefix, create_queues=False,
                                  no_handler_delay=0.1, shutdown_grace=5.0)
    env = {**mode.env(), "JETBRIDGE_SUBJECT_PREFIX": prefix, "JETBRIDGE_TOKEN": "tok-for-handle-Ee31"}
    async with connected(settings) as nc:
        await QueueAdmin(Requester(nc)).add(QueueConfig(name=queue, retry="fixed:0.05", lease=2.0, max_run_time=10.0))
        async with live_cli(xdg, tmp_path, ["handle", "leak", "--", "env"], env) as handler:
            await handler.wait_for("stdout", "ready")
            async with running_dispatcher(nc, dispatcher_settings):
                producer = jetbridge.Producer(nc, queue=queue)
                record = await producer.wait(await producer.enqueue("leak"), timeout=30)
                await producer.close()
    assert record.state == "complete" and record.result is not None
    value = record.result.value()
    seen = value.data.decode() if isinstance(value, jetbridge.Bytes) else json.dumps(value)
    assert "JETBRIDGE_TASK_ID=" in seen  # the command did print its environment
    assert_no_secrets(seen, [mode.auth["password"], "tok-for-handle-Ee31"], "the handler command's environment")
