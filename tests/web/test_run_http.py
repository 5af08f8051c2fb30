"""``jetbridge run --http``: the API and dashboard inside a real dispatcher process, over HTTPS with tokens, with
clear one-line errors for bad settings, and gone once the dispatcher has drained."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import httpx
import jetbridge
import pytest

from bridge.embedded import NatsServer, free_port
from tests.harness import Harness
from tests.security.natsauth import make_pki

from .conftest import TOKENS

pytestmark = pytest.mark.anyio
JB = [sys.executable, "-m", "bridge"]


async def jb(*args: str, env: dict[str, str] | None = None) -> Any:
    done = await anyio.run_process([*JB, *args], env={**os.environ, **(env or {})}, check=False)
    assert b"Traceback" not in done.stderr, done.stderr.decode()
    return done


async def test_run_serves_the_api_over_https_until_it_stops(nats_server: NatsServer, h: Harness,
                                                            tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    trust = ssl.create_default_context(cafile=str(pki.ca))
    port = free_port()
    did = f"d-{h.unique}"
    env = {"JETBRIDGE_DISPATCHER_ID": did, "JETBRIDGE_SUBJECT_PREFIX": h.prefix, "JETBRIDGE_FIRE_SCHEDULES": "false",
           "JETBRIDGE_HTTP_TLS_CERT": str(pki.server_cert),
           "JETBRIDGE_HTTP_TLS_KEY": str(pki.server_key), "JETBRIDGE_LOG_FORMAT": "json",
           "JB_API_TOKENS": ",".join(f"{r}:{t}" for r, t in TOKENS.items())}
    base = ["--server", nats_server.url, "--data-dir", str(tmp_path / "data")]

    async def work(task: jetbridge.Task) -> Any:
        return {"seen": task.payload}

    started = await jb(*base, "run", "--queue", h.queue, "--http", f"127.0.0.1:{port}", "--background", env=env)
    assert started.returncode == 0, started.stderr.decode()  # returns once the dispatcher (and its API) serve
    try:
        producer = {"Authorization": f"Bearer {TOKENS['producer']}"}
        async with httpx.AsyncClient(base_url=f"https://127.0.0.1:{port}", verify=trust, headers=producer) as c, \
                h.service({f"{h.unique}:w": work}):
            async with httpx.AsyncClient(base_url=f"https://127.0.0.1:{port}", verify=trust) as anonymous:
                assert (await anonymous.get("/v1/info")).status_code == 401  # tokens are required
            ours = (await c.get("/v1/dispatchers")).json()["dispatchers"]
            assert [d["queues"] for d in ours if d["id"] == did] == [[h.queue]]
            task = (await c.post("/v1/tasks", json={"type": f"{h.unique}:w", "queue": h.queue, "payload": [1]})).json()
            assert (await h.producer.wait(task["id"], timeout=30)).state == "complete"
            got = (await c.get(f"/v1/tasks/{task['id']}")).json()
            assert got["state"] == "complete" and got["result"]["payload"] == {"seen": [1]}
            c.cookies.set("jb_token", TOKENS["read"])
            page = (await c.get("/", headers={"Authorization": ""})).text
            assert page.count("Dispatchers online") == 1 and "<title>Overview · Jetbridge</title>" in page
        with pytest.raises(httpx.HTTPError):  # HTTPS only
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as plain:
                await plain.get("/healthz")
    finally:
        stopped = await jb(*base, "stop", env=env)
        assert stopped.returncode == 0, stopped.stderr.decode()
    log = (tmp_path / "data" / "dispatcher.log").read_text()
    assert '"http_listening"' in log and '"http_stopped"' in log
    with pytest.raises(httpx.ConnectError):  # the process is gone, and its port with it
        async with httpx.AsyncClient(base_url=f"https://127.0.0.1:{port}", verify=trust) as c:
            await c.get("/healthz")


@pytest.mark.parametrize(("args", "env", "message"), [
    (["--http", "0.0.0.0:8080"], {}, "is not a loopback address: configure API tokens"),
    (["--http", "localhost"], {}, "http_listen must be host:port"),
    (["--http", "127.0.0.1:x"], {}, "is not host:port"),
    (["--http", "127.0.0.1:0"], {"JETBRIDGE_HTTP_TLS_CERT": "/nonexistent.pem"}, "go together"),
    (["--http", "127.0.0.1:0"], {"JETBRIDGE_HTTP_TLS_CERT": "/nonexistent.pem", "JETBRIDGE_HTTP_TLS_KEY": "/k.pem"},
     "cannot read the HTTPS file /nonexistent.pem"),
    (["--http", "127.0.0.1:0"], {"JB_API_TOKENS": "admin:abcdefghijklmnopqrstuvwxyz"}, "is not role:token"),
])
async def test_bad_http_settings_are_one_line_errors(nats_server: NatsServer, args: list[str], env: dict[str, str],
                                                     message: str) -> None:
    done = await jb("--server", nats_server.url, "run", *args, env=env)
    assert done.returncode == 2 and message in done.stderr.decode(), done.stderr.decode()
    assert len(done.stderr.decode().strip().splitlines()) == 1


async def test_a_port_in_use_is_a_one_line_error(nats_server: NatsServer, tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        done = await jb("--server", nats_server.url, "--data-dir", str(tmp_path), "run", "--queue", "DEFAULT",
                        "--http", f"127.0.0.1:{port}", env={"JETBRIDGE_LOG_FORMAT": "json"})
    err = done.stderr.decode()
    assert done.returncode == 2 and f"http_listen 127.0.0.1:{port}: Address already in use" in err, err


async def test_an_open_event_stream_ends_cleanly_when_the_dispatcher_stops(nats_server: NatsServer,
                                                                           tmp_path: Path) -> None:
    import signal

    port = free_port()
    env = {**os.environ, "JETBRIDGE_LOG_FORMAT": "json"}
    argv = [*JB, "--server", nats_server.url, "--data-dir", str(tmp_path), "run", "--queue", "DEFAULT",
            "--http", f"127.0.0.1:{port}"]
    log = tmp_path / "dispatcher.log"
    with log.open("wb") as err:
        proc = await anyio.open_process(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
    async with proc, httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60,
                                       transport=httpx.AsyncHTTPTransport(retries=100)) as c:
        async with c.stream("GET", "/v1/events") as stream:  # the app answers once the dispatcher serves
            assert stream.status_code == 200
            proc.send_signal(signal.SIGTERM)
            # Ended by the server as a complete response (not cut off after uvicorn's graceful timeout).
            async for _ in stream.aiter_bytes():
                pass
        assert await proc.wait() == 0, log.read_text()
    assert '"forced": false' in log.read_text()


async def test_a_sigterm_while_the_dispatcher_starts_ends_it_cleanly(nats_server: NatsServer, tmp_path: Path) -> None:
    """An orchestrator may stop a container at any moment: a SIGTERM as soon as the process has connected (before
    or while the dispatcher and its HTTP server start) ends it with exit 0, not the signal's default death."""
    import signal

    argv = [*JB, "--server", nats_server.url, "--data-dir", str(tmp_path), "run", "--queue", "DEFAULT",
            "--http", f"127.0.0.1:{free_port()}"]
    async with await anyio.open_process(argv, env={**os.environ, "JETBRIDGE_LOG_FORMAT": "json"},
                                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL) as proc:
        assert proc.stderr is not None
        seen = b""
        with anyio.fail_after(60):
            async for chunk in proc.stderr:
                seen += chunk
                if b'"event": "connected"' in seen:
                    proc.send_signal(signal.SIGTERM)
                    break
            async for chunk in proc.stderr:
                seen += chunk
            code = await proc.wait()
    text = seen.decode()
    assert code == 0 and '"event": "signal"' in text and "Traceback" not in text, text
