"""``jetbridge serve``: clear one-line errors for bad flags, and a real process serving until SIGINT."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from bridge.embedded import NatsServer, free_port

JB = [sys.executable, "-m", "bridge"]


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*JB, *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})


def test_refuses_a_public_address_without_tokens(nats_server: NatsServer) -> None:
    r = run("--server", nats_server.url, "serve", "--listen", "0.0.0.0:8080")
    assert r.returncode == 2 and "configure API tokens" in r.stderr and "Traceback" not in r.stderr


def test_bad_listen_and_tokens_are_one_line_errors(nats_server: NatsServer, tmp_path: Path) -> None:
    r = run("--server", nats_server.url, "serve", "--listen", "localhost")
    assert r.returncode == 2 and "is not host:port" in r.stderr
    r = run("--server", nats_server.url, "serve", env={"JB_API_TOKENS": "admin:abcdefghijklmnopqrstuvwxyz"})
    assert r.returncode == 2 and "entry 1 is not role:token" in r.stderr
    assert "abcdefghijklmnop" not in r.stderr  # the token is not echoed
    r = run("--server", nats_server.url, "serve", "--tokens", str(tmp_path / "missing"))
    assert r.returncode == 2 and "cannot read the tokens file" in r.stderr


def test_serves_until_sigint(nats_server: NatsServer) -> None:
    port = free_port()
    proc = subprocess.Popen([*JB, "--server", nats_server.url, "serve", "--listen", f"127.0.0.1:{port}"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert f"http://127.0.0.1:{port}/" in line
        # The process prints its address before it listens: connecting may be refused for a moment.
        with httpx.Client(base_url=f"http://127.0.0.1:{port}",
                          transport=httpx.HTTPTransport(retries=50)) as c:
            ready = c.get("/readyz", timeout=30)
        assert ready.status_code in (200, 503)
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
