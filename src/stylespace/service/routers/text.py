"""Search by words: ``POST /search/text`` (JSON), alone or with a catalog item ("like this, but red")."""
from __future__ import annotations

import time
from typing import Literal

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from stylespace.service import schemas
from stylespace.service.answers import item_links, json_answer
from stylespace.service.dependencies import MAX_K, Engine
from stylespace.service.errors import api_error, error_responses
from stylespace.service.headers import short

MAX_TEXT = 512

router = APIRouter(tags=["search"])


class TextQuery(BaseModel):
    """Words to search for, optionally with a catalog item whose look they adjust."""

    text: str = Field(min_length=1, max_length=MAX_TEXT, description="What the shopper typed, e.g. "
                                                                      "\"navy check shirt for men\".")
    k: int = Field(10, ge=1, le=MAX_K, description=f"How many items (1..{MAX_K}).")
    where: dict[str, str | list[str]] | None = Field(None, description="Metadata filters: column -> value or values "
                                                                       "(e.g. {\"gender\": \"Men\"}).")
    like_id: str | None = Field(None, max_length=300, description="A catalog item: search for it and the words "
                                                                  "together (\"like this, but red\").")
    text_weight: float = Field(1.0, ge=0, le=10, description="With like_id: how much the words count beside the item.")
    mode: Literal["auto", "embedding", "hybrid", "keywords"] = Field(
        "auto", description="auto: BM25 on names fused with the text model where items have names, the text model "
                            "alone where they do not; embedding: the text model alone; keywords: BM25 alone.")


class TextSearchResult(BaseModel):
    """Items for words. ``results`` is empty when ``confident`` is false (never random items); ``reason`` says why."""

    query: str
    like: schemas.QueryInfo | None = None
    k: int
    method: str = Field(description="embedding, hybrid (BM25 on names + embedding, fused by reciprocal rank), "
                                    "keywords (BM25 alone), image+text (with like_id), or none.")
    results: list[schemas.Hit]
    confident: bool
    reason: str | None = None
    score_name: str = Field(description="What `score` is: cosine, rrf (fused rank score) or bm25.")
    similarity: float | None = Field(None, description="The best item's cosine similarity to the words in the image "
                                                       "model's space.")
    floor: float | None = Field(None, description="The text model's calibrated similarity floor.")
    unknown_words: list[str] = Field(description="Words the text model does not know (left to the names, if any).")
    name_matches: int = Field(description="Items whose name has a word of the query (0 without names).")
    message: str
    took_ms: float


@router.post("/search/text", response_model=TextSearchResult,
             responses=error_responses("invalid_request", "invalid_input", "unknown_item", "text_search_unavailable"))
async def search_text(engine: Engine, query: TextQuery):
    """Catalog items for words; with ``like_id``, for a catalog item and the words together."""
    if not engine.can_search_text:
        api_error(503, "text_search_unavailable",
                  "no text model is loaded: train one for the index's image model with `stylespace text-train MODEL "
                  "CATALOG --split SPLIT` (it is found in MODEL/text), or start the server with --text-model DIR")
    started = time.perf_counter()
    answer = await run_in_threadpool(engine.search_text, query.text, query.k, where=query.where,
                                     like_id=query.like_id, mode=query.mode, text_weight=query.text_weight)
    hits = [schemas.Hit(**item_links(engine.item(hit.id)), rank=rank, score=hit.score, metadata=engine.item(hit.id).meta)
            for rank, hit in enumerate(answer.hits, 1)]
    if answer.confident:
        unknown = f" (not known: {', '.join(answer.unknown_words)})" if answer.unknown_words else ""
        message = f"{len(hits)} items by {answer.method}{unknown}."
    else:
        message = f"No confident match: {answer.reason}."
    like = None if query.like_id is None else schemas.QueryInfo(kind="item", id=short(query.like_id))
    return json_answer(TextSearchResult(
        query=short(query.text, 200), like=like, k=query.k, method=answer.method, results=hits,
        confident=answer.confident, reason=answer.reason, score_name=answer.score_name, similarity=answer.similarity,
        floor=answer.floor, unknown_words=[short(w, 60) for w in answer.unknown_words],
        name_matches=answer.name_matches, message=message, took_ms=1000 * (time.perf_counter() - started)))
