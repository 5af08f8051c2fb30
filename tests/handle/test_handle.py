"""``jetbridge handle`` in-process: real shell scripts through the real dispatcher on a real nats-server."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import jetbridge
import pytest
from jetbridge._timeutil import parse_ns
from nats.aio.client import Client
from nats.aio.msg import Msg

from tests.handle.conftest import Events, reaped, serving, wait_gone, wait_state
from tests.harness import Harness

pytestmark = pytest.mark.anyio


# Payloads, environment, results ---------------------------------------------------------------------------------


async def test_json_payload_on_stdin_task_in_environment_json_result(
    h: Harness, script: Any, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HANDLE_TEST_MARK", "inherited")
    job = script("""
payload=$(cat)
printf '{"stdin": %s, "id": "%s", "type": "%s", "queue": "%s", "attempt": %s, "max_attempts": %s,
 "deadline": "%s", "attempt_deadline": "%s", "content_type": "%s", "budget_ms": %s, "control_fd": "%s",
 "mark": "%s"}\\n' "$payload" "$JETBRIDGE_TASK_ID" "$JETBRIDGE_TASK_TYPE" "$JETBRIDGE_TASK_QUEUE" \\
 "$JETBRIDGE_TASK_ATTEMPT" "$JETBRIDGE_TASK_MAX_ATTEMPTS" "$JETBRIDGE_TASK_DEADLINE" \\
 "$JETBRIDGE_TASK_ATTEMPT_DEADLINE" "$JETBRIDGE_TASK_CONTENT_TYPE" "$JETBRIDGE_TASK_BUDGET_MS" \\
 "$JETBRIDGE_CONTROL_FD" "$HANDLE_TEST_MARK"
""")
    async with h.dispatcher(), serving(h, ["env:show"], [job]):
        record = await h.run("env:show", {"n": [1, "two"], "ü": None}, max_tries=5,
                             deadline=timedelta(hours=1))
    assert (record.state, record.tries) == ("complete", 1)
    assert record.result is not None
    out = record.result.value()
    assert out["stdin"] == {"n": [1, "two"], "ü": None}
    assert (out["id"], out["type"], out["queue"]) == (record.id, "env:show", h.queue)
    assert (out["attempt"], out["max_attempts"], out["content_type"]) == (1, 5, "application/json")
    assert record.deadline is not None
    assert abs(parse_ns(out["deadline"]) - parse_ns(record.deadline)) < 1_000_000
    assert out["attempt_deadline"].endswith("Z") and 9000 < out["budget_ms"] <= 10000
    assert (out["control_fd"], out["mark"]) == ("3", "inherited")


async def test_binary_payload_raw_bytes_and_binary_text_and_empty_results(h: Harness, script: Any) -> None:
    job = script("""
case "$JETBRIDGE_TASK_TYPE" in
  echo) echo "content-type $JETBRIDGE_TASK_CONTENT_TYPE" >&3; cat ;;
  text) printf 'plain text, not JSON\\n' ;;
  empty) : ;;
  json) printf '  [1, 2.5, "x"]  \\n\\n' ;;
esac
""")
    async with h.dispatcher(), serving(h, ["echo", "text", "empty", "json"], [job]):
        echoed = await h.run("echo", jetbridge.Bytes(b"\x00\x01\xff\n\"{", "image/x-test"))
        text = await h.run("text", {"ignored": True})
        empty = await h.run("empty")
        as_json = await h.run("json")
    assert echoed.result is not None and echoed.result.value() == jetbridge.Bytes(b"\x00\x01\xff\n\"{", "image/x-test")
    assert text.result is not None
    assert text.result.value() == jetbridge.Bytes(b"plain text, not JSON\n", "application/octet-stream")
    assert empty.state == "complete" and empty.result is not None and empty.result.value() is None
    assert as_json.result is not None and as_json.result.value() == [1, 2.5, "x"]


async def test_catch_all_type_serves_every_type_on_the_prefix(h: Harness, script: Any) -> None:
    job = script('printf \'"%s"\' "$JETBRIDGE_TASK_TYPE"')
    async with h.dispatcher(), serving(h, ["*"], [job]):
        records = [await h.run(t) for t in ("img:resize", "mail:send")]
    assert [r.result and r.result.value() for r in records] == ["img:resize", "mail:send"]


# Exit codes and errors ------------------------------------------------------------------------------------------


async def test_exit_100_terminates_with_stderr_as_the_message(h: Harness, script: Any) -> None:
    job = script("""
echo "looking up the mailbox" >&2
echo "no such mailbox: $(cat)" >&2
exit 100
""")
    async with h.dispatcher(), serving(h, ["mail"], [job]):
        record = await h.run("mail", "ada@example.com")
    assert (record.state, record.tries, record.last_err_code) == ("terminated", 1, "terminate")
    assert record.last_err == 'looking up the mailbox\nno such mailbox: "ada@example.com"'


async def test_other_exit_codes_retry_with_the_tail_of_stderr(h: Harness, script: Any) -> None:
    job = script("""
i=0
while [ $i -lt 300 ]; do echo "noise line $i of attempt $JETBRIDGE_TASK_ATTEMPT"; i=$((i+1)); done >&2
echo "final: disk full on attempt $JETBRIDGE_TASK_ATTEMPT" >&2
exit 3
""")
    async with h.dispatcher(), serving(h, ["flaky"], [job]):
        record = await h.run("flaky", max_tries=2)
    assert (record.state, record.tries, record.last_err_code) == ("expired", 2, "exit_3")
    prefix = "gave up after 2 of 2 attempts: "
    assert record.last_err.startswith(prefix + "noise line ")  # the partial first line of the tail is dropped
    message = record.last_err[len(prefix):]
    assert message.endswith("noise line 299 of attempt 2\nfinal: disk full on attempt 2")
    assert 1500 < len(message) <= 2048 and "noise line 0 " not in message


async def test_a_failure_with_empty_stderr_names_the_status_or_signal(h: Harness, script: Any) -> None:
    job = script('[ "$JETBRIDGE_TASK_TYPE" = crash ] && kill -ABRT $$; exit 7')
    async with h.dispatcher(), serving(h, ["crash", "quiet"], [job]):
        crash = await h.run("crash", max_tries=1)
        quiet = await h.run("quiet", max_tries=1)
    assert (crash.last_err_code, crash.last_err) == (
        "signal_SIGABRT", "gave up after 1 of 1 attempts: command was killed by signal SIGABRT")
    assert (quiet.last_err_code, quiet.last_err) == (
        "exit_7", "gave up after 1 of 1 attempts: command exited with status 7")


async def test_retry_after_and_error_code_control_lines(h: Harness, script: Any, events: Events) -> None:
    job = script("""
echo "publish $EVENTS started $JETBRIDGE_TASK_ATTEMPT" >&3
if [ "$JETBRIDGE_TASK_ATTEMPT" = 1 ]; then
  echo "retry-after 700ms" >&3
  echo "rate limited" >&2
  exit 1
fi
echo "error-code busy" >&3
echo "still busy" >&2
exit 1
""")
    async with h.dispatcher(), serving(h, ["later"], [job]):
        record = await h.run("later", max_tries=2)
    (t1, _), (t2, _) = await events.wait_for(lambda t: t == "started 1"), await events.wait_for(lambda t: t == "started 2")
    assert t2 - t1 >= 0.6  # the queue's own backoff is 50 ms
    assert (record.state, record.last_err_code, record.last_err) == (
        "expired", "busy", "gave up after 2 of 2 attempts: still busy")


async def test_a_command_that_cannot_start_is_retried(h: Harness, script: Any) -> None:
    job = script("echo never")
    async with h.dispatcher(), serving(h, ["gone"], [job]):
        job.unlink()
        record = await h.run("gone", max_tries=1)
    assert record.last_err_code == "spawn_failed" and "No such file" in record.last_err


async def test_bad_control_lines_are_ignored(h: Harness, script: Any) -> None:
    job = script("""
echo "bogus" >&3
echo "progress 7" >&3
echo "retry-after soon" >&3
echo "publish \\$SYS.REQ.SERVER.PING hi" >&3
echo "error-code" >&3
echo '{"ok": true}'
""")
    async with h.dispatcher(), serving(h, ["lines"], [job]):
        record = await h.run("lines")
    assert record.result is not None and record.result.value() == {"ok": True}


# Heartbeats and progress ----------------------------------------------------------------------------------------


async def test_heartbeat_and_progress_lines_keep_a_long_command_past_its_lease(
    nc: Client, unique: str, script: Any,
) -> None:
    h = Harness(nc, unique)
    await h.make_queue(lease=0.6)
    beats: list[dict[str, Any]] = []

    async def on_beat(msg: Msg) -> None:
        beats.append(json.loads(msg.data))

    job = script("""
echo "heartbeat alive" >&3
i=1
while [ $i -le 4 ]; do sleep 0.4; echo "progress $i/4 step $i of 4" >&3; i=$((i+1)); done
echo '"finished"'
""")
    sub = await nc.subscribe("jetbridge.hb.>", cb=on_beat)
    async with h.dispatcher(), serving(h, ["slow"], [job]):
        record = await h.run("slow")
    await sub.unsubscribe()
    assert (record.state, record.tries) == ("complete", 1)  # 1.6 s of work under a 0.6 s lease, one attempt
    assert record.result is not None and record.result.value() == "finished"
    mine = [b for b in beats if b["task_id"] == record.id and "message" in b]
    assert [(b.get("progress"), b["message"]) for b in mine] == [
        (None, "alive"), (0.25, "step 1 of 4"), (0.5, "step 2 of 4"), (0.75, "step 3 of 4"), (1.0, "step 4 of 4")]


# Stopping commands: budget, cancel, oversize output ----------------------------------------------------------------


async def test_timeout_kills_the_command_and_its_process_group(
    nc: Client, unique: str, script: Any, events: Events,
) -> None:
    h = Harness(nc, unique)
    await h.make_queue(max_run_time=1.0, lease=1.0)
    job = script("""
sleep 60 &
echo "publish $EVENTS pids $$ $!" >&3
sleep 60
""")
    async with h.dispatcher(), serving(h, ["hang"], [job]) as handler:
        record = await h.run("hang", max_tries=1)
        pids = await events.pids()
        with anyio.fail_after(5):
            await handler.service.in_flight.wait_idle()
    assert (record.state, record.last_err_code) == ("expired", "timeout")
    assert reaped(pids[0])  # the command itself is our child: waited for, no zombie
    await wait_gone(*pids)


async def test_operator_cancel_tells_the_command_why_and_kills_its_group(
    h: Harness, script: Any, events: Events,
) -> None:
    job = script("""
trap 'read -r word reason <&3; echo "publish $EVENTS stopped $word $reason" >&3; exit 143' TERM
sleep 60 &
echo "publish $EVENTS pids $$ $!" >&3
wait
""")
    async with h.dispatcher(), serving(h, ["forever"], [job]) as handler:
        task_id = await h.producer.enqueue("forever")
        pids = await events.pids()
        await h.producer.cancel(task_id, reason="changed my mind")
        await events.wait_for(lambda t: t.startswith("stopped"))
        with anyio.fail_after(5):
            await handler.service.in_flight.wait_idle()
        record = await h.producer.wait(task_id, timeout=5)
    assert "stopped cancel operator" in events.texts()
    assert (record.state, record.last_err, record.last_err_code) == ("terminated", "changed my mind", "cancelled")
    await wait_gone(*pids)


async def test_a_command_that_ignores_sigterm_gets_sigkill_after_the_kill_grace(
    h: Harness, script: Any, events: Events,
) -> None:
    job = script("""
trap '' TERM
sleep 60 &
echo "publish $EVENTS pids $$ $!" >&3
wait
""")
    async with h.dispatcher(), serving(h, ["stubborn"], [job], kill_grace=0.5) as handler:
        task_id = await h.producer.enqueue("stubborn")
        pids = await events.pids()
        started = anyio.current_time()
        await h.producer.cancel(task_id)
        with anyio.fail_after(5):
            await handler.service.in_flight.wait_idle()
        took = anyio.current_time() - started
    await wait_gone(*pids)
    assert took >= 0.45  # SIGTERM is ignored (by the children too): only the SIGKILL after 0.5 s ends them


async def test_leftover_processes_are_killed_when_the_command_exits(h: Harness, script: Any, events: Events) -> None:
    job = script("""
sleep 60 &
echo "publish $EVENTS pids $!" >&3
echo '{"ok": true}'
""")
    async with h.dispatcher(), serving(h, ["bg"], [job]):
        record = await h.run("bg")
        pids = await events.pids()
    assert record.result is not None and record.result.value() == {"ok": True}
    await wait_gone(*pids)


async def test_stdout_past_the_limit_stops_the_command_with_result_too_large(
    h: Harness, script: Any, events: Events,
) -> None:
    job = script("""
echo "publish $EVENTS pids $$" >&3
head -c 3000000 /dev/zero
sleep 60
""")
    async with h.dispatcher(), serving(h, ["big"], [job]) as handler:
        with anyio.fail_after(8):  # well before the 10 s budget
            record = await h.run("big")
        pids = await events.pids()
        limit = handler.stdout_limit
    assert (record.state, record.tries, record.last_err_code) == ("terminated", 1, "result_too_large")
    assert f"more than {limit} bytes to stdout" in record.last_err
    await wait_gone(*pids)


async def test_a_binary_result_too_big_for_a_reply_is_result_too_large(h: Harness, script: Any) -> None:
    job = script("""
echo "content-type application/octet-stream" >&3
head -c 900000 /dev/zero
""")
    async with h.dispatcher(), serving(h, ["b64"], [job]):
        record = await h.run("b64")  # 900 kB fits max_payload, its base64 does not
    assert (record.state, record.last_err_code) == ("terminated", "result_too_large")


# Concurrency and draining ---------------------------------------------------------------------------------------

WAIT_FOR_RELEASE = """
echo "publish $EVENTS start $JETBRIDGE_TASK_ID" >&3
while [ ! -e "$RELEASE" ]; do sleep 0.02; done
echo "publish $EVENTS end $JETBRIDGE_TASK_ID" >&3
printf '"%s"' "$JETBRIDGE_TASK_ID"
"""


async def test_concurrency_bounds_the_commands_running_at_once(
    h: Harness, script: Any, events: Events, tmp_path: Path,
) -> None:
    release = tmp_path / "release"
    job = script(WAIT_FOR_RELEASE)
    async with h.dispatcher(), serving(h, ["gate"], [job], concurrency=2, env={"RELEASE": str(release)}):
        ids = [await h.producer.enqueue("gate") for _ in range(3)]
        await events.wait_for(lambda t: sum(x.startswith("start") for x in events.texts()) >= 2)
        release.touch()
        records = [await h.producer.wait(i, timeout=10) for i in ids]
    assert [r.result and r.result.value() for r in records] == ids
    running, most = 0, 0
    for text in events.texts():
        running += 1 if text.startswith("start") else -1
        most = max(most, running)
    assert most == 2


async def test_drain_lets_running_commands_finish_and_starts_no_new_ones(
    h: Harness, script: Any, events: Events, tmp_path: Path,
) -> None:
    release = tmp_path / "release"
    job = script(WAIT_FOR_RELEASE)
    async with h.dispatcher(), serving(h, ["gate"], [job], env={"RELEASE": str(release)}) as handler:
        first = await h.producer.enqueue("gate")
        await events.wait_for(lambda t: t == f"start {first}")
        handler.stop()
        second = await h.producer.enqueue("gate")
        await wait_state(h, second, "no_handler", "retry")  # refused while draining, or nobody listens any more
        assert not handler.stopped.is_set()
        release.touch()
        with anyio.fail_after(10):
            await handler.stopped.wait()
        record = await h.producer.wait(first, timeout=5)
    assert (record.state, record.result and record.result.value()) == ("complete", first)
    assert f"start {second}" not in events.texts()


async def test_drain_past_the_grace_stops_commands_and_hands_their_tasks_back(
    nc: Client, unique: str, script: Any, events: Events,
) -> None:
    h = Harness(nc, unique)
    await h.make_queue(retry="fixed:60")
    job = script("""
trap 'read -r word reason <&3; echo "publish $EVENTS stopped $reason" >&3; exit 143' TERM
sleep 60 &
echo "publish $EVENTS pids $$ $!" >&3
wait
""")
    async with h.dispatcher(), serving(h, ["long"], [job], grace=0.3) as handler:
        task_id = await h.producer.enqueue("long")
        pids = await events.pids()
        handler.stop()
        with anyio.fail_after(5):
            await handler.stopped.wait()
        record = await wait_state(h, task_id, "retry")
    assert "stopped shutdown" in events.texts()
    assert record.last_err_code == "shutdown" and "shut down before the command finished" in record.last_err
    await wait_gone(*pids)


async def test_a_second_stop_stops_running_commands_at_once(h: Harness, script: Any, events: Events) -> None:
    job = script("""
sleep 60 &
echo "publish $EVENTS pids $$ $!" >&3
wait
""")
    async with h.dispatcher(), serving(h, ["long"], [job], grace=60) as handler:
        await h.producer.enqueue("long")
        pids = await events.pids()
        handler.stop()
        handler.stop(now=True)  # as a second SIGTERM does
        with anyio.fail_after(5):
            await handler.stopped.wait()
    assert reaped(pids[0])
    await wait_gone(*pids)


async def test_tasks_waiting_for_a_free_slot_keep_their_lease(nc: Client, unique: str, script: Any) -> None:
    """With one slot, the second task waits for the first: it must not be declared lost meanwhile."""
    h = Harness(nc, unique)
    await h.make_queue(lease=0.6)
    job = script("sleep 1.2; echo $JETBRIDGE_TASK_ATTEMPT")
    async with h.dispatcher(), serving(h, ["slot"], [job], concurrency=1):
        ids = [await h.producer.enqueue("slot") for _ in range(2)]
        records = [await h.producer.wait(i, timeout=15) for i in ids]
    assert [(r.state, r.tries, r.last_err_code) for r in records] == [("complete", 1, "")] * 2
