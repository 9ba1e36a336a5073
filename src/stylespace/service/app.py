"""The FastAPI app: the REST API and the web page over one catalog index.

>>> app = create_app("demo/index")            # loads index, model and recommender once
>>> uvicorn.run(app, host="127.0.0.1", port=8000)

Nothing slow runs on the event loop that accepts clients: searches are queued to the engine's batch
worker (concurrent requests share one forward pass and one index search) and awaited; uploads are
decoded by the bounded decoding lanes (decoding.py: a pixel budget from the header, heavy uploads on
their own low-priority lane, 503 with Retry-After when a lane's queue is full); comparing and catalog
reads run in FastAPI's thread pool (sync handlers, or ``run_in_threadpool``). Swagger UI (/docs) and
ReDoc (/redoc) are served from files installed with fastapi-offline, so they work without internet.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from urllib.parse import quote
from pathlib import Path
from typing import Annotated

from fastapi import FastAPI, File, Form, HTTPException, Path as PathParam, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException as StarletteHTTPException

from stylespace.service import schemas
from stylespace.service.decoding import Busy, DecodeLimits, UploadDecoder
from stylespace.service.auth import KeyGuard
from stylespace.service.engine import CALIBRATION_STALE_SHARE, StyleEngine, UnknownItem
from stylespace.service.keys import KeyChecker, KeyStore
from stylespace.service.routers import items as items_router
from stylespace.service.headers import SecurityHeaders, public, short
from stylespace.service.uploads import BodySizeLimit, UploadError, decode_probed_view, probe_upload, read_upload
from stylespace.utils import StylespaceError, at_least, validate

STATIC_DIR = Path(__file__).with_name("static")
# How `stylespace serve --workers N` hands its settings to each worker process (JSON).
SETTINGS_VARIABLE = "STYLESPACE_SERVE_SETTINGS"
MAX_K = 100
# Multipart framing (boundaries, part headers, the form fields) on top of the image bytes themselves.
MULTIPART_SLACK_BYTES = 64 * 1024
UPLOAD_PATHS = {"/search": 1, "/compare": 2}  # path -> image files it takes at most

K_QUERY = Query(10, ge=1, le=MAX_K, description=f"How many items to return (1..{MAX_K}).")


def create_app(index_dir: str | os.PathLike, model_dir: str | os.PathLike | None = None,
               compat_dir: str | os.PathLike | None = None, max_upload_bytes: int = 10_000_000,
               device: str = "auto", max_batch: int = 32, decode_limits: DecodeLimits | None = None,
               inference: str = "auto", read_key: bool = False,
               calibration_stale_share: float = CALIBRATION_STALE_SHARE) -> FastAPI:
    """Build the app over the index in ``index_dir``; everything is loaded here, once.

    Args:
        index_dir: a folder written by ``stylespace index`` (FAISS index, items, calibrated threshold).
        model_dir: the model that embeds queries; default: the one the index records it was built with.
        compat_dir: a compatibility model folder (``stylespace compat-train``) for /compare; None = no /compare.
        max_upload_bytes: the largest image file accepted, in bytes (413 above it).
        device: where the models run (``auto`` = CUDA when there is one).
        max_batch: the most concurrent searches answered together (one forward pass, one index search).
        decode_limits: the pixel budget and decoding lanes for uploads (:class:`DecodeLimits`; default: its defaults).
        inference: what runs the query model: ``auto`` (ONNX Runtime on a CPU when installed, else PyTorch),
            ``onnx`` or ``torch`` (:mod:`stylespace.inference`).
        read_key: reads need a key too (of scope read or write); writes always need one of scope write
            (``stylespace keys create``, kept in the index folder).
        calibration_stale_share: the share of changed items past which /stats calls the calibration stale.
    """
    validate([at_least("max_upload_bytes", max_upload_bytes, 1, note="bytes")])
    limits = decode_limits or DecodeLimits()
    engine = StyleEngine.load(index_dir, model_dir=model_dir, compat_dir=compat_dir, device=device,
                              max_batch=max_batch, inference=inference,
                              calibration_stale_share=calibration_stale_share)
    decoder = UploadDecoder(decode_probed_view, probe_upload, limits)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        engine.close()
        decoder.close()

    app = FastAPIOffline(
        lifespan=lifespan,
        favicon_url="/favicon.svg",
        title="stylespace",
        version="0.1.0",
        description="Find catalog items in the same style as an image, and ask whether two items go well "
                    "together. The web page is at /, this API's schema at /openapi.json, its reference at "
                    "/redoc.",
    )
    app.state.engine = engine
    app.state.decoder = decoder
    app.state.max_upload_bytes = max_upload_bytes

    def body_limit(path: str) -> int | None:
        files = UPLOAD_PATHS.get(path)
        if files is None and path.startswith("/items"):  # the write API: one image, or a batch's
            files = items_router.MAX_BATCH if path == "/items/batch" else 1
        return None if files is None else files * max_upload_bytes + MULTIPART_SLACK_BYTES

    app.add_middleware(BodySizeLimit, limit_for=body_limit)
    # before the body is read: a request without the right key is answered without reading its upload
    app.add_middleware(KeyGuard, checker=KeyChecker(KeyStore(index_dir)), read_key=read_key)
    app.add_middleware(SecurityHeaders)  # outermost: a 413 answered before the app runs carries them too
    app.include_router(items_router.router)
    app.add_exception_handler(items_router.WriteError, items_router.write_error)

    async def decode(data: bytes, size: tuple[int, int], field: str):
        return await asyncio.wrap_future(decoder.submit(data, size, field))

    @app.exception_handler(UploadError)
    async def upload_error(request: Request, exc: UploadError):
        return JSONResponse({"detail": public(exc.message)}, status_code=exc.status_code)

    @app.exception_handler(Busy)
    async def busy(request: Request, exc: Busy):
        return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": str(exc.retry_after)})

    @app.exception_handler(UnknownItem)
    async def unknown_item(request: Request, exc: UnknownItem):
        return JSONResponse({"detail": public(str(exc))}, status_code=404)

    @app.exception_handler(StylespaceError)
    async def user_error(request: Request, exc: StylespaceError):
        return JSONResponse({"detail": public(str(exc))}, status_code=422)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError):
        # FastAPI's own answer echoes each bad value whole (a 100 KB query string comes back); cut them short.
        return JSONResponse({"detail": [_short_error(error) for error in exc.errors()]}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        return JSONResponse({"detail": public(short(exc.detail, 300))}, status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    # --- the web page -------------------------------------------------------------------------
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    @app.get("/favicon.svg", include_in_schema=False)
    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> FileResponse:
        return FileResponse(STATIC_DIR / "favicon.svg", media_type="image/svg+xml",
                            headers={"Cache-Control": "public, max-age=86400"})

    # --- service state ------------------------------------------------------------------------
    @app.get("/health", response_model=schemas.Health, tags=["service"])
    def health():
        """Liveness: the index and model are loaded and answering."""
        return schemas.Health(status="ok", items=engine.size, model_id=engine.model_id)

    @app.get("/stats", response_model=schemas.Stats, tags=["service"])
    def stats():
        """Catalog size, the model that embeds queries, the calibrated recommendation threshold, upload limits."""
        return schemas.Stats(**engine.stats(), max_upload_bytes=max_upload_bytes, max_k=MAX_K,
                             decoding=decoder.stats())

    # --- search -------------------------------------------------------------------------------
    @app.post("/search", response_model=schemas.SearchResult, tags=["search"])
    async def search(image: Annotated[UploadFile, File(description="A product photo (JPEG, PNG, WebP...).")],
                     k: Annotated[int, Form(ge=1, le=MAX_K, description=f"How many items (1..{MAX_K}).")] = 10):
        """The k catalog items closest in style to an uploaded image, with the recommendation confidence."""
        started = time.perf_counter()
        data = await read_upload(image, max_upload_bytes, "image")
        view = await decode(data, engine.input_size, "image")
        ranking = await asyncio.wrap_future(engine.submit_search(view.pixels, k, view.blank))
        query = schemas.QueryInfo(kind="upload", filename=None if image.filename is None else short(image.filename))
        return _json(_search_result(ranking, query, k, started, engine.index.metric))

    @app.get("/items/{item_id:path}/similar", response_model=schemas.SearchResult, tags=["search"])
    async def similar(item_id: Annotated[str, PathParam(description="A catalog item id.")], k: int = K_QUERY):
        """The k catalog items closest in style to a catalog item (the item itself left out)."""
        started = time.perf_counter()
        ranking = await asyncio.wrap_future(engine.submit_similar(item_id, k))
        return _json(_search_result(ranking, schemas.QueryInfo(kind="item", id=short(item_id)), k, started,
                                    engine.index.metric))

    @app.get("/items/{item_id:path}/image", tags=["catalog"],
             responses={200: {"content": {"image/*": {}}, "description": "The item's image as stored."}})
    def item_image(item_id: str):
        """The item's image, read from the catalog's source (folder or zip)."""
        data, media_type = engine.image(item_id)
        # Catalog images change only when the catalog does (and then the index is rebuilt).
        return Response(data, media_type=media_type, headers={"Cache-Control": "public, max-age=3600"})

    @app.get("/items/{item_id:path}", response_model=schemas.Item, tags=["catalog"])
    def item(item_id: str):
        """One item's label and metadata."""
        return _item(engine.item(item_id), full=True)

    @app.get("/classes", response_model=list[schemas.ClassCount], tags=["catalog"])
    def classes():
        """Labels (article types) with their item counts, most common first."""
        return [schemas.ClassCount(label=label, count=count) for label, count in engine.classes()]

    @app.get("/items", response_model=schemas.ItemPage, tags=["catalog"])
    def items(label: Annotated[str | None, Query(description="Only items with this label.")] = None,
              offset: Annotated[int, Query(ge=0)] = 0,
              limit: Annotated[int, Query(ge=1, le=500)] = 60):
        """Browse the catalog, optionally one label at a time, in catalog order."""
        total, records = engine.items(label, offset, limit)
        return schemas.ItemPage(label=label, total=total, offset=offset, limit=limit,
                                items=[_item(r) for r in records])

    # --- compatibility --------------------------------------------------------------------------
    @app.post("/compare", response_model=schemas.Verdict, tags=["compatibility"])
    async def compare(image_a: Annotated[UploadFile | None, File(description="First image.")] = None,
                      image_b: Annotated[UploadFile | None, File(description="Second image.")] = None,
                      id_a: Annotated[str | None, Form(description="First item id (instead of image_a).")] = None,
                      id_b: Annotated[str | None, Form(description="Second item id (instead of image_b).")] = None):
        """Do two items go well together? Give each as an upload or a catalog id (003's style evaluator)."""
        if not engine.can_compare:
            raise HTTPException(503, "no compatibility model is loaded: start the server with --compat FOLDER "
                                     "(a folder written by `stylespace compat-train`)")
        sides = []
        for name, upload, item_id in (("a", image_a, id_a), ("b", image_b, id_b)):
            if (upload is None) == (item_id is None or item_id == ""):
                raise UploadError(422, f"give exactly one of image_{name} (a file) or id_{name} (a catalog id)")
            if upload is not None:
                data = await read_upload(upload, max_upload_bytes, f"image_{name}")
                pixels = (await decode(data, engine.compat_input_size, f"image_{name}")).pixels
                filename = None if upload.filename is None else short(upload.filename)
                sides.append((pixels, schemas.QueryInfo(kind="upload", filename=filename)))
            else:
                pixels = await run_in_threadpool(engine.item_pixels, item_id, engine.compat_input_size)
                sides.append((pixels, schemas.QueryInfo(kind="item", id=short(item_id))))
        verdict = await run_in_threadpool(engine.compare, sides[0][0], sides[1][0])
        return schemas.Verdict(**verdict, a=sides[0][1], b=sides[1][1])

    return app


def app_from_settings(settings: dict) -> FastAPI:
    """:func:`create_app` from plain settings (what ``stylespace serve`` passes each worker process);
    ``decoded_pixels`` is :class:`DecodeLimits`'s."""
    settings = dict(settings)
    limits = DecodeLimits(decoded_pixels=settings.pop("decoded_pixels")) if "decoded_pixels" in settings else None
    return create_app(**settings, decode_limits=limits)


def app_from_environment() -> FastAPI:
    """The app of one ``serve --workers N`` worker: its settings come in :data:`SETTINGS_VARIABLE` (JSON)."""
    return app_from_settings(json.loads(os.environ[SETTINGS_VARIABLE]))


def _json(answer) -> Response:
    """A pydantic answer serialised once (its response_model still documents it; FastAPI would otherwise
    validate it again and serialise it through jsonable_encoder, ~0.4 ms of a search's ~3 ms of CPU)."""
    return Response(answer.model_dump_json(), media_type="application/json")


def _short_error(error: dict) -> dict:
    """One validation error with the value it refused cut short (and no raw bytes or file objects)."""
    out = {"type": error.get("type"), "loc": [short(part) for part in error.get("loc", ())],
           "msg": short(error.get("msg", ""), 200)}
    value = error.get("input")
    if isinstance(value, (str, int, float, bool)) or value is None:
        out["input"] = value if not isinstance(value, str) else short(value)
    if isinstance(error.get("ctx"), dict):
        out["ctx"] = {str(k): short(v) for k, v in error["ctx"].items()}
    return out


def _item(record, full: bool = False):
    quoted = quote(record.id, safe="")  # a folder catalog's ids hold slashes (Tshirts/10028)
    links = {"image_url": f"/items/{quoted}/image", "similar_url": f"/items/{quoted}/similar"}
    base = {"id": record.id, "label": record.label, "name": record.name, **links}
    return schemas.Item(**base, metadata=record.meta) if full else schemas.ItemSummary(**base)


def _search_result(ranking, query: schemas.QueryInfo, k: int, started: float, metric: str) -> schemas.SearchResult:
    hits = [schemas.Hit(**_item(record).model_dump(), rank=rank, score=score, metadata=record.meta)
            for rank, (record, score) in enumerate(ranking.hits, start=1)]
    if ranking.not_a_product:
        message = (f"No confident match: {ranking.reason}, so it is not taken for a product photo "
                   "(send a photo of one product).")
    elif ranking.threshold is None:
        message = ("This index has no calibrated threshold, so every result is shown; calibrate one with "
                   "`stylespace calibrate-threshold`.")
    elif ranking.confident:
        message = f"Confident match: confidence {ranking.confidence:.4f} >= threshold {ranking.threshold:.4f}."
    else:
        message = (f"No confident match: confidence {ranking.confidence:.4f} is below the threshold "
                   f"{ranking.threshold:.4f}; no recommendation is better than an unrelated one.")
    return schemas.SearchResult(query=query, k=k, results=hits, confidence=ranking.confidence,
                                confidence_score=ranking.score_name, threshold=ranking.threshold,
                                confident=ranking.confident, reason=ranking.reason,
                                not_a_product=ranking.not_a_product, message=message, metric=metric,
                                took_ms=1000 * (time.perf_counter() - started))
