"""The shapes of the REST API's answers (they are also its OpenAPI schema at /docs)."""
from __future__ import annotations

from pydantic import BaseModel, Field


class ItemSummary(BaseModel):
    """One catalog item as listed: enough to show a card."""

    id: str
    label: str | None = Field(description="The item's class (article type for the Kaggle catalog), if known.")
    name: str | None = Field(description="A display name (productDisplayName when the catalog has one).")
    image_url: str
    similar_url: str


class Item(ItemSummary):
    """One catalog item with all its metadata columns."""

    metadata: dict[str, str]


class Hit(ItemSummary):
    """One search result."""

    rank: int = Field(description="1 for the closest item.")
    cosine_similarity: float | None = Field(None, description="The raw cosine similarity of the item's embedding "
                                            "to the query's, from -1 to 1 (null for a Euclidean index). Not a "
                                            "probability: read `match_score` for how good the answer is.")
    score: float = Field(description="Closeness to the query in the index's metric (`metric`). Unit: for 'cosine', "
                                     "the cosine similarity of two unit vectors, a pure number in [-1, 1] (1 = the "
                                     "same direction, higher is closer); for 'euclidean', the Euclidean distance "
                                     "between two unit vectors, in embedding units, in [0, 2] (lower is closer).")
    metadata: dict[str, str]


class QueryInfo(BaseModel):
    kind: str = Field(description="'upload' or 'item'.")
    id: str | None = None
    filename: str | None = None


class SearchResult(BaseModel):
    """Top-k catalog items for one query, with the recommendation confidence (004's selective rule)."""

    query: QueryInfo
    k: int
    results: list[Hit] = Field(description="Best first. Shown to users only when `confident` is true.")
    match_score: float | None = Field(None, ge=0, le=1, description="How likely the top items are the right kind "
                                      "of product, 0 to 1: the confidence mapped through the index's calibration "
                                      "(the share of calibration queries at that confidence answered right). "
                                      "`confident` is true exactly when match_score >= match_threshold; 0 for a "
                                      "picture that is not a product photo. Null when the index was calibrated "
                                      "before the match score existed (run `stylespace calibrate-threshold`).")
    match_threshold: float | None = Field(None, ge=0, le=1, description="The match score (0 to 1) a result "
                                          "needs to be shown; null without a calibration.")
    confidence: float = Field(description="How sure the recommender is that the top items are relevant "
                                          "(computed without the catalog's labels). Unit: that of the score "
                                          "`confidence_score` names (a cosine similarity for 'top1', a mean or "
                                          "difference of them for 'mean3', 'margin1-10'...); comparable only with "
                                          "`threshold`, not a probability: shoppers read `match_score`.")
    confidence_score: str = Field(description="Which confidence score this is.")
    threshold: float | None = Field(description="The calibrated threshold the confidence must reach, in the "
                                                "confidence's unit; null when the "
                                                "index was never calibrated (`stylespace calibrate-threshold`).")
    confident: bool = Field(description="confidence >= threshold and the query looks like a product photo: show "
                                        "the results; otherwise 'No confident match'. Without a threshold, true "
                                        "unless the query is not a product photo.")
    reason: str | None = Field(None, description="Why there is no confident match, in words a shopper can read "
                                                 "(null when there is one).")
    not_a_product: bool = Field(False, description="The query was judged not a product photo (blank or almost "
                                                   "uniform, or like nothing in the catalog): never a confident "
                                                   "match, whatever the confidence.")
    metric: str = Field(description="What `score` is: 'cosine' (similarity) or 'euclidean' (distance).")
    message: str
    took_ms: float = Field(description="Time to answer on the server, in milliseconds.")


class Verdict(BaseModel):
    """003's style evaluator: the style distance of two items and whether they go well together."""

    distance: float = Field(description="Euclidean distance between the two items in the compatibility style space, "
                                        "in that space's units (a pure number >= 0; small = compatible).")
    cutoff: float = Field(description="Pairs at distance <= cutoff go well together (same unit as `distance`).")
    cutoff_method: str
    compatible: bool
    message: str
    a: QueryInfo
    b: QueryInfo


class ClassCount(BaseModel):
    label: str
    count: int


class ItemPage(BaseModel):
    label: str | None
    total: int
    offset: int
    limit: int
    items: list[ItemSummary]


class Stats(BaseModel):
    items: int = Field(description="Catalog size (items in the index).")
    classes: int
    model_id: str
    embedding_dim: int
    metric: str
    threshold: float | None = Field(description="The calibrated recommendation threshold, on the confidence score's "
                                                "own scale (null: not calibrated).")
    confidence_score: str
    match_threshold: float | None = Field(None, description="The same threshold as a match score, 0 to 1 (null: "
                                                            "not calibrated, or calibrated before match scores).")
    junk: dict | None = Field(None, description="The floors of the 'not a product photo' test, measured on the "
                                                "catalog's own items when the index was made.")
    compatibility: dict | None = Field(description="The loaded compatibility model (cutoff, backbone), or null.")
    catalog: str = Field(description="The catalog's file or folder name (never a path on the server).")
    text_search: dict | None = Field(None, description="Search by words (POST /search/text): the text model's "
                                                       "similarity floor, whether items have names (hybrid), its "
                                                       "encoder; null when no text model is loaded.")
    engine: str = Field(description="What embeds queries: 'onnx' (ONNX Runtime) or 'torch' (PyTorch).")
    query_views: list[str] = Field(["canonical"], description="The views an uploaded photo is searched as, each "
                                                              "item keeping its best score: canonical, and mirror "
                                                              "and unstretch when the server was started with "
                                                              "--query-views.")
    max_upload_bytes: int
    max_k: int
    searches: int = Field(description="Searches answered since start-up.")
    search_batches: int = Field(description="Batches they were answered in (concurrent searches share one).")
    decoding: dict = Field(description="Upload decoding: the pixel limit, and per lane (ordinary, heavy) its "
                                       "threads, queue bound, uploads running, waiting, done and refused as busy.")
    index: dict = Field(description="Where the served index stands (generation, revision) and how it kept up: "
                                    "catch_ups (changes applied in place), items_patched, view_rebuilds and "
                                    "reopens since start (a rebuild), writes committed through this process.")
    calibration: dict = Field(description="Whether the recommendation's calibration still describes the catalog: "
                                          "changed_share (items added, replaced or removed since it was made, as a "
                                          "share of its items), stale_share (the limit) and stale.")


class Health(BaseModel):
    status: str
    items: int
    model_id: str
