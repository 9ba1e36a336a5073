"""What every answer carries and what none may carry: security headers, short echoes, no server paths.

:class:`SecurityHeaders` (ASGI middleware, a few microseconds a request) adds ``X-Content-Type-Options:
nosniff``, ``Referrer-Policy``, ``X-Frame-Options`` and a Content-Security-Policy with ``frame-ancestors
'none'`` to every response: the page runs only its own scripts and styles; the API pages (Swagger UI
and ReDoc, served from local files) also need the inline script that starts them and ReDoc's blob: worker.

:func:`short` cuts an echoed value (an id, a label, a filename, a bad form value) to a few dozen
characters, and :func:`public` replaces any absolute path in a message by its last part, so an answer
never tells a client where the server keeps its files.
"""
from __future__ import annotations

import re

ECHO_CHARS = 64

PAGE_POLICY = ("default-src 'self'; img-src 'self' data: blob:; script-src 'self'; style-src 'self'; "
               "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
DOCS_POLICY = ("default-src 'self'; img-src 'self' data: blob:; script-src 'self' 'unsafe-inline'; "
               "style-src 'self' 'unsafe-inline'; worker-src 'self' blob:; connect-src 'self'; object-src 'none'; "
               "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
DOCS_PATHS = ("/docs", "/redoc")

_COMMON = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"same-origin"),
           (b"x-frame-options", b"DENY"), (b"cross-origin-opener-policy", b"same-origin")]
_PAGE = _COMMON + [(b"content-security-policy", PAGE_POLICY.encode())]
_DOCS = _COMMON + [(b"content-security-policy", DOCS_POLICY.encode())]

# An absolute POSIX or Windows path: a run of path characters after a leading / or a drive letter.
_ABSOLUTE = re.compile(r"(?<![\w.:/])(?:[A-Za-z]:\\|/)(?:[\w.\-~+@]+[/\\])+([\w.\-~+@]*)")


def short(value, limit: int = ECHO_CHARS) -> str:
    """``value`` as text, cut to ``limit`` characters (an ellipsis and the full length say it was cut)."""
    text = str(value)
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text):,} characters)"


def public(message: str) -> str:
    """``message`` with every absolute path replaced by its last part (``/srv/data/catalog.zip`` -> ``catalog.zip``)."""
    return _ABSOLUTE.sub(lambda m: m.group(1) or "(a folder)", message)


class SecurityHeaders:
    """ASGI middleware: the headers above on every HTTP response (the API pages get their own policy)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        extra = _DOCS if scope["path"].startswith(DOCS_PATHS) else _PAGE

        async def with_headers(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), *extra]}
            await send(message)

        await self.app(scope, receive, with_headers)
