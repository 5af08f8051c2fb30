"""The fast wire path against nats-py's own: the same calls from the same bytes, however the reads cut them.

``jetbridge._fastread`` replaces nats-py's protocol parser and ``jetbridge._fastwrite`` its publish; both lean on
internals of the pinned nats-py, so these tests compare them with nats-py's code itself (not with a copy of what it
did), on generated input: a new nats-py that changes those internals fails here first.
"""

from __future__ import annotations

import asyncio
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jetbridge import _fastread
from jetbridge._fastread import FastParser, parse_header_lines, subscribe_lane
from jetbridge._fastwrite import publish_nowait
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.protocol.parser import Parser

pytestmark = pytest.mark.anyio

LANE_SIDS = (1, 2)
token = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_-", min_size=1, max_size=12)
subjects = st.lists(token, min_size=1, max_size=4).map(".".join)
header_names = st.sampled_from(["Nats-Sequence", "Nats-Stream", "Status", "Description", "X-Odd Name", "é",
                                "Nats-Msg-Id", "k"]) | token
header_values = st.text(max_size=20).map(lambda v: v.replace("\r", "").replace("\n", ""))
plain_headers = st.lists(st.tuples(header_names, header_values), max_size=5).map(
    lambda kv: b"NATS/1.0\r\n" + b"".join(f"{k}: {v}\r\n".encode() for k, v in kv) + b"\r\n")
status_headers = st.sampled_from([
    b"NATS/1.0 503\r\n\r\n", b"NATS/1.0 404 No Messages\r\n\r\n", b"NATS/1.0 408 Request Timeout\r\n\r\n",
    b"NATS/1.0 100 Idle Heartbeat\r\nNats-Last-Consumer: 7\r\nNats-Last-Stream: 9\r\n\r\n",
    b"NATS/1.0 409 Exceeded MaxWaiting\r\n\r\n",
])
payloads = st.binary(max_size=40) | st.sampled_from([b"MSG a 1 2\r\n", b"\r\n\r\n", b"PING\r\n"])


@st.composite
def operations(draw: Any) -> tuple[str, bytes]:
    """One server operation: its kind and its bytes."""
    kind = draw(st.sampled_from(["msg", "msg", "hmsg", "hmsg", "ping", "pong", "ok", "info"]))
    if kind in ("msg", "hmsg"):
        sid = draw(st.sampled_from([1, 2, 3, 4]))
        subject = draw(subjects).encode()
        reply = draw(st.none() | subjects)
        head = b"MSG" if kind == "msg" else b"HMSG"
        args = [head, subject, str(sid).encode()] + ([reply.encode()] if reply else [])
        body = draw(payloads)
        if kind == "msg":
            return kind, b" ".join([*args, str(len(body)).encode()]) + b"\r\n" + body + b"\r\n"
        hdr = draw(plain_headers | status_headers)
        sizes = [str(len(hdr)).encode(), str(len(hdr) + len(body)).encode()]
        return kind, b" ".join([*args, *sizes]) + b"\r\n" + hdr + body + b"\r\n"
    return kind, {"ping": b"PING\r\n", "pong": b"PONG\r\n", "ok": b"+OK\r\n",
                  "info": b'INFO {"server_id":"x","max_payload":1048576}\r\n'}[kind]


class Recorder:
    """Stands in for the client: records what a parser hands it, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.client = Client()  # not connected: only its header code and its stats are used
        client: Any = self.client
        client._subs = {sid: object() for sid in (*LANE_SIDS, 3)}
        client._process_msg = self._msg
        client._process_ping = self._op("ping")
        client._process_pong = self._op("pong")
        client._process_info = self._info
        client._process_err = self._op("err")

    async def _msg(self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes | None) -> None:
        parsed = await Client._process_headers(self.client, headers)
        self.calls.append(("msg", sid, subject.decode(), reply.decode(), data, parsed))

    def _op(self, name: str) -> Any:
        async def record(*args: Any) -> None:
            self.calls.append((name, *args))
        return record

    async def _info(self, info: dict[str, Any]) -> None:
        self.calls.append(("info", info))

    def lane(self, msg: Msg) -> None:
        assert msg._client is self.client
        self.calls.append(("msg", msg._sid, msg.subject, msg.reply, msg.data, msg.headers))


def _chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:], strict=False)]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(operations(), max_size=25), st.lists(st.integers(min_value=0), max_size=12), st.booleans())
def test_the_fast_parser_hands_over_what_nats_py_would(ops: list[tuple[str, bytes]], cuts: list[int],
                                                      lanes: bool) -> None:
    """Same calls, same order, same messages and headers, for any cut of the input into reads, lanes or not."""
    data = b"".join(raw for _, raw in ops)

    async def run(fast: bool) -> list[tuple[Any, ...]]:
        rec = Recorder()
        parser: Parser = FastParser(rec.client) if fast else Parser(rec.client)
        if fast and lanes:
            for sid in LANE_SIDS:
                parser.lanes[sid] = rec.lane  # type: ignore[attr-defined]
        for chunk in _chunks(data, cuts):
            await parser.parse(chunk)
        assert parser.state == 1 and not parser.buf, "everything whole was consumed"
        return rec.calls

    expected = asyncio.run(run(False))
    assert asyncio.run(run(True)) == expected
    assert len(expected) == sum(1 for kind, _ in ops if kind != "ok")


@settings(max_examples=300, deadline=None)
@given(st.lists(plain_headers | st.binary(max_size=30), max_size=4).map(b"\r\n".join))
def test_header_lines_parse_as_nats_py_parses_them(raw: bytes) -> None:
    assert parse_header_lines(raw) == Client._parse_header_lines(raw)


async def test_a_parser_installed_mid_message_adopts_the_partial_message() -> None:
    rec = Recorder()
    old = Parser(rec.client)
    frame = b"HMSG a.b 1 _INBOX.x 18 23\r\nNATS/1.0\r\nK: v\r\n\r\nhello\r\n"
    await old.parse(frame[:30])
    fast = FastParser(rec.client, previous=old)
    fast.lanes[1] = rec.lane
    await fast.parse(frame[30:])
    assert rec.calls == [("msg", 1, "a.b", "_INBOX.x", b"hello", {"K": "v"})]


async def test_malformed_message_lines_are_protocol_errors() -> None:
    from nats.errors import ProtocolError

    for bad in (b"MSG a x 5\r\n", b"MSG a 1\r\n", b"HMSG a 1 9 5\r\n", b"BOGUS\r\n"):
        with pytest.raises(ProtocolError):
            await FastParser(Recorder().client).parse(bad)


@pytest.mark.parametrize("headers", [None, {}, {"Nats-Msg-Id": "t:1", "Nats-Expected-Last-Subject-Sequence": "0"},
                                     {" padded ": " v ", "": "skipped"}])
@pytest.mark.parametrize("reply", ["", "_INBOX.r.1"])
async def test_publish_nowait_queues_the_bytes_publish_would(nc: Client, headers: dict[str, str] | None,
                                                          reply: str) -> None:
    client: Any = nc
    await nc.publish("fast.x", b"body", reply=reply, headers=headers)
    slow = client._pending[-1]
    assert publish_nowait(nc, "fast.x", b"body", reply, headers)
    assert client._pending[-1] == slow


@pytest.mark.parametrize("subject,headers", [("bad subject", None), ("a\r\nPUB b 0 0", None), ("", None),
                                             ("ok", {"bad name": "v"}), ("ok", {"k": "line\r\nbreak"})])
async def test_publish_nowait_leaves_what_publish_refuses_or_rewrites_to_publish(
        nc: Client, subject: str, headers: dict[str, str] | None) -> None:
    assert not publish_nowait(nc, subject, b"x", "", headers)


async def test_a_lane_gets_messages_in_order_and_nothing_after_it_is_dropped(nc: Client, unique: str) -> None:
    got: list[bytes] = []
    done = anyio.Event()

    def lane(msg: Msg) -> None:
        got.append(msg.data)
        if len(got) == 500:
            done.set()

    sub = await subscribe_lane(nc, f"lane.{unique}", lane)
    assert isinstance(nc._ps, FastParser)
    for i in range(500):
        await nc.publish(f"lane.{unique}", str(i).encode(), headers={"N": str(i)} if i % 2 else None)
    with anyio.fail_after(20):
        await done.wait()
    assert got == [str(i).encode() for i in range(500)]
    await sub.unsubscribe()
    _fastread.drop_lane(nc, sub)
    await nc.publish(f"lane.{unique}", b"late")
    await nc.flush()
    assert len(got) == 500


async def test_the_fast_read_path_can_be_turned_off(nats_server: Any, monkeypatch: pytest.MonkeyPatch,
                                                    unique: str) -> None:
    import nats

    monkeypatch.setenv("JETBRIDGE_FAST_READ", "0")
    plain = await nats.connect(nats_server.url)
    try:
        got: list[Msg] = []
        arrived = anyio.Event()

        def lane(msg: Msg) -> None:
            got.append(msg)
            arrived.set()

        await subscribe_lane(plain, f"off.{unique}", lane)
        assert type(plain._ps) is Parser
        await plain.publish(f"off.{unique}", b"x")
        with anyio.fail_after(10):
            await arrived.wait()
        assert got[0].data == b"x"
    finally:
        await plain.close()


async def _deaf_after_a_given_up_flush(client: Client) -> bool:
    """Whether ``client`` stops reading after a flush whose wait was given up: its PING's future is cancelled and
    left queued, and the server's PONG then meets it. Closes ``client``."""
    try:
        async def echo(msg: Msg) -> None:
            await msg.respond(b"ok")

        await client.subscribe("echo.given-up", cb=echo)
        given_up = asyncio.ensure_future(client.flush(timeout=5))
        await asyncio.sleep(0)  # the PING is sent, its future queued
        given_up.cancel()
        try:
            reply = await client.request("echo.given-up", b"x", timeout=3)
        except Exception:  # noqa: BLE001 - no reply at all: the read loop has ended
            return True
        assert reply.data == b"ok"
        await client.flush(timeout=3)  # later PINGs are still answered in order
        return False
    finally:
        await client.close()


async def _client(url: str, prepare: Any = None) -> Client:
    import nats

    client = await nats.connect(url)
    if prepare is not None:
        prepare(client)
    return client


async def test_a_given_up_flush_leaves_the_connection_reading(nats_server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # nats-py as it is: the read loop ends (InvalidStateError), the connection stays "connected" and deaf
    assert await _deaf_after_a_given_up_flush(await _client(nats_server.url))
    # the fast path, and nats-py's own parser with the fast path off: both keep reading
    assert not await _deaf_after_a_given_up_flush(await _client(nats_server.url, _fastread.install))
    monkeypatch.setenv("JETBRIDGE_FAST_READ", "0")
    assert not await _deaf_after_a_given_up_flush(await _client(nats_server.url, _fastread.install))


async def test_the_dispatchers_and_handlers_connections_are_hardened(
        nats_server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """``jetbridge``'s own connections (bridge.connect) and a Python handler service's survive a given-up flush,
    with either parser."""
    import jetbridge

    from bridge.connect import connect
    from bridge.settings import Settings

    for fast in ("1", "0"):
        monkeypatch.setenv("JETBRIDGE_FAST_READ", fast)
        assert not await _deaf_after_a_given_up_flush(await connect(Settings(server=nats_server.url)))
        client = await _client(nats_server.url)
        service = jetbridge.Service(client, name="hardened")

        @service.handler("noop")
        async def noop(task: jetbridge.Task) -> None:
            return None

        async with anyio.create_task_group() as tg:
            await tg.start(service.run)
            deaf = await _deaf_after_a_given_up_flush(client)
            tg.cancel_scope.cancel()
        assert not deaf
