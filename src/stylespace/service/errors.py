"""One shape for every error the API answers, and the one way to raise one.

Every 4xx and 5xx body is ``{"error": {"code": ..., "message": ..., "field": ...}}``:

* ``code``: a stable word from :data:`CODES` that clients (the page's ``friendly()``) branch on; the
  message's wording may change, the code does not;
* ``message``: what went wrong and what to send instead, in words, with any server path reduced to its
  last part and echoed values cut short;
* ``field``: the form field, query parameter or path part at fault (``image``, ``k``, ``id_b``), or null.

A router raises ``api_error(404, "unknown_item", "no item ...", field="item_id")`` (or an :class:`ApiError`
subclass such as ``uploads.UploadError``); :func:`install` makes the app answer every error in this shape,
FastAPI's own 422 for a bad parameter and Starlette's 404 / 405 included. A route documents what it can
answer with ``responses=error_responses("unknown_item", ...)``: the statuses come from the codes.
"""
from __future__ import annotations

import logging
from typing import NoReturn

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from stylespace.service.headers import public, short
from stylespace.utils import StylespaceError

log = logging.getLogger("stylespace.service")

# Every code the API answers with: its HTTP status and when it is used. Add a code here before raising it.
CODES: dict[str, tuple[int, str]] = {
    "invalid_request": (422, "a parameter is missing, of the wrong type or out of range (`field` names it)"),
    "invalid_input": (422, "the request is well formed but cannot be answered as asked"),
    "empty_upload": (422, "an uploaded file has zero bytes"),
    "unreadable_image": (422, "an uploaded file is an image but cannot be decoded (truncated, corrupt)"),
    "image_too_large": (422, "an uploaded image decodes at more pixels than this server's limit (or claims "
                             "a decompression bomb's size)"),
    "unreadable_catalog_image": (422, "a catalog item's image cannot be read from the catalog"),
    "bad_request": (400, "the request cannot be read as HTTP the server understands"),
    "upload_too_large": (413, "an uploaded file or the request body is over the byte limit"),
    "conflict": (409, "the request conflicts with the catalog's current state (an id already there...)"),
    "not_an_image": (415, "an uploaded file is not in any image format the server reads"),
    "unknown_item": (404, "no catalog item has this id"),
    "unknown_label": (404, "no catalog item has this label"),
    "not_found": (404, "no such path"),
    "method_not_allowed": (405, "the path does not take this HTTP method"),
    "busy": (503, "the server is busy decoding other uploads; retry after the `Retry-After` header's seconds"),
    "compare_unavailable": (503, "no compatibility model is loaded, so /compare cannot answer"),
    "text_search_unavailable": (503, "no text model is loaded, so /search/text cannot answer"),
    "internal_error": (500, "an unexpected failure on the server (logged there)"),
    # the write API and its keys
    "blank_image": (422, "an uploaded item's picture is blank or almost uniform (not a product photo)"),
    "key_in_query": (400, "a key was sent in the URL; send it as `Authorization: Bearer KEY` instead"),
    "unauthorized": (401, "no key, or a wrong or revoked one (`Authorization: Bearer KEY`)"),
    "forbidden": (403, "the key is valid but may not do this (a read key on a write)"),
    "too_many_failures": (429, "too many wrong keys from this address; retry after the `Retry-After` header's "
                               "seconds"),
}
# Errors FastAPI and Starlette raise themselves, by status.
_STATUS_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 409: "conflict", 413: "upload_too_large", 415: "not_an_image",
                 422: "invalid_request", 503: "busy"}
MESSAGE_CHARS = 600


class ErrorDetail(BaseModel):
    code: str = Field(description="A stable code to branch on: " + ", ".join(f"`{c}`" for c in CODES) + ".")
    message: str = Field(description="What went wrong and what to send instead, in words.")
    field: str | None = Field(None, description="The form field, query parameter or path part at fault, if one.")


class ErrorBody(BaseModel):
    """The body of every 4xx and 5xx answer."""

    error: ErrorDetail


class ApiError(Exception):
    """An error the API answers with ``status`` and the body ``{"error": {code, message, field}}``.

    Args:
        status: the HTTP status (must be the one :data:`CODES` gives ``code``).
        code: a key of :data:`CODES`.
        message: what went wrong and what to send instead.
        field: the request field at fault, or None.
        headers: extra response headers (``Retry-After``).
    """

    def __init__(self, status: int, code: str, message: str, field: str | None = None,
                 headers: dict[str, str] | None = None):
        if CODES.get(code, (None,))[0] != status:
            raise ValueError(f"error code {code!r} is not a {status} code in stylespace.service.errors.CODES")
        super().__init__(message)
        self.status_code = status
        self.code = code
        self.message = message
        self.field = field
        self.headers = headers


def api_error(status: int, code: str, message: str, field: str | None = None,
              headers: dict[str, str] | None = None) -> NoReturn:
    """Raise :class:`ApiError`: the route stops and the client gets the one error shape."""
    raise ApiError(status, code, message, field, headers)


def error_body(code: str, message: str, field: str | None = None) -> dict:
    """The JSON body of an error (for the few answers made outside FastAPI, such as the body-size middleware)."""
    return {"error": {"code": code, "message": public(short(message, MESSAGE_CHARS)), "field": field}}


def error_response(status: int, code: str, message: str, field: str | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(code, message, field), status_code=status, headers=headers)


def error_responses(*codes: str) -> dict[int, dict]:
    """The OpenAPI ``responses`` of a route that may answer with ``codes``: one entry per status, the codes
    it carries listed in its description, all with the :class:`ErrorBody` schema."""
    by_status: dict[int, list[str]] = {}
    for code in codes:
        by_status.setdefault(CODES[code][0], []).append(code)
    return {status: {"model": ErrorBody,
                     "description": "; ".join(f"`{code}`: {CODES[code][1]}" for code in members)}
            for status, members in sorted(by_status.items())}


def install(app: FastAPI) -> None:
    """Answer every error raised in ``app`` in the one shape, and document it so in its OpenAPI schema."""
    _document(app)

    @app.exception_handler(ApiError)
    async def api_failure(request: Request, exc: ApiError):
        return error_response(exc.status_code, exc.code, exc.message, exc.field, exc.headers)

    @app.exception_handler(StylespaceError)
    async def user_error(request: Request, exc: StylespaceError):
        # The engine's own refusals (UnknownItem carries its code); anything else is input it cannot use.
        code = getattr(exc, "code", "invalid_input")
        return error_response(CODES[code][0], code, str(exc), getattr(exc, "field", None))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError):
        # FastAPI's own answer echoes each bad value whole (a 100 KB query string comes back); cut them short.
        errors = exc.errors()
        field = next((_field(error) for error in errors if _field(error)), None)
        return error_response(422, "invalid_request", "; ".join(_describe(error) for error in errors), field)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        code = _STATUS_CODES.get(exc.status_code, "internal_error" if exc.status_code >= 500 else "bad_request")
        return JSONResponse(error_body(code, str(exc.detail)), status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception):
        log.exception("unexpected failure answering %s %s", request.method, request.url.path)
        return error_response(500, "internal_error", "the server failed to answer this request; it is logged "
                                                     "on the server, please try again")


def _document(app: FastAPI) -> None:
    """FastAPI documents a 422 of its own shape (``HTTPValidationError``) on every route with parameters that
    does not declare one; the schema says what the app answers instead: :class:`ErrorBody`."""
    make_schema = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = make_schema()
        theirs = "#/components/schemas/HTTPValidationError"
        ours = error_responses("invalid_request")[422]
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                body = operation.get("responses", {}).get("422", {}).get("content", {}).get("application/json", {})
                if body.get("schema", {}).get("$ref") == theirs:
                    operation["responses"]["422"]["description"] = ours["description"]
                    body["schema"] = {"$ref": "#/components/schemas/ErrorBody"}
        components = schema.get("components", {}).get("schemas", {})
        for name in ("HTTPValidationError", "ValidationError"):
            components.pop(name, None)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi


def _field(error: dict) -> str | None:
    """The request field a validation error is about: the last name in its location (``("body", "k")``)."""
    names = [part for part in error.get("loc", ()) if isinstance(part, str) and part not in ("body", "query", "path")]
    return short(names[-1]) if names else None


def _describe(error: dict) -> str:
    """One validation error in words, with the value it refused cut short (never raw bytes or a file)."""
    where = _field(error)
    text = f"{where}: " if where else ""
    text += short(error.get("msg", "invalid"), 200)
    value = error.get("input")
    if isinstance(value, (str, int, float, bool)) and error.get("type") != "missing":
        text += f" (got {short(value)!r})"
    return text
