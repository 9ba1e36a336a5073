"""Uploaded images: bounded reading, and decoding through the same code as training.

Two bounds keep a request from using unbounded memory or disk:

* :class:`BodySizeLimit` (ASGI middleware) refuses a request whose ``Content-Length`` is over the
  limit before reading it, and counts the bytes of every body (chunked ones included) as they
  arrive, stopping at the limit with 413;
* :func:`read_upload` reads one file part in chunks and stops at ``max_bytes + 1``.

Decoding goes through :func:`stylespace.data.load_view`, the one decoder training used, so a query
sees the same pixels as an indexed item (and the search learns whether the picture is blank), within a
:class:`~stylespace.data.images.PixelBudget` checked from the header before decoding (see decoding.py
for how many decode at once).
"""
from __future__ import annotations

import json
from typing import Callable

import numpy as np
from fastapi import UploadFile

from stylespace.data import ImageDecodeError, View, load_view
from stylespace.data.images import (DEFAULT_BUDGET, DecompressionBomb, ImageTooLarge, PixelBudget,
                                    UnknownImageFormat, probe_image)
from stylespace.data.query_views import QueryViews, ViewSet, load_query_views
from stylespace.service.errors import ApiError, error_body

CHUNK_BYTES = 64 * 1024


class UploadError(ApiError):
    """A rejected upload: ``UploadError(status, code, message, field)``, answered in the API's one error shape."""


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
    body = json.dumps(error_body("upload_too_large", f"request body of {size} bytes or more is over the {limit} "
                                                     "byte limit; send a smaller image")).encode()
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
        raise UploadError(413, "upload_too_large", f"{field}: the file is over the {max_bytes:,} byte limit; send a "
                                                   "smaller image", field)
    if total == 0:
        raise _empty(field)
    return b"".join(chunks)


def decode_upload(data: bytes, size: tuple[int, int], field: str = "image",
                  budget: PixelBudget = DEFAULT_BUDGET) -> np.ndarray:
    """Decode uploaded bytes into (H, W, 3) uint8 at the model's input ``size`` = (H, W).

    415 when the bytes are not in any image format Pillow knows; 422 when they are but cannot be
    used (truncated, corrupt, a decompression bomb, over the ``budget`` of decoded pixels).
    """
    return decode_upload_view(data, size, field, budget).pixels


def probe_upload(data: bytes, size: tuple[int, int], field: str = "image",
                 budget: PixelBudget = DEFAULT_BUDGET) -> int:
    """The pixels uploaded bytes decode at for a view of ``size``, read from their header (nothing decoded);
    refused as :func:`decode_upload` refuses, over-budget images included."""
    if not data:
        raise _empty(field)
    try:
        probe = probe_image(data, size)
    except UnknownImageFormat:
        raise UploadError(415, "not_an_image", f"{field}: not an image in a known format; send a JPEG, PNG or WebP "
                                               "image", field) from None
    except ImageDecodeError as exc:
        raise _decode_error(exc, field) from None
    if probe.decoded_pixels > budget.decoded:
        raise UploadError(422, "image_too_large",
                          f"{field}: the image decodes at {probe.decoded_width}x{probe.decoded_height} px "
                          f"({probe.decoded_pixels / 1e6:.1f} Mpx), over this server's limit of "
                          f"{budget.decoded / 1e6:g} Mpx; send a smaller image (a JPEG decodes at up to "
                          "1/8 scale, so a large photo as JPEG passes)", field)
    return probe.decoded_pixels


def decode_upload_view(data: bytes, size: tuple[int, int], field: str = "image",
                       budget: PixelBudget = DEFAULT_BUDGET) -> View:
    """Decode uploaded bytes into their canonical :class:`View` at ``size`` (its pixels, and whether the
    picture is blank) within ``budget``; refused as :func:`decode_upload` refuses."""
    probe_upload(data, size, field, budget)  # the format, and the size from the header, before decoding
    return decode_probed_view(data, size, field, budget)


def decode_probed_view(data: bytes, size: tuple[int, int], field: str = "image",
                       budget: PixelBudget = DEFAULT_BUDGET, views: QueryViews | None = None) -> View | ViewSet:
    """:func:`decode_upload_view` for bytes :func:`probe_upload` has already passed; with ``views``, the
    upload's :class:`ViewSet` (its canonical view and those ``views`` asks for, from one decode)."""
    try:
        if views is not None:
            return load_query_views(data, size, views, budget)
        return load_view(data, size=size, budget=budget)
    except ImageDecodeError as exc:
        raise _decode_error(exc, field) from None


def _decode_error(exc: ImageDecodeError, field: str) -> UploadError:
    """The 422 for an image that cannot be decoded: too large (a bomb, over the budget) or broken."""
    code = "image_too_large" if isinstance(exc, (DecompressionBomb, ImageTooLarge)) else "unreadable_image"
    return UploadError(422, code, f"{field}: {str(exc).removeprefix('image bytes: ')}", field)


def _empty(field: str) -> UploadError:
    return UploadError(422, "empty_upload", f"{field}: the file is empty (zero bytes); send a JPEG, PNG or WebP image",
                       field)
