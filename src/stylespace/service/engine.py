"""What the service answers from: the index, the query model, the recommender and the judge, loaded once.

:class:`StyleEngine` is the one place the web layer touches the rest of stylespace, so the HTTP code
deals in pixels, ids and plain records only.
"""
from __future__ import annotations

import collections
import dataclasses
import os
import logging
import threading
import time
from pathlib import Path
from concurrent.futures import Future

import numpy as np

from stylespace.service.batching import QueryBatcher
from stylespace.service.headers import short
from stylespace.utils import StylespaceError

NAME_COLUMNS = ("productDisplayName", "name", "title")
# How often searches look for changes another process made to the index (new stock, a new calibration).
REFRESH_SECONDS = 2.0

log = logging.getLogger("stylespace.service")


class UnknownItem(StylespaceError):
    """An item id (or a label) that is not in the index: the API answers 404 with ``code`` (a code of
    :data:`stylespace.service.errors.CODES`) naming the request ``field``."""

    def __init__(self, message: str, code: str = "unknown_item", field: str = "item_id"):
        super().__init__(message)
        self.code, self.field = code, field


class UnreadableCatalogImage(StylespaceError):
    """A catalog item whose image cannot be read from the catalog (moved, damaged)."""

    code = "unreadable_catalog_image"


@dataclasses.dataclass(frozen=True)
class ItemRecord:
    """One catalog item as the service shows it."""

    id: str
    label: str | None
    name: str | None
    meta: dict[str, str]


@dataclasses.dataclass
class _Query:
    """One queued search: an image's pixels or a catalog item's id, and how many items to return."""

    k: int
    pixels: np.ndarray | None = None
    item_id: str | None = None
    blank: bool = False  # the uploaded picture is blank or almost uniform (View.blank)


@dataclasses.dataclass
class Ranking:
    """Top-k items for one query with the recommender's confidence.

    Attributes:
        hits: (item, score) best first; score as the index reports it (cosine similarity, or the
            Euclidean distance for a ``euclidean`` index).
        confidence: the recommender's label-free confidence for this query.
        threshold: the calibrated threshold stored with the index (None: never calibrated).
        confident: confidence >= threshold and the query passed the junk test (the only case in which
            the page shows the hits); True when there is no threshold, unless the query is junk.
        score_name: which confidence score the recommender uses.
        reason: why it is not confident, for the shopper (None when it is); see ``not_a_product``.
        not_a_product: the query was judged not a product photo (blank, or unlike anything in the catalog).
        match_score: the confidence mapped through the calibration to [0, 1], >= ``match_threshold`` exactly
            when confident (None: the index's calibration has no match scale; calibrate it again).
    """

    hits: list[tuple[ItemRecord, float]]
    confidence: float
    threshold: float | None
    confident: bool
    score_name: str
    reason: str | None = None
    not_a_product: bool = False
    match_score: float | None = None
    match_threshold: float | None = None


@dataclasses.dataclass(frozen=True)
class _CatalogView:
    """What browsing reads, built from one generation of the index and replaced whole when it changes."""

    records: dict
    sources: dict
    order: list
    by_label: dict
    class_counts: list

    @property
    def size(self) -> int:
        return len(self.order)

    @classmethod
    def of(cls, index) -> "_CatalogView":
        ids = index.ids
        rows = index.items.rows(index.keys_of(ids)) if ids else {}
        records, sources = {}, {}
        for item_id, source, label, meta in rows.values():
            records[item_id] = _record(item_id, label, meta)
            sources[item_id] = source
        order = [i for i in ids if i in records]
        by_label = collections.defaultdict(list)
        for item_id in order:
            if records[item_id].label is not None:
                by_label[records[item_id].label].append(item_id)
        counts = sorted(((label, len(members)) for label, members in by_label.items()), key=lambda kv: (-kv[1], kv[0]))
        return cls(records, sources, order, dict(by_label), counts)


class StyleEngine:
    """Search, browse and compare over one catalog index.

    Args:
        index: the :class:`stylespace.index.CatalogIndex` to search (items, metadata, image sources).
        model: the :class:`stylespace.models.EmbeddingModel` that embeds queries (the index's own).
        recommender: the :class:`stylespace.recommend.SelectiveRecommender` with the calibrated threshold.
        catalog: the :class:`stylespace.data.Catalog` whose reader serves the items' image bytes.
        judge: a :class:`stylespace.compat.judge.CompatibilityJudge`, or None (no /compare).
        device: the torch device queries are embedded on.
        max_batch: the most concurrent searches answered by one forward pass and one index search.
        inference: what embeds queries: ``auto`` (ONNX Runtime on a CPU when installed, else PyTorch), ``onnx``
            or ``torch`` (:func:`stylespace.inference.make_embedder`; the ONNX file is made at start-up).
    """

    def __init__(self, index, model, recommender, catalog, judge=None, device="cpu", max_batch: int = 32,
                 inference: str = "auto", text_model=None):
        from stylespace.inference import make_embedder
        from stylespace.models import model_id

        index.check_model(model_id(model), "queries embedded by the given model")
        self.index = index
        self.model = model.eval()
        self.embedder = make_embedder(self.model, inference, device, images=None, batch_size=max(max_batch, 1))
        self.recommender = recommender
        self.catalog = catalog
        self.judge = judge
        self.device = device
        self.text_search = _text_search(index, text_model)
        # The index's items, read once per index generation: browsing and item pages never touch SQLite.
        self._view = _CatalogView.of(index)
        self.refresh_seconds = REFRESH_SECONDS
        self._checked = time.monotonic()
        self._refused = None  # the stamp of an index made by another model, not adopted
        self._stamp = self._current_stamp()
        self._batcher = QueryBatcher(self._answer, max_batch=max_batch, name="stylespace-search")
        # One compatibility forward pass at a time: concurrent passes on a small CPU fight over its cores.
        self._judge_lock = threading.Lock()

    @classmethod
    def load(cls, index_dir: str | os.PathLike, model_dir: str | os.PathLike | None = None,
             compat_dir: str | os.PathLike | None = None, device: str = "auto",
             max_batch: int = 32, inference: str = "auto",
             text_model_dir: str | os.PathLike | None = None) -> "StyleEngine":
        """Load everything the service needs from disk (once, at start-up). The text model is
        ``text_model_dir``, else the one beside the image model (``MODEL/text``) when there is one."""
        from stylespace.data import load_catalog
        from stylespace.index import CatalogIndex
        from stylespace.index.queries import open_query_model
        from stylespace.recommend import SelectiveRecommender
        from stylespace.utils import pick_device

        target = pick_device(device)
        index = CatalogIndex.open(index_dir)
        model = open_query_model(index, model_dir, device)
        if index.catalog_path is None or not index.catalog_path.exists():
            raise StylespaceError(f"the index at {index_dir} names the catalog {index.catalog_path}, which is not "
                                  "there; its images are served from it (rebuild the index from where the catalog is)")
        catalog = load_catalog(index.catalog_path)
        judge = None
        if compat_dir is not None:
            from stylespace.compat.judge import CompatibilityJudge

            judge = CompatibilityJudge.load(compat_dir, device=str(target))
        text_model = _load_text_model(index, text_model_dir)
        return cls(index, model, SelectiveRecommender.from_index(index), catalog, judge, target, max_batch, inference,
                   text_model)

    # --- what is loaded -----------------------------------------------------------------------------
    @property
    def size(self) -> int:
        return len(self._view.order)

    @property
    def model_id(self) -> str:
        return self.index.model_id

    @property
    def input_size(self) -> tuple[int, int]:
        return tuple(self.model.config.input_size)

    @property
    def can_search_text(self) -> bool:
        return self.text_search is not None

    @property
    def can_compare(self) -> bool:
        return self.judge is not None

    @property
    def compat_input_size(self) -> tuple[int, int]:
        return self.judge.input_size

    def stats(self) -> dict:
        compat = None
        if self.judge is not None:
            cutoff = self.judge.cutoff
            compat = {"cutoff": cutoff.value, "cutoff_method": cutoff.method, "tpr": cutoff.tpr, "fpr": cutoff.fpr,
                      "backbone": self.judge.model.config.backbone, "model": self.judge.name}
        return {"items": self.size, "classes": len(self._view.class_counts), "model_id": self.model_id,
                "embedding_dim": self.model.output_dim, "metric": self.index.metric,
                "threshold": self.recommender.threshold, "confidence_score": self.recommender.score_name,
                "match_threshold": self.recommender.match_threshold,
                "junk": self.recommender.junk.to_dict(),
                "compatibility": compat, "catalog": Path(str(self.catalog.source_path)).name,
                "text_search": None if self.text_search is None else {
                    "floor": self.text_search.text_model.floor, "names": self.text_search.has_names,
                    "encoder": self.text_search.text_model.config.encoder},
                "engine": self.embedder.engine,
                "searches": self._batcher.queries, "search_batches": self._batcher.batches}

    # --- search -------------------------------------------------------------------------------------
    # Every search goes through the batcher: concurrent requests share one forward pass and one
    # index search (see batching.py); the sync methods wait for their answer, the submit_ ones do not.

    def submit_search(self, pixels: np.ndarray, k: int, blank: bool = False) -> Future:
        """Queue a search for an image (H, W, 3) uint8 at :attr:`input_size` (``blank``: its picture is blank
        or almost uniform, ``View.blank``: never a confident match); the future holds a Ranking."""
        pixels = np.asarray(pixels)
        if pixels.dtype != np.uint8 or pixels.shape != (*self.input_size, 3):
            raise StylespaceError(f"expected a uint8 image of shape {(*self.input_size, 3)}, got "
                                  f"{pixels.dtype} {pixels.shape}")
        return self._batcher.submit(_Query(k=k, pixels=pixels, blank=bool(blank)))

    def submit_similar(self, item_id: str, k: int) -> Future:
        """Queue a search for a catalog item (its stored vector), the item itself left out."""
        self.item(item_id)
        return self._batcher.submit(_Query(k=k, item_id=item_id))

    def search(self, pixels: np.ndarray, k: int, blank: bool = False) -> Ranking:
        """The ``k`` items closest to an image (H, W, 3) uint8 at :attr:`input_size`."""
        return self.submit_search(pixels, k, blank).result()

    def similar(self, item_id: str, k: int) -> Ranking:
        """The ``k`` items closest to a catalog item, the item itself left out."""
        return self.submit_similar(item_id, k).result()

    def embed(self, pixels: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8 at the model's input size -> (N, D) unit vectors."""
        return self.embedder(np.asarray(pixels, dtype=np.uint8))

    def refresh(self) -> bool:
        """Pick up what another process wrote to the index (items added or removed, a rebuild, a new
        calibration); returns whether anything changed. Searches call it at most every
        ``refresh_seconds``, from the one thread that searches, so no search sees half of a change.
        An index rebuilt by another model is not adopted: the service keeps answering from the one it has."""
        from stylespace.index import CatalogIndex
        from stylespace.recommend import SelectiveRecommender

        current = self._current_stamp()
        if current == self._stamp or current == self._refused:
            return False
        fresh = CatalogIndex.open(self.index.folder)
        if fresh.model_id != self.index.model_id:
            log.error("the index at %s is now made by model %s, not %s (the served model); still serving the "
                      "index as it was loaded: restart the service with the new model", self.index.folder,
                      fresh.model_id, self.index.model_id)
            fresh.close()
            self._refused = current  # said once; looked at again when the index changes again
            return False
        recommender = SelectiveRecommender.from_index(fresh)
        view = _CatalogView.of(fresh)
        text_search = None if self.text_search is None else _text_search(fresh, self.text_search.text_model)
        old, self.index = self.index, fresh
        self.recommender, self._view, self._stamp, self.text_search = recommender, view, current, text_search
        old.close()
        log.info("index %s reloaded: generation %d, %d items", fresh.folder, fresh.config.generation, view.size)
        return True

    def _current_stamp(self) -> tuple:
        """What changes when another process changes the index (its marker) or its calibration."""
        from stylespace.index import CatalogIndex
        from stylespace.recommend import calibration_stamp

        return CatalogIndex.current_marker(self.index.folder), calibration_stamp(self.index.folder)

    def _answer(self, queries: list["_Query"]) -> list[Ranking]:
        """One batch: embed the images together, then one recommendation call for every query."""
        now = time.monotonic()
        if now - self._checked >= self.refresh_seconds:
            self._checked = now
            try:
                self.refresh()
            except StylespaceError as exc:  # a damaged or half-deleted index folder: keep what we have
                log.error("could not reload the index at %s: %s", self.index.folder, exc)
        vectors = np.empty((len(queries), self.index.config.dim), dtype=np.float32)
        uploads = [i for i, q in enumerate(queries) if q.pixels is not None]
        items = [i for i, q in enumerate(queries) if q.item_id is not None]
        if uploads:
            vectors[uploads] = self.embed(np.stack([queries[i].pixels for i in uploads]))
        if items:
            vectors[items] = self.index.vectors([queries[i].item_id for i in items])
        exclude = [[q.item_id] if q.item_id is not None else [] for q in queries]
        recommendations = self.recommender.recommend(vectors, k=max(q.k for q in queries), exclude_ids=exclude,
                                                     model_id=self.index.model_id, blank=[q.blank for q in queries])
        records = self._view.records
        return [Ranking(hits=[(records[hit.id], float(hit.score)) for hit in r.items[:q.k]],
                        confidence=float(r.confidence), threshold=self.recommender.threshold,
                        confident=r.confident, score_name=self.recommender.score_name, reason=r.reason,
                        not_a_product=r.junk, match_score=r.match_score,
                        match_threshold=self.recommender.match_threshold)
                for q, r in zip(queries, recommendations)]

    def search_text(self, text: str, k: int, *, where=None, like_id: str | None = None, mode: str = "auto",
                    text_weight: float = 1.0):
        """Items for words (a :class:`stylespace.index.text_search.TextAnswer`); with ``like_id``, for that
        catalog item and the words together, the item itself left out. Runs on the caller's thread."""
        search = self.text_search
        if search is None:
            raise StylespaceError("no text model is loaded")
        if like_id is None:
            return search.search(text, k, where=where, mode=mode)
        self.item(like_id)
        vector = search.index.vectors([like_id])[0]
        return search.search(text, k, where=where, image_vector=vector, text_weight=text_weight,
                             exclude_ids=[like_id])

    def close(self) -> None:
        """Stop the search worker (queued searches are answered first)."""
        self._batcher.close()

    # --- the catalog --------------------------------------------------------------------------------
    def item(self, item_id: str) -> ItemRecord:
        try:
            return self._view.records[item_id]
        except KeyError:
            raise UnknownItem(f"no item with id {short(item_id)!r} in this catalog") from None

    def image(self, item_id: str) -> tuple[bytes, str]:
        """The item's image bytes as stored in the catalog (folder or zip) and their media type."""
        from stylespace.data import Item

        item = Item(item_id, self._view.sources[self.item(item_id).id])
        try:
            data, media_type = self.catalog.read_bytes(item), self.catalog.media_type(item)
        except (OSError, KeyError) as exc:
            raise UnreadableCatalogImage(f"item {item_id!r}: cannot read its image {Path(item.source).name!r} "
                                         f"from the catalog {Path(str(self.catalog.source_path)).name} ({exc})") from None
        return data, media_type

    def item_pixels(self, item_id: str, size: tuple[int, int]) -> np.ndarray:
        """The item's image decoded at ``size`` = (H, W) by the training decoder (its canonical view)."""
        from stylespace.data import Item
        from stylespace.data.cache import decode_one

        return decode_one(self.catalog, Item(item_id, self._view.sources[self.item(item_id).id]), size)

    def classes(self) -> list[tuple[str, int]]:
        return list(self._view.class_counts)

    def items(self, label: str | None, offset: int, limit: int) -> tuple[int, list[ItemRecord]]:
        """A page of items (all, or one label's), in catalog order; an unknown label is a 404."""
        view = self._view
        if label is None:
            ids = view.order
        elif label in view.by_label:
            ids = view.by_label[label]
        else:
            raise UnknownItem(f"no items with label {short(label)!r}; GET /classes lists the labels", "unknown_label",
                              "label")
        return len(ids), [view.records[i] for i in ids[offset:offset + limit]]

    # --- compatibility ------------------------------------------------------------------------------
    def compare(self, pixels_a: np.ndarray, pixels_b: np.ndarray) -> dict:
        if self.judge is None:
            raise StylespaceError("no compatibility model is loaded")
        with self._judge_lock:
            verdict = self.judge.judge(pixels_a, pixels_b)
        return {"distance": verdict.distance, "cutoff": verdict.cutoff, "cutoff_method": self.judge.cutoff.method,
                "compatible": verdict.compatible, "message": verdict.message}


def _load_text_model(index, text_model_dir):
    """The text model to serve: ``text_model_dir`` (which must load and fit the index's image model), else the
    one beside the index's image model when there is one, else None (search by words answers 503)."""
    from stylespace.index.text_search import default_text_model_dir
    from stylespace.text import TextModel

    folder = text_model_dir or default_text_model_dir(index)
    if folder is None or (text_model_dir is None and not Path(folder).exists()):
        return None
    return TextModel.load(folder, image_model_id=index.model_id)


def _text_search(index, text_model):
    from stylespace.index.text_search import TextSearch

    if text_model is None:
        return None
    search = TextSearch(index, text_model)
    search.space  # read the items and index their names now, not on the first query
    return search


def _record(item_id: str, label: str | None, meta: dict) -> ItemRecord:
    meta = {str(k): str(v) for k, v in meta.items()}
    name = next((meta[c] for c in NAME_COLUMNS if meta.get(c)), None)
    return ItemRecord(item_id, label, name, meta)
