"""Every case in protocol/vectors, checked against the JSON Schemas and through the Python codec."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any, Literal

import pytest
from jetbridge import _protocol as proto
from jetbridge._errors import ProtocolError
from jsonschema import Draft202012Validator  # type: ignore[import-untyped]
from referencing import Registry, Resource

ROOT = Path(__file__).resolve().parents[2] / "protocol"


def _load(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((ROOT / "vectors" / f"{name}.json").read_text())
    return loaded


def _validator(name: str) -> Draft202012Validator:
    registry: Registry = Registry()
    for path in (ROOT / "schemas").glob("*.json"):
        doc = json.loads(path.read_text())
        registry = registry.with_resource(doc["$id"], Resource.from_contents(doc))
    schema = json.loads((ROOT / "schemas" / f"{name}.schema.json").read_text())
    return Draft202012Validator(schema, registry=registry)


def _cases(name: str) -> list[Any]:
    return [pytest.param(c, id=c["name"]) for c in _load(name)["cases"]]


def _raw(case: dict[str, Any]) -> bytes:
    if "body_text" in case:
        return str(case["body_text"]).encode()
    return json.dumps(case["body"]).encode()


@pytest.mark.parametrize("path", sorted((ROOT / "schemas").glob("*.json")), ids=lambda p: p.name)
def test_schemas_are_valid_2020_12(path: Path) -> None:
    Draft202012Validator.check_schema(json.loads(path.read_text()))


@pytest.mark.parametrize("message", ["task_request", "task_reply", "heartbeat", "cancel"])
def test_vector_bodies_match_schema_validity(message: str) -> None:
    validator = _validator(message)
    for case in _load(message)["cases"]:
        if "body" in case:
            assert validator.is_valid(case["body"]) == case["schema_valid"], case["name"]


def _payload_view(value: Any) -> dict[str, Any]:
    if isinstance(value, proto.Bytes):
        return {"kind": "bytes", "base64": base64.b64encode(value.data).decode(), "content_type": value.content_type}
    return {"kind": "json", "value": value}


@pytest.mark.parametrize("case", _cases("task_request"))
def test_request_decisions(case: dict[str, Any]) -> None:
    expect = case["expect"]
    if expect["decision"] == "handle":
        request = proto.decode_request(_raw(case))
        assert _payload_view(request.decoded_payload()) == expect["payload"]
        assert request.heartbeat_ack is expect["heartbeat_ack"]
        return
    with pytest.raises(proto.Rejection) as info:
        proto.decode_request(_raw(case))
    rejection = info.value
    assert (rejection.status, rejection.code, rejection.service_code) == (
        expect["reply"]["status"], expect["reply"]["error_code"], expect["reply"]["service_error_code"])
    body, headers = rejection.reply()
    reply = json.loads(body)
    assert reply.get("attempt_token") == expect["reply"]["attempt_token"]  # an invalid token is never echoed
    assert _validator("task_reply").is_valid(reply)
    assert headers["Nats-Service-Error-Code"] == str(expect["reply"]["service_error_code"])
    if "supported_protocols" in expect["reply"]:
        assert reply["supported_protocols"] == expect["reply"]["supported_protocols"]


def wire_size(headers: dict[str, str], body: bytes) -> int:
    """What nats-server counts against max_payload (SPEC §8): the NATS/1.0 header block plus the body."""
    if not headers:
        return len(body)
    block = "NATS/1.0\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    return len(block.encode()) + len(body)


@pytest.mark.parametrize("case", _cases("task_reply"))
def test_reply_interpretation(case: dict[str, Any]) -> None:
    outcome = proto.interpret_reply(case["headers"], _raw(case))
    expect = case["expect"]
    if "wire_size" in expect:
        assert wire_size(case["headers"], _raw(case)) == expect["wire_size"]
    assert outcome.kind == expect["outcome"]
    if outcome.kind == "complete":
        assert _payload_view(outcome.result) == expect["result"]
    elif outcome.kind in ("retry", "terminate"):
        assert (outcome.error_code, outcome.message) == (expect["error_code"], expect["message"])
        if outcome.kind == "retry":
            assert outcome.retry_after_ms == expect["retry_after_ms"]
    else:
        assert outcome.message.startswith("protocol error: ")


def _produce_reply(intent: dict[str, Any], token: str) -> tuple[bytes, dict[str, str]]:
    if "ok" in intent:
        return proto.encode_ok(intent["ok"], attempt_token=token)
    if "ok_bytes" in intent:
        b = intent["ok_bytes"]
        return proto.encode_ok(proto.Bytes(base64.b64decode(b["base64"]), b["content_type"]), attempt_token=token)
    status: Literal["retry", "terminate"] = "retry" if "retry" in intent else "terminate"
    e = intent[status]
    return proto.encode_error(status, e["code"], e["message"], attempt_token=token,
                              retry_after_ms=e.get("retry_after_ms"))


@pytest.mark.parametrize("case", [c for c in _cases("task_reply") if "intent" in c.values[0]])
def test_canonical_replies(case: dict[str, Any]) -> None:
    token = _load("task_reply")["attempt_token"]
    body, headers = _produce_reply(case["intent"], token)
    assert json.loads(body) == case["body"]
    assert headers == case["headers"]


@pytest.mark.parametrize("case", _cases("heartbeat"))
def test_heartbeats(case: dict[str, Any]) -> None:
    if not case["expect"]["valid"]:
        with pytest.raises(ProtocolError):
            proto.decode_heartbeat(_raw(case))
        return
    beat = proto.decode_heartbeat(_raw(case))
    assert (beat.progress, beat.message) == (case["expect"]["progress"], case["expect"]["message"])
    if "intent" in case:
        body = proto.encode_heartbeat(beat.task_id, beat.attempt_token, **case["intent"])
        assert json.loads(body) == case["body"]


@pytest.mark.parametrize("case", _cases("cancel"))
def test_cancels(case: dict[str, Any]) -> None:
    if not case["expect"]["valid"]:
        with pytest.raises(ProtocolError):
            proto.decode_cancel(_raw(case))
        return
    cancel = proto.decode_cancel(_raw(case))
    assert cancel.reason == case["expect"]["reason"]
    assert json.loads(proto.encode_cancel(cancel.task_id, cancel.attempt_token, cancel.reason, cancel.message)) == case["body"]
