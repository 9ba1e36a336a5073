"""Service state: is it up, and what does it serve."""
from __future__ import annotations

from fastapi import APIRouter

from stylespace.service import schemas
from stylespace.service.dependencies import Decoder, Engine, RequestLimits

router = APIRouter(tags=["service"])


@router.get("/health", response_model=schemas.Health)
def health(engine: Engine):
    """Liveness: the index and model are loaded and answering."""
    return schemas.Health(status="ok", items=engine.size, model_id=engine.model_id)


@router.get("/stats", response_model=schemas.Stats)
def stats(engine: Engine, decoder: Decoder, limits: RequestLimits):
    """Catalog size, the model that embeds queries, the calibrated recommendation threshold, upload limits."""
    return schemas.Stats(**engine.stats(), max_upload_bytes=limits.max_upload_bytes, max_k=limits.max_k,
                         decoding=decoder.stats())
