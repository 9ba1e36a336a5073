"""The engine's records as the API's answers (:mod:`stylespace.service.schemas`): item cards with their
links, and a search's ranking with the sentence that says whether to show it."""
from __future__ import annotations

import time
from urllib.parse import quote

from fastapi.responses import Response

from stylespace.recommend.choice import UNCALIBRATED_NOTE
from stylespace.service import schemas
from stylespace.service.engine import ItemRecord, Ranking


def json_answer(answer) -> Response:
    """A pydantic answer serialised once (its response_model still documents it; FastAPI would otherwise
    validate it again and serialise it through jsonable_encoder, ~0.4 ms of a search's ~3 ms of CPU)."""
    return Response(answer.model_dump_json(), media_type="application/json")


def item_links(record: ItemRecord) -> dict:
    quoted = quote(record.id, safe="")  # a folder catalog's ids hold slashes (Tshirts/10028)
    return {"id": record.id, "label": record.label, "name": record.name,
            "image_url": f"/items/{quoted}/image", "similar_url": f"/items/{quoted}/similar"}


def item_summary(record: ItemRecord) -> schemas.ItemSummary:
    return schemas.ItemSummary(**item_links(record))


def item_full(record: ItemRecord) -> schemas.Item:
    return schemas.Item(**item_links(record), metadata=record.meta)


def search_result(ranking: Ranking, query: schemas.QueryInfo, k: int, started: float,
                  metric: str) -> schemas.SearchResult:
    """A search's answer; ``started`` is the ``time.perf_counter()`` at which the request arrived."""
    hits = [schemas.Hit(**item_links(record), rank=rank, score=score, metadata=record.meta)
            for rank, (record, score) in enumerate(ranking.hits, start=1)]
    return schemas.SearchResult(query=query, k=k, results=hits, confidence=ranking.confidence,
                                confidence_score=ranking.score_name, threshold=ranking.threshold,
                                confident=ranking.confident, reason=ranking.reason,
                                not_a_product=ranking.not_a_product, message=_message(ranking), metric=metric,
                                took_ms=1000 * (time.perf_counter() - started))


def _message(ranking: Ranking) -> str:
    if ranking.not_a_product:
        return (f"No confident match: {ranking.reason}, so it is not taken for a product photo "
                "(send a photo of one product).")
    if ranking.threshold is None:
        return UNCALIBRATED_NOTE[0].upper() + UNCALIBRATED_NOTE[1:] + "."
    if ranking.confident:
        return f"Confident match: confidence {ranking.confidence:.4f} >= threshold {ranking.threshold:.4f}."
    return (f"No confident match: confidence {ranking.confidence:.4f} is below the threshold "
            f"{ranking.threshold:.4f}; no recommendation is better than an unrelated one.")
