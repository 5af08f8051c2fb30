"""The wire protocol v1 codec (revision 1.1): the four messages of ``protocol/SPEC.md`` and how each side reads them.

This module is the Python reading of ``protocol/schemas`` and is tested against every case in
``protocol/vectors``; the dispatcher (``bridge``) and the SDK's handler service both use it, so there is one
codec in Python. Decoding follows the spec's order of checks exactly, because the vectors pin that order.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Final, Literal, TypeVar

import msgspec

from . import _names as names
from . import _wire
from ._errors import ProtocolError
from ._wire import (  # noqa: F401 - re-exported: the codec's public constants
    BASE64_PATTERN,
    SUBJECT_PATTERN,
    TIMESTAMP_PATTERN,
    TOKEN_PATTERN,
    TRACEPARENT_PATTERN,
)

T = TypeVar("T")
PROTOCOL_VERSION: Final = 1
SUPPORTED_PROTOCOLS: Final = (1,)
REQUEST_TYPE: Final = "io.jetbridge.v1.task_request"
REPLY_TYPE: Final = "io.jetbridge.v1.task_reply"
HEARTBEAT_TYPE: Final = "io.jetbridge.v1.heartbeat"
CANCEL_TYPE: Final = "io.jetbridge.v1.cancel"
JSON_CONTENT_TYPE: Final = "application/json"
OCTET_STREAM: Final = "application/octet-stream"

PROTOCOLS_METADATA: Final = "1,1.1"  # micro metadata jetbridge.protocols: 1.1 handler rules (SPEC §2)
MAX_RETRY_AFTER_MS: Final = 604_800_000  # 7 days (SPEC §4); libraries clamp larger requests to it

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=names.MAX_NAME_LENGTH, pattern=_wire.strict(names.NAME_PATTERN))]
Token = Annotated[str, msgspec.Meta(pattern=_wire.strict(TOKEN_PATTERN))]
# Checked after decoding (decode_request), so that a bad time gets a readable message, not a regex.
Timestamp = str
Subject = Annotated[str, msgspec.Meta(min_length=1, pattern=_wire.strict(SUBJECT_PATTERN))]
ContentType = Annotated[str, msgspec.Meta(min_length=1, max_length=255)]
NonNegative = Annotated[int, msgspec.Meta(ge=0)]
Encoding = Literal["json", "base64"]
CancelReason = Literal["operator", "deadline", "timeout", "shutdown", "lost"]


@dataclass(frozen=True, slots=True)
class Bytes:
    """A binary payload or result, with its content type. Anything that is not ``Bytes`` travels as JSON."""

    data: bytes
    content_type: str = OCTET_STREAM


class TaskRequest(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """``io.jetbridge.v1.task_request``, as sent by the dispatcher (optional members are left out, never null)."""

    type: Literal["io.jetbridge.v1.task_request"]
    protocol: Literal[1]
    task_id: Name
    task_type: Name
    queue: Name
    attempt: Annotated[int, msgspec.Meta(ge=1)]
    max_attempts: NonNegative
    created: Timestamp
    deadline: Timestamp | None
    attempt_token: Token
    attempt_deadline: Timestamp
    budget_ms: NonNegative
    heartbeat_subject: Subject
    heartbeat_interval_ms: NonNegative
    cancel_subject: Subject
    payload_encoding: Encoding
    content_type: ContentType
    payload: msgspec.Raw
    traceparent: Annotated[str, msgspec.Meta(pattern=_wire.strict(TRACEPARENT_PATTERN))] | msgspec.UnsetType = msgspec.UNSET
    # Protocol 1.1: the dispatcher acks heartbeats sent as requests (SPEC §5.2); left out when false.
    heartbeat_ack: bool = False

    def decoded_payload(self) -> Any:
        """The payload: a JSON value, or :class:`Bytes` for base64 payloads."""
        if self.payload_encoding == "json":
            return msgspec.json.decode(self.payload)
        return Bytes(_wire.b64decode(msgspec.json.decode(self.payload)), self.content_type)


class ReplyError(msgspec.Struct, frozen=True):
    code: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    message: Annotated[str, msgspec.Meta(max_length=8192)]
    details: Any = None


class _TaskReply(msgspec.Struct, frozen=True, kw_only=True):
    type: Literal["io.jetbridge.v1.task_reply"]
    protocol: Literal[1]
    status: Literal["ok", "retry", "terminate"]
    attempt_token: Token | None = None
    result_encoding: Encoding | None = None
    content_type: ContentType | None = None
    result: Any = None
    error: ReplyError | None = None
    retry_after_ms: Annotated[int, msgspec.Meta(ge=0, le=MAX_RETRY_AFTER_MS)] | None = None
    supported_protocols: list[Annotated[int, msgspec.Meta(ge=1)]] | None = None


class Heartbeat(msgspec.Struct, frozen=True, kw_only=True):
    """``io.jetbridge.v1.heartbeat``: an attempt is alive, with optional progress."""

    type: Literal["io.jetbridge.v1.heartbeat"] = HEARTBEAT_TYPE
    protocol: Literal[1] = 1
    task_id: Name
    attempt_token: Token
    progress: Annotated[float, msgspec.Meta(ge=0, le=1)] | None = None
    message: Annotated[str, msgspec.Meta(max_length=1024)] | None = None


class Cancel(msgspec.Struct, frozen=True, kw_only=True):
    """``io.jetbridge.v1.cancel``: stop this attempt."""

    type: Literal["io.jetbridge.v1.cancel"] = CANCEL_TYPE
    protocol: Literal[1] = 1
    task_id: Name
    attempt_token: Token
    reason: CancelReason
    message: Annotated[str, msgspec.Meta(max_length=1024)] | None = None


class Rejection(Exception):
    """A request the handler must refuse at once: reply with these fields (SPEC §3.3)."""

    def __init__(self, status: Literal["retry", "terminate"], code: str, service_code: int, message: str) -> None:
        super().__init__(message)
        self.status: Literal["retry", "terminate"] = status
        self.code = code
        self.service_code = service_code
        self.message = message
        # The request's token when it is a valid token, else None: an invalid one is never echoed (SPEC §3.3).
        self.attempt_token: str | None = None

    def reply(self, attempt_token: str | None = None) -> tuple[bytes, dict[str, str]]:
        """The rejection reply; it echoes ``attempt_token`` (default: the request's, when valid)."""
        attempt_token = attempt_token or self.attempt_token
        if self.code == "unsupported_protocol":
            return _encode_reply(
                {"status": "retry", "error": {"code": self.code, "message": self.message},
                 "supported_protocols": list(SUPPORTED_PROTOCOLS)},
                attempt_token, {names.H_SERVICE_ERROR: self.message, names.H_SERVICE_ERROR_CODE: "505"},
            )
        return encode_error(self.status, self.code, self.message, attempt_token=attempt_token)


_request_decoder = msgspec.json.Decoder(TaskRequest)
_any_decoder = msgspec.json.Decoder()
_encoder = msgspec.json.Encoder()


_REQUEST_INTEGERS: Final = ("protocol", "attempt", "max_attempts", "budget_ms", "heartbeat_interval_ms")
_REPLY_INTEGERS: Final = ("protocol", "retry_after_ms")
_TOKEN = re.compile(TOKEN_PATTERN)




def _token_of(doc: Any) -> str | None:
    token = doc.get("attempt_token") if isinstance(doc, dict) else None
    return token if isinstance(token, str) and _TOKEN.fullmatch(token) else None


def decode_request(data: bytes) -> TaskRequest:
    """Read a request as a handler must (SPEC §3.3); raises :class:`Rejection` with the reply to send."""
    try:
        doc = _any_decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise Rejection("terminate", "bad_request", 400, f"bad request: body is not JSON ({exc})") from None
    except RecursionError:
        raise Rejection("terminate", "bad_request", 400, "bad request: body is nested too deeply") from None
    if not isinstance(doc, dict):
        raise Rejection("terminate", "bad_request", 400, "bad request: body is not a JSON object")
    try:
        return _decode_request_doc(data, doc)
    except Rejection as rejection:
        rejection.attempt_token = _token_of(doc)
        raise


def _decode_request_doc(data: bytes, doc: dict[str, Any]) -> TaskRequest:
    version = doc.get("protocol")
    if not any(_wire.is_integer(version, v) for v in SUPPORTED_PROTOCOLS):
        raise Rejection("retry", "unsupported_protocol", 505, f"unsupported protocol version {version!r}")
    try:
        request = _request_decoder.decode(data)
    except msgspec.ValidationError as exc:
        try:
            if not _wire.integral(doc, _REQUEST_INTEGERS):
                raise
            request = _request_decoder.decode(_encoder.encode(doc))
        except msgspec.ValidationError:
            raise Rejection("terminate", "bad_request", 400, f"bad request: {exc}") from None
    if request.payload_encoding == "base64":
        try:
            request.decoded_payload()
        except (ValueError, TypeError, msgspec.DecodeError):
            raise Rejection("terminate", "bad_request", 400, "bad request: payload is not valid base64") from None
    for member in ("created", "deadline", "attempt_deadline"):
        value = getattr(request, member)
        if value is not None and not _wire.is_timestamp(value):
            raise Rejection("terminate", "bad_request", 400, f"bad request: {member} {value!r} is not a valid time "
                            "(RFC 3339 as SPEC §3.2 says, e.g. 2026-11-24T10:00:00.123Z)")
    return request


def encode_request(request: TaskRequest) -> bytes:
    return _encoder.encode(request)


def request_headers(request: TaskRequest) -> dict[str, str]:
    """The routing headers that mirror the body (SPEC §3.1)."""
    headers = {
        names.H_PROTOCOL: "1",
        names.H_TASK_ID: request.task_id,
        names.H_TASK_TYPE: request.task_type,
        names.H_QUEUE: request.queue,
        names.H_ATTEMPT: str(request.attempt),
        names.H_ATTEMPT_DEADLINE: request.attempt_deadline,
        "Content-Type": JSON_CONTENT_TYPE,
    }
    if isinstance(request.traceparent, str):
        headers[names.H_TRACEPARENT] = request.traceparent
    return headers


def traceparent_for(task_id: str, attempt: int) -> str:
    """A W3C traceparent: one trace per task (from its id), one span per attempt."""
    digest = hashlib.sha256(task_id.encode()).hexdigest()
    span = hashlib.sha256(f"{task_id}/{attempt}".encode()).hexdigest()[:16]
    return f"00-{digest[:32]}-{span}-01"


def payload_fields(payload: bytes | None, content_type: str | None) -> tuple[Encoding, str, msgspec.Raw]:
    """How stored payload bytes travel in a request: JSON as is, anything else base64 (SPEC §3.2)."""
    data = payload or b""
    if data and content_type in (None, "", JSON_CONTENT_TYPE):
        try:
            _any_decoder.decode(data)
        except msgspec.DecodeError:
            pass
        else:
            return "json", JSON_CONTENT_TYPE, msgspec.Raw(data)
    ctype = OCTET_STREAM if content_type in (None, "", JSON_CONTENT_TYPE) else str(content_type)
    return "base64", ctype, msgspec.Raw(_encoder.encode(base64.b64encode(data).decode()))


# Replies ------------------------------------------------------------------------------------------------------


def _encode_reply(fields: dict[str, Any], attempt_token: str | None, headers: dict[str, str]) -> tuple[bytes, dict[str, str]]:
    body: dict[str, Any] = {"type": REPLY_TYPE, "protocol": PROTOCOL_VERSION, "status": fields.pop("status")}
    if attempt_token:
        body["attempt_token"] = attempt_token
    body.update(fields)
    return _encoder.encode(body), headers


def encode_ok(result: Any, *, attempt_token: str | None = None) -> tuple[bytes, dict[str, str]]:
    """The canonical success reply for a JSON value or :class:`Bytes` (or raw ``bytes``)."""
    if isinstance(result, (bytes, bytearray, memoryview)):
        result = Bytes(bytes(result))
    if isinstance(result, Bytes):
        fields = {"status": "ok", "result_encoding": "base64", "content_type": result.content_type,
                  "result": base64.b64encode(result.data).decode()}
    else:
        fields = {"status": "ok", "result_encoding": "json", "result": result}
    return _encode_reply(fields, attempt_token, {})


def encode_error(
    status: Literal["retry", "terminate"], code: str, message: str, *,
    attempt_token: str | None = None, retry_after_ms: int | None = None,
) -> tuple[bytes, dict[str, str]]:
    """The canonical retry or terminate reply, with the NATS micro error headers (SPEC §4)."""
    fields: dict[str, Any] = {"status": status, "error": {"code": code, "message": message}}
    service_code = "400" if status == "terminate" else "500"
    headers = {names.H_SERVICE_ERROR: _header_safe(message), names.H_SERVICE_ERROR_CODE: service_code}
    if status == "retry" and retry_after_ms is not None:
        retry_after_ms = min(retry_after_ms, MAX_RETRY_AFTER_MS)  # clamped, never refused (SPEC §4)
        fields["retry_after_ms"] = retry_after_ms
        headers[names.H_SERVICE_ERROR_CODE] = "429"
        headers[names.H_RETRY_AFTER] = str(retry_after_ms)
    return _encode_reply(fields, attempt_token, headers)


def _is_number(text: str) -> bool:
    """ASCII digits only: ``str.isdigit`` accepts characters such as '¹' that ``int`` refuses."""
    return text.isascii() and text.isdigit()


def _header_safe(text: str) -> str:
    return " ".join(text.split())[:1024] or "error"


class Outcome(msgspec.Struct, frozen=True):
    """What the dispatcher makes of a reply (SPEC §4.1)."""

    kind: Literal["complete", "retry", "terminate", "protocol_error"]
    result: Any = None
    error_code: str = ""
    message: str = ""
    retry_after_ms: int | None = None
    attempt_token: str | None = None


_reply_decoder = msgspec.json.Decoder(_TaskReply)


def interpret_reply(headers: Mapping[str, str] | None, data: bytes) -> Outcome:
    """Classify a reply: a valid body decides; else micro error headers; else it is a protocol error."""
    headers = headers or {}
    body_problem = ""
    try:
        reply = _decode_reply(data)
    except msgspec.DecodeError as exc:
        body_problem = _why_not_a_reply(data, exc)
    except RecursionError:
        body_problem = "reply is nested too deeply"
    else:
        problem = _reply_problem(reply)
        if not problem:
            return _outcome_of(reply)
        body_problem = problem
    if names.H_SERVICE_ERROR in headers or names.H_SERVICE_ERROR_CODE in headers:
        return _outcome_of_headers(headers)
    return Outcome("protocol_error", error_code="protocol_error", message=f"protocol error: {body_problem}")


def _decode_reply(data: bytes) -> _TaskReply:
    """The typed reply; integers written as 1.0 are integers (SPEC §1.1), so a failure is retried normalised."""
    try:
        return _reply_decoder.decode(data)
    except msgspec.ValidationError:
        doc = _any_decoder.decode(data)
        if not isinstance(doc, dict):
            raise
        changed = _wire.integral(doc, _REPLY_INTEGERS)
        protocols = doc.get("supported_protocols")
        if isinstance(protocols, list):
            changed = changed or any(type(v) is float for v in protocols)
            doc["supported_protocols"] = [int(v) if type(v) is float and v.is_integer() else v for v in protocols]
        if not changed:
            raise
        return _reply_decoder.decode(_encoder.encode(doc))


def _why_not_a_reply(data: bytes, exc: Exception) -> str:
    if not data:
        return "reply is empty and has no error headers"
    try:
        _any_decoder.decode(data)
    except msgspec.DecodeError:
        return "reply is not JSON"
    except RecursionError:
        return "reply is nested too deeply"
    return f"reply is not a valid {REPLY_TYPE}: {exc}"


def _reply_problem(reply: _TaskReply) -> str:
    if reply.status != "ok" and reply.error is None:
        return f"a {reply.status} reply needs an error object"
    if reply.status == "terminate" and reply.retry_after_ms is not None:
        return "a terminate reply cannot carry retry_after_ms"
    if reply.result_encoding == "base64":
        if not isinstance(reply.result, str):
            return "a base64 result must be a string"
        try:
            _wire.b64decode(reply.result)
        except ValueError:
            return "result is not valid base64"
    return ""


def _outcome_of(reply: _TaskReply) -> Outcome:
    if reply.status == "ok":
        result = reply.result
        if reply.result_encoding == "base64":
            result = Bytes(_wire.b64decode(result), reply.content_type or OCTET_STREAM)
        return Outcome("complete", result=result, attempt_token=reply.attempt_token)
    assert reply.error is not None
    return Outcome(
        reply.status, error_code=reply.error.code, message=reply.error.message,
        retry_after_ms=reply.retry_after_ms, attempt_token=reply.attempt_token,
    )


def _outcome_of_headers(headers: Mapping[str, str]) -> Outcome:
    code = headers.get(names.H_SERVICE_ERROR_CODE, "500").strip() or "500"
    message = headers.get(names.H_SERVICE_ERROR, "")
    retry_after: int | None = None
    raw_after = headers.get(names.H_RETRY_AFTER)
    if raw_after is not None and _is_number(raw_after.strip()):
        retry_after = min(int(raw_after), MAX_RETRY_AFTER_MS)
    number = int(code) if _is_number(code) else None
    if number is not None and 400 <= number <= 499 and number not in (408, 429):
        return Outcome("terminate", error_code=code, message=message)
    return Outcome("retry", error_code=code, message=message, retry_after_ms=retry_after)


# Heartbeats and cancels ---------------------------------------------------------------------------------------

_heartbeat_decoder = msgspec.json.Decoder(Heartbeat)
_cancel_decoder = msgspec.json.Decoder(Cancel)


def encode_heartbeat(task_id: str, attempt_token: str, progress: float | None = None, message: str | None = None) -> bytes:
    """The canonical heartbeat: absent progress and message are left out, not sent as null."""
    body: dict[str, Any] = {"type": HEARTBEAT_TYPE, "protocol": PROTOCOL_VERSION, "task_id": task_id,
                            "attempt_token": attempt_token}
    if progress is not None:
        body["progress"] = progress
    if message is not None:
        body["message"] = message
    return _encoder.encode(body)


def decode_heartbeat(data: bytes) -> Heartbeat:
    """Raises :class:`ProtocolError` naming what is wrong."""
    return _decode(_heartbeat_decoder, data, "heartbeat")


def encode_cancel(task_id: str, attempt_token: str, reason: CancelReason, message: str | None = None) -> bytes:
    body: dict[str, Any] = {"type": CANCEL_TYPE, "protocol": PROTOCOL_VERSION, "task_id": task_id,
                            "attempt_token": attempt_token, "reason": reason}
    if message is not None:
        body["message"] = message
    return _encoder.encode(body)


def decode_cancel(data: bytes) -> Cancel:
    """Raises :class:`ProtocolError` naming what is wrong."""
    return _decode(_cancel_decoder, data, "cancel")


def _decode(decoder: msgspec.json.Decoder[T], data: bytes, what: str) -> T:
    try:
        try:
            return decoder.decode(data)
        except msgspec.ValidationError:
            doc = _any_decoder.decode(data)
            if not (isinstance(doc, dict) and _wire.integral(doc, ("protocol",))):
                raise
            return decoder.decode(_encoder.encode(doc))  # "protocol": 1.0 is 1 (SPEC §1.1)
    except msgspec.DecodeError as exc:
        raise ProtocolError(f"invalid {what}: {exc}") from None
    except RecursionError:
        raise ProtocolError(f"invalid {what}: nested too deeply") from None
