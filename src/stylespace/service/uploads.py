"""Uploaded images: bounded reading, and decoding through the same code as training.

Two bounds keep a request from using unbounded memory or disk:

* :class:`BodySizeLimit` (ASGI middleware) refuses a request whose ``Content-Length`` is over the
  limit before reading it, and counts the bytes of every body (chunked ones included) as they
  arrive, stopping at the limit with 413;
* :func:`read_upload` reads one file part in chunks and stops at ``max_bytes + 1``.

Decoding goes through :func:`stylespace.data.load_view`, the one decoder training used, so a query
sees the same pixels as an indexed item (and the search learns whether the picture is blank); its
decompression-bomb refusal applies here too.
"""
from __future__ import annotations

import io
import warnings
from typing import Callable

import numpy as np
from fastapi import UploadFile
from PIL import Image, UnidentifiedImageError

from stylespace.data import ImageDecodeError, View, load_view

CHUNK_BYTES = 64 * 1024


class UploadError(Exception):
    """A rejected upload: the HTTP status to answer with and a message saying what to send instead."""

    def __init__(self, status_code: int, message: str):
        super().__init__(message)
        self.status_code = status_code
        self.message = message


class _BodyTooLarge(Exception):
    pass


class BodySizeLimit:
    """ASGI middleware: requests to the listed paths may carry at most ``limit_for(path)`` body bytes.

    Args:
        app: the ASGI app to wrap.
        limit_for: path -> byte limit, or None for paths without a limit (requests without a body).
    """

    def __init__(self, app, limit_for: Callable[[str], int | None]):
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope, receive, send):
        limit = self.limit_for(scope["path"]) if scope["type"] == "http" else None
        if limit is None:
            return await self.app(scope, receive, send)
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            # Answer before reading a byte; the client's body is never received.
            return await _send_413(send, declared, limit)

        received = 0
        too_large = started = False

        async def counting_receive():
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    too_large = True
                    raise _BodyTooLarge()  # stops the form parser reading further
            return message

        async def guarded_send(message):
            nonlocal started
            if too_large:
                return  # the app's own answer to the cut-off body (FastAPI makes it a 400) is replaced
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            if not too_large:  # a cut-off body may surface as another error type; anything else is real
                raise
        if too_large and not started:
            await _send_413(send, received, limit)


def _content_length(scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _send_413(send, size: int, limit: int) -> None:
    body = (b'{"detail":"request body of %d bytes or more is over the %d byte limit; '
            b'send a smaller image"}' % (size, limit))
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


async def read_upload(upload: UploadFile, max_bytes: int, field: str = "image") -> bytes:
    """The bytes of one uploaded file, read in chunks and never more than ``max_bytes + 1``.

    Raises UploadError 413 when the file is over ``max_bytes`` and 422 when it is empty.
    """
    chunks, total = [], 0
    while total <= max_bytes:
        chunk = await upload.read(min(CHUNK_BYTES, max_bytes + 1 - total))
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    if total > max_bytes:
        raise UploadError(413, f"{field}: the file is over the {max_bytes:,} byte limit; send a smaller image")
    if total == 0:
        raise UploadError(422, f"{field}: the file is empty (zero bytes); send a JPEG, PNG or WebP image")
    return b"".join(chunks)


def decode_upload(data: bytes, size: tuple[int, int], field: str = "image") -> np.ndarray:
    """Decode uploaded bytes into (H, W, 3) uint8 at the model's input ``size`` = (H, W).

    415 when the bytes are not in any image format Pillow knows; 422 when they are but cannot be
    used (truncated, corrupt, a decompression bomb).
    """
    return decode_upload_view(data, size, field).pixels


def decode_upload_view(data: bytes, size: tuple[int, int], field: str = "image") -> View:
    """Decode uploaded bytes into their canonical :class:`View` at ``size`` (its pixels, and whether the
    picture is blank); refused as :func:`decode_upload` refuses."""
    if not data:
        raise UploadError(422, f"{field}: the file is empty (zero bytes); send a JPEG, PNG or WebP image")
    try:
        # Reading the header only: tells "not an image at all" apart from "a broken image".
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            Image.open(io.BytesIO(data)).close()
    except UnidentifiedImageError:
        raise UploadError(415, f"{field}: not an image in a known format; send a JPEG, PNG or WebP image") from None
    except Exception:
        pass  # a recognised format with a broken or huge header: load_rgb says why below
    try:
        return load_view(data, size=size)
    except ImageDecodeError as exc:
        reason = str(exc).removeprefix("image bytes: ")
        raise UploadError(422, f"{field}: {reason}") from None
