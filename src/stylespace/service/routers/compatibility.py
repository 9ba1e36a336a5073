"""Compatibility: do two items go well together (003's style evaluator)."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, UploadFile
from fastapi.concurrency import run_in_threadpool

from stylespace.service import schemas
from stylespace.service.dependencies import Decoder, Engine, RequestLimits, decode
from stylespace.service.engine import UnknownItem
from stylespace.service.errors import api_error, error_responses
from stylespace.service.headers import short
from stylespace.service.routers.search import UPLOAD_ERRORS
from stylespace.service.uploads import read_upload

router = APIRouter(tags=["compatibility"])


@router.post("/compare", response_model=schemas.Verdict,
             responses=error_responses("invalid_request", "unknown_item", "unreadable_catalog_image", *UPLOAD_ERRORS,
                                       "compare_unavailable"))
async def compare(engine: Engine, decoder: Decoder, limits: RequestLimits,
                  image_a: Annotated[UploadFile | None, File(description="First image.")] = None,
                  image_b: Annotated[UploadFile | None, File(description="Second image.")] = None,
                  id_a: Annotated[str | None, Form(description="First item id (instead of image_a).")] = None,
                  id_b: Annotated[str | None, Form(description="Second item id (instead of image_b).")] = None):
    """Do two items go well together? Give each as an upload or a catalog id."""
    if not engine.can_compare:
        api_error(503, "compare_unavailable", "no compatibility model is loaded: start the server with --compat "
                                              "FOLDER (a folder written by `stylespace compat-train`)")
    sides = []
    for name, upload, item_id in (("a", image_a, id_a), ("b", image_b, id_b)):
        if (upload is None) == (item_id is None or item_id == ""):
            api_error(422, "invalid_request", f"give exactly one of image_{name} (a file) or id_{name} (a catalog id)",
                      f"image_{name}")
        if upload is not None:
            data = await read_upload(upload, limits.max_upload_bytes, f"image_{name}")
            pixels = (await decode(decoder, data, engine.compat_input_size, f"image_{name}")).pixels
            filename = None if upload.filename is None else short(upload.filename)
            sides.append((pixels, schemas.QueryInfo(kind="upload", filename=filename)))
        else:
            try:
                pixels = await run_in_threadpool(engine.item_pixels, item_id, engine.compat_input_size)
            except UnknownItem as exc:
                api_error(404, "unknown_item", str(exc), f"id_{name}")
            sides.append((pixels, schemas.QueryInfo(kind="item", id=short(item_id))))
    verdict = await run_in_threadpool(engine.compare, sides[0][0], sides[1][0])
    return schemas.Verdict(**verdict, a=sides[0][1], b=sides[1][1])

