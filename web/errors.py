"""One error shape for every failure: ``{"error": {"code": ..., "message": ...}}``.

Clients (the dashboard, curl users, internal services) branch on ``code``
and show ``message``; they should never have to know whether a refusal came
from the runtime (:class:`runyard.actors.errors.RunyardError`), from FastAPI's
request validation, from routing (404/405) or from the body-size guard.
So every one of those paths ends in :func:`error_response`.

:func:`install_error_handlers` wires the handlers and the
:class:`BodySizeLimitMiddleware` into an app; :func:`error_responses` gives
routes the ``responses=`` declarations so ``/openapi.json`` documents the
same shape (declaring 422 there also replaces FastAPI's default
``HTTPValidationError`` schema, which this app never sends).
"""

from __future__ import annotations

import difflib
import json
import sys
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any, Final

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from runyard.actors.errors import RunyardError
from runyard.web.allow_header import allowed_methods
from runyard.web.config import Settings

# --------------------------------------------------------------------------
# The shape


class ErrorDetail(BaseModel):
    code: str = Field(
        description="Stable machine-readable reason, e.g. run_not_found.",
        examples=["run_not_found"],
    )
    message: str = Field(
        description="Human-readable explanation.", examples=["no run with id 'r_123'"]
    )


class ErrorBody(BaseModel):
    """The body of every non-2xx JSON response."""

    error: ErrorDetail


def error_payload(code: str, message: str) -> dict[str, dict[str, str]]:
    return {"error": {"code": code, "message": message}}


def error_response(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> Response:
    """The JSON error response; statuses that forbid a body (204, 304) get none."""
    if status < 200 or status in (204, 304):
        return Response(status_code=status, headers=headers)
    return JSONResponse(error_payload(code, message), status_code=status, headers=headers)


_STATUS_CODES: Final[dict[int, str]] = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "too_many_requests",
    500: "internal_error",
    503: "unavailable",
}


def code_for_status(status: int) -> str:
    """The ``code`` for errors that carry only an HTTP status (HTTPException)."""
    return _STATUS_CODES.get(status, f"http_{status}")


_DESCRIPTIONS: Final[dict[int, str]] = {
    400: "Malformed request (bad JSON, bad cursor).",
    401: "Missing or invalid token.",
    403: "The run belongs to someone else, admin only, or the session cookie was sent "
    "from a page of another origin.",
    404: "Unknown run.",
    409: "Conflict with the run's state (already finished, still running).",
    413: "Request body too large.",
    422: "Invalid input; the message names the field.",
    429: "Too many live runs for this user.",
    503: "Shutting down, or the store is unavailable.",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route: each status documented with :class:`ErrorBody`."""
    return {
        status: {
            "model": ErrorBody,
            "description": _DESCRIPTIONS.get(status, HTTPStatus(status).phrase),
        }
        for status in statuses
    }


# --------------------------------------------------------------------------
# Handlers


async def runyard_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RunyardError)
    return error_response(exc.http_status, exc.code, exc.message)


async def validation_error_handler(request: Request, exc: Exception) -> Response:
    """422 naming the field(s); a body that is not JSON at all is a 400."""
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    for err in errors:
        if err.get("type") == "json_invalid" and tuple(err.get("loc", ()))[:1] == ("body",):
            reason = (err.get("ctx") or {}).get("error", "JSON decode error")
            pos = tuple(err["loc"])[1:2]
            where = f" at position {pos[0]}" if pos else ""
            return error_response(
                400, "malformed_json", f"request body is not valid JSON: {reason}{where}"
            )
        if tuple(err.get("loc", ())) == ("body",) and isinstance(err.get("input"), bytes):
            # FastAPI parses JSON only with a JSON Content-Type; say so instead of
            # "Input should be a valid dictionary".
            return error_response(
                422,
                "validation_error",
                "invalid input: request body: send JSON with Content-Type: application/json",
            )
    known = _body_fields(request)
    for err in errors:
        loc = tuple(err.get("loc", ()))
        if err.get("type") == "extra_forbidden" and len(loc) == 2 and loc[0] == "body":
            close = difflib.get_close_matches(str(loc[1]), known, n=1, cutoff=0.6)
            if close:
                err["msg"] = f"{err.get('msg', 'not allowed')}; did you mean {close[0]!r}?"
    return error_response(422, "validation_error", describe_validation_errors(errors))


def _body_fields(request: Request) -> list[str]:
    """The top-level fields of the route's JSON body model (none if it has no model)."""
    field = getattr(request.scope.get("route"), "body_field", None)
    model = getattr(getattr(field, "field_info", None), "annotation", None)
    fields = getattr(model, "model_fields", None)
    return list(fields) if isinstance(fields, dict) else []


def describe_validation_errors(errors: Sequence[Any], limit: int = 10) -> str:
    """``"invalid input: agent: Field required; query parameter 'limit': ..."``."""
    parts = [f"{_where(err.get('loc', ()))}: {err.get('msg', 'invalid')}" for err in errors]
    more = len(parts) - limit
    text = "; ".join(parts[:limit]) + (f"; and {more} more" if more > 0 else "")
    return f"invalid input: {text}" if text else "invalid input"


def _where(loc: Sequence[Any]) -> str:
    if not loc:
        return "request"
    source, path = str(loc[0]), list(loc[1:])
    dotted = ""
    for part in path:
        dotted += f"[{part}]" if isinstance(part, int) else (f".{part}" if dotted else str(part))
    if source == "body":
        return dotted or "request body"
    kinds = {"query": "query parameter", "path": "path parameter"}
    return f"{kinds.get(source, source)} {dotted!r}" if dotted else source


async def http_error_handler(request: Request, exc: Exception) -> Response:
    """Routing and auth refusals (401/404/405/...) in the common shape, headers kept.

    ``WWW-Authenticate`` on 401 and ``Allow`` on 405 must survive, so the
    exception's headers are passed through.
    """
    assert isinstance(exc, HTTPException)
    status = exc.status_code
    unreadable = _unreadable_json(exc)
    if unreadable is not None:
        return error_response(
            400, "malformed_json", f"request body is not valid JSON: {unreadable}"
        )
    message = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
    if status in (404, 405) and message == HTTPStatus(status).phrase:
        message = f"{message}: {request.method} {request.url.path}"
    headers = exc.headers
    allowed = allowed_methods(request) if status == 405 else None
    if allowed:
        headers = {**(headers or {}), "Allow": ", ".join(allowed)}
    return error_response(status, code_for_status(status), message, headers)


def _unreadable_json(exc: HTTPException) -> str | None:
    """Why FastAPI could not read a JSON body, when its generic 400 hides it.

    FastAPI turns ``json.JSONDecodeError`` into a validation error (then
    ``malformed_json``) but any other failure of ``json.loads`` into a plain
    400 "There was an error parsing the body", the real error as its cause:
    nesting deeper than the parser's recursion limit, an integer of more than
    4,300 digits (CPython's guard against quadratic conversions), bytes that
    are not UTF-8.
    """
    cause = exc.__cause__
    if exc.status_code != 400 or cause is None:
        return None
    if isinstance(cause, RecursionError):
        return "nested too deeply (the limit is about 1,000 levels)"
    if isinstance(cause, UnicodeDecodeError):
        return f"not UTF-8 ({cause.reason} at byte {cause.start})"
    if isinstance(cause, ValueError) and "integer string conversion" in str(cause):
        return f"an integer has more than {sys.get_int_max_str_digits()} digits"
    if isinstance(cause, ValueError):
        return str(cause)
    return None


async def internal_error_handler(request: Request, exc: Exception) -> Response:
    """Last resort: a JSON 500 that leaks nothing; Starlette re-raises so it is logged."""
    return error_response(500, "internal_error", "internal server error")


# --------------------------------------------------------------------------
# Body size


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` once a streamed body passes the limit.

    It is an ``HTTPException`` on purpose: FastAPI re-raises those from its
    body reading (any other exception there becomes a generic 400), so it
    reaches :func:`http_error_handler` and becomes a JSON 413.
    """

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body is larger than the limit of {limit} bytes")


class BodySizeLimitMiddleware:
    """Pure ASGI guard: refuse request bodies over ``max_body_bytes`` with 413.

    A declared ``Content-Length`` over the limit is refused before the app
    runs.  Chunked uploads (no length) are counted as they are received;
    the read that crosses the limit raises :class:`BodyTooLarge`.  Should
    the app swallow that and answer anyway, its response is replaced by the
    413, because what it answered was based on a truncated body.
    Pure ASGI (not ``BaseHTTPMiddleware``) so SSE responses stream unbuffered.
    """

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        if max_body_bytes < 0:
            raise ValueError("max_body_bytes must be >= 0")
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_body_bytes
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _send_too_large(send, limit)
            return
        if declared is not None or scope["method"] in _BODYLESS:
            # The HTTP server reads exactly Content-Length bytes, and a GET or
            # HEAD has no body: nothing to count, so no wrapper on the hot path.
            await self.app(scope, receive, send)
            return

        received = 0
        exceeded = False
        started = False
        replaced = False

        async def limited_receive() -> Message:
            nonlocal received, exceeded
            if exceeded:
                raise BodyTooLarge(limit)
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    exceeded = True
                    raise BodyTooLarge(limit)
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started, replaced
            if message["type"] == "http.response.start":
                started = True
                if exceeded and message["status"] != 413:
                    replaced = True
                    await _send_too_large(send, limit)
                    return
            elif replaced:
                return
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except BodyTooLarge:
            if started:
                raise
            await _send_too_large(send, limit)


_BODYLESS: Final = frozenset({"GET", "HEAD", "OPTIONS"})


def _content_length(scope: Scope) -> int | None:
    value = Headers(scope=scope).get("content-length")
    if value is None or not value.strip().isdigit():
        return None  # the server has already refused a malformed length
    return int(value)


async def _send_too_large(send: Send, limit: int) -> None:
    body = json.dumps(
        error_payload("payload_too_large", BodyTooLarge(limit).detail), separators=(",", ":")
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


# --------------------------------------------------------------------------
# Wiring


def install_error_handlers(app: FastAPI, settings: Settings) -> None:
    """Register every handler above and the body-size middleware on ``app``.

    Call it in ``create_app`` before the app starts (middleware cannot be
    added to a running app).
    """
    app.add_exception_handler(RunyardError, runyard_error_handler)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_exception_handler(HTTPException, http_error_handler)
    app.add_exception_handler(Exception, internal_error_handler)
    app.add_middleware(BodySizeLimitMiddleware, max_body_bytes=settings.max_body_bytes)
    install_openapi_error_shape(app)


def install_openapi_error_shape(app: FastAPI) -> None:
    """Make ``/openapi.json`` show :class:`ErrorBody` for every 422.

    FastAPI adds a 422 with its own ``HTTPValidationError`` schema to every
    route with parameters that does not declare 422 itself (``/runs/{run_id}``
    and friends).  This app never sends that shape: its 422s go through
    :func:`validation_error_handler`.  So the generated schema is corrected
    once, when it is first built.
    """
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            use_error_body_for_validation_errors(generate())
        return app.openapi_schema or generate()

    app.openapi = openapi  # type: ignore[method-assign]


_REF_PREFIX: Final = "#/components/schemas/"


def use_error_body_for_validation_errors(schema: dict[str, Any]) -> None:
    """Replace FastAPI's default 422 schema with :class:`ErrorBody`, in place."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    default_ref = f"{_REF_PREFIX}HTTPValidationError"
    replaced = False
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            response = operation.get("responses", {}).get("422")
            content = (response or {}).get("content", {}).get("application/json", {})
            if content.get("schema", {}).get("$ref") == default_ref:
                content["schema"] = {"$ref": f"{_REF_PREFIX}ErrorBody"}
                response["description"] = _DESCRIPTIONS[422]
                replaced = True
    if not replaced:
        return
    if "ErrorBody" not in components:
        body = ErrorBody.model_json_schema(ref_template=_REF_PREFIX + "{model}")
        components.update(body.pop("$defs", {}))
        components["ErrorBody"] = body
    if default_ref not in json.dumps(schema):
        components.pop("HTTPValidationError", None)
        if f"{_REF_PREFIX}ValidationError" not in json.dumps(schema):
            components.pop("ValidationError", None)
