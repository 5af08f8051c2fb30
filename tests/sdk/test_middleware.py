"""Python SDK middleware: order (global outermost, groups inside), short-circuit, result changes, recovery in the
chain, the built-ins (logging, timeout, Prometheus), and the user mistakes, against a real nats-server."""

from __future__ import annotations

import json
from typing import Any

import anyio
import jetbridge
import pytest
import structlog.testing
from jetbridge import _protocol as proto
from jetbridge.middleware import log_attempts, prometheus_metrics, timeout
from nats.aio.client import Client
from prometheus_client import CollectorRegistry

from tests.harness import Harness, running_service
from tests.sdk.test_service import request_body

pytestmark = pytest.mark.anyio


def tagging(name: str, trail: list[str]) -> jetbridge.Middleware:
    async def mw(task: jetbridge.Task, call_next: jetbridge.Next) -> Any:
        trail.append(f"{name}>")
        try:
            return await call_next(task)
        finally:
            trail.append(f"<{name}")

    return mw


async def ask(nc: Client, h: Harness, task_type: str, **overrides: Any) -> proto.Outcome:
    reply = await nc.request(f"{h.prefix}.{task_type}", request_body(task_type, **overrides), timeout=10)
    return proto.interpret_reply(reply.headers, reply.data)


async def test_global_middleware_wrap_groups_first_registered_outermost(nc: Client, unique: str) -> None:
    h = Harness(nc, unique)
    trail: list[str] = []

    async def handler(task: jetbridge.Task) -> Any:
        trail.append("handler")
        return "done"

    service = jetbridge.Service(nc, f"svc-{unique}", prefix=h.prefix)
    service.add_handler("mw:one", handler)
    service.add_handler("other", handler)
    service.use(tagging("a", trail), tagging("b", trail))
    service.use_for("mw:*", tagging("group1", trail))
    service.use(tagging("c", trail))  # global, registered after the group: still outside it
    service.use_for("mw:?ne", tagging("group2", trail))
    async with anyio.create_task_group() as tg:
        await tg.start(service.run)
        assert (await ask(nc, h, "mw:one")).result == "done"
        assert trail == ["a>", "b>", "c>", "group1>", "group2>", "handler", "<group2", "<group1", "<c", "<b", "<a"]
        trail.clear()
        assert (await ask(nc, h, "other")).result == "done"
        assert trail == ["a>", "b>", "c>", "handler", "<c", "<b", "<a"]
        service.stop()


async def test_groups_match_the_request_type_of_a_catch_all_handler(nc: Client, unique: str) -> None:
    h = Harness(nc, unique)
    seen: list[str] = []

    async def group(task: jetbridge.Task, call_next: jetbridge.Next) -> Any:
        seen.append(task.type)
        return await call_next(task)

    service = jetbridge.Service(nc, f"svc-{unique}", prefix=h.prefix)
    service.add_handler("*", echo_type)
    service.use_for("email:*", group)
    async with anyio.create_task_group() as tg:
        await tg.start(service.run)
        for task_type in ("email:new", "image:resize", "email:old"):
            reply = await nc.request(f"{h.prefix}.{task_type}", request_body(task_type), timeout=10)
            assert proto.interpret_reply(reply.headers, reply.data).result == task_type
        service.stop()
    assert seen == ["email:new", "email:old"]


async def echo_type(task: jetbridge.Task) -> Any:
    return task.type


async def test_short_circuit_change_result_and_what_a_middleware_sees(nc: Client, unique: str) -> None:
    h = Harness(nc, unique)
    called: list[str] = []
    seen: dict[str, Any] = {}

    async def handler(task: jetbridge.Task) -> Any:
        called.append(task.type)
        return {"n": 1}

    async def policy(task: jetbridge.Task, call_next: jetbridge.Next) -> Any:
        seen.update(id=task.id, attempt=task.attempt, budget=task.budget, traceparent=task.traceparent,
                    header=task.headers.get("X-Tenant"))
        if task.type == "blocked":
            raise jetbridge.Terminate("blocked by policy", code="blocked")
        if task.type == "later":
            raise jetbridge.Retry("not now", code="busy", after=2)
        if task.type == "cached":
            return {"cached": True}
        result = await call_next(task)
        return {**result, "wrapped": True}

    service = jetbridge.Service(nc, f"svc-{unique}", prefix=h.prefix)
    for t in ("blocked", "later", "cached", "plain"):
        service.add_handler(t, handler)
    service.use(policy)
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    async with anyio.create_task_group() as tg:
        await tg.start(service.run)
        blocked = await ask(nc, h, "blocked")
        assert (blocked.kind, blocked.error_code, blocked.message) == ("terminate", "blocked", "blocked by policy")
        later = await ask(nc, h, "later")
        assert (later.kind, later.error_code, later.retry_after_ms) == ("retry", "busy", 2000)
        assert (await ask(nc, h, "cached")).result == {"cached": True}
        reply = await nc.request(f"{h.prefix}.plain", request_body("plain", attempt=2, traceparent=traceparent),
                                 headers={"X-Tenant": "acme"}, timeout=10)
        assert proto.interpret_reply(reply.headers, reply.data).result == {"n": 1, "wrapped": True}
        service.stop()
    assert called == ["plain"]  # every short-circuit kept the handler from running
    assert seen == {"id": "t1", "attempt": 2, "budget": 5.0, "traceparent": traceparent, "header": "acme"}


async def test_recovery_is_outermost_so_middleware_see_handler_exceptions(nc: Client, unique: str) -> None:
    h = Harness(nc, unique)
    caught: list[str] = []

    async def crash(task: jetbridge.Task) -> Any:
        raise KeyError("missing")

    async def watcher(task: jetbridge.Task, call_next: jetbridge.Next) -> Any:
        try:
            return await call_next(task)
        except Exception as exc:
            caught.append(type(exc).__name__)
            raise

    async def broken(task: jetbridge.Task, call_next: jetbridge.Next) -> Any:
        raise RuntimeError("middleware bug")

    service = jetbridge.Service(nc, f"svc-{unique}", prefix=h.prefix)
    service.add_handler("crash", crash)
    service.add_handler("fine", echo_type)
    service.use(watcher)
    service.use_for("fine", broken)
    async with anyio.create_task_group() as tg:
        await tg.start(service.run)
        crashed = await ask(nc, h, "crash")
        assert (crashed.kind, crashed.error_code, crashed.message) == ("retry", "handler_error", "KeyError: 'missing'")
        bug = await ask(nc, h, "fine")
        assert (bug.kind, bug.error_code, bug.message) == ("retry", "handler_error", "RuntimeError: middleware bug")
        assert (await ask(nc, h, "crash")).kind == "retry"  # the service keeps serving
        service.stop()
    assert caught == ["KeyError", "RuntimeError", "KeyError"]


async def test_log_attempts_writes_one_line_per_attempt(nc: Client, unique: str) -> None:
    h = Harness(nc, unique)

    async def fail(task: jetbridge.Task) -> Any:
        raise jetbridge.Retry("smtp busy", code="smtp_busy")

    service = jetbridge.Service(nc, f"svc-{unique}", prefix=h.prefix)
    service.add_handler("ok", echo_type)
    service.add_handler("fail", fail)
    service.use(log_attempts())
    with structlog.testing.capture_logs() as logs:
        async with anyio.create_task_group() as tg:
            await tg.start(service.run)
            await ask(nc, h, "ok")
            await ask(nc, h, "fail", attempt=3)
            service.stop()
    lines = [entry for entry in logs if entry["event"] == "attempt_done"]
    assert [(e["type"], e["outcome"], e["log_level"], e["attempt"], e.get("code")) for e in lines] == [
        ("ok", "ok", "info", 1, None), ("fail", "retry", "warning", 3, "smtp_busy")]
    assert all(e["task_id"] == "t1" and e["queue"] == "Q" and e["duration_ms"] >= 0 for e in lines)


async def test_timeout_cancels_the_handler_with_reason_timeout(nc: Client, unique: str) -> None:
    h = Harness(nc, unique)
    reasons: list[str | None] = []

    async def slow(task: jetbridge.Task) -> Any:
        try:
            await anyio.sleep(30)
        except anyio.get_cancelled_exc_class():
            reasons.append(task.cancel_reason)
            raise
        return "never"

    async def stubborn(task: jetbridge.Task) -> Any:
        with anyio.CancelScope(shield=True):
            await anyio.sleep(0.3)
        return "finished anyway"

    service = jetbridge.Service(nc, f"svc-{unique}", prefix=h.prefix)
    service.add_handler("slow", slow)
    service.add_handler("edge", slow)
    service.add_handler("stubborn", stubborn)
    service.use_for("slow", timeout(0.2))
    service.use_for("edge", timeout(margin=4.8))  # budget_ms 5000: stops 4.8 s early
    service.use_for("stubborn", timeout(0.05))
    async with anyio.create_task_group() as tg:
        await tg.start(service.run)
        with anyio.fail_after(10):  # far below the 30 s sleeps
            slow_reply = await ask(nc, h, "slow")
            edge_reply = await ask(nc, h, "edge")
        assert (slow_reply.kind, slow_reply.error_code) == ("retry", "cancelled")
        assert "timeout middleware" in (slow_reply.message or "")
        assert (edge_reply.kind, edge_reply.error_code) == ("retry", "cancelled")
        assert (await ask(nc, h, "stubborn")).result == "finished anyway"  # replies are never suppressed
        service.stop()
    assert reasons == ["timeout", "timeout"]


def test_timeout_rejects_bad_limits() -> None:
    with pytest.raises(ValueError, match="positive number of seconds"):
        timeout(0)
    with pytest.raises(ValueError, match="zero or more seconds"):
        timeout(margin=-1)


async def test_prometheus_metrics_per_task_type(nc: Client, unique: str) -> None:
    h = Harness(nc, unique)
    registry = CollectorRegistry()
    inside: list[float | None] = []

    async def ok(task: jetbridge.Task) -> Any:
        inside.append(registry.get_sample_value("jetbridge_handler_in_progress", {"type": "ok"}))
        return 1

    async def crash(task: jetbridge.Task) -> Any:
        raise ValueError("boom")

    service = jetbridge.Service(nc, f"svc-{unique}", prefix=h.prefix)
    service.add_handler("ok", ok)
    service.add_handler("crash", crash)
    service.use(prometheus_metrics(registry), prometheus_metrics(registry))  # one registry, one set of metrics
    async with anyio.create_task_group() as tg:
        await tg.start(service.run)
        await ask(nc, h, "ok")
        await ask(nc, h, "crash")
        service.stop()

    def sample(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    assert inside == [2.0]  # both links count the running attempt
    assert sample("jetbridge_handler_attempts_total", type="ok", outcome="ok") == 2.0
    assert sample("jetbridge_handler_attempts_total", type="crash", outcome="error") == 2.0
    assert sample("jetbridge_handler_duration_seconds_count", type="ok", outcome="ok") == 2.0
    assert sample("jetbridge_handler_in_progress", type="ok") == 0.0


def test_user_mistakes_get_one_line_config_errors() -> None:
    service = jetbridge.Service(None, "x")  # type: ignore[arg-type]
    for bad in ("", "email:[x", "a b", "email.*", "]"):
        with pytest.raises(jetbridge.ConfigError, match="is not a task type pattern like 'email:\\*'"):
            service.use_for(bad, log_attempts())

    def sync_mw(task: jetbridge.Task, call_next: jetbridge.Next) -> Any:
        return call_next(task)

    with pytest.raises(jetbridge.ConfigError, match="must be 'async def sync_mw\\(task, next\\)'"):
        service.use(sync_mw)  # type: ignore[arg-type]
    with pytest.raises(jetbridge.ConfigError, match="log_attempts needs calling"):
        service.use(log_attempts)  # type: ignore[arg-type]
    with pytest.raises(jetbridge.ConfigError, match="must be an async function"):
        service.use("log")  # type: ignore[arg-type]


async def test_middleware_after_start_is_refused(nc: Client, unique: str) -> None:
    h = Harness(nc, unique)
    async with running_service(nc, f"svc-{unique}", h.prefix, {"echo": echo_type}) as service:
        with pytest.raises(jetbridge.ConfigError, match="add middleware before the service starts"):
            service.use(log_attempts())


async def test_through_the_dispatcher_a_short_circuit_is_one_terminated_attempt(h: Harness) -> None:
    trail: list[str] = []

    async def handler(task: jetbridge.Task) -> Any:
        trail.append(task.type)
        return {"type": task.type}

    async def block(task: jetbridge.Task, call_next: jetbridge.Next) -> Any:
        raise jetbridge.Terminate("blocked by policy", code="blocked")

    service = jetbridge.Service(h.nc, f"svc-{h.unique}", prefix=h.prefix)
    service.add_handler("mw:ok", handler)
    service.add_handler("mw:blocked", handler)
    service.use(log_attempts())
    service.use_for("mw:blocked", block)
    async with h.dispatcher(), anyio.create_task_group() as tg:
        await tg.start(service.run)
        blocked = await h.run("mw:blocked")
        ok = await h.run("mw:ok")
        service.stop()
    assert (blocked.state, blocked.tries, blocked.last_err) == (jetbridge.TaskState.TERMINATED, 1, "blocked by policy")
    assert ok.state == jetbridge.TaskState.COMPLETE and ok.result is not None
    assert json.loads(json.dumps(ok.result.value())) == {"type": "mw:ok"}
    assert trail == ["mw:ok"]
