"""``jetbridge handle``'s middleware equivalents (issue 20): the per-attempt timeout, one log line per attempt, and
the request's traceparent as the command's TRACEPARENT."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
import structlog.testing
from jetbridge import _protocol as proto
from nats.aio.client import Client

from bridge.handle import CommandHandler, HandleConfig
from tests.handle.conftest import Events, serving
from tests.harness import Harness
from tests.sdk.test_service import request_body

pytestmark = pytest.mark.anyio
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


async def test_timeout_stops_the_command_with_reason_timeout_within_the_budget(
    h: Harness, script: Any, events: Events,
) -> None:
    job = script("""
trap 'read -r word reason <&3; echo "publish $EVENTS stopped $word $reason" >&3; exit 143' TERM
sleep 60 &
wait
""")
    async with h.dispatcher(), serving(h, ["slow"], [job], timeout=0.3) as handler:
        started = anyio.current_time()
        record = await h.run("slow", max_tries=1)
        took = anyio.current_time() - started
        await events.wait_for(lambda t: t.startswith("stopped"))
        with anyio.fail_after(5):
            await handler.service.in_flight.wait_idle()
    assert "stopped cancel timeout" in events.texts()
    assert record.last_err_code == "cancelled" and "timeout middleware" in record.last_err
    assert took < 8  # the queue's budget is 10 s: the 0.3 s timeout stopped it, not the budget


async def test_a_timeout_longer_than_the_budget_is_bounded_by_it(
    nc: Client, unique: str, script: Any, events: Events,
) -> None:
    h = Harness(nc, unique)
    await h.make_queue(max_run_time=1.0, lease=1.0)
    job = script("""
trap 'read -r word reason <&3; echo "publish $EVENTS stopped $word $reason" >&3; exit 143' TERM
sleep 60 &
wait
""")
    async with h.dispatcher(), serving(h, ["hang"], [job], timeout=3600):
        task_id = await h.producer.enqueue("hang", max_tries=1)
        with anyio.fail_after(10):  # the budget (1 s) ends it, not the hour
            await events.wait_for(lambda t: t.startswith("stopped"))
        await h.producer.wait(task_id, timeout=10)
    assert "stopped cancel timeout" in events.texts()


async def test_one_log_line_per_attempt_with_its_outcome(h: Harness, script: Any) -> None:
    job = script("""
case "$JETBRIDGE_TASK_TYPE" in
  good) echo '"fine"' ;;
  bad) echo "disk full" >&2; exit 3 ;;
esac
""")
    with structlog.testing.capture_logs() as logs:
        async with h.dispatcher(), serving(h, ["good", "bad"], [job]):
            good = await h.run("good")
            bad = await h.run("bad", max_tries=2)
    lines = [e for e in logs if e["event"] == "attempt_done"]
    assert [(e["task_id"], e["type"], e["attempt"], e["outcome"], e.get("code")) for e in lines] == [
        (good.id, "good", 1, "ok", None), (bad.id, "bad", 1, "retry", "exit_3"), (bad.id, "bad", 2, "retry", "exit_3")]
    assert all(e["queue"] == h.queue and e["duration_ms"] > 0 for e in lines)


async def test_no_log_lines_when_turned_off(h: Harness, script: Any) -> None:
    with structlog.testing.capture_logs() as logs:
        async with h.dispatcher(), serving(h, ["good"], [script("echo 1")], log_attempts=False):
            await h.run("good")
    assert not [e for e in logs if e["event"] == "attempt_done"]


async def test_traceparent_of_the_request_is_the_commands_and_never_inherited(
    h: Harness, script: Any, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TRACEPARENT", "00-11111111111111111111111111111111-2222222222222222-01")
    job = script("""printf '"%s"' "${TRACEPARENT-unset}" """)
    async with serving(h, ["trace"], [job]):
        with_trace = await h.nc.request(f"{h.prefix}.trace", request_body("trace", traceparent=TRACEPARENT), timeout=10)
        without = await h.nc.request(f"{h.prefix}.trace", request_body("trace"), timeout=10)
    assert proto.interpret_reply(with_trace.headers, with_trace.data).result == TRACEPARENT
    assert proto.interpret_reply(without.headers, without.data).result == "unset"


def test_a_timeout_must_be_positive(script: Any) -> None:
    from jetbridge import ConfigError

    with pytest.raises(ConfigError, match="the timeout must be a positive duration"):
        HandleConfig(command=(str(script("true")),), task_types=("x",), timeout=0).validate()
    config = HandleConfig(command=(str(script("true")),), task_types=("x",), timeout=5)
    assert CommandHandler(None, config).config.timeout == 5  # type: ignore[arg-type]
