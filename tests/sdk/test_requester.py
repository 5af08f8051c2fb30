"""The requester's shared timeout timer: every request still times out, whatever mix of timeouts is in flight."""

from __future__ import annotations

import time

import anyio
import nats.errors
import pytest
from jetbridge._requester import FIFO_MAX_KINDS, Requester
from nats.aio.client import Client

pytestmark = pytest.mark.anyio


async def _silent(nc: Client, subject: str) -> None:
    async def ignore(msg: object) -> None:
        return None

    await nc.subscribe(subject, cb=ignore)
    await nc.flush()


async def test_every_request_times_out_no_earlier_than_its_timeout(nc: Client, unique: str) -> None:
    await _silent(nc, f"silent.{unique}")
    rq = Requester(nc)
    ended: dict[float, float] = {}
    start = time.monotonic()

    async def one(timeout: float) -> None:
        with pytest.raises(nats.errors.TimeoutError):
            await rq.request(f"silent.{unique}", b"", timeout=timeout)
        ended[timeout] = time.monotonic() - start

    async with anyio.create_task_group() as tg:
        for timeout in (0.6, 0.2, 0.4, 0.3):
            tg.start_soon(one, timeout)
    assert set(ended) == {0.2, 0.3, 0.4, 0.6}
    for timeout, took in ended.items():
        assert took >= timeout
    assert rq.in_flight == 0
    await rq.close()


async def test_answered_requests_leave_nothing_that_expires_a_later_one(nc: Client, unique: str) -> None:
    async def echo(msg: object) -> None:
        await msg.respond(b"ok")  # type: ignore[attr-defined]

    await nc.subscribe(f"echo.{unique}", cb=echo)
    await _silent(nc, f"silent.{unique}")
    rq = Requester(nc)
    for _ in range(50):
        assert (await rq.request(f"echo.{unique}", b"", timeout=0.2)).data == b"ok"
    started = time.monotonic()
    with pytest.raises(nats.errors.TimeoutError):
        await rq.request(f"silent.{unique}", b"", timeout=0.5)
    assert time.monotonic() - started >= 0.5


async def test_many_distinct_timeouts_fall_back_to_their_own_timers(nc: Client, unique: str) -> None:
    await _silent(nc, f"silent.{unique}")
    rq = Requester(nc)
    async def one(timeout: float) -> None:
        with pytest.raises(nats.errors.TimeoutError):
            await rq.request(f"silent.{unique}", b"", timeout=timeout)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            for k in range(FIFO_MAX_KINDS + 4):
                tg.start_soon(one, 0.1 + k / 100)
    assert rq.in_flight == 0
