"""Who may do what: ``Authorization: Bearer KEY`` for writes (and for reads under ``serve --read-key``).

:class:`KeyGuard` (ASGI middleware) looks at every request before the app reads its body:

* a key in the query string (``?key=``, ``?api_key=``, ``?token=``... or any value that looks like a key)
  is refused with 400 whatever the path: URLs end up in logs, browser histories and proxies;
* a write (POST, PUT, PATCH, DELETE under ``/items``) needs a key of scope ``write``; with
  ``read_key`` every other API path needs a key of scope ``read`` or ``write`` too. The page, its
  static files, ``/health`` and the API's own pages stay open;
* no key: 401 with ``WWW-Authenticate: Bearer``; a wrong or revoked key: 401; a valid key without the
  scope: 403;
* a client (by address) that sent :data:`FREE_FAILURES` wrong keys within :data:`FAILURE_WINDOW` seconds
  is answered 429 with ``Retry-After`` without its key being checked, for :data:`FIRST_LOCKOUT` seconds,
  twice as long after each further failure (up to :data:`MAX_LOCKOUT`); a valid key clears its record.

The key is never logged, never echoed in an answer, and compared in constant time (keys.py).
"""
from __future__ import annotations

import collections
import json
import math
import threading
import time
from urllib.parse import parse_qsl

import anyio

from stylespace.service.errors import error_body
from stylespace.service.keys import KEY_PREFIX, KeyChecker

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
WRITE_PATHS = ("/items",)
# Open whatever the settings: the page, its files, liveness, and the API's own description.
OPEN_PATHS = ("/static/", "/docs", "/redoc")
OPEN_EXACT = frozenset({"/", "/favicon.svg", "/favicon.ico", "/health", "/openapi.json"})
# Query parameter names that carry keys in other APIs; refused so that no key travels in a URL.
KEY_PARAMETERS = frozenset({"key", "api_key", "apikey", "api-key", "token", "access_token", "auth",
                            "authorization", "bearer", "secret"})
FREE_FAILURES = 5
FIRST_LOCKOUT = 5.0  # seconds; doubled with each further failure
FAILURE_WINDOW = 300.0
MAX_LOCKOUT = 300
MAX_CLIENTS = 10_000  # failure records kept at once (the oldest are forgotten first)


class FailureThrottle:
    """Wrong keys by client address; past :data:`FREE_FAILURES` in the window the client must wait."""

    def __init__(self, free: int = FREE_FAILURES, window: float = FAILURE_WINDOW, max_lockout: int = MAX_LOCKOUT):
        self.free, self.window, self.max_lockout = free, window, max_lockout
        self._failures: collections.OrderedDict[str, list[float]] = collections.OrderedDict()
        self._blocked_until: dict[str, float] = {}
        self._lock = threading.Lock()

    def wait(self, client: str) -> int:
        """Seconds the client must still wait (0: its key may be checked)."""
        with self._lock:
            left = self._blocked_until.get(client, 0.0) - time.monotonic()
        return math.ceil(left) if left > 0 else 0

    def failed(self, client: str) -> None:
        now = time.monotonic()
        with self._lock:
            times = [t for t in self._failures.pop(client, []) if now - t < self.window] + [now]
            self._failures[client] = times
            while len(self._failures) > MAX_CLIENTS:
                old, _ = self._failures.popitem(last=False)
                self._blocked_until.pop(old, None)
            over = len(times) - self.free  # the free failures used up: wait, twice as long each time
            if over >= 0:
                self._blocked_until[client] = now + min(self.max_lockout, FIRST_LOCKOUT * 2 ** over)

    def succeeded(self, client: str) -> None:
        with self._lock:
            self._failures.pop(client, None)
            self._blocked_until.pop(client, None)


def required_scope(method: str, path: str, read_key: bool) -> str | None:
    """The scope a request needs (None: open)."""
    if method in WRITE_METHODS and path.startswith(WRITE_PATHS):
        return "write"
    if not read_key or path in OPEN_EXACT or path.startswith(OPEN_PATHS):
        return None
    return "read"


def key_in_query(query_string: bytes) -> bool:
    """Whether a URL's query carries (what looks like) a key."""
    if not query_string:
        return False
    text = query_string.decode("latin-1")
    if KEY_PREFIX in text:
        return True
    return any(name.lower() in KEY_PARAMETERS for name, _ in parse_qsl(text, keep_blank_values=True))


class KeyGuard:
    """ASGI middleware: see the module docstring.

    Args:
        app: the ASGI app to guard.
        checker: the :class:`KeyChecker` of the index folder's keys.
        read_key: reads need a key too.
        throttle: the :class:`FailureThrottle` (default: a new one).
    """

    def __init__(self, app, checker: KeyChecker, read_key: bool = False, throttle: FailureThrottle | None = None):
        self.app = app
        self.checker = checker
        self.read_key = read_key
        self.throttle = throttle or FailureThrottle()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if key_in_query(scope.get("query_string", b"")):
            return await _answer(send, 400, "key_in_query", "never put a key in the URL (URLs are logged and "
                                 "kept in histories); send it in the header `Authorization: Bearer KEY`",
                                 "authorization")
        needed = required_scope(scope["method"], scope["path"], self.read_key)
        if needed is None:
            return await self.app(scope, receive, send)
        client = (scope.get("client") or ("unknown", 0))[0]
        wait = self.throttle.wait(client)
        if wait:
            return await _answer(send, 429, "too_many_failures", f"too many wrong keys from this address; try "
                                 f"again in {wait} s", "authorization", [(b"retry-after", str(wait).encode())])
        key = _bearer(scope)
        if key is None:
            return await _answer(send, 401, "unauthorized", f"this needs a key of scope {needed}: send the "
                                 "header `Authorization: Bearer KEY` (`stylespace keys create` makes one)",
                                 "authorization", [(b"www-authenticate", b'Bearer realm="stylespace"')])
        granted = await anyio.to_thread.run_sync(self.checker.scope_of, key)
        if granted is None:
            self.throttle.failed(client)
            return await _answer(send, 401, "unauthorized", "the key is not valid (wrong, or revoked)", "authorization",
                                 [(b"www-authenticate", b'Bearer realm="stylespace", error="invalid_token"')])
        self.throttle.succeeded(client)
        if needed == "write" and granted != "write":
            return await _answer(send, 403, "forbidden", "this key may read but not change the catalog; use a key "
                                 "of scope write", "authorization",
                                 [(b"www-authenticate", b'Bearer realm="stylespace", error="insufficient_scope"')])
        return await self.app(scope, receive, send)


def _bearer(scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            token = token.strip()
            return token if scheme.lower() == "bearer" and token else ""
    return None


async def _answer(send, status: int, code: str, message: str, field: str | None, headers=()) -> None:
    body = json.dumps(error_body(code, message, field)).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": body})
