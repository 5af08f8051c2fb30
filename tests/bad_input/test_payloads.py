"""Payloads and names a producer may hand over: refused at enqueue with a ConfigError (or PayloadTooLargeError)
naming the task and the problem, with nothing stored; or, where the input is odd but usable, delivered intact.
(The cases in tests/sdk/test_producer.py are not repeated.)"""

from __future__ import annotations

import re
from typing import Any

import jetbridge
import pytest
from jetbridge._producer import payload_limit

from tests.bad_input.conftest import assert_unaffected, running
from tests.harness import Harness

pytestmark = pytest.mark.anyio


def _deep(depth: int) -> Any:
    value: Any = []
    for _ in range(depth):
        value = [value]
    return value


async def _waiting(h: Harness) -> int:
    return (await h.admin.info(h.queue)).waiting


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    pytest.param({"task_type": "t" * 257}, jetbridge.ConfigError, "task type 'tttt", id="type-too-long"),
    pytest.param({"task_type": "tâche"}, jetbridge.ConfigError, "task type 'tâche' is invalid", id="type-not-ascii"),
    pytest.param({"task_type": "img.*"}, jetbridge.ConfigError, "task type 'img.*' is invalid", id="type-wildcard"),
    pytest.param({"task_type": "t", "queue": "orders.>"}, jetbridge.ConfigError, "queue name 'orders.>' is invalid",
                 id="queue-wildcard"),
    pytest.param({"task_type": "t", "task_id": "i" * 300}, jetbridge.ConfigError, "task id 'iiii", id="id-too-long"),
    pytest.param({"task_type": "t", "max_tries": 2.5}, jetbridge.ConfigError, "max_tries must be a whole number",
                 id="max-tries-fraction"),
    pytest.param({"task_type": "t", "payload": "\ud800"}, jetbridge.ConfigError, "payload is neither bytes nor JSON",
                 id="payload-lone-surrogate"),
    pytest.param({"task_type": "t", "payload": _deep(5000)}, jetbridge.ConfigError,
                 "payload is neither bytes nor JSON", id="payload-nested-too-deeply"),
    pytest.param({"task_type": "t", "payload": {1j: "complex key"}}, jetbridge.ConfigError,
                 "payload is neither bytes nor JSON", id="payload-non-string-key"),
    pytest.param({"task_type": "t", "payload": b"x", "content_type": "a" * 300}, jetbridge.ConfigError,
                 "content_type", id="content-type-too-long"),
])
async def test_bad_enqueue_is_refused_and_stores_nothing(h: Harness, kwargs: dict[str, Any], error: type[Exception],
                                                         match: str) -> None:
    with pytest.raises(error, match=re.escape(match)):
        await h.producer.enqueue(**kwargs)
    assert await _waiting(h) == 0


async def test_oversize_task_in_a_batch_is_refused_alone(h: Harness) -> None:
    limit = payload_limit(h.nc.max_payload)
    specs = [jetbridge.TaskSpec(type="ok", payload=i) for i in range(5)]
    specs.insert(2, jetbridge.TaskSpec(type="ok", payload=b"x" * limit))
    results = await h.producer.enqueue_many(specs)
    assert isinstance(results[2], jetbridge.PayloadTooLargeError)
    assert "of type ok is" in str(results[2]) and "store large data elsewhere" in str(results[2])
    assert sum(isinstance(r, str) for r in results) == 5 and await _waiting(h) == 5


async def test_bytes_labelled_json_that_are_not_json_arrive_as_bytes(h: Harness) -> None:
    """A producer that says application/json but sends bytes that do not parse: the handler gets the bytes (as
    application/octet-stream), not a crash or a protocol error."""
    seen: list[Any] = []

    async def look(task: jetbridge.Task) -> Any:
        seen.append(task.payload)
        return "seen"

    async with running(h), h.service({"look": look}):
        record = await h.run("look", b"{not json", content_type="application/json")
        await assert_unaffected(h)
    assert record.state == "complete"
    assert seen == [jetbridge.Bytes(b"{not json", "application/octet-stream")]


async def test_empty_bytes_payload_arrives_as_empty_bytes(h: Harness) -> None:
    seen: list[Any] = []

    async def look(task: jetbridge.Task) -> Any:
        seen.append(task.payload)
        return len(task.payload.data)

    async with running(h), h.service({"look": look}):
        record = await h.run("look", b"")
    assert (record.state, record.result and record.result.value()) == ("complete", 0)
    assert seen == [jetbridge.Bytes(b"", "application/octet-stream")]
