"""hypothesis round-trips through the codec: requests, replies and heartbeats keep what they carry."""

from __future__ import annotations

import json
from typing import Any

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st
from jetbridge import _protocol as proto
from jetbridge._task import decode_task, encode_task, new_task

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=20,
)
names_st = st.from_regex(r"\A[a-zA-Z0-9_:-]{1,40}\Z")
token_st = st.from_regex(r"\A[A-Za-z0-9_-]{8,64}\Z")


def _request(payload: bytes, content_type: str | None, token: str, task_id: str) -> proto.TaskRequest:
    encoding, ctype, raw = proto.payload_fields(payload, content_type)
    return proto.TaskRequest(
        type=proto.REQUEST_TYPE, protocol=1, task_id=task_id, task_type="t:x", queue="Q", attempt=1, max_attempts=0, created="2026-11-24T10:00:00.000Z",
        deadline=None, attempt_token=token, attempt_deadline="2026-11-24T10:01:00.000Z", budget_ms=60000,
        heartbeat_subject=f"jetbridge.hb.d.{token}", heartbeat_interval_ms=1000, cancel_subject=f"jetbridge.cancel.{token}",
        payload_encoding=encoding, content_type=ctype, payload=raw)


@settings(max_examples=300)
@given(value=json_values, token=token_st, task_id=names_st)
def test_json_payloads_arrive_as_the_same_value(value: Any, token: str, task_id: str) -> None:
    data = msgspec.json.encode(value)
    request = proto.decode_request(proto.encode_request(_request(data, "application/json", token, task_id)))
    assert request.decoded_payload() == json.loads(data)


@settings(max_examples=300)
@given(data=st.binary(max_size=2048), token=token_st)
def test_binary_payloads_arrive_as_the_same_bytes(data: bytes, token: str) -> None:
    request = proto.decode_request(proto.encode_request(_request(data, "application/octet-stream", token, "id")))
    got = request.decoded_payload()
    assert isinstance(got, proto.Bytes) and got.data == data


def test_payload_at_the_size_limit_round_trips() -> None:
    from jetbridge._producer import payload_limit

    max_payload = 1024 * 1024
    raw = b"\xff" * ((payload_limit(max_payload) - 600) * 3 // 4)
    doc = new_task(task_id="big", task_type="t", queue="q", payload=raw, content_type="application/octet-stream",
                   max_tries=1, created_ns=0, deadline_ns=None)
    assert len(encode_task(doc)) <= payload_limit(max_payload)
    body = proto.encode_request(_request(raw, "application/octet-stream", "a" * 16, "big"))
    assert len(body) < max_payload
    got = proto.decode_request(body).decoded_payload()
    assert isinstance(got, proto.Bytes) and got.data == raw and decode_task(encode_task(doc)).payload == raw


@settings(max_examples=300)
@given(value=json_values, token=token_st)
def test_ok_replies_round_trip(value: Any, token: str) -> None:
    body, headers = proto.encode_ok(value, attempt_token=token)
    outcome = proto.interpret_reply(headers, body)
    assert outcome.kind == "complete" and outcome.result == json.loads(msgspec.json.encode(value))
    assert outcome.attempt_token == token


@settings(max_examples=300)
@given(data=st.binary(max_size=1024), ctype=st.from_regex(r"\A[a-z]{1,10}/[a-z0-9.+-]{1,20}\Z"))
def test_binary_results_round_trip(data: bytes, ctype: str) -> None:
    body, headers = proto.encode_ok(proto.Bytes(data, ctype))
    assert proto.interpret_reply(headers, body).result == proto.Bytes(data, ctype)


@settings(max_examples=300)
@given(status=st.sampled_from(["retry", "terminate"]), code=st.text(min_size=1, max_size=128),
       message=st.text(max_size=500), after=st.none() | st.integers(0, 10**9))
def test_error_replies_round_trip(status: Any, code: str, message: str, after: int | None) -> None:
    body, headers = proto.encode_error(status, code, message, retry_after_ms=after if status == "retry" else None)
    outcome = proto.interpret_reply(headers, body)
    assert (outcome.kind, outcome.error_code, outcome.message) == (status, code, message)
    if status == "retry":  # a delay over the maximum is clamped to it (SPEC §4)
        assert outcome.retry_after_ms == (None if after is None else min(after, proto.MAX_RETRY_AFTER_MS))


@settings(max_examples=300)
@given(data=st.binary(max_size=300), headers=st.dictionaries(st.sampled_from(
    ["Nats-Service-Error", "Nats-Service-Error-Code", "Jetbridge-Retry-After-Ms", "X"]), st.text(max_size=20)))
def test_any_reply_is_classified_and_never_raises(data: bytes, headers: dict[str, str]) -> None:
    assert proto.interpret_reply(headers, data).kind in ("complete", "retry", "terminate", "protocol_error")


@settings(max_examples=300)
@given(data=st.binary(max_size=500))
def test_any_request_body_is_handled_or_rejected_never_crashes(data: bytes) -> None:
    try:
        proto.decode_request(data)
    except proto.Rejection as rejection:
        assert rejection.code in ("bad_request", "unsupported_protocol")


@settings(max_examples=300)
@given(progress=st.none() | st.floats(0, 1), message=st.none() | st.text(max_size=1024), token=token_st)
def test_heartbeats_round_trip(progress: float | None, message: str | None, token: str) -> None:
    beat = proto.decode_heartbeat(proto.encode_heartbeat("id", token, progress, message))
    assert (beat.progress, beat.message, beat.attempt_token) == (progress, message, token)


@settings(max_examples=200)
@given(payload=st.binary(max_size=300), max_tries=st.integers(0, 100), task_id=names_st)
def test_task_documents_round_trip(payload: bytes, max_tries: int, task_id: str) -> None:
    doc = new_task(task_id=task_id, task_type="t", queue="q", payload=payload, content_type="",
                   max_tries=max_tries, created_ns=1_700_000_000_123_456_789, deadline_ns=None)
    again = decode_task(encode_task(doc))
    assert again == doc and again.created_ns == 1_700_000_000_123_456_789
    assert json.loads(encode_task(doc))["queue"] == "q"
