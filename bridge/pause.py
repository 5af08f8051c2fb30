"""Pausing a queue: the server stops handing out its items; everything else carries on.

JetStream (nats-server 2.11 and later) pauses a consumer on the server: ``$JS.API.CONSUMER.PAUSE.<stream>.<consumer>``
with ``pause_until``. Pausing a queue's ``WORKERS`` consumer therefore stops every dispatcher at once (no dispatcher
has to be told, and none can miss it), lets running attempts finish and acknowledge, leaves producers enqueuing into
the stream, and survives dispatcher and server restarts because it is part of the consumer's stored config. A pause
without an end lasts until 2200. The operator's note lives beside it, one message per queue in a small stream.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

import msgspec
from jetbridge.internal import (
    ConfigError,
    JetStreamError,
    QueueNotFoundError,
    Requester,
    format_ns,
    js_api,
    js_publish,
    names,
    parse_ns,
)

#: ``pause_until`` of a pause without an end (``pause_remaining`` is int64 nanoseconds: beyond 2262 overflows)
FOREVER = "2200-01-01T00:00:00Z"
NOTES_STREAM = "JETBRIDGE_QUEUE_NOTES"
NOTES_PREFIX = "jetbridge.queue.note"
_NOT_FOUND = (10059, 10014)


class Note(msgspec.Struct, omit_defaults=True):
    note: str = ""
    since: str = ""


@dataclass(frozen=True)
class PauseState:
    queue: str
    paused: bool
    #: RFC 3339, or "" when not paused; FOREVER for a pause without an end
    until: str = ""
    note: str = ""
    since: str = ""


def _consumer_api(verb: str, queue: str) -> str:
    if not names.is_valid_name(queue):
        raise ConfigError(f"queue name {queue!r} is invalid: use letters, digits, '_', '-' and ':'")
    return f"CONSUMER.{verb}.{names.queue_stream(queue)}.{names.QUEUE_CONSUMER}"


async def _call(rq: Requester, verb: str, queue: str, body: object = None) -> dict[str, object]:
    try:
        return await js_api(rq, _consumer_api(verb, queue), body)
    except JetStreamError as exc:
        if exc.err_code in _NOT_FOUND:
            raise QueueNotFoundError(f"queue {queue} does not exist") from None
        if verb == "PAUSE":
            raise ConfigError(f"the server cannot pause queue {queue} ({exc.description}): "
                              "pausing needs nats-server 2.11 or later") from None
        raise


async def pause(rq: Requester, queue: str, *, until_ns: int | None = None, note: str = "", now_ns: int) -> PauseState:
    """Pause ``queue`` until ``until_ns`` (None: until resumed)."""
    if until_ns is not None and until_ns <= now_ns:
        raise ConfigError("--until must be in the future")
    until = format_ns(until_ns) if until_ns is not None else FOREVER
    await _call(rq, "PAUSE", queue, {"pause_until": until})
    await _save_note(rq, queue, Note(note=note[:500], since=format_ns(now_ns)))
    return await state(rq, queue)


async def resume(rq: Requester, queue: str) -> PauseState:
    await _call(rq, "PAUSE", queue, {})
    await _save_note(rq, queue, Note())
    return await state(rq, queue)


async def state(rq: Requester, queue: str) -> PauseState:
    """Whether ``queue`` is paused now (a pause whose time has passed is over), with the operator's note."""
    info = await _call(rq, "INFO", queue)
    config = info.get("config")
    until = str(config.get("pause_until", "")) if isinstance(config, dict) else ""
    if not info.get("paused"):
        return PauseState(queue, False)
    note = await _load_note(rq, queue)
    return PauseState(queue, True, until=until, note=note.note, since=note.since)


async def _save_note(rq: Requester, queue: str, note: Note) -> None:
    try:
        await js_api(rq, f"STREAM.INFO.{NOTES_STREAM}")
    except JetStreamError:
        try:
            await js_api(rq, f"STREAM.CREATE.{NOTES_STREAM}", {
                "name": NOTES_STREAM, "subjects": [f"{NOTES_PREFIX}.*"], "max_msgs_per_subject": 1,
                "storage": "file", "num_replicas": 1})
        except JetStreamError as exc:
            if "already in use" not in exc.description:
                raise
    await js_publish(rq, f"{NOTES_PREFIX}.{queue}", msgspec.json.encode(note))


async def _load_note(rq: Requester, queue: str) -> Note:
    try:
        reply = await js_api(rq, f"STREAM.MSG.GET.{NOTES_STREAM}", {"last_by_subj": f"{NOTES_PREFIX}.{queue}"})
        return msgspec.json.decode(base64.b64decode(reply["message"]["data"]), type=Note)
    except (JetStreamError, msgspec.DecodeError, KeyError):
        return Note()


def describe(p: PauseState) -> str:
    """One line for ``queue list``/``info``: "" when not paused."""
    if not p.paused:
        return ""
    until = "until resumed" if p.until.startswith("2200") else f"until {p.until}"
    try:
        since = f" since {format_ns(parse_ns(p.since))[:19]}" if p.since else ""
    except ValueError:
        since = ""
    return f"paused {until}{since}" + (f": {p.note}" if p.note else "")
