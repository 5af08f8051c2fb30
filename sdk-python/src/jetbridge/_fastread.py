"""A faster read path for a nats-py 2.16 connection: one pass over the server's bytes, and *lanes*.

Why: for every inbound message nats-py's parser tries two regular expressions, copies the header block and the
payload, awaits a coroutine that builds the header dict and another that builds the message, puts it on the
subscription's queue and wakes the subscription's task, which awaits the callback coroutine. The dispatcher
receives five messages per task (the work item, the stored task, two save acknowledgements and the handler's
reply), and the producer two per task (the acknowledgements of the task and of its work item); at thousands of
tasks a second that machinery was a quarter of their CPU (bench/README.md, issue 21).

:class:`FastParser` takes the place of the connection's protocol parser (``Client._ps``, which the read loop calls
once per read). It finds each line with ``bytes.find`` and splits it, and reads ``PING``, ``INFO``, ``-ERR`` and the
rest with nats-py's own expressions. A message for a subscription with a *lane* (:func:`subscribe_lane`) is built
as the same :class:`~nats.aio.msg.Msg` and handed to a plain function inside the read loop: no queue, no task
switch, no coroutine. Every other message goes through ``Client._process_msg`` exactly as before, so other
subscriptions, JetStream flow control and slow-consumer errors behave as they did. A lane function must not block:
like the callbacks it replaces, it resolves futures or schedules work.

It is safe to install on a connected client at any moment: the read loop calls the parser once per read, so the
new parser adopts the old one's partial state (a message cut in two by a read) at its first call, after the old
parser's last call has returned. ``JETBRIDGE_FAST_READ=0`` turns it off (nats-py's parser and callbacks are used).

This leans on internals of the pinned nats-py 2.16 (``Client._ps``, ``_subs``, ``_process_msg``,
``_process_headers``, ``_error_cb`` and the parser's state fields); ``tests/sdk/test_fastread.py`` compares it
with nats-py's parser on generated streams and fails if a new version changes them.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
from collections.abc import Callable
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import ProtocolError
from nats.protocol.parser import (
    AWAITING_CONTROL_LINE,
    AWAITING_MSG_PAYLOAD,
    ERR_RE,
    INFO_RE,
    OK_RE,
    PING_RE,
    PONG_RE,
    Parser,
)

Lane = Callable[[Msg], None]

#: ``NATS/1.0\r\n``: a header block without an inline status (the common case, parsed without a coroutine)
_PLAIN_HEADERS = b"NATS/1.0\r\n"
_CRLF = b"\r\n"


def enabled() -> bool:
    """Whether the fast read path is used (``JETBRIDGE_FAST_READ=0`` turns it off)."""
    return os.environ.get("JETBRIDGE_FAST_READ", "1").strip().lower() not in ("0", "false", "no", "off")


class FastParser(Parser):
    """nats-py's protocol parser, in one pass per read, with lanes for chosen subscriptions."""

    def __init__(self, nc: Client, previous: Parser | None = None) -> None:
        super().__init__(nc)
        #: sid -> the function that receives that subscription's messages in the read loop
        self.lanes: dict[int, Lane] = {}
        self._previous = previous

    def reset(self) -> None:
        """Forget partial input (nats-py calls this on reconnect)."""
        super().reset()
        self._previous = None

    def _adopt(self, previous: Parser) -> None:
        self.buf, self.state = previous.buf, previous.state
        self.needed, self.header_needed = previous.needed, previous.header_needed
        self.msg_arg = previous.msg_arg

    async def parse(self, data: bytes = b"") -> None:
        if self._previous is not None:
            previous, self._previous = self._previous, None
            self._adopt(previous)
        buf = self.buf
        buf += data
        pos = 0
        try:
            while pos < len(buf):
                if self.state == AWAITING_CONTROL_LINE:
                    eol = buf.find(_CRLF, pos)
                    if eol < 0:
                        break
                    head = buf[pos:pos + 4]
                    if head == b"MSG " or head == b"HMSG":
                        self._message_line(bytes(buf[pos:eol]))
                        pos = eol + 2
                        continue
                    line = bytes(buf[pos:eol + 2])
                    pos = eol + 2
                    await self._control_line(line)
                    if self.buf is not buf:
                        return  # reset while awaiting (a reconnect): the rest of this input is void
                    continue
                needed = self.needed
                if len(buf) - pos < needed + 2:
                    break
                split = self.header_needed
                if split:
                    headers: bytes | None = bytes(buf[pos:pos + split])
                    payload = bytes(buf[pos + split:pos + needed])
                    self.header_needed = 0
                else:
                    headers = None
                    payload = bytes(buf[pos:pos + needed])
                pos += needed + 2
                self.state = AWAITING_CONTROL_LINE
                arg = self.msg_arg
                sid = arg["sid"]
                lane = self.lanes.get(sid)
                if lane is not None and sid in self.nc._subs:
                    self._deliver(lane, sid, arg["subject"], arg["reply"], payload, headers)
                else:
                    await self.nc._process_msg(sid, arg["subject"], arg["reply"], payload, headers)
                    if self.buf is not buf:
                        return
        finally:
            if self.buf is buf:
                del buf[:pos]

    def _message_line(self, line: bytes) -> None:
        """``MSG subject sid [reply] size`` or ``HMSG subject sid [reply] header-size total-size``."""
        parts = line.split()
        try:
            if parts[0] == b"MSG" and len(parts) in (4, 5):
                reply = parts[3] if len(parts) == 5 else b""
                needed, header_needed = int(parts[-1]), 0
            elif parts[0] == b"HMSG" and len(parts) in (5, 6):
                reply = parts[3] if len(parts) == 6 else b""
                needed, header_needed = int(parts[-1]), int(parts[-2])
            else:
                raise ValueError(line)
            self.msg_arg = {"subject": parts[1], "sid": int(parts[2]), "reply": reply}
        except (ValueError, IndexError):
            raise ProtocolError("nats: malformed MSG") from None
        if needed < 0 or not 0 <= header_needed <= needed:
            raise ProtocolError("nats: malformed MSG")
        self.needed, self.header_needed = needed, header_needed
        self.state = AWAITING_MSG_PAYLOAD

    async def _control_line(self, line: bytes) -> None:
        """Every other operation, read with nats-py's own expressions (they are rare)."""
        nc = self.nc
        if OK_RE.match(line):
            return
        if (err := ERR_RE.match(line)) is not None:
            text = err.groups()[0]
            await nc._process_err(text.decode().lower() if text else "")
        elif PING_RE.match(line):
            await nc._process_ping()
        elif PONG_RE.match(line):
            await nc._process_pong()  # hardened by install(): see _process_pong below
        elif (info := INFO_RE.match(line)) is not None:
            await nc._process_info(json.loads(info.groups()[0].decode()))
        else:
            raise ProtocolError("nats: unknown protocol")

    def _deliver(self, lane: Lane, sid: int, subject: bytes, reply: bytes, payload: bytes,
                 headers: bytes | None) -> None:
        nc = self.nc
        stats = nc.stats
        stats["in_msgs"] += 1
        stats["in_bytes"] += len(payload)
        if headers is None:
            parsed = None
        elif headers.startswith(_PLAIN_HEADERS):
            parsed = parse_header_lines(headers[len(_PLAIN_HEADERS):]) or None
        else:
            parsed = _status_headers(nc, headers)
        msg = nc.msg_class(_client=nc, subject=subject.decode(), reply=reply.decode(), data=payload,
                           headers=parsed, _sid=sid)
        try:
            lane(msg)
        except Exception as exc:  # noqa: BLE001 - as nats-py does for a callback: report it, keep reading
            asyncio.ensure_future(nc._error_cb(exc))


def _header_name(name: bytes) -> str | None:
    """A header line's name as ``Client._parse_header_lines`` takes it, or None where it skips the line."""
    try:
        key = name.strip().decode("ascii")
    except UnicodeDecodeError:
        return None
    return None if len(key.split()) > 1 else key  # whitespace inside a name (str.split splits where isspace())


#: header names seen, as bytes -> the key (or None: skipped); names repeat (``Nats-Sequence`` ...), so this is small
_NAMES: dict[bytes, str | None] = {}
_NAMES_MAX = 1024
_UNSEEN = object()


def parse_header_lines(raw: bytes) -> dict[str, str]:
    """``Client._parse_header_lines`` with each distinct name checked once, not once per message.

    nats-py tests every character of every name with a generator expression, which was most of the cost of a
    message with headers; the result is the same (``tests/sdk/test_fastread.py`` compares the two).
    """
    out: dict[str, str] = {}
    names = _NAMES
    for line in raw.split(_CRLF):
        name, sep, value = line.partition(b":")
        if not sep:
            continue
        key: Any = names.get(name, _UNSEEN)
        if key is _UNSEEN:
            key = _header_name(name)
            if len(names) < _NAMES_MAX:
                names[name] = key
        if key is not None:
            out[key] = value.strip().decode("utf-8", "replace")
    return out


def _status_headers(nc: Client, headers: bytes) -> dict[str, str] | None:
    """Headers with an inline status (``NATS/1.0 503``), parsed by nats-py's own code.

    ``Client._process_headers`` is a coroutine that only awaits when it reports a malformed block; it is run to its
    end here without an event loop turn, and a block it would report is treated as no headers.
    """
    coro = nc._process_headers(headers)
    try:
        coro.send(None)
    except StopIteration as done:
        result: dict[str, str] | None = done.value
        return result
    coro.close()
    return None


async def _process_pong(nc: Client) -> None:
    """A PONG answers the oldest PING: resolve its future, unless its wait was given up.

    nats-py's ``_process_pong`` calls ``set_result`` on that future even when it was cancelled (a ``flush()`` that
    timed out or whose caller was cancelled leaves it in ``_pongs``); the ``InvalidStateError`` then ends the read
    loop for good, and the connection, still "connected", reads nothing until its pings go stale minutes later.
    A slow server (a pause of over 2 s) during any flush was enough to make a dispatcher deaf.
    """
    client: Any = nc
    pongs = client._pongs
    if pongs:
        future = pongs.pop(0)
        if not future.done():
            future.set_result(True)
        client._pongs_received += 1
        client._pings_outstanding = 0


def harden(nc: Client) -> None:
    """Make ``nc`` survive a given-up flush (see :func:`_process_pong`), whichever parser reads."""
    client: Any = nc
    client._process_pong = functools.partial(_process_pong, nc)


def install(nc: Client) -> FastParser | None:
    """Use :class:`FastParser` on ``nc`` (once); None when turned off. Either way ``nc`` is hardened
    (:func:`harden`)."""
    parser: Any = nc._ps
    if isinstance(parser, FastParser):
        return parser
    harden(nc)
    if not enabled():
        return None
    fast = FastParser(nc, previous=parser)
    nc._ps = fast
    return fast


async def subscribe_lane(nc: Client, subject: str, lane: Lane) -> Subscription:
    """Subscribe ``subject`` with ``lane`` called for each message inside the read loop.

    Subscribe before anything can be sent to ``subject`` (an inbox before its first request): a message that came
    before the lane was registered would take the queued path and could be handled after later ones. With the fast
    path off, ``lane`` is an ordinary callback.
    """
    async def callback(msg: Msg) -> None:
        lane(msg)

    sub = await nc.subscribe(subject, cb=callback, pending_msgs_limit=1_000_000, pending_bytes_limit=1 << 30)
    parser = install(nc)
    if parser is not None:
        parser.lanes[sub._id] = lane
    return sub


def drop_lane(nc: Client, sub: Subscription) -> None:
    """Forget ``sub``'s lane (after unsubscribing it)."""
    parser: Any = nc._ps
    if isinstance(parser, FastParser):
        parser.lanes.pop(sub._id, None)
