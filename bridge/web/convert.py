"""Pure conversions between the REST bodies and Jetbridge's values (no I/O)."""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any

from jetbridge.internal import NS, ConfigError, parse_ns

from ..policy import PRESETS, LinearPolicy, parse_duration
from ..queues import QueueInfo as AdminQueueInfo
from .errors import ApiError

MAX_LIST = 1000


def payload_bytes(payload: Any, payload_base64: str | None) -> bytes | None:
    """asyncjobs' rule: ``payload`` is JSON-encoded to bytes, ``payload_base64`` decoded; not both."""
    if payload is not None and payload_base64 is not None:
        raise ApiError(400, "invalid_argument", "payload and payload_base64 are both set: send one",
                       reason="payload_both_set", field="payload")
    if payload_base64 is not None:
        try:
            return base64.b64decode(payload_base64, validate=True)
        except (binascii.Error, ValueError):
            raise ApiError(400, "invalid_argument", "payload_base64 is not standard base64",
                           reason="invalid_json", field="payload_base64") from None
    if payload is None:
        return None
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def duration_ns(text: str | None, field: str) -> int | None:
    """A Go-style duration (``90s``, ``10m``, ``1h``) in nanoseconds."""
    if text is None or text == "":
        return None
    try:
        return int(parse_duration(text, what=field) * NS)
    except ConfigError as exc:
        raise ApiError(400, "invalid_argument", str(exc), reason="invalid_duration", field=field) from None


_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


def time_ns(text: str | None, field: str) -> int | None:
    """An RFC 3339 time (with its offset) in nanoseconds; anything else is a 400 naming the field."""
    if text is None:
        return None
    try:
        if not _RFC3339.match(text):
            raise ValueError(text)
        return parse_ns(text)
    except ValueError:
        raise ApiError(400, "invalid_argument", f"{field} {text!r} is not an RFC 3339 time",
                       reason="invalid_time", field=field) from None


def list_limit(limit: int) -> int:
    """asyncjobs: below 1 is an error, above 1000 is clamped."""
    if limit < 1:
        raise ApiError(400, "invalid_argument", "limit must be at least 1", reason="limit_invalid", field="limit")
    return min(limit, MAX_LIST)


def queue_view(q: AdminQueueInfo, dead: int | None = None) -> dict[str, Any]:
    """asyncjobs' QueueInfo (-1 for unlimited), plus depth, in flight, pause and dead letters."""
    c = q.config
    view: dict[str, Any] = {
        "name": c.name, "max_age": int(c.max_age * NS) or None, "max_entries": c.max_entries or -1,
        "discard_old": c.discard_old or None, "max_tries": c.max_tries if c.max_tries > 0 else -1,
        "max_runtime": int(c.max_run_time * NS), "max_concurrent": c.max_concurrent,
        "waiting": q.waiting, "in_flight": q.in_flight, "paused": bool(q.paused),
        "paused_until": q.paused or None, "dead_letters": dead,
    }
    return {k: v for k, v in view.items() if v is not None}


def retry_policies() -> list[dict[str, Any]]:
    out = []
    for name in sorted(PRESETS):
        p = PRESETS[name]
        if isinstance(p, LinearPolicy):
            out.append({"name": name, "intervals": [int(i * NS) for i in p.intervals], "jitter": p.jitter})
    return out
