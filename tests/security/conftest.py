"""Fixtures for the security tests: nats-servers that demand each kind of authentication, the CLI as a subprocess,
and a dispatcher plus handler service connected through ``bridge.connect.connect``.

Every server here is private to these tests and configured by a generated config file (``nats-server -c``).
"""

from __future__ import annotations

import functools
import json
import os
import re
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import anyio
import pytest
from nats.aio.client import Client

from bridge.connect import connect
from bridge.embedded import NatsServer
from bridge.settings import Settings, load_settings
from tests import harness
from tests.harness import running_dispatcher  # noqa: F401 - re-exported for the security tests

from .natsauth import Operator, Pki, creds_text, make_pki, quote, user_key

#: Settings key -> CLI flag (the ones whose flag is not just the key with dashes).
FLAG_NAMES = {"nkey_seed": "--nkey"}
#: Settings key -> key in a ``nats context save`` file.
CONTEXT_KEYS = {"server": "url", "user": "user", "password": "password", "token": "token", "creds": "creds",
                "nkey_seed": "nkey", "tls_ca": "ca", "tls_cert": "cert", "tls_key": "key",
                "inbox_prefix": "inbox_prefix"}
WAYS = ("flags", "env", "context")


def start_server(directory: Path, config: str) -> NatsServer:
    """A nats-server with JetStream, configured by ``config`` (written to ``directory/server.conf``)."""
    directory.mkdir(parents=True, exist_ok=True)
    conf = directory / "server.conf"
    conf.write_text(config)
    return NatsServer(directory / "store", extra_args=["-c", str(conf)]).start()


@dataclass
class AuthMode:
    """A server that demands one kind of authentication, and the settings that pass it."""

    name: str
    server: NatsServer
    url: str
    #: Settings keys and values that authenticate (paths for files)
    auth: dict[str, str]
    #: the same, but wrong: the server must refuse them
    wrong: dict[str, str]
    #: strings that must never appear in any output
    secrets: list[str]
    #: overrides for the environment-variable way (e.g. the nkey seed itself instead of its file)
    env_auth: dict[str, str] = field(default_factory=dict)

    def settings_values(self, way: str = "flags", auth: dict[str, str] | None = None, **extra: str) -> dict[str, str]:
        """Settings that connect ``way``: the mode's credentials (or ``auth`` instead), then ``extra``."""
        given = {**self.auth, **(self.env_auth if way == "env" else {})} if auth is None else auth
        return {"server": self.url, **given, **extra}

    def flags(self, auth: dict[str, str] | None = None, **extra: str) -> list[str]:
        out: list[str] = []
        for key, value in self.settings_values("flags", auth, **extra).items():
            out += [FLAG_NAMES.get(key, "--" + key.replace("_", "-")), value]
        return out

    def env(self, auth: dict[str, str] | None = None, **extra: str) -> dict[str, str]:
        return {f"JETBRIDGE_{k.upper()}": v for k, v in self.settings_values("env", auth, **extra).items()}

    def context(self, auth: dict[str, str] | None = None, **extra: str) -> dict[str, Any]:
        return {"description": f"jetbridge security test: {self.name}",
                **{CONTEXT_KEYS[k]: v for k, v in self.settings_values("context", auth, **extra).items()}}


def write_context(xdg: Path, name: str, doc: dict[str, Any]) -> None:
    """A NATS CLI context file, as ``nats context save NAME`` writes it, under ``$XDG_CONFIG_HOME/nats/context``."""
    directory = xdg / "nats" / "context"
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{name}.json").write_text(json.dumps(doc, indent=2))


class AuthServers:
    """Starts each mode's server on first use and keeps it for the session."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._modes: dict[str, AuthMode] = {}
        self._pki: Pki | None = None

    @property
    def pki(self) -> Pki:
        if self._pki is None:
            self._pki = make_pki(self.root / "pki")
        return self._pki

    def __getitem__(self, name: str) -> AuthMode:
        if name not in self._modes:
            self._modes[name] = getattr(self, f"_make_{name}")(self.root / name)
        return self._modes[name]

    def stop(self) -> None:
        for mode in self._modes.values():
            mode.server.stop()

    def _make_token(self, d: Path) -> AuthMode:
        token = "tok-" + os.urandom(12).hex()
        server = start_server(d, f"authorization {{ token: {quote(token)} }}\n")
        return AuthMode("token", server, server.url, {"token": token}, {"token": "tok-wrong-" + os.urandom(6).hex()},
                        [token])

    def _make_userpass(self, d: Path) -> AuthMode:
        password = "pw-" + os.urandom(12).hex()
        server = start_server(d, f"authorization {{ users = [ {{user: alice, password: {quote(password)}}} ] }}\n")
        return AuthMode("userpass", server, server.url, {"user": "alice", "password": password},
                        {"user": "alice", "password": "pw-wrong-" + os.urandom(6).hex()}, [password])

    def _make_nkey(self, d: Path) -> AuthMode:
        key, other = user_key(), user_key()
        d.mkdir(parents=True, exist_ok=True)
        seed_file, other_file = d / "user.nk", d / "other.nk"
        seed_file.write_text(key.seed + "\n")
        other_file.write_text(other.seed + "\n")
        seed_file.chmod(0o600)
        server = start_server(d, f"authorization {{ users = [ {{nkey: {key.public}}} ] }}\n")
        return AuthMode("nkey", server, server.url, {"nkey_seed": str(seed_file)}, {"nkey_seed": str(other_file)},
                        [key.seed, other.seed], env_auth={"nkey_seed": key.seed})

    def _make_creds(self, d: Path) -> AuthMode:
        op = Operator.create()
        key, jwt = op.user("jetbridge")
        other = Operator.create()  # a user of an operator this server does not trust
        okey, ojwt = other.user("stranger")
        d.mkdir(parents=True, exist_ok=True)
        creds, wrong = d / "user.creds", d / "stranger.creds"
        creds.write_text(creds_text(jwt, key.seed))
        wrong.write_text(creds_text(ojwt, okey.seed))
        server = start_server(d, op.server_config())
        return AuthMode("creds", server, server.url, {"creds": str(creds)}, {"creds": str(wrong)},
                        [key.seed, jwt, okey.seed, ojwt])

    def _make_tls(self, d: Path) -> AuthMode:
        pki = self.pki
        server = start_server(d, f"tls {{\n  cert_file: {quote(str(pki.server_cert))}\n"
                                 f"  key_file: {quote(str(pki.server_key))}\n  ca_file: {quote(str(pki.ca))}\n"
                                 "  verify: true\n  timeout: 3\n}\n")
        url = f"tls://127.0.0.1:{server.port}"
        key_pem = pki.client_key.read_text()
        secret = "".join(key_pem.strip().splitlines()[1:-1])[:60]  # a piece of the client key
        return AuthMode("tls", server, url,
                        {"tls_ca": str(pki.ca), "tls_cert": str(pki.client_cert), "tls_key": str(pki.client_key)},
                        {"tls_ca": str(pki.ca)}, [secret])


@pytest.fixture(scope="session")
def auth_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthServers]:
    servers = AuthServers(tmp_path_factory.mktemp("auth"))
    yield servers
    servers.stop()


# The CLI as a subprocess ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def json(self) -> Any:
        return json.loads(self.stdout)


def assert_no_secrets(text: str, secrets: list[str], where: str = "output") -> None:
    """No secret in ``text``, even wrapped over lines by the terminal renderer."""
    flat = re.sub(r"\s+", "", text)
    for secret in secrets:
        assert secret not in text and re.sub(r"\s+", "", secret) not in flat, f"a secret leaked into {where}:\n{text}"


Cli = Callable[..., Awaitable[Run]]


@pytest.fixture
def xdg(tmp_path: Path) -> Path:
    """An empty XDG_CONFIG_HOME (no NATS contexts but the test's)."""
    path = tmp_path / "xdg"
    path.mkdir()
    return path


def clean_environment(xdg: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JETBRIDGE_", "NATS_"))}
    # Wide lines: a message must not be wrapped (a wrapped secret could hide from a substring check).
    return {**env, "XDG_CONFIG_HOME": str(xdg), "COLUMNS": "400", "NO_COLOR": "1"}


@pytest.fixture
def cli(xdg: Path, tmp_path: Path) -> Cli:
    """Run ``jetbridge ARGS`` in a clean environment (no JETBRIDGE_* or NATS_* from the caller) and return it."""

    async def run(*args: str, env: dict[str, str] | None = None, within: float = 60.0, stdin: bytes | None = None) -> Run:
        with anyio.fail_after(within):
            proc = await anyio.run_process([sys.executable, "-m", "bridge", *args], input=stdin, check=False,
                                           env={**clean_environment(xdg), **(env or {})}, cwd=tmp_path)
        return Run(proc.returncode, proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace"))

    return run


# A dispatcher and a handler service, in process --------------------------------------------------------------------


#: the shared helpers, with a short drain so a failing test does not wait 30 s at teardown
running_service = functools.partial(harness.running_service, drain_timeout=5.0)


@asynccontextmanager
async def connected(settings: Settings, **callbacks: Any) -> AsyncIterator[Client]:
    nc = await connect(settings, **callbacks)
    try:
        yield nc
    finally:
        await nc.close()


def settings_for(mode: AuthMode, way: str, xdg: Path, monkeypatch: pytest.MonkeyPatch, **overrides: Any) -> Settings:
    """Settings loaded the way the CLI loads them: from flags, from JETBRIDGE_* variables, or from a NATS context."""
    if way == "flags":
        settings = load_settings(env={}, flags=mode.settings_values("flags"))
    elif way == "env":
        settings = load_settings(env=mode.env())
    else:
        write_context(xdg, f"jb-{mode.name}", mode.context())
        monkeypatch.setenv("XDG_CONFIG_HOME", str(xdg))
        settings = load_settings(env={"JETBRIDGE_CONTEXT": f"jb-{mode.name}"})
    return replace(settings, **overrides)


def cli_auth(mode: AuthMode, way: str, xdg: Path) -> tuple[list[str], dict[str, str]]:
    """Global CLI arguments and environment that authenticate ``way``."""
    if way == "flags":
        return mode.flags(), {}
    if way == "env":
        return [], mode.env()
    write_context(xdg, f"jb-{mode.name}", mode.context())
    return ["--context", f"jb-{mode.name}"], {}
