"""asyncjobs' error envelope ``{"error":{"code","message","details":{"reason","field"}}}`` and the mapping of
Jetbridge's errors onto its codes, so every failure a client can cause is a clear 4xx, never a 500."""

from __future__ import annotations

from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from jetbridge.internal import (
    ConfigError,
    ConflictError,
    CorruptTaskError,
    DuplicateTaskError,
    JetbridgeError,
    PayloadTooLargeError,
    QueueFullError,
    QueueNotFoundError,
    TaskNotFoundError,
    TransportError,
)
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

log = structlog.get_logger("jetbridge.web")

_STATUS_CODE = {400: "invalid_argument", 401: "unauthenticated", 403: "permission_denied", 404: "not_found",
                405: "method_not_allowed", 409: "conflict", 413: "payload_too_large", 429: "rate_limited",
                503: "unavailable"}


class ErrorDetails(BaseModel):
    reason: str | None = None
    field: str | None = None


class ErrorBody(BaseModel):
    code: str
    message: str
    details: ErrorDetails | None = None


class ErrorEnvelope(BaseModel):
    error: ErrorBody


class ApiError(Exception):
    """An answer in the envelope: ``ApiError(404, "not_found", "task x does not exist", reason="task_not_found")``."""

    def __init__(self, status: int, code: str, message: str, *, reason: str | None = None,
                 field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.reason, self.field = status, code, message, reason, field


def envelope(status: int, code: str, message: str, reason: str | None = None, field: str | None = None,
             headers: dict[str, str] | None = None) -> JSONResponse:
    body: dict[str, Any] = {"code": code, "message": message}
    details = {k: v for k, v in (("reason", reason), ("field", field)) if v}
    if details:
        body["details"] = details
    return JSONResponse({"error": body}, status_code=status, headers=headers)


def from_jetbridge(exc: JetbridgeError, *, subject: str = "task") -> ApiError:
    """The envelope for an error of the SDK or the dispatcher's modules."""
    text = str(exc)
    if isinstance(exc, QueueNotFoundError):
        return ApiError(404, "not_found", text, reason="queue_not_found")
    if isinstance(exc, TaskNotFoundError):
        return ApiError(404, "not_found", text, reason=f"{subject}_not_found")
    if isinstance(exc, DuplicateTaskError):
        return ApiError(409, "duplicate", text, reason="duplicate_item")
    if isinstance(exc, ConflictError):
        return ApiError(409, "conflict", text, reason="task_already_active")
    if isinstance(exc, QueueFullError):
        return ApiError(409, "conflict", text, reason="task_cannot_enqueue")
    if isinstance(exc, PayloadTooLargeError):
        return ApiError(413, "payload_too_large", text, reason="payload_too_large", field="payload")
    if isinstance(exc, CorruptTaskError):
        return ApiError(409, "conflict", text, reason="task_corrupt")
    if isinstance(exc, ConfigError):
        return ApiError(400, "invalid_argument", text, reason="invalid_argument")
    if isinstance(exc, TransportError):
        return ApiError(503, "unavailable", text, reason="storage_not_ready")
    return ApiError(500, "internal", text)


def _allowed(request: Request) -> list[str]:
    """Every method of every route on this path (Starlette names only the first route's)."""
    from starlette.routing import Match, Route

    methods: set[str] = set()
    for route in request.app.routes:
        if isinstance(route, Route) and route.matches(request.scope)[0] != Match.NONE:
            methods |= route.methods or set()
    return sorted(methods)


def install(app: FastAPI) -> None:
    """Every error leaves in the envelope: ours, the framework's (404, 405, validation) and the unexpected."""

    @app.exception_handler(ApiError)
    async def on_api_error(request: Request, exc: ApiError) -> JSONResponse:
        return envelope(exc.status, exc.code, exc.message, exc.reason, exc.field)

    @app.exception_handler(JetbridgeError)
    async def on_jetbridge(request: Request, exc: JetbridgeError) -> JSONResponse:
        e = from_jetbridge(exc)
        return envelope(e.status, e.code, e.message, e.reason, e.field)

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path", "header")]
        field = ".".join(loc) or None
        kind = str(first.get("type", ""))
        reason = "invalid_json" if kind in ("json_invalid", "extra_forbidden", "model_attributes_type") or (
            first.get("loc", ("",))[0] == "body") else None
        if first.get("loc", ("",))[0] == "path":
            reason = "task_id_invalid" if field == "id" else "name_invalid"
        if field == "limit":
            reason = "limit_invalid"  # asyncjobs' reason for a limit below 1
        message = f"{field + ': ' if field else ''}{first.get('msg', 'invalid request')}"
        return envelope(400, "invalid_argument", message, reason, field)

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _STATUS_CODE.get(exc.status_code, "internal" if exc.status_code >= 500 else "invalid_argument")
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = ", ".join(_allowed(request))
        return envelope(exc.status_code, code, str(exc.detail), headers=headers)

    @app.exception_handler(Exception)
    async def on_crash(request: Request, exc: Exception) -> JSONResponse:
        log.error("http_internal_error", path=request.url.path, error=repr(exc))
        return envelope(500, "internal", "internal error (logged by the server)", "panic")
