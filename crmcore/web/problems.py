"""Errors as RFC 9457 problem details, mapped from the core's errors in one place.

Every error response is ``application/problem+json``: ``type``, ``title``,
``status``, ``detail`` and, for invalid input, ``errors`` (one entry per issue
with the field's ``pointer``/``field`` and the message).  A stack trace never
leaves the server: an unexpected exception is logged and answered with a
500 problem carrying only an id to look the log entry up by.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response

from ..application.idempotency import KeyReused
from ..application.tokens import InvalidToken
from ..application.users import InactiveUser
from ..domain.errors import (
    ConfigError,
    CRMError,
    DuplicateCustomer,
    HasHistory,
    InsufficientPoints,
    MergeRefused,
    NotAuthorized,
    NotFound,
    RecordArchived,
    StaleVersion,
    UnknownComponent,
    ValidationError,
)

log = logging.getLogger("crmcore.web")

#: The media type of every error response.
PROBLEM_JSON = "application/problem+json"
#: Where the problem types are described (docs/api.md, section "Errors").
TYPE_BASE = "https://crmcore.dev/problems/"

# Most specific first: the first matching class names the status and the type.
_STATUS: tuple[tuple[type[CRMError], int, str], ...] = (
    (ValidationError, 422, "validation"),
    (InvalidToken, 401, "unauthenticated"),
    (InactiveUser, 401, "unauthenticated"),
    (NotAuthorized, 403, "forbidden"),
    (NotFound, 404, "not-found"),
    (UnknownComponent, 404, "not-found"),
    (StaleVersion, 412, "stale-version"),
    (KeyReused, 422, "idempotency-key-reused"),
    (RecordArchived, 409, "archived"),
    (HasHistory, 409, "has-history"),
    (InsufficientPoints, 409, "insufficient-points"),
    (DuplicateCustomer, 409, "duplicate"),
    (MergeRefused, 409, "merge-refused"),
    (ConfigError, 422, "invalid-request"),
    (CRMError, 422, "invalid-request"),
)

_TITLES = {400: "Bad request", 401: "Not authenticated", 403: "Forbidden", 404: "Not found",
           405: "Method not allowed", 409: "Conflict", 412: "Precondition failed",
           413: "Request too large", 415: "Unsupported media type", 422: "Invalid input",
           428: "Precondition required", 429: "Too many requests", 500: "Internal server error"}


class Problem(Exception):
    """Raise in a route to answer with a problem of the given status (and optional issues)."""

    def __init__(self, status: int, detail: str, kind: str | None = None,
                 errors: Sequence[dict[str, Any]] = (), headers: dict[str, str] | None = None):
        self.status, self.detail, self.kind = status, detail, kind
        self.errors, self.headers = list(errors), headers
        super().__init__(detail)


def problem(status: int, detail: str, kind: str | None = None, errors: Iterable[dict[str, Any]] = (),
            headers: dict[str, str] | None = None, instance: str | None = None) -> JSONResponse:
    """A problem details response."""
    body: dict[str, Any] = {"type": TYPE_BASE + (kind or str(status)), "title": _TITLES.get(status, "Error"),
                            "status": status, "detail": detail}
    if instance:
        body["instance"] = instance
    listed = list(errors)
    if listed:
        body["errors"] = listed
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def status_of(exc: CRMError) -> tuple[int, str]:
    """The HTTP status and problem type of a core error."""
    for cls, status, kind in _STATUS:
        if isinstance(exc, cls):
            return status, kind
    return 422, "invalid-request"  # pragma: no cover - CRMError is the last entry


def crm_error_response(request: Request, exc: CRMError) -> JSONResponse:
    """The problem for a core error; a ValidationError lists each issue with its field."""
    status, kind = status_of(exc)
    errors = []
    if isinstance(exc, ValidationError):
        errors = [{"field": field, "pointer": "/" + field.replace(".", "/"), "detail": message}
                  for field, message in exc.issues]
    elif isinstance(exc, DuplicateCustomer):  # which customers, and the keys they share
        errors = [{"field": ", ".join(m.fields), "pointer": "", "detail": m.describe(),
                   "customer_id": m.customer_id} for m in exc.matches]
    headers = {"WWW-Authenticate": 'Bearer realm="crmcore"'} if status == 401 else None
    return problem(status, str(exc), kind, errors, headers, request.url.path)


def _location(loc: Sequence[Any]) -> tuple[str, str]:
    """FastAPI's error location (``("body", "attributes", "tier")``) as a field name and a JSON pointer."""
    parts = [str(p) for p in loc]
    where = parts[0] if parts else "request"
    rest = parts[1:]
    field = ".".join(rest) or where
    return field, ("/" + "/".join(rest)) if where == "body" else f"{where}:{field}"


#: What FastAPI says when it cannot decode a request body at all (raised as a 400 HTTPException).
_UNREADABLE_BODY = "There was an error parsing the body"


def _issue(issue: Any) -> dict[str, str]:
    """One issue of FastAPI's request validation as a problem's ``errors`` entry."""
    if issue.get("type") == "json_invalid":
        # FastAPI locates a JSON syntax error as ("body", character offset): name the body, not a field "12".
        error = (issue.get("ctx") or {}).get("error", "")
        return {"field": "body", "pointer": "", "detail": f"not valid JSON: {error}".rstrip(": ")}
    field, pointer = _location(issue.get("loc", ()))
    return {"field": field, "pointer": pointer, "detail": str(issue.get("msg", "invalid"))}


def invalid_request(request: Request, errors: list[dict[str, str]]) -> JSONResponse:
    """The 422 problem for input that does not fit the request's schema, one entry per issue."""
    summary = "; ".join(f"{e['field']}: {e['detail']}" for e in errors[:5])
    return problem(422, f"invalid request: {summary}", "validation", errors, instance=request.url.path)


def install(app: FastAPI) -> None:
    """Register the handlers that turn every error into a problem."""

    @app.exception_handler(CRMError)
    async def _crm_error(request: Request, exc: CRMError) -> Response:
        return crm_error_response(request, exc)

    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> Response:
        return problem(exc.status, exc.detail, exc.kind, exc.errors, exc.headers, request.url.path)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        errors = [_issue(issue) for issue in exc.errors()]
        return invalid_request(request, errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 400 and exc.detail == _UNREADABLE_BODY:
            # FastAPI answers a body that is not even text (not UTF-8) with a bare 400, but a body that
            # is text and not JSON with a 422: both are the client's bad body, one status names it.
            return invalid_request(request, [{"field": "body", "pointer": "", "detail": "not JSON text in UTF-8"}])
        return problem(exc.status_code, str(exc.detail), None, (), getattr(exc, "headers", None), request.url.path)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        incident = uuid.uuid4().hex[:12]
        log.error("unexpected error %s on %s %s", incident, request.method, request.url.path, exc_info=exc)
        return problem(500, f"an unexpected error occurred (incident {incident}); the server log has the details",
                       "internal", instance=request.url.path)


#: The problem responses every route may give, for the OpenAPI document.
PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"},
        "detail": {"type": "string"}, "instance": {"type": "string"},
        "errors": {"type": "array", "items": {"type": "object", "required": ["field", "pointer", "detail"],
                                              "properties": {"field": {"type": "string"},
                                                             "pointer": {"type": "string"},
                                                             "detail": {"type": "string"}}}},
    },
}


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for the problem statuses a route may answer."""
    documented: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        entry: dict[str, Any] = {"description": _TITLES.get(status, "Error"),
                                 "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}}
        if status == 401:
            entry["headers"] = {"WWW-Authenticate": {"description": "The scheme to authenticate with.",
                                                     "required": True, "schema": {"type": "string"}}}
        documented[status] = entry
    return documented
