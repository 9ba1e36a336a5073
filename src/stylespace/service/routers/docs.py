"""The API's reference page, ReDoc, with no asset from outside the server.

fastapi-offline serves Swagger UI (/docs) and ReDoc's script from files installed with it, but ReDoc's
script still loads its "API docs by Redocly" logo from cdn.redoc.ly, which the docs' Content-Security-Policy
blocks (and an offline machine cannot reach). The script is served here with that one address pointing at
the server's own icon.
"""
from __future__ import annotations

import functools
from pathlib import Path

import fastapi_offline
from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_redoc_html
from fastapi.responses import HTMLResponse, Response

REDOC_SCRIPT = Path(fastapi_offline.__file__).parent / "static" / "redoc.standalone.js"
EXTERNAL_LOGO = b"https://cdn.redoc.ly/redoc/logo-mini.svg"
LOCAL_LOGO = b"/favicon.svg"

router = APIRouter(include_in_schema=False)


@functools.cache
def _redoc_script() -> bytes:
    return REDOC_SCRIPT.read_bytes().replace(EXTERNAL_LOGO, LOCAL_LOGO)


@router.get("/redoc")
def redoc(request: Request) -> HTMLResponse:
    return get_redoc_html(openapi_url=request.app.openapi_url, title=f"{request.app.title} - ReDoc",
                          redoc_js_url="/redoc/redoc.standalone.js", redoc_favicon_url="/favicon.svg",
                          with_google_fonts=False)


@router.get("/redoc/redoc.standalone.js")
def redoc_script() -> Response:
    return Response(_redoc_script(), media_type="text/javascript", headers={"Cache-Control": "public, max-age=86400"})
