"""What the service answers from: the index, the query model, the recommender and the judge, loaded once.

:class:`StyleEngine` is the one place the web layer touches the rest of stylespace, so the HTTP code
deals in pixels, ids and plain records only.
"""
from __future__ import annotations

import dataclasses
import itertools
import logging
import os
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from stylespace.service.batching import QueryBatcher
from stylespace.service.headers import short
from stylespace.utils import StylespaceError

if TYPE_CHECKING:
    from stylespace.index.writes import WriteResult

NAME_COLUMNS = ("productDisplayName", "name", "title")
# How often searches look for changes another process made to the index (new stock, a new calibration):
# a write through one worker is visible on every worker within this (plus the change's own catch-up).
REFRESH_SECONDS = 0.25
# The recommendation's calibration is reported stale once this share of the items it was calibrated on
# was added, replaced or removed since (its threshold was chosen on the catalog as it was).
CALIBRATION_STALE_SHARE = 0.1

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
    embed_only: bool = False  # answer the image's vector (an item being written), not a ranking


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


class CatalogView:
    """What browsing, item pages and search results read: every item's record, in key order and by label.

    Built whole once (at start, and after a rebuild of the index), then patched in place with each change
    (:meth:`apply`: the rows added and the keys removed, read at the cost of the change), so a new item at a
    catalog of a million costs what one item costs. The engine reads and patches it under its lock.
    """

    def __init__(self):
        self.records: dict[str, ItemRecord] = {}
        self.sources: dict[str, str] = {}
        self.id_of_key: dict[int, str] = {}
        self.order: dict[str, None] = {}  # ids in key order (a dict: ordered, and an id leaves in O(1))
        self.by_label: dict[str, dict[str, None]] = {}

    @property
    def size(self) -> int:
        return len(self.order)

    @classmethod
    def of(cls, index) -> "CatalogView":
        view = cls()
        ids = index.ids
        view.add(index.items.rows(index.keys_of(ids)) if ids else {})
        return view

    def apply(self, changes) -> None:
        """Patch in an :class:`stylespace.index.backend.IndexChanges` (removed keys first: a replaced item
        leaves under its old key and comes back under its new one)."""
        self.remove(changes.removed)
        self.add(changes.added)

    def add(self, rows: dict) -> None:
        for key in sorted(rows):
            item_id, source, label, meta = rows[key]
            self.records[item_id] = record = _record(item_id, label, meta)
            self.sources[item_id] = source
            self.id_of_key[int(key)] = item_id
            self.order[item_id] = None
            if record.label is not None:
                self.by_label.setdefault(record.label, {})[item_id] = None

    def remove(self, keys) -> None:
        for key in keys:
            item_id = self.id_of_key.pop(int(key), None)
            if item_id is None:
                continue
            record = self.records.pop(item_id)
            self.sources.pop(item_id, None)
            self.order.pop(item_id, None)
            if record.label is not None:
                members = self.by_label.get(record.label, {})
                members.pop(item_id, None)
                if not members:
                    self.by_label.pop(record.label, None)

    @property
    def class_counts(self) -> list[tuple[str, int]]:
        return sorted(((label, len(members)) for label, members in self.by_label.items()), key=lambda kv: (-kv[1], kv[0]))

    def page(self, label: str | None, offset: int, limit: int) -> tuple[int, list[ItemRecord]]:
        ids = self.order if label is None else self.by_label[label]
        return len(ids), [self.records[i] for i in itertools.islice(ids, offset, offset + limit)]


@dataclasses.dataclass
class LiveCounters:
    """How the served index kept up with changes (in /stats; tests read them to know it was done in place).

    Attributes:
        catch_ups: changes applied in place (the index's ``refresh`` and the view patched with what changed).
        items_patched: items added to or removed from the view by them.
        view_rebuilds: times every item was read again into the view since start (after a rebuild of the
            index, or a backend that keeps no change log).
        reopens: times the index was opened again since start (a rebuild: a new generation).
        writes: changes committed through this process (the write API).
    """

    catch_ups: int = 0
    items_patched: int = 0
    view_rebuilds: int = 0
    reopens: int = 0
    writes: int = 0


@dataclasses.dataclass
class Upload:
    """One image to put into the catalog: its bytes, their canonical view (decoded by the upload decoder),
    the id (None: made from the image and metadata), label and metadata."""

    data: bytes
    view: object
    image_format: str | None
    id: str | None = None
    label: str | None = None
    meta: dict[str, str] = dataclasses.field(default_factory=dict)


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
        calibration_stale_share: the share of the items changed since the recommendation was calibrated
            beyond which ``/stats`` reports the calibration stale.
        query_views: the views an uploaded photo is searched as besides its canonical view
            (:class:`stylespace.data.query_views.QueryViews`, or its text; default: none): the upload decoder
            makes them (the search router asks for :attr:`query_views`), and each item keeps its best score.

    **Changes while serving.** One lock (``_lock``) guards the index handle, the recommender and the
    catalog view: a batch of searches holds it while it searches, a write while it commits and catches up,
    so a search sees the catalog before a change or after it, never half. Changes made by other processes
    (other workers, the CLI) are picked up by :meth:`refresh` from the index's marker, and applied in place:
    the index's own ``refresh`` (new vectors added to its structure) and the changed keys patched into the
    view (:class:`CatalogView`); only a rebuild of the index (a new generation) reads everything again.
    """

    def __init__(self, index, model, recommender, catalog, judge=None, device="cpu", max_batch: int = 32,
                 inference: str = "auto", text_model=None,
                 calibration_stale_share: float = CALIBRATION_STALE_SHARE, query_views=None):
        from stylespace.data.query_views import QueryViews
        from stylespace.inference import make_embedder
        from stylespace.models import model_id

        index.check_model(model_id(model), "queries embedded by the given model")
        self.query_views = QueryViews.of(query_views)
        self.index = index
        self.model = model.eval()
        # a batch of searches is one forward pass, every view of every upload in it
        self.embedder = make_embedder(self.model, inference, device, images=None,
                                      batch_size=max(max_batch, 1) * len(self.query_views.names))
        self.recommender = recommender
        self.catalog = catalog
        self.judge = judge
        self.device = device
        self.calibration_stale_share = calibration_stale_share
        self._lock = threading.RLock()
        # Search by words over the same index handle (its names are read again when the index changes).
        self.text_search = _text_search(index, text_model)
        # The index's items, read once per index generation and patched with each change: browsing and item
        # pages never touch SQLite.
        self._view = CatalogView.of(index)
        self._position = index.position
        self.live = LiveCounters()
        self.refresh_seconds = REFRESH_SECONDS
        self._checked = time.monotonic()
        self._refused = None  # the generation of an index made by another model, not adopted
        self._config_stamp = None  # index.json as last checked for the model that made it
        self._calibration_stamp = self._current_calibration()
        self._batcher = QueryBatcher(self._answer, max_batch=max_batch, name="stylespace-search")
        # Changes other processes commit are picked up by this thread too, so a worker that answers no
        # searches still shows them on its item pages within refresh_seconds.
        self._stopping = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="stylespace-index-watch", daemon=True)
        self._watcher.start()
        # One compatibility forward pass at a time: concurrent passes on a small CPU fight over its cores.
        self._judge_lock = threading.Lock()

    @classmethod
    def load(cls, index_dir: str | os.PathLike, model_dir: str | os.PathLike | None = None,
             compat_dir: str | os.PathLike | None = None, device: str = "auto",
             max_batch: int = 32, inference: str = "auto",
             text_model_dir: str | os.PathLike | None = None,
             calibration_stale_share: float = CALIBRATION_STALE_SHARE, query_views=None) -> "StyleEngine":
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
                   text_model=text_model, calibration_stale_share=calibration_stale_share, query_views=query_views)

    # --- what is loaded -----------------------------------------------------------------------------
    @property
    def size(self) -> int:
        return self._view.size

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
        with self._lock:
            marker = self.index.marker
            return {"items": self.size, "classes": len(self._view.by_label), "model_id": self.model_id,
                    "embedding_dim": self.model.output_dim, "metric": self.index.metric,
                    "threshold": self.recommender.threshold, "confidence_score": self.recommender.score_name,
                    "match_threshold": self.recommender.match_threshold,
                    "junk": self.recommender.junk.to_dict(),
                    "compatibility": compat, "catalog": Path(str(self.catalog.source_path)).name,
                    "text_search": None if self.text_search is None else {
                        "floor": self.text_search.text_model.floor, "names": self.text_search.has_names,
                        "encoder": self.text_search.text_model.config.encoder},
                    "engine": self.embedder.engine, "query_views": list(self.query_views.names),
                    "searches": self._batcher.queries, "search_batches": self._batcher.batches,
                    "index": {"generation": marker.generation, "revision": marker.revision, "worker": os.getpid(),
                              **dataclasses.asdict(self.live)},
                    "calibration": self.calibration_state()}

    def calibration_state(self) -> dict:
        """Whether the recommendation's calibration still describes the catalog: the share of its items
        changed since it was made, and ``stale`` once that passes :attr:`calibration_stale_share` (or when
        items changed and the share is not known, or a rebuild moved the similarities)."""
        from stylespace.recommend import load_calibration

        saved = load_calibration(self.index)
        if saved is None:
            return {"calibrated": False, "changed_share": None, "stale_share": self.calibration_stale_share,
                    "stale": False, "outdated": False}
        share = saved.changed_share(self.index)
        outdated = saved.outdated(self.index)
        stale = outdated or (share is None) or share > self.calibration_stale_share
        return {"calibrated": True, "changed_share": None if share is None else round(share, 6),
                "stale_share": self.calibration_stale_share, "stale": bool(stale), "outdated": bool(outdated)}

    # --- search -------------------------------------------------------------------------------------
    # Every search goes through the batcher: concurrent requests share one forward pass and one
    # index search (see batching.py); the sync methods wait for their answer, the submit_ ones do not.

    def submit_search(self, pixels: np.ndarray, k: int, blank: bool = False) -> Future:
        """Queue a search for an image (H, W, 3) uint8 at :attr:`input_size`, or for its views (V, H, W, 3), the
        canonical view first (``ViewSet.pixels``: each item keeps its best score over them); ``blank``: its
        picture is blank or almost uniform, ``View.blank``: never a confident match. The future holds a Ranking."""
        return self._batcher.submit(_Query(k=k, pixels=self._checked_pixels(pixels, views=True), blank=bool(blank)))

    def submit_similar(self, item_id: str, k: int) -> Future:
        """Queue a search for a catalog item (its stored vector), the item itself left out."""
        self.item(item_id)
        return self._batcher.submit(_Query(k=k, item_id=item_id))

    def search(self, pixels: np.ndarray, k: int, blank: bool = False) -> Ranking:
        """The ``k`` items closest to an image (H, W, 3) uint8 at :attr:`input_size`, or to its views (V, H, W, 3)."""
        return self.submit_search(pixels, k, blank).result()

    def similar(self, item_id: str, k: int) -> Ranking:
        """The ``k`` items closest to a catalog item, the item itself left out."""
        return self.submit_similar(item_id, k).result()

    def embed(self, pixels: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8 at the model's input size -> (N, D) unit vectors."""
        return self.embedder(np.asarray(pixels, dtype=np.uint8))

    def refresh(self) -> bool:
        """Pick up what other processes committed to the index (items added, changed or removed, a rebuild,
        a new calibration), in place; returns whether anything changed. Searches call it at most every
        ``refresh_seconds``. An index rebuilt by another model is not adopted: the service keeps answering
        from the one it has."""
        from stylespace.index import read_config
        from stylespace.index.catalog_index import config_stamp

        with self._lock:
            stamp = config_stamp(self.index.folder)
            if stamp is None or stamp != self._config_stamp:  # a rebuild (or a checkpoint): by which model?
                config = read_config(self.index.folder)
                if config.model_id != self.index.model_id:
                    if self._refused != config.generation:  # said once per generation
                        log.error("the index at %s is now made by model %s, not %s (the served model); still "
                                  "serving the index as it was loaded: restart the service with the new model",
                                  self.index.folder, config.model_id, self.index.model_id)
                        self._refused = config.generation
                    return False
                self._config_stamp = stamp
            self.index.refresh()
            return self._caught_up()

    def _caught_up(self) -> bool:
        """Under the lock, after the index handle moved (or may have): patch the view with what changed since
        the view's position, and load the recommender again when the calibration or the generation changed."""
        from stylespace.recommend import SelectiveRecommender

        position, calibration = self.index.position, self._current_calibration()
        if position == self._position and calibration == self._calibration_stamp:
            return False
        if position != self._position:
            changes = self.index.changes_since(self._position)
            if changes is None:  # a rebuild since, or a backend without a change log: read every item again
                self._view = CatalogView.of(self.index)
                self.live.view_rebuilds += 1
            else:
                self._view.apply(changes)
                self.live.items_patched += len(changes)
            self.live.catch_ups += 1
            if position.generation != self._position.generation:
                self.live.reopens += 1
                log.info("index %s reloaded: generation %d, %d items", self.index.folder, position.generation,
                         self._view.size)
        if calibration != self._calibration_stamp or position.generation != self._position.generation:
            self.recommender = SelectiveRecommender.from_index(self.index)
        self._position, self._calibration_stamp = position, calibration
        return True

    def _current_calibration(self):
        """What changes when a calibration is saved beside the index."""
        from stylespace.recommend import calibration_stamp

        return calibration_stamp(self.index.folder)

    # --- changing the catalog -------------------------------------------------------------------------
    # Every write is one transaction of the index (stylespace.index.writes, the code path the CLI takes
    # too), made under the engine's lock and applied to the view before the lock is let go: the answer
    # (with its revision) is sent once the change is committed and searches here already see it.

    def put_items(self, uploads, existing: str = "replace", remove_ids=()) -> "WriteResult":
        """Embed uploaded images (:class:`Upload`, decoded) and put them into the catalog, removing
        ``remove_ids`` in the same transaction; an upload without an id gets one made from its image and
        metadata (a retried request makes the same). Returns the :class:`WriteResult`."""
        from stylespace.index.writes import NewItem, made_id, put_items, save_image

        uploads = list(uploads)
        vectors = self.embed_views([u.view for u in uploads]) if uploads else []
        items = []
        for upload, vector in zip(uploads, vectors):
            item_id = upload.id if upload.id is not None else made_id(upload.data, upload.label, upload.meta)
            source = save_image(self.index.folder, upload.data, upload.image_format)
            items.append(NewItem(item_id, vector, upload.label, dict(upload.meta), source))
        return self._write(lambda: put_items(self.index, items, model_id=self.index.model_id, existing=existing,
                                             remove_ids=list(remove_ids)))

    def replace_image(self, item_id: str, upload) -> "WriteResult":
        """Give an item a new image (embedded again); its label and metadata are kept."""
        from stylespace.index.writes import current_items, put_items, NewItem, save_image

        vector = self.embed_views([upload.view])[0]
        source = save_image(self.index.folder, upload.data, upload.image_format)

        def write():
            held = current_items(self.index, [item_id])[item_id]
            item = NewItem(item_id, vector, held.label, held.meta, source)
            return put_items(self.index, [item], model_id=self.index.model_id, existing="replace")

        return self._write(write)

    def update_items(self, patches) -> "WriteResult":
        """Change labels and metadata (:class:`stylespace.index.writes.ItemPatch` by id)."""
        from stylespace.index.writes import update_items

        return self._write(lambda: update_items(self.index, patches))

    def remove_items(self, ids, missing_ok: bool = False) -> "WriteResult":
        from stylespace.index.writes import remove_items

        return self._write(lambda: remove_items(self.index, ids, missing_ok))

    def _write(self, change):
        with self._lock:
            # This worker may not have caught up yet with another's commit: a write judges the catalog as it is
            # now (an item another worker acknowledged a moment ago can be removed or changed here at once).
            self.refresh()
            try:
                result = change()
            finally:  # a change that failed half-way may still have caught the handle up with others' changes
                self._caught_up()
            if result.changed:
                self.live.writes += 1
            return result

    def embed_views(self, views) -> np.ndarray:
        """(N, D) vectors of decoded canonical views of uploads, embedded by the search worker (with the
        searches of the moment: one forward pass)."""
        futures = [self._batcher.submit(_Query(k=0, pixels=self._checked_pixels(v.pixels), embed_only=True))
                   for v in views]
        return np.stack([f.result() for f in futures])

    def _checked_pixels(self, pixels, views: bool = False) -> np.ndarray:
        """``pixels`` if they are one image (H, W, 3) uint8 at :attr:`input_size`, or with ``views`` also one or
        more views of it (V, H, W, 3)."""
        pixels = np.asarray(pixels)
        shape = (*self.input_size, 3)
        ok = pixels.shape == shape or (views and pixels.ndim == 4 and len(pixels) >= 1 and pixels.shape[1:] == shape)
        if pixels.dtype != np.uint8 or not ok:
            expected = f"{shape}" + (f" or views {('V', *shape)}" if views else "")
            raise StylespaceError(f"expected a uint8 image of shape {expected}, got {pixels.dtype} {pixels.shape}")
        return pixels

    def _answer(self, queries: list["_Query"]) -> list:
        """One batch: embed the images together, then one recommendation call for every search (an
        ``embed_only`` query, an item being written, is answered its vector). The whole batch holds the
        lock: it searches one state of the catalog. The forward pass runs before the lock is taken (it needs
        no catalog state), so a write or another worker's catch-up waits for a search, never for an embedding.
        An upload searched as several views (V, H, W, 3) has them all embedded in the same forward pass and
        searched together, each item keeping its best score."""
        from stylespace.index.query_views import first_rows, stack_views

        uploads = [i for i, q in enumerate(queries) if q.pixels is not None]
        if uploads:
            pixels, query_of = stack_views([queries[i].pixels for i in uploads])
            embedded = self.embed(pixels)  # every view of every upload: one forward pass
        with self._lock:
            now = time.monotonic()
            if now - self._checked >= self.refresh_seconds:
                self._checked = now
                try:
                    self.refresh()
                except StylespaceError as exc:  # a damaged or half-deleted index folder: keep what we have
                    log.error("could not reload the index at %s: %s", self.index.folder, exc)
            vectors = np.empty((len(queries), self.index.config.dim), dtype=np.float32)
            items = [i for i, q in enumerate(queries) if q.item_id is not None]
            views: dict[int, np.ndarray] = {}  # query -> all its views' vectors, for those searched as several
            if uploads:
                starts = first_rows(query_of, len(uploads))
                vectors[uploads] = embedded[starts]
                ends = np.append(starts[1:], len(embedded))
                views = {i: embedded[start:end] for i, start, end in zip(uploads, starts, ends) if end - start > 1}
            if items:
                vectors[items] = self.index.vectors([queries[i].item_id for i in items])
            searches = [i for i, q in enumerate(queries) if not q.embed_only]
            answers: list = [vectors[i].copy() if q.embed_only else None for i, q in enumerate(queries)]
            if not searches:
                return answers
            wanted = [queries[i] for i in searches]
            exclude = [[q.item_id] if q.item_id is not None else [] for q in wanted]
            searched, searched_of = vectors[searches], None
            if views:
                rows = [views.get(i, vectors[i][None]) for i in searches]
                searched = np.concatenate(rows)
                searched_of = np.repeat(np.arange(len(rows)), [len(r) for r in rows])
            recommendations = self.recommender.recommend(searched, k=max(q.k for q in wanted),
                                                         exclude_ids=exclude, model_id=self.index.model_id,
                                                         blank=[q.blank for q in wanted], query_of=searched_of)
            records = self._view.records
            for i, q, r in zip(searches, wanted, recommendations):
                answers[i] = Ranking(hits=[(records[hit.id], float(hit.score)) for hit in r.items[:q.k]],
                                     confidence=float(r.confidence), threshold=self.recommender.threshold,
                                     confident=r.confident, score_name=self.recommender.score_name, reason=r.reason,
                                     not_a_product=r.junk, match_score=r.match_score,
                                     match_threshold=self.recommender.match_threshold)
            return answers

    def search_text(self, text: str, k: int, *, where=None, like_id: str | None = None, mode: str = "auto",
                    text_weight: float = 1.0):
        """Items for words (a :class:`stylespace.index.text_search.TextAnswer`); with ``like_id``, for that
        catalog item and the words together, the item itself left out. Runs on the caller's thread."""
        search = self.text_search
        if search is None:
            raise StylespaceError("no text model is loaded")
        with self._lock:  # the index handle is changed in place by writes and catch-ups: one state per search
            if like_id is None:
                return search.search(text, k, where=where, mode=mode)
            self.item(like_id)
            vector = search.index.vectors([like_id])[0]
            return search.search(text, k, where=where, image_vector=vector, text_weight=text_weight,
                                 exclude_ids=[like_id])

    def close(self) -> None:
        """Stop the search worker (queued searches are answered first) and the index watcher."""
        self._stopping.set()
        self._batcher.close()
        self._watcher.join(5)

    def _watch(self) -> None:
        said = None  # the last failure logged: a folder that stays broken is said once, not four times a second
        while not self._stopping.wait(max(self.refresh_seconds, 0.05)):
            try:
                self.refresh()
                said = None
            except Exception as exc:  # the watcher outlives any failure; the index as loaded keeps answering
                if str(exc) != said:
                    said = str(exc)
                    if isinstance(exc, StylespaceError):  # a damaged or half-deleted index folder
                        log.error("could not reload the index at %s: %s", self.index.folder, exc)
                    else:
                        log.exception("could not catch up with the index at %s", self.index.folder)

    # --- the catalog --------------------------------------------------------------------------------
    def current_item(self, item_id: str) -> ItemRecord:
        """:meth:`item` after catching up with what other processes committed (for a write: the item may have
        been added a moment ago through another worker)."""
        with self._lock:
            self.refresh()
            return self.item(item_id)

    def item(self, item_id: str) -> ItemRecord:
        try:
            return self._view.records[item_id]
        except KeyError:
            raise UnknownItem(f"no item with id {short(item_id)!r} in this catalog") from None

    def _source(self, item_id: str) -> str:
        with self._lock:
            self.item(item_id)
            return self._view.sources[item_id]

    def image(self, item_id: str) -> tuple[bytes, str]:
        """The item's image bytes as stored in the catalog (folder or zip), or in the index folder for an
        item put through the write API, and their media type."""
        import mimetypes

        from stylespace.data import Item
        from stylespace.index.writes import image_path

        source = self._source(item_id)
        kept = image_path(self.index.folder, source)
        try:
            if kept is not None:
                return kept.read_bytes(), mimetypes.guess_type(kept.name)[0] or "application/octet-stream"
            item = Item(item_id, source)
            return self.catalog.read_bytes(item), self.catalog.media_type(item)
        except (OSError, KeyError) as exc:
            where = "the index folder" if kept is not None else f"the catalog {Path(str(self.catalog.source_path)).name}"
            raise UnreadableCatalogImage(f"item {item_id!r}: cannot read its image {Path(source).name!r} from {where} "
                                         f"({exc})") from None

    def item_pixels(self, item_id: str, size: tuple[int, int]) -> np.ndarray:
        """The item's image decoded at ``size`` = (H, W) by the training decoder (its canonical view)."""
        from stylespace.data import Item, load_view
        from stylespace.data.cache import decode_one
        from stylespace.index.writes import image_path

        source = self._source(item_id)
        kept = image_path(self.index.folder, source)
        if kept is not None:
            return load_view(kept, size=size).pixels
        return decode_one(self.catalog, Item(item_id, source), size)

    def classes(self) -> list[tuple[str, int]]:
        with self._lock:
            return self._view.class_counts

    def items(self, label: str | None, offset: int, limit: int) -> tuple[int, list[ItemRecord]]:
        """A page of items (all, or one label's), in catalog order; an unknown label is a 404."""
        with self._lock:
            if label is not None and label not in self._view.by_label:
                raise UnknownItem(f"no items with label {short(label)!r}; GET /classes lists the labels",
                                  "unknown_label", "label")
            return self._view.page(label, offset, limit)

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
