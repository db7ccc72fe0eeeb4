"""Every error as JSON with a message: `{"detail": ...}`, and under /v1 OpenAI's `{"error": {...}}`.

Under /v1 a bad request is 400 (not 422) and the body is OpenAI's error object, so the `openai` SDKs raise
`BadRequestError`, `NotFoundError` or `AuthenticationError` with the server's message, as vLLM's and llama.cpp's
servers make them do.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from server.admission import Overloaded
from server.api.deps import ClientDisconnected
from server.scheduler import ScoringError

log = logging.getLogger(__name__)

# OpenAI's error type per status; its SDKs pick the exception class from the status, the type is for people.
OPENAI_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                404: "not_found_error", 408: "timeout_error", 413: "invalid_request_error", 429: "rate_limit_error",
                499: "client_closed_request", 503: "service_unavailable_error"}


def is_openai(path: str) -> bool:
    """Whether a path is on an OpenAI-style surface (/v1/..., /v2/rerank)."""
    return path.startswith(("/v1/", "/v2/"))


def error_body(path: str, status: int, detail: Any, code: str | None = None) -> dict:
    """{"detail": ...}; under /v1 OpenAI's {"error": {"message", "type", "param", "code"}} instead."""
    if not is_openai(path):
        return {"detail": detail}
    message = detail.get("message", str(detail)) if isinstance(detail, dict) else str(detail)
    errors = detail.get("errors", []) if isinstance(detail, dict) else []
    return {"error": {
        "message": message,
        "type": OPENAI_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error"),
        "param": errors[0]["field"] if errors else None,
        "code": code or (detail.get("code") if isinstance(detail, dict) else None),
    }}


def error_response(request: Request, status: int, detail: Any, headers: dict | None = None,
                   code: str | None = None) -> Response:
    """An error as JSON in the shape of its path's surface; under /v1 a 422 is OpenAI's 400."""
    if status == 422 and is_openai(request.url.path):
        status = 400  # a request OpenAI's servers would call bad
    body = orjson.dumps(error_body(request.url.path, status, detail, code))
    return Response(body, status, headers, media_type="application/json")


def field_of(loc: tuple) -> str:
    """A location as a dotted field name: "messages.0.content", without pydantic's union and validator tags."""
    parts = [str(p) for p in loc if p != "body" and (isinstance(p, int) or str(p).isidentifier())]
    return ".".join(parts) or "body"


async def validation_error(request: Request, exc: RequestValidationError) -> Response:
    """422 (400 under /v1) with a readable message naming each bad field (and never echoing the input back)."""
    errors, fields = [], set()
    for err in exc.errors():
        if err.get("type") == "json_invalid":
            at = next((p for p in err.get("loc", ()) if isinstance(p, int)), None)
            field, msg = "body", "invalid JSON" + (f" at character {at}" if at is not None else "")
        else:
            field, msg = field_of(err.get("loc", ())), str(err.get("msg", "invalid"))
        if field in fields:  # a union reports each member's complaint; the first says it
            continue
        fields.add(field)
        errors.append({"field": field, "msg": msg, "type": err.get("type")})
    message = "; ".join(f"{e['field']}: {e['msg']}" for e in errors)
    return error_response(request, 422, {"message": message, "errors": errors})


async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
    """HTTP errors as JSON; a 401 is OpenAI's `invalid_api_key` (other codes travel in the detail)."""
    code = "invalid_api_key" if exc.status_code == 401 else None
    return error_response(request, exc.status_code, exc.detail, exc.headers, code)


async def overloaded(request: Request, exc: Overloaded) -> Response:
    """503 with Retry-After: the request was shed before any work."""
    request.app.state.riposte.metrics.observe_shed(exc.reason)
    return error_response(request, 503, exc.message, {"Retry-After": str(exc.retry_after)})


async def scoring_failed(request: Request, exc: ScoringError) -> Response:
    """500 naming the scorer's exception; only this request fails, the scorer keeps serving the others."""
    return error_response(request, 500, str(exc))


async def client_disconnected(request: Request, exc: ClientDisconnected) -> Response:
    """499 (nginx's "client closed request"), for the logs and metrics: nobody is there to read it."""
    request.app.state.riposte.metrics.observe_cancelled()
    return error_response(request, 499, str(exc))


async def internal_error(request: Request, exc: Exception) -> Response:
    """Any other bug: logged with its traceback, and a 500 naming the exception type, never a bare one."""
    log.error("internal error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(request, 500, f"internal error: {type(exc).__name__}: {str(exc)[:200]}")


def add_error_handlers(app: FastAPI) -> None:
    """Install every handler above."""
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)  # fastapi's subclasses it; 404/405 are starlette's
    app.add_exception_handler(Overloaded, overloaded)
    app.add_exception_handler(ScoringError, scoring_failed)
    app.add_exception_handler(ClientDisconnected, client_disconnected)
    app.add_exception_handler(Exception, internal_error)
