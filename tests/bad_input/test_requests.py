"""Requests a Python handler service cannot use, sent on its real subject: it answers each with the defined
``bad_request`` reply naming the problem (instead of failing inside and never answering, which costs the task a
lease), and keeps serving. The cases of tests/sdk/test_service.py are not repeated."""

from __future__ import annotations

from typing import Any

import jetbridge
import pytest
from jetbridge import _protocol as proto
from nats.aio.client import Client

from tests.harness import Harness
from tests.sdk.test_service import request_body

pytestmark = pytest.mark.anyio


async def echo(task: jetbridge.Task) -> Any:
    return task.payload


@pytest.mark.parametrize(("data", "message"), [
    pytest.param(b'{"protocol": 1, "x": ' + b"[" * 3000 + b"]" * 3000 + b"}", "nested too deeply", id="nested-too-deeply"),
    pytest.param(request_body(created="2026-13-45T99:99:99Z"), "created '2026-13-45T99:99:99Z' is not a valid time",
                 id="created-not-a-date"),
    pytest.param(request_body(deadline="2026-00-10T00:00:00Z"), "deadline '2026-00-10T00:00:00Z' is not a valid time",
                 id="deadline-not-a-date"),
    pytest.param(request_body(attempt_deadline="2026-11-24T25:00:00Z"), "attempt_deadline", id="attempt-deadline-not-a-date"),
])
async def test_unusable_request_gets_bad_request_and_the_service_keeps_serving(
        nc: Client, unique: str, data: bytes, message: str) -> None:
    h = Harness(nc, unique)
    async with h.service({"echo": echo}):
        reply = await nc.request(f"{h.prefix}.echo", data, timeout=5)
        outcome = proto.interpret_reply(reply.headers, reply.data)
        ok = await nc.request(f"{h.prefix}.echo", request_body(), timeout=5)
    assert (outcome.kind, outcome.error_code) == ("terminate", "bad_request")
    assert message in outcome.message
    assert proto.interpret_reply(ok.headers, ok.data).result == {"x": 1}
