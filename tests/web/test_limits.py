"""Rate limits per client (429 ``rate_limited`` in the envelope, with Retry-After), the pure bucket rule, and
``jetbridge serve`` over HTTPS (``--http-tls-cert``/``--http-tls-key``: ``--tls-cert`` is NATS's, global)."""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from bridge.embedded import NatsServer, free_port
from bridge.web.auth import parse_tokens
from bridge.web.ratelimit import Buckets, client_key
from tests.security.natsauth import make_pki

from .conftest import TOKENS, serve_app

JB = [sys.executable, "-m", "bridge"]


def test_a_bucket_allows_a_burst_then_the_rate() -> None:
    b = Buckets(rate=2.0, burst=3)
    assert [b.take("k", 0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert b.take("k", 0.0) == pytest.approx(0.5)  # one token comes back in 1/rate seconds
    assert b.take("k", 0.5) == 0.0 and b.take("k", 0.5) > 0
    assert b.take("other", 0.5) == 0.0  # every client has its own bucket
    assert b.take("k", 100.0) == 0.0 and [b.take("k", 100.0) for _ in range(2)] == [0.0, 0.0]  # refills to burst only
    assert b.take("k", 100.0) > 0


def test_the_table_of_clients_is_bounded() -> None:
    b = Buckets(rate=1.0, burst=1, max_keys=100)
    for n in range(1000):
        b.take(str(n), 0.0)
    assert len(b) == 100


def test_clients_are_told_apart_by_token_cookie_or_address_and_tokens_are_not_kept() -> None:
    by_bearer = client_key({"headers": [(b"authorization", b"Bearer secret-token-123456")], "client": ("1.2.3.4", 1)})
    by_cookie = client_key({"headers": [(b"cookie", b"a=b; jb_token=secret-token-123456")], "client": ("5.6.7.8", 1)})
    assert by_bearer == by_cookie and "secret" not in by_bearer
    assert client_key({"headers": [], "client": ("1.2.3.4", 9)}) == "a:1.2.3.4"


def test_over_the_rate_is_429_in_the_envelope_per_token(nats_server: NatsServer) -> None:
    tokens = parse_tokens(",".join(f"{r}:{t}" for r, t in TOKENS.items()), source="test")
    served = serve_app(nats_server.url, tokens=tokens, rate=0.01, burst=3)  # no token comes back during the test
    try:
        with httpx.Client(base_url=served.url) as c:
            reader = {"Authorization": f"Bearer {TOKENS['read']}"}
            assert [c.get("/v1/info", headers=reader).status_code for _ in range(3)] == [200, 200, 200]
            r = c.get("/v1/info", headers=reader)
            assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
            assert r.json()["error"]["code"] == "rate_limited"
            assert r.json()["error"]["details"]["reason"] == "rate_limited"
            assert c.get("/v1/info", headers={"Authorization": f"Bearer {TOKENS['operator']}"}).status_code == 200
            assert all(c.get("/healthz").status_code == 200 for _ in range(5))  # probes are not limited
            # a big body from a limited client is refused before it is read
            r = c.post("/v1/tasks", headers=reader, content=b"x" * 600_000)
            assert r.status_code == 429
    finally:
        served.stop()


def test_serve_speaks_https(nats_server: NatsServer, tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    port = free_port()
    proc = subprocess.Popen([*JB, "--server", nats_server.url, "serve", "--listen", f"127.0.0.1:{port}",
                             "--http-tls-cert", str(pki.server_cert), "--http-tls-key", str(pki.server_key)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    try:
        assert proc.stdout is not None
        assert f"https://127.0.0.1:{port}/" in proc.stdout.readline()
        trust = ssl.create_default_context(cafile=str(pki.ca))
        # The process prints its address before it listens: connecting may be refused for a moment.
        with httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=trust,
                          transport=httpx.HTTPTransport(retries=50, verify=trust)) as c:
            assert c.get("/healthz", timeout=30).json()["status"] == "ok"
        with pytest.raises(httpx.HTTPError), httpx.Client(base_url=f"http://127.0.0.1:{port}") as plain:
            plain.get("/healthz")
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0


def test_serve_bad_limits_and_files_are_one_line_errors(nats_server: NatsServer) -> None:
    for args, message in ((["--rate", "-1"], "must not be negative"),
                          (["--http-tls-cert", "/nope.pem", "--http-tls-key", "/nope.key"], "cannot read the HTTPS file")):
        r = subprocess.run([*JB, "--server", nats_server.url, "serve", *args], capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr, r.stderr
