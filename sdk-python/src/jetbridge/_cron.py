"""Cron expressions and their firing times: pure functions, no I/O.

Jetbridge reads the schedule text asyncjobs writes (robfig/cron's standard parser): five fields, the descriptors
``@yearly @annually @monthly @weekly @daily @midnight @hourly``, ``@every <Go duration>``, and a
``CRON_TZ=<zone>`` (or ``TZ=<zone>``) prefix. Forms robfig cannot read (seconds fields, ``L``, ``W``, ``#``) are
refused, so a schedule Jetbridge stores is one asyncjobs can read too.

Times are integer UTC nanoseconds, like everything in the store; every firing time ("slot") is a whole second.
Next-fire computation uses ``zoneinfo`` and cronsim, which implements Debian cron's daylight-saving rules (a job
at a fixed local time that falls in the spring-forward gap runs right after the jump; one in the repeated autumn
hour runs once, at the first occurrence; ``*``-hour jobs run in both copies of the repeated hour). cronsim is
small, typed, maintained, and has these rules tested (it is what healthchecks.io evaluates cron with); croniter has
a longer record of daylight-saving bugs. ``@every`` slots are multiples of the interval since the Unix epoch, so
every process computes the same slots (robfig counts from its own start, which differs per process).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from ._errors import ConfigError

NS = 1_000_000_000
DESCRIPTORS = {
    "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *", "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *",
}
_BARE = ("yearly", "annually", "monthly", "weekly", "daily", "midnight", "hourly", "every ")
_GO_DURATION = re.compile(r"^(?:(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h))+$")
_GO_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_GO_UNITS = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": NS, "m": 60 * NS, "h": 3600 * NS}
_NAMES = {"JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
          "SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"}
_ATOM = re.compile(r"^(\*|\?|\d+|[A-Za-z]{3})$")
#: a ``@every`` schedule fires at most this often (slot ids have one-second resolution)
MIN_EVERY_NS = NS


def parse_go_duration(text: str) -> int:
    """A Go duration (``1h30m``, ``90s``, ``1.5h``) in nanoseconds; raises ConfigError."""
    text = text.strip()
    if not _GO_DURATION.match(text):
        raise ConfigError(f"{text!r} is not a duration: use e.g. 30s, 10m, 1h30m")
    total = 0.0
    for number, unit in _GO_PART.findall(text):
        total += float(number) * _GO_UNITS[unit]
    return int(round(total))


def _zone(name: str) -> tzinfo:
    if name in ("UTC", "Etc/UTC", "Z"):
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"time zone {name!r} is unknown: use an IANA name such as Europe/Berlin or UTC") from None


def _check_fields(fields: list[str], text: str) -> None:
    if len(fields) != 5:
        raise ConfigError(f"schedule {text!r} has {len(fields)} fields: use 5 (minute hour day-of-month month "
                          "day-of-week), a descriptor such as @daily, or @every 10m")
    for field in fields:
        for part in field.split(","):
            base, _, step = part.partition("/")
            if step and not step.isdigit():
                raise ConfigError(f"schedule {text!r}: step {step!r} in {field!r} is not a number")
            for atom in base.split("-"):
                if not _ATOM.match(atom) or (atom.isalpha() and atom.upper() not in _NAMES):
                    raise ConfigError(f"schedule {text!r}: {field!r} is not a cron field Jetbridge and asyncjobs "
                                      "accept (numbers, names like MON or JAN, *, ?, ranges a-b, lists a,b, steps /n)")


@dataclass(frozen=True)
class CronSpec:
    """A parsed schedule. ``text`` is the form stored (asyncjobs reads it); ``tz`` an IANA zone name."""

    text: str
    tz: str
    expr: str = ""
    every_ns: int = 0

    @property
    def zone(self) -> tzinfo:
        return _zone(self.tz)

    def next_after(self, t_ns: int) -> int:
        """The first slot strictly after ``t_ns`` (UTC ns; slots are whole seconds)."""
        if self.every_ns:
            return (t_ns // self.every_ns + 1) * self.every_ns
        second = t_ns // NS  # slots are whole seconds: the first one after t is the first one after its second
        it = CronSim(self.expr, datetime.fromtimestamp(second, self.zone))
        for _ in range(8):  # a start inside the repeated autumn hour can yield a wall time that is not later
            found = int(next(it).timestamp())
            if found > second:
                return found * NS
        raise ConfigError(f"schedule {self.text!r} has no next firing time")  # pragma: no cover - defensive

    def slots(self, after_ns: int, until_ns: int, limit: int = 100_000) -> list[int]:
        """Slots in ``(after_ns, until_ns]``, oldest first, at most ``limit``."""
        out: list[int] = []
        t = after_ns
        while len(out) < limit:
            t = self.next_after(t)
            if t > until_ns:
                break
            out.append(t)
        return out


def parse_cron(text: str, tz: str | None = None) -> CronSpec:
    """Parse a schedule; ``tz`` (default: the text's ``CRON_TZ=`` prefix, else UTC). Raises ConfigError.

    Schedules without a zone run in UTC in every dispatcher (robfig would use each process's local zone, which
    lets two processes disagree about when a slot is).
    """
    raw = " ".join(str(text).split())
    if not raw:
        raise ConfigError("the schedule is empty: use e.g. '30 2 * * *', '@daily' or '@every 10m'")
    body, prefix_tz = raw, None
    for key in ("CRON_TZ=", "TZ="):
        if body.startswith(key):
            prefix_tz, _, body = body[len(key):].partition(" ")
            break
    if prefix_tz is not None and tz is not None and prefix_tz != tz:
        raise ConfigError(f"the schedule names time zone {prefix_tz} but --tz says {tz}: give one")
    zone_name = tz or prefix_tz or "UTC"
    _zone(zone_name)
    if body.lower().startswith(_BARE):
        body = "@" + body
    if body.lower().startswith("@every"):
        interval = parse_go_duration(body[len("@every"):])
        if interval < MIN_EVERY_NS or interval % NS:
            raise ConfigError(f"schedule {raw!r}: @every takes a whole number of seconds, at least 1s")
        return CronSpec(text=body, tz="UTC", every_ns=interval)
    if body.startswith("@"):
        expr = DESCRIPTORS.get(body.lower())
        if expr is None:
            raise ConfigError(f"schedule {raw!r}: unknown descriptor; use one of {', '.join(DESCRIPTORS)} or @every")
    else:
        _check_fields(body.split(), raw)
        expr = body.replace("?", "*")
    try:
        CronSim(expr, datetime.now(UTC))
    except (CronSimError, ValueError) as exc:
        raise ConfigError(f"schedule {raw!r} is not valid cron: {exc}") from None
    return CronSpec(text=f"CRON_TZ={zone_name} {body}", tz=zone_name, expr=expr)


def format_slot(slot_ns: int) -> str:
    """``20261224T170000Z``: a slot as it appears in task ids."""
    return datetime.fromtimestamp(slot_ns // NS, UTC).strftime("%Y%m%dT%H%M%SZ")


def slot_task_id(name: str, slot_ns: int) -> str:
    """The id of the task a schedule's slot creates: the same in every process, so a slot fires at most once.

    Fits the 256-character id limit: very long schedule names are shortened with a hash.
    """
    task_id = f"{name}:{format_slot(slot_ns)}"
    if len(task_id) <= 256:
        return task_id
    digest = hashlib.sha256(name.encode()).hexdigest()[:16]
    return f"{name[:200]}-{digest}:{format_slot(slot_ns)}"


def jitter_ns(name: str, slot_ns: int, jitter: int) -> int:
    """A delay in ``[0, jitter]`` ns for one slot that every process computes alike (a hash, not a random draw)."""
    if jitter <= 0:
        return 0
    digest = hashlib.sha256(f"{name}\x00{slot_ns}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % (jitter + 1)
