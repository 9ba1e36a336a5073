"""The FastAPI app: the REST API and the web page over one catalog index, assembled from its parts.

>>> app = create_app("demo/index")            # loads index, model and recommender once
>>> uvicorn.run(app, host="127.0.0.1", port=8000)

Where things are:

* ``routers/``: one ``APIRouter`` per area (``service``: /health, /stats; ``search``: /search,
  /items/{id}/similar; ``catalog``: /classes, /items, /items/{id}, /items/{id}/image; ``compatibility``:
  /compare; ``items``: the write API, POST /items, PATCH / PUT / DELETE /items/{id}, POST /items/batch;
  ``page`` and ``docs``: the web page and ReDoc). A new area is a module there and a line in
  :data:`ROUTERS`.
* ``dependencies.py``: what a handler takes from the app (``engine: Engine`` ...), set once on ``app.state``.
* ``auth.py`` / ``keys.py``: who may write (and read, with ``read_key``): bearer keys, hashed in the index folder.
* ``errors.py``: the one error shape (``{"error": {code, message, field}}``) and ``api_error`` to raise it.
* ``engine.py`` (the one place that touches the rest of stylespace), ``answers.py`` (its records as answers),
  ``schemas.py`` (the answers' shapes), ``uploads.py`` / ``decoding.py`` (bounded uploads), ``headers.py``.

Nothing slow runs on the event loop that accepts clients: searches are queued to the engine's batch
worker (concurrent requests share one forward pass and one index search) and awaited; uploads are
decoded by the bounded decoding lanes (decoding.py: a pixel budget from the header, heavy uploads on
their own low-priority lane, 503 with Retry-After when a lane's queue is full); comparing and catalog
reads run in FastAPI's thread pool (sync handlers, or ``run_in_threadpool``). Swagger UI (/docs) and
ReDoc (/redoc) are served from files installed with fastapi-offline, so they work without internet.
"""
from __future__ import annotations

import contextlib
import json
import os

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline

from stylespace.data.images import UPLOAD_BYTES
from stylespace.service import errors
from stylespace.service.auth import KeyGuard
from stylespace.service.decoding import DecodeLimits, UploadDecoder
from stylespace.service.dependencies import MAX_K, Limits
from stylespace.service.engine import CALIBRATION_STALE_SHARE, StyleEngine
from stylespace.service.headers import SecurityHeaders
from stylespace.service.keys import KeyChecker, KeyStore
from stylespace.service.routers import catalog, compatibility, docs, items, page, search, service, text
from stylespace.service.routers.page import STATIC_DIR
from stylespace.service.uploads import BodySizeLimit, decode_probed_view, probe_upload
from stylespace.utils import at_least, validate

# How `stylespace serve --workers N` hands its settings to each worker process (JSON).
SETTINGS_VARIABLE = "STYLESPACE_SERVE_SETTINGS"
# Multipart framing (boundaries, part headers, the form fields) on top of the image bytes themselves.
MULTIPART_SLACK_BYTES = 64 * 1024
UPLOAD_PATHS = {"/search": 1, "/compare": 2}  # path -> image files it takes at most
# In this order: /items/{id}/similar (search) must be tried before /items/{id} (catalog), whose id may hold
# slashes and would take "1013/similar" as an id.
ROUTERS = (page.router, docs.router, service.router, search.router, text.router, catalog.router,
           compatibility.router, items.router)


def create_app(index_dir: str | os.PathLike, model_dir: str | os.PathLike | None = None,
               compat_dir: str | os.PathLike | None = None, max_upload_bytes: int = UPLOAD_BYTES,
               device: str = "auto", max_batch: int = 32, decode_limits: DecodeLimits | None = None,
               inference: str = "auto", text_model_dir: str | os.PathLike | None = None, read_key: bool = False,
               calibration_stale_share: float = CALIBRATION_STALE_SHARE, query_views=None) -> FastAPI:
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
        text_model_dir: the text model for POST /search/text (default: MODEL/text beside the image model, when
            there is one; without one /search/text answers 503).
        read_key: reads need a key too (of scope read or write); writes always need one of scope write
            (``stylespace keys create``, kept in the index folder).
        calibration_stale_share: the share of changed items past which /stats calls the calibration stale.
        query_views: the views an uploaded photo is also searched as, each item keeping its best score
            (:class:`stylespace.data.query_views.QueryViews`, or its text: ``mirror,unstretch``, ``all``; default:
            none, the canonical view alone).
    """
    validate([at_least("max_upload_bytes", max_upload_bytes, 1, note="bytes")])
    engine = StyleEngine.load(index_dir, model_dir=model_dir, compat_dir=compat_dir, device=device,
                              max_batch=max_batch, inference=inference, text_model_dir=text_model_dir,
                              calibration_stale_share=calibration_stale_share, query_views=query_views)
    decoder = UploadDecoder(decode_probed_view, probe_upload, decode_limits or DecodeLimits())

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        engine.close()
        decoder.close()

    app = FastAPIOffline(
        lifespan=lifespan,
        favicon_url="/favicon.svg",
        redoc_url=None,  # routers/docs.py serves ReDoc without its external logo
        title="stylespace",
        version="0.1.0",
        description="Find catalog items in the same style as an image, and ask whether two items go well "
                    "together. The web page is at /, this API's schema at /openapi.json, its reference at "
                    "/redoc. Every error answers `{\"error\": {\"code\", \"message\", \"field\"}}`; branch on "
                    "`code`, which is stable.",
        responses=errors.error_responses("internal_error"),
        swagger_ui_parameters={"validatorUrl": None},  # no badge fetched from validator.swagger.io
    )
    app.state.engine = engine
    app.state.decoder = decoder
    app.state.limits = Limits(max_upload_bytes=max_upload_bytes, max_k=MAX_K)

    def body_limit(path: str) -> int | None:
        files = UPLOAD_PATHS.get(path)
        if files is None and path.startswith("/items"):  # the write API: one image, or a batch's
            files = items.MAX_BATCH if path == "/items/batch" else 1
        return None if files is None else files * max_upload_bytes + MULTIPART_SLACK_BYTES

    app.add_middleware(BodySizeLimit, limit_for=body_limit)
    # before the body is read: a request without the right key is answered without reading its upload
    app.add_middleware(KeyGuard, checker=KeyChecker(KeyStore(index_dir)), read_key=read_key)
    app.add_middleware(SecurityHeaders)  # outermost: a 413 answered before the app runs carries them too
    errors.install(app)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    for router in ROUTERS:
        app.include_router(router)
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
