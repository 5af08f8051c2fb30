"""Cases that talk to the handler directly, as a dispatcher would, to check the wire protocol itself.

The dispatcher only ever sends well-formed version-1 requests, so what a handler does with anything else
(SPEC §3.3: a body that is not JSON, another protocol version, a request that breaks the schema) can only be
checked by sending it by hand. Every case of ``protocol/vectors/task_request.json`` becomes one case here, and
every reply is validated against ``protocol/schemas/task_reply.schema.json``.
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
import re
import secrets
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

import nats.errors
from jsonschema import Draft202012Validator  # type: ignore[import-untyped]
from referencing import Registry as SchemaRegistry
from referencing import Resource

from .env import REPO, LanguageEnv
from .registry import Case, CaseFailure, CaseFn, Registry, check, same_json, short

registry = Registry()
case = registry.case

VECTORS = REPO / "protocol" / "vectors" / "task_request.json"
SCHEMAS = REPO / "protocol" / "schemas"
TASK_TYPES = ("conf:echo", "conf:info", "conf:fail", "conf:retry_after", "conf:terminate", "conf:sleep", "conf:big",
              "conf:panic")
#: §3.1: the request headers that mirror body members
_HEADER_FIELDS = {"protocol": "Jetbridge-Protocol", "task_id": "Jetbridge-Task-Id", "task_type": "Jetbridge-Task-Type",
                  "queue": "Jetbridge-Queue", "attempt": "Jetbridge-Attempt",
                  "attempt_deadline": "Jetbridge-Attempt-Deadline"}


@cache
def reply_validator() -> Draft202012Validator:
    """task_reply.schema.json, with its ``common.schema.json`` references resolved from the repo (not the web)."""
    schemas = [json.loads(p.read_text()) for p in sorted(SCHEMAS.glob("*.schema.json"))]
    resources = SchemaRegistry().with_resources((s["$id"], Resource.from_contents(s)) for s in schemas)
    reply = next(s for s in schemas if s["$id"].endswith("/task_reply.schema.json"))
    return Draft202012Validator(reply, registry=resources)


@cache
def vectors() -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = json.loads(VECTORS.read_text())["cases"]
    return cases


def headers_for(body: Any) -> dict[str, str]:
    """The headers a dispatcher would send with ``body`` (§3.1): copies of the routing members it has."""
    headers = {"Content-Type": "application/json"}
    if isinstance(body, dict):
        headers.update({h: str(body[f]) for f, h in _HEADER_FIELDS.items() if f in body})
    return headers


async def request(env: LanguageEnv, data: bytes, headers: dict[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """Send one raw request to ``<prefix>.conf:echo``; the reply body (checked against the schema) and headers."""
    subject = f"{env.prefix}.conf:echo"
    try:
        msg = await env.nc.request(subject, data, timeout=5, headers=headers)
    except nats.errors.NoRespondersError:
        raise CaseFailure(f"no handler subscribed to {subject}") from None
    except nats.errors.TimeoutError:
        raise CaseFailure(f"no reply on {subject} within 5s") from None
    try:
        reply = json.loads(msg.data)
    except ValueError:
        raise CaseFailure(f"the reply is not JSON: {short(msg.data)}") from None
    errors = sorted(reply_validator().iter_errors(reply), key=lambda e: list(e.absolute_path))
    if errors:
        where = "/".join(str(p) for p in errors[0].absolute_path) or "(top level)"
        raise CaseFailure(f"the reply breaks task_reply.schema.json at {where}: {errors[0].message}; "
                          f"reply {short(reply, 300)}")
    return reply, dict(msg.headers or {})


def expect_rejection(reply: dict[str, Any], headers: dict[str, str], expected: dict[str, Any]) -> None:
    """The reply is the error SPEC §3.3 defines: status, error code, Nats-Service-Error-Code, and for a protocol
    mismatch the versions the handler speaks."""
    problems = []
    if reply.get("status") != expected["status"]:
        problems.append(f"status {reply.get('status')!r}, wanted {expected['status']!r}")
    code = (reply.get("error") or {}).get("code")
    if code != expected["error_code"]:
        problems.append(f"error code {code!r}, wanted {expected['error_code']!r}")
    service_code = headers.get("Nats-Service-Error-Code")
    if service_code != str(expected["service_error_code"]):
        problems.append(f"Nats-Service-Error-Code {service_code!r}, wanted '{expected['service_error_code']}'")
    if "attempt_token" in expected and reply.get("attempt_token") != expected["attempt_token"]:
        problems.append(f"attempt_token {reply.get('attempt_token')!r}, wanted "
                        + ("it left out (an invalid token is never echoed, SPEC §3.3)" if expected["attempt_token"]
                           is None else repr(expected["attempt_token"])))
    if "supported_protocols" in expected and reply.get("supported_protocols") != expected["supported_protocols"]:
        problems.append(f"supported_protocols {reply.get('supported_protocols')!r}, "
                        f"wanted {expected['supported_protocols']!r}")
    check(not problems, "; ".join(problems) + f" (reply {short(reply, 200)})")


def expect_echo(reply: dict[str, Any], payload: dict[str, Any]) -> None:
    """The reply is ``ok`` with the vector's payload as the result, encoded the same way."""
    check(reply.get("status") == "ok", f"status {reply.get('status')!r} ({reply.get('error')}), wanted ok")
    encoding = reply.get("result_encoding", "json")
    if payload["kind"] == "json":
        check(encoding == "json", f"result_encoding {encoding!r} for a JSON payload")
        check(same_json(reply.get("result"), payload["value"]),
              f"result {short(reply.get('result'))}, wanted {short(payload['value'])}")
        return
    check(encoding == "base64", f"result_encoding {encoding!r} for a binary payload, wanted 'base64'")
    try:
        got = base64.b64decode(reply.get("result") or "", validate=True)
    except binascii.Error:
        raise CaseFailure(f"result {short(reply.get('result'))} is not base64") from None
    check(got == base64.b64decode(payload["base64"]), f"result bytes {short(got)}, wanted base64 {payload['base64']!r}")
    check(reply.get("content_type") == payload["content_type"],
          f"content_type {reply.get('content_type')!r}, wanted {payload['content_type']!r}")


def _vector_case(vector: dict[str, Any]) -> CaseFn:
    async def run(env: LanguageEnv) -> None:
        expect = vector["expect"]
        if "body_text" in vector:
            data, headers = vector["body_text"].encode(), headers_for(None)
        else:
            body = copy.deepcopy(vector["body"])
            if expect["decision"] == "handle":
                body["task_type"] = "conf:echo"  # the vector's type is an example; the endpoint runs echo
            data, headers = json.dumps(body).encode(), headers_for(body)
        acker = None
        if expect["decision"] == "handle" and vector["body"].get("heartbeat_ack") is True:
            # A 1.1 handler sends this request's heartbeats as requests and fences itself on "no responders":
            # answer them, as the dispatcher that sent the request would (SPEC §5.2).
            async def ack(msg: Any) -> None:
                if msg.reply:
                    await msg.respond(b"")

            acker = await env.nc.subscribe(vector["body"]["heartbeat_subject"], cb=ack)
            await env.nc.flush()
        try:
            reply, reply_headers = await request(env, data, headers)
        finally:
            if acker is not None:
                await acker.unsubscribe()
        if expect["decision"] == "handle":
            expect_echo(reply, expect["payload"])
        else:
            expect_rejection(reply, reply_headers, expect["reply"])

    run.__doc__ = f"vectors/task_request.json {vector['name']}: {vector.get('description', '')}"
    return run


def fresh_request(env: LanguageEnv, **changes: Any) -> dict[str, Any]:
    """A valid conf:echo request for now, built from the first vector that the handler must run."""
    template = next(v for v in vectors() if v["expect"]["decision"] == "handle" and "body" in v)
    token = secrets.token_urlsafe(12)
    now = datetime.now(UTC)

    def stamp(t: datetime) -> str:
        return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"

    body: dict[str, Any] = copy.deepcopy(template["body"])
    body.update(task_id=f"direct-{token}".replace("_", "-"), task_type="conf:echo", queue=env.MAIN_QUEUE,
                attempt_token=token, created=stamp(now), attempt_deadline=stamp(now + timedelta(seconds=30)),
                budget_ms=30_000, heartbeat_subject=f"conformance.hb.{token}",
                cancel_subject=f"conformance.cancel.{token}", payload={"direct": True})
    body.update(changes)
    if "budget_ms" in changes and "attempt_deadline" not in changes:  # sent now: not a late request (SPEC §5.2)
        body["attempt_deadline"] = stamp(now + timedelta(milliseconds=int(changes["budget_ms"])))
    return body


@case("protocol:unsupported-version", timeout=10)
async def unsupported_version(env: LanguageEnv) -> None:
    """A request for protocol 2 is answered, without running the handler, with SPEC §3.3's retryable error."""
    body = fresh_request(env, protocol=2)
    reply, headers = await request(env, json.dumps(body).encode(), headers_for(body))
    expect_rejection(reply, headers, {"status": "retry", "error_code": "unsupported_protocol",
                                      "service_error_code": 505, "supported_protocols": [1]})


for _vector in vectors():
    registry.add(Case(f"vector:{_vector['name']}", _vector_case(_vector), timeout=10))


@case("micro-discovery", timeout=10)
async def micro_discovery(env: LanguageEnv) -> None:
    """The handler is a NATS micro service that says which protocol versions it speaks (SPEC §2)."""
    try:
        msg = await env.nc.request("$SRV.INFO.jetbridge-conformance", b"", timeout=5)
    except (nats.errors.NoRespondersError, nats.errors.TimeoutError):
        raise CaseFailure("nothing answered $SRV.INFO.jetbridge-conformance: not a micro service "
                          "named jetbridge-conformance") from None
    info = json.loads(msg.data)
    metadata = info.get("metadata") or {}
    protocols = [p.strip() for p in str(metadata.get("jetbridge.protocols", "")).split(",")]
    check("1" in protocols and "1.1" in protocols,
          f"metadata jetbridge.protocols is {metadata.get('jetbridge.protocols')!r}, wanted \"1,1.1\" (SPEC §2)")
    check(info.get("version") == "1.0.0", f"service version {info.get('version')!r}, wanted '1.0.0'")
    endpoints = info.get("endpoints") or []
    subjects = {e.get("subject") for e in endpoints}
    missing = [t for t in TASK_TYPES if f"{env.prefix}.{t}" not in subjects]
    check(not missing, f"no endpoint for {missing} under prefix {env.prefix} (endpoints: {sorted(map(str, subjects))})")
    wrong = [(e.get("name"), e.get("subject")) for e in endpoints
             if str(e.get("subject", "")).startswith(f"{env.prefix}.")
             and e.get("name") != re.sub(r"[^A-Za-z0-9_-]", "_", str(e.get("subject"))[len(env.prefix) + 1:])]
    check(not wrong, f"endpoint names {wrong}: SPEC §2 names an endpoint after its type with every character "
                     "outside [A-Za-z0-9_-] replaced by '_' (conf:echo -> conf_echo)")
    groups = {e.get("queue_group") for e in endpoints if e.get("queue_group") is not None}
    check(groups <= {"jetbridge"}, f"endpoint queue groups {sorted(groups)}, wanted 'jetbridge'")
