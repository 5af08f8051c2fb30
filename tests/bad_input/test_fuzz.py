"""Hypothesis fuzzing of every decoder of outside input: each either decodes or raises its one documented error
type, never anything else.

tests/protocol/test_codec_properties.py already feeds random *bytes* to decode_request and interpret_reply; here
the inputs are shaped like the real messages (a valid message with members removed, replaced, added or nested
deep), which reaches much further into the decoders, and every other decoder is covered too:

==========================================  ===========================================================
decoder                                     may raise only
==========================================  ===========================================================
jetbridge._protocol.decode_request          Rejection (a decoded request must also make a handler Task)
jetbridge._protocol.interpret_reply         nothing: every reply is classified
jetbridge._protocol.decode_heartbeat        ProtocolError
jetbridge._protocol.decode_cancel           ProtocolError
jetbridge._task.decode_task                 msgspec.DecodeError (a decoded task must then pass the
                                            dispatcher's document check or fail it with ValueError, and
                                            a task that passes can be decided on)
bridge.dispatcher.decode_item               ValueError
bridge.settings.load_settings               ConfigError (TOML-ish files and JETBRIDGE_* environments)
==========================================  ===========================================================
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from typing import Any

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jetbridge import _protocol as proto
from jetbridge._errors import ConfigError, ProtocolError
from jetbridge._service import Task
from jetbridge._task import decode_task, encode_task, new_task
from jetbridge._timeutil import now_ns

from bridge.settings import _FIELDS, load_settings
from bridge.states import Limits, on_delivery
from bridge.worker import check_document, decode_item

EXAMPLES = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

TOKEN = "a1B2c3D4e5F6g7H8"
REQUEST: dict[str, Any] = {
    "type": proto.REQUEST_TYPE, "protocol": 1, "task_id": "t1", "task_type": "echo", "queue": "Q", "attempt": 1,
    "max_attempts": 3, "created": "2026-11-24T10:00:00.000Z", "deadline": None, "attempt_token": TOKEN,
    "attempt_deadline": "2026-11-24T10:01:00.000Z", "budget_ms": 5000, "heartbeat_subject": f"hb.{TOKEN}",
    "heartbeat_interval_ms": 0, "cancel_subject": f"cancel.{TOKEN}", "payload_encoding": "json",
    "content_type": "application/json", "payload": {"x": 1}, "traceparent": proto.traceparent_for("t1", 1)}
REPLY: dict[str, Any] = {"type": proto.REPLY_TYPE, "protocol": 1, "status": "retry", "attempt_token": TOKEN,
                         "result_encoding": "base64", "content_type": "image/png", "result": "AAEC",
                         "error": {"code": "busy", "message": "later"}, "retry_after_ms": 100,
                         "supported_protocols": [1]}
HEARTBEAT: dict[str, Any] = {"type": proto.HEARTBEAT_TYPE, "protocol": 1, "task_id": "t1", "attempt_token": TOKEN,
                             "progress": 0.5, "message": "half"}
CANCEL: dict[str, Any] = {"type": proto.CANCEL_TYPE, "protocol": 1, "task_id": "t1", "attempt_token": TOKEN,
                          "reason": "operator", "message": "stop"}
TASK: dict[str, Any] = {**msgspec.to_builtins(new_task(
    task_id="t1", task_type="echo", queue="Q", payload=b'{"a":1}', content_type="application/json", max_tries=3,
    created_ns=1_700_000_000_000_000_000, deadline_ns=1_800_000_000_000_000_000)),
    "tried": "2026-11-24T10:00:00Z", "dependencies": ["p1"], "result": {"payload": 1, "completed": "2026-11-24T10:00:00Z"},
    "progress": 0.25, "progress_message": "m", "last_err_code": "x"}

scalars = (st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
           | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=30)
           | st.sampled_from(["", "2026-13-45T99:99:99Z", "2026-02-30T00:00:00Z", "9999-12-31T23:59:59.999999999Z",
                              "0000-01-01T00:00:00Z", "1970-01-01T00:00:00+25:00", "t1", TOKEN, "a.b", "*", ">",
                              "json", "base64", "ok", "retry", "terminate", "AAEC", "@@@"]))
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)


def _nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


@st.composite
def mutated(draw: st.DrawFn, base: dict[str, Any]) -> bytes:
    """``base`` with a few members removed, replaced, added, or buried under deep nesting; sometimes cut short."""
    doc = dict(base)
    keys = sorted(doc)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["drop", "replace", "add", "replace"]))
        if op == "drop" and doc:
            doc.pop(draw(st.sampled_from(sorted(doc))), None)
        elif op == "replace":
            doc[draw(st.sampled_from(keys))] = draw(json_values)
        else:
            doc[draw(st.text(max_size=10))] = draw(json_values)
    data = json.dumps(doc).encode()
    shape = draw(st.sampled_from(["as is", "as is", "as is", "deep", "truncated", "not an object"]))
    if shape == "deep":  # under a member the decoder knows, or one it has to skip
        key = draw(st.sampled_from(keys) | st.text(max_size=5))
        data = data[:-1] + (b", " if len(doc) else b"") + json.dumps(key).encode() + b": " + \
            _nested(draw(st.integers(500, 5000))) + b"}"
    elif shape == "truncated":
        data = data[: draw(st.integers(0, max(0, len(data) - 1)))]
    elif shape == "not an object":
        data = json.dumps(list(doc.values())).encode()
    return data


def inputs(base: dict[str, Any]) -> st.SearchStrategy[bytes]:
    return mutated(base) | st.binary(max_size=200) | st.integers(900, 20_000).map(_nested)


@EXAMPLES
@given(data=inputs(REQUEST))
def test_decode_request_only_rejects(data: bytes) -> None:
    try:
        request = proto.decode_request(data)
    except proto.Rejection as rejection:
        assert rejection.code in ("bad_request", "unsupported_protocol") and rejection.message
        return
    Task(request, None, {})  # type: ignore[arg-type]  # what a handler builds from it must not fail either


@EXAMPLES
@given(data=inputs(REPLY), headers=st.dictionaries(
    st.sampled_from([proto.names.H_SERVICE_ERROR, proto.names.H_SERVICE_ERROR_CODE, proto.names.H_RETRY_AFTER, "X"]),
    st.text(max_size=12) | st.sampled_from(["400", "408", "429", "500", "505", "99999999999999999999", "-1", "¹"]),
    max_size=3))
def test_interpret_reply_always_classifies(data: bytes, headers: dict[str, str]) -> None:
    outcome = proto.interpret_reply(headers, data)
    assert outcome.kind in ("complete", "retry", "terminate", "protocol_error")
    if outcome.kind == "protocol_error":
        assert outcome.message.startswith("protocol error: ")


@EXAMPLES
@given(data=inputs(HEARTBEAT))
def test_decode_heartbeat_only_raises_protocol_error(data: bytes) -> None:
    try:
        beat = proto.decode_heartbeat(data)
    except ProtocolError as exc:
        assert str(exc).startswith("invalid heartbeat")
        return
    assert beat.progress is None or 0 <= beat.progress <= 1


@EXAMPLES
@given(data=inputs(CANCEL))
def test_decode_cancel_only_raises_protocol_error(data: bytes) -> None:
    try:
        cancel = proto.decode_cancel(data)
    except ProtocolError as exc:
        assert str(exc).startswith("invalid cancel")
        return
    assert cancel.reason in ("operator", "deadline", "timeout", "shutdown", "lost")


@EXAMPLES
@given(data=inputs(TASK))
def test_decode_task_then_the_dispatchers_check_then_a_decision(data: bytes) -> None:
    try:
        task = decode_task(data)
    except msgspec.DecodeError:
        return
    try:
        check_document(task, "t1")
    except ValueError:
        return  # quarantined, naming the problem
    on_delivery(task, now_ns(), Limits())
    encode_task(task)


@EXAMPLES
@given(data=inputs({"kind": 0, "job": "t1"}))
def test_decode_work_item_only_raises_value_error(data: bytes) -> None:
    try:
        job = decode_item(data)
    except ValueError as exc:
        assert str(exc)
        return
    assert proto.names.is_valid_name(job)


# Settings -----------------------------------------------------------------------------------------------------

_typed = sorted(k for k, f in _FIELDS.items() if isinstance(f.default, (bool, int, float)))
toml_keys = (st.sampled_from(sorted(_FIELDS)) | st.sampled_from(_typed) | st.sampled_from(["subject_prefix", "queues",
                                                                                           "routes", "dispatcher_id"])
             | st.from_regex(r"[a-z_]{1,12}", fullmatch=True))


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return "{" + ", ".join(f"{json.dumps(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"


toml_scalars = (st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats() | st.text(max_size=20)
                | st.sampled_from([math.inf, -math.inf, math.nan, 1.5, -0.0, 1e300, -1, 0, 2**63 - 1])
                | st.sampled_from(["5s", "250ms", "-1s", "1e3s", "10m", "*", "a.b", "jobs.*", "", "json", "debug",
                                   "nats://x:4222", "0" * 64, "fixed:1s", "{type}", "img:*"]))
toml_values = st.recursive(toml_scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.sampled_from(["match", "subject", "mode", "heartbeats", "x"]), inner,
                                             max_size=4), max_leaves=8)


specials = st.sampled_from([math.inf, -math.inf, math.nan, 1.5, -0.0, 1e300, -1, 0, 2**63 - 1, "", " ", "-5s",
                            "1e3", "0x10", "1_000", "inf", "nan", "5s", "250ms", "jobs.*", "a b", "a..b"])


def value_for(key: str) -> st.SearchStrategy[Any]:
    """Values aimed at the setting's type (and its edges), or anything at all."""
    default = _FIELDS[key].default if key in _FIELDS else None
    if isinstance(default, bool):
        aimed: st.SearchStrategy[Any] = st.booleans() | st.integers(-2, 2)
    elif isinstance(default, (int, float)):
        aimed = st.sampled_from([math.inf, -math.inf, math.nan, 1.5, -1, 0, 1e300, 2**63 - 1]) | st.integers() | st.floats()
    else:
        aimed = st.text(max_size=12)
    return specials | aimed | toml_values


@st.composite
def toml_documents(draw: st.DrawFn) -> str:
    lines = [f"{key} = {_toml_value(draw(value_for(key)))}"
             for key in draw(st.lists(toml_keys, max_size=3, unique=True))]
    for _ in range(draw(st.integers(0, 2))):
        lines.append("[[routes]]")
        for key, value in draw(st.dictionaries(st.sampled_from(["match", "subject", "mode", "heartbeats", "x"]),
                                               toml_scalars, max_size=4)).items():
            lines.append(f"{key} = {_toml_value(value)}")
    text = "\n".join(lines) + "\n"
    if draw(st.integers(0, 9)) == 0:  # now and then, not TOML at all
        text = draw(st.text(max_size=60))
    return text


@settings(max_examples=2000, deadline=None)
@given(text=toml_documents())
def test_load_settings_from_any_toml_only_raises_config_error(text: str) -> None:
    fd, path = tempfile.mkstemp(suffix=".toml")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", errors="surrogatepass") as f:
            f.write(text)
        try:
            load_settings(path, env={})
        except ConfigError as exc:
            assert str(exc)
    finally:
        os.unlink(path)


@EXAMPLES
@given(env=st.dictionaries(toml_keys.map(lambda k: "JETBRIDGE_" + k.upper()),
                           st.text(max_size=20) | st.sampled_from(["inf", "nan", "-5", "1.5", "true", "*", "a.b"]),
                           max_size=4))
def test_load_settings_from_any_environment_only_raises_config_error(env: dict[str, str]) -> None:
    try:
        load_settings(env=env)
    except ConfigError as exc:
        assert str(exc)
