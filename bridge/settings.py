"""Dispatcher settings: one frozen record, filled from a TOML file, then the environment, then flags.

Every key is documented here once. Unknown keys are errors (a typo must not silently fall back to a default),
and every error names the key and what is allowed.
"""

from __future__ import annotations

import os
import re
import secrets
import tomllib
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

from jetbridge.internal import ConfigError, names

from .durations import parse_duration
from .routes import Route

ENV_PREFIX = "JETBRIDGE_"
_SUBJECT_RE = re.compile(r"[^.*>\s]+(\.[^.*>\s]+)*")
SECRET_KEYS = frozenset({"password", "token", "nkey_seed", "creds", "signing_seed"})


@dataclass(frozen=True, kw_only=True)
class Settings:
    """How a dispatcher runs.

    Attributes:
        server: NATS URL(s), comma separated; empty: start an embedded nats-server in ``data_dir``.
        context: a NATS CLI context name to take the connection from.
        user, password, token, nkey_seed, creds: NATS credentials (secrets are never logged or shown).
        tls_ca, tls_cert, tls_key: TLS files.
        inbox_prefix: the connection's reply-subject prefix; empty: ``_INBOX.jetbridge.<dispatcher_id>``, so a
            dispatcher's every reply subject is under ``_INBOX.jetbridge.<dispatcher_id>.>`` (see docs/security.md).
        data_dir: where the embedded server keeps its store.
        queues: queues to serve; ``*`` serves every queue that exists, including ones created later (the default
            serves ``DEFAULT``, created if missing, and every other queue).
        create_queues: create missing queues (with default settings) instead of failing.
        concurrency: attempts this dispatcher runs at once on each queue (capped by the queue's max_concurrent);
            with ``priorities``, the size of the one pool of slots all its queues share.
        priorities: queues served from one pool by priority, ``CRITICAL:6,DEFAULT:3,LOW:1`` (replaces ``queues``;
            see bridge/priorities.py and docs/flow-control.md); weighted unless ``strict_priority``.
        strict_priority: with ``priorities``, a lower queue runs only while every higher one is empty.
        subject_prefix: default route subject prefix (``<prefix>.<type>``).
        routes: the route table (see bridge.routes).
        no_handler_delay: wait between tries while no handler answers (not counted as attempts).
        shutdown_grace: on SIGTERM, how long running attempts may finish before they are handed back.
        retain_finished: how long finished tasks stay in the store (0: forever); needs a Jetbridge task store.
        reconcile_interval: how often to look for unfinished tasks without a work item (0: never).
        fire_schedules: fire the cron schedules (every dispatcher does; turn off where asyncjobs' scheduler runs).
        queue_refresh_interval: how often to look for new queues (with ``*``) and changed queue settings (0: never).
        first_contact_grace: extra silence allowed before an attempt's first heartbeat (a cold or busy handler).
        active_events: publish the ``active`` lifecycle event when an attempt starts; off saves one publish per
            attempt (issue 21), and watchers then see a task go from ``new`` or ``retry`` straight to its outcome.
        store_replicas: replicas (1-5) of the stores and queues this dispatcher creates; existing ones keep theirs.
        metrics_listen: ``host:port`` for /metrics, /healthz and /readyz; empty: off.
        http_listen: ``host:port`` for the HTTP API and dashboard inside the dispatcher (as ``jetbridge serve``);
            empty: off. http_tokens: its ``role:token`` file (else ``JB_API_TOKENS``); http_tls_cert and
            http_tls_key: serve HTTPS (bridge/web/embed.py).
        log_format: ``console``, ``json`` or ``auto`` (json unless a terminal).
        log_level: ``debug``, ``info``, ``warning`` or ``error``.
        dispatcher_id: this dispatcher's name in subjects and logs.
        verify_key: hex ed25519 public key: when set, tasks must be signed (asyncjobs-compatible).
        signatures_optional: with ``verify_key``, accept unsigned tasks too.
        signing_seed: hex ed25519 seed (or a file holding it) the CLI signs enqueued tasks with.
        hooks: dispatcher hooks to load: names of entry points in the group ``jetbridge.hooks`` (see bridge.hooks).
        hook_timeout: how long one hook call may take before it is given up (the task never waits for it).
    """

    server: str = ""
    context: str = ""
    user: str = ""
    password: str = ""
    token: str = ""
    nkey_seed: str = ""
    creds: str = ""
    tls_ca: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    inbox_prefix: str = ""
    data_dir: str = ".jetbridge"
    queues: tuple[str, ...] = ("DEFAULT", "*")
    create_queues: bool = True
    concurrency: int = 200
    priorities: str = ""
    strict_priority: bool = False
    subject_prefix: str = names.DEFAULT_TASK_SUBJECT_PREFIX
    routes: tuple[Route, ...] = ()
    no_handler_delay: float = 5.0
    shutdown_grace: float = 30.0
    retain_finished: float = 0.0
    reconcile_interval: float = 300.0
    fire_schedules: bool = True
    queue_refresh_interval: float = 2.0
    first_contact_grace: float = 2.0
    active_events: bool = True
    store_replicas: int = 1
    metrics_listen: str = ""
    http_listen: str = ""
    http_tokens: str = ""
    http_tls_cert: str = ""
    http_tls_key: str = ""
    log_format: Literal["auto", "console", "json"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    dispatcher_id: str = field(default_factory=lambda: secrets.token_hex(6))
    verify_key: str = ""
    signatures_optional: bool = False
    signing_seed: str = ""
    hooks: tuple[str, ...] = ()
    hook_timeout: float = 5.0

    def validate(self) -> Settings:
        """Raise :class:`ConfigError` naming the first invalid setting and what it allows."""
        for check in (self._check_queues, self._check_numbers, self._check_names):
            check()
        for r in self.routes:
            r.validate()
        return self

    def _check_queues(self) -> None:
        if self.priorities:
            from .priorities import parse_priorities

            parse_priorities(self.priorities)
        elif self.strict_priority:
            raise ConfigError("strict_priority needs priorities (--queues CRITICAL:6,DEFAULT:3,LOW:1)")
        if not self.queues:
            raise ConfigError("queues: name at least one queue, or '*' for all")
        for q in self.queues:
            if q != "*" and not names.is_valid_name(q):
                raise ConfigError(f"queues: {q!r} is not a valid queue name (letters, digits, '_', '-', ':')")

    def _check_numbers(self) -> None:
        if not 1 <= self.concurrency <= 100_000:
            raise ConfigError(f"concurrency must be between 1 and 100000, got {self.concurrency}")
        if not 1 <= self.store_replicas <= 5:
            raise ConfigError(f"store_replicas must be between 1 and 5, got {self.store_replicas}")
        for key in sorted(_DURATIONS):
            if getattr(self, key) < 0:
                raise ConfigError(f"{key} must not be negative")
        if self.hook_timeout <= 0:
            raise ConfigError("hook_timeout must be more than 0")
        if 0 < self.retain_finished < 1:
            raise ConfigError("retain_finished must be 0 (forever) or at least 1s")

    def _check_names(self) -> None:
        if not names.is_valid_name(self.dispatcher_id.replace("-", "_")) or ":" in self.dispatcher_id:
            raise ConfigError(f"dispatcher_id {self.dispatcher_id!r} must be letters, digits, '_' or '-'")
        if self.log_format not in ("auto", "console", "json"):
            raise ConfigError(f"log_format must be auto, console or json, not {self.log_format!r}")
        if self.log_level not in ("debug", "info", "warning", "error"):
            raise ConfigError(f"log_level must be debug, info, warning or error, not {self.log_level!r}")
        if self.verify_key and not re.fullmatch(r"[0-9a-fA-F]{64}", self.verify_key):
            raise ConfigError("verify_key must be a 64-character hex ed25519 public key")
        _check_inbox_prefix(self.inbox_prefix)
        for hook in self.hooks:
            if not re.fullmatch(r"[A-Za-z0-9_.-]+", hook):
                raise ConfigError(f"hooks: {hook!r} is not an entry point name (letters, digits, '_', '-', '.')")
        if not _SUBJECT_RE.fullmatch(self.subject_prefix):
            raise ConfigError(f"subject_prefix {self.subject_prefix!r} must be a subject without wildcards or spaces, "
                              "e.g. jetbridge.task")
        if self.metrics_listen and ":" not in self.metrics_listen:
            raise ConfigError(f"metrics_listen must be host:port, got {self.metrics_listen!r}")
        if self.http_listen and ":" not in self.http_listen:
            raise ConfigError(f"http_listen must be host:port, got {self.http_listen!r}")

    def __repr__(self) -> str:
        """Secrets redacted, like :meth:`redacted`: a Settings shown in a log, traceback or test failure leaks nothing."""
        return "Settings(" + ", ".join(f"{k}={v!r}" for k, v in self.redacted().items()) + ")"

    def redacted(self) -> dict[str, Any]:
        """Every setting, with secrets replaced, for `jetbridge config show` and logs."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in SECRET_KEYS and value:
                value = "<redacted>"
            elif f.name == "server" and value:
                value = _redact_url(value)
            elif f.name == "routes":
                value = [{"match": r.match, "subject": r.subject, "mode": r.mode, "heartbeats": r.heartbeats}
                         for r in value]
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out


def _check_inbox_prefix(prefix: str) -> None:
    if prefix and not _SUBJECT_RE.fullmatch(prefix):
        raise ConfigError(f"inbox_prefix {prefix!r} must be a subject without wildcards, e.g. _INBOX.alice")


def _redact_url(urls: str) -> str:
    """``urls`` with the user info (``user:password@`` or ``token@``) of each URL replaced.

    nats-py also takes URLs without a scheme (``user:pw@host:4222``), and a password may itself hold ``@``: the user
    info is everything before the last ``@`` of the authority (which ends at the first ``/``, ``?`` or ``#``).
    """
    parts = []
    for url in urls.split(","):
        scheme, sep, rest = url.partition("://")
        if not sep:
            scheme, rest = "", url
        cut = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
        authority, tail = rest[:cut], rest[cut:]
        if "@" in authority:
            authority = "<redacted>@" + authority.rpartition("@")[2]
            url = f"{scheme}{sep}{authority}{tail}"
        parts.append(url)
    return ",".join(parts)


_DURATIONS = {"no_handler_delay", "shutdown_grace", "retain_finished", "reconcile_interval", "queue_refresh_interval",
              "first_contact_grace", "hook_timeout"}
_FIELDS = {f.name: f for f in fields(Settings)}


def _coerce(key: str, value: Any, source: str) -> Any:
    """``value`` as the type of setting ``key``; raises ConfigError naming ``source`` and the key."""
    if key not in _FIELDS:
        known = ", ".join(sorted(_FIELDS))
        raise ConfigError(f"{source}: unknown setting {key!r}; known settings: {known}")
    default = _FIELDS[key].default
    current = "" if default is MISSING else default
    try:
        if key in _DURATIONS:
            return parse_duration(value, what=f"{source}: {key}")
        if key in ("queues", "hooks"):
            items = value.split(",") if isinstance(value, str) else list(value)
            return tuple(str(q).strip() for q in items if str(q).strip())
        if key == "routes":
            if not isinstance(value, list):
                raise ConfigError(f"{source}: routes must be a list of tables")
            return tuple(_route(r, source) for r in value)
        return _coerce_scalar(key, value, current, source)
    except (TypeError, ValueError, OverflowError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"{source}: {key} has an invalid value {value!r}: {exc}") from None


def _coerce_scalar(key: str, value: Any, current: Any, source: str) -> Any:
    if isinstance(current, bool):
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("1", "true", "yes", "on"):
            return True
        if str(value).lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{source}: {key} must be true or false, got {value!r}")
    if isinstance(current, int):
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ConfigError(f"{source}: {key} must be a whole number, got {value!r}")
        return int(value)
    if not isinstance(value, (str, int, float)):
        raise ConfigError(f"{source}: {key} must be a string, got {type(value).__name__}")
    return str(value)


def _route(raw: Any, source: str) -> Route:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: each route must be a table with match and subject")
    unknown = set(raw) - {"match", "subject", "mode", "heartbeats"}
    if unknown or "match" not in raw or "subject" not in raw:
        raise ConfigError(f"{source}: a route needs match and subject (and may have mode, heartbeats); "
                          f"got {sorted(raw)}")
    return Route(str(raw["match"]), str(raw["subject"]), raw.get("mode", "jetbridge"),
                 bool(raw.get("heartbeats", True))).validate()


def load_settings(
    path: str | Path | None = None, *, env: dict[str, str] | None = None, flags: dict[str, Any] | None = None,
) -> Settings:
    """Settings from a TOML file, overridden by ``JETBRIDGE_*`` environment variables, overridden by flags."""
    values: dict[str, Any] = {}
    if path:
        p = Path(path)
        try:
            doc = tomllib.loads(p.read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {p} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {p} is not valid TOML: {exc}") from None
        for key, value in doc.items():
            values[key] = _coerce(key, value, f"config file {p}")
    for name, value in (os.environ if env is None else env).items():
        if name.startswith(ENV_PREFIX) and name not in _NOT_SETTINGS and not name.startswith(_TASK_ENV_PREFIX):
            key = name[len(ENV_PREFIX):].lower()
            values[key] = _coerce(key, value, f"environment variable {name}")
    for key, value in (flags or {}).items():
        if value is not None:
            values[key] = _coerce(key, value, f"flag --{key.replace('_', '-')}")
    return replace(Settings(), **values).validate()


#: JETBRIDGE_* variables that are not settings (used by handlers and the CLI).
_NOT_SETTINGS = frozenset({"JETBRIDGE_INSTANCE", "JETBRIDGE_CONFIG", "JETBRIDGE_CONTROL_FD",
                           "JETBRIDGE_FAST_READ"})  # the SDK's switch for its fast wire path (jetbridge._fastread)
#: what `jetbridge handle` gives a task's command, so that the command can run jetbridge itself
_TASK_ENV_PREFIX = "JETBRIDGE_TASK_"
