"""Search: the catalog items closest in style to an uploaded photo or to a catalog item."""
from __future__ import annotations

import asyncio
import time
from typing import Annotated

from fastapi import APIRouter, File, Form, Path, Query, UploadFile

from stylespace.service import schemas
from stylespace.service.answers import json_answer, search_result
from stylespace.service.dependencies import MAX_K, Decoder, Engine, RequestLimits, decode
from stylespace.service.errors import error_responses
from stylespace.service.headers import short
from stylespace.service.uploads import read_upload

router = APIRouter(tags=["search"])

UPLOAD_ERRORS = ("upload_too_large", "not_an_image", "empty_upload", "unreadable_image", "image_too_large", "busy")


@router.post("/search", response_model=schemas.SearchResult,
             responses=error_responses("invalid_request", *UPLOAD_ERRORS))
async def search(engine: Engine, decoder: Decoder, limits: RequestLimits,
                 image: Annotated[UploadFile, File(description="A product photo (JPEG, PNG, WebP...).")],
                 k: Annotated[int, Form(ge=1, le=MAX_K, description=f"How many items (1..{MAX_K}).")] = 10):
    """The k catalog items closest in style to an uploaded image, with the recommendation confidence."""
    started = time.perf_counter()
    data = await read_upload(image, limits.max_upload_bytes, "image")
    views = engine.query_views if engine.query_views.enabled else None  # the canonical view alone, or its views too
    view = await decode(decoder, data, engine.input_size, "image", views)
    ranking = await asyncio.wrap_future(engine.submit_search(view.pixels, k, view.blank))
    query = schemas.QueryInfo(kind="upload", filename=None if image.filename is None else short(image.filename))
    return json_answer(search_result(ranking, query, k, started, engine.index.metric))


@router.get("/items/{item_id:path}/similar", response_model=schemas.SearchResult,
            responses=error_responses("unknown_item", "invalid_request"))
async def similar(engine: Engine, item_id: Annotated[str, Path(description="A catalog item id.")],
                  k: Annotated[int, Query(ge=1, le=MAX_K, description=f"How many items to return (1..{MAX_K}).")]
                  = 10):
    """The k catalog items closest in style to a catalog item (the item itself left out)."""
    started = time.perf_counter()
    ranking = await asyncio.wrap_future(engine.submit_similar(item_id, k))
    return json_answer(search_result(ranking, schemas.QueryInfo(kind="item", id=short(item_id)), k, started,
                                     engine.index.metric))
