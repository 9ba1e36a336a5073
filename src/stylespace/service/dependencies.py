"""What a router takes from the app: the engine, the upload decoder and the limits, all set once on
``app.state`` by :func:`stylespace.service.app.create_app`.

>>> @router.get("/thing")
... def thing(engine: Engine): ...          # FastAPI hands the app's StyleEngine in
"""
from __future__ import annotations

import asyncio
import dataclasses
from typing import Annotated

from fastapi import Depends, Request

from stylespace.service.decoding import UploadDecoder
from stylespace.service.engine import StyleEngine

MAX_K = 100


@dataclasses.dataclass(frozen=True)
class Limits:
    """The request limits a router checks: ``max_upload_bytes`` per image file, ``max_k`` items per answer."""

    max_upload_bytes: int
    max_k: int = MAX_K


def _engine(request: Request) -> StyleEngine:
    return request.app.state.engine


def _decoder(request: Request) -> UploadDecoder:
    return request.app.state.decoder


def _limits(request: Request) -> Limits:
    return request.app.state.limits


Engine = Annotated[StyleEngine, Depends(_engine)]
Decoder = Annotated[UploadDecoder, Depends(_decoder)]
RequestLimits = Annotated[Limits, Depends(_limits)]


async def decode(decoder: UploadDecoder, data: bytes, size: tuple[int, int], field: str, views=None):
    """Decode uploaded bytes into their canonical view at ``size`` (with ``views``, a ``QueryViews``: into the
    ``ViewSet`` of the query's views) on the decoder's bounded lanes (awaited, never on the event loop); refused
    with the API's errors (415, 422, 503 busy)."""
    return await asyncio.wrap_future(decoder.submit(data, size, field, views))
