"""What the service answers from: the index, the query model, the recommender and the judge, loaded once.

:class:`StyleEngine` is the one place the web layer touches the rest of stylespace, so the HTTP code
deals in pixels, ids and plain records only.
"""
from __future__ import annotations

import collections
import dataclasses
import io
import mimetypes
import os
import threading

import numpy as np

from stylespace.utils import StylespaceError

NAME_COLUMNS = ("productDisplayName", "name", "title")


class UnknownItem(StylespaceError):
    """An item id that is not in the index (the API answers 404)."""


@dataclasses.dataclass(frozen=True)
class ItemRecord:
    """One catalog item as the service shows it."""

    id: str
    label: str | None
    name: str | None
    meta: dict[str, str]


@dataclasses.dataclass
class Ranking:
    """Top-k items for one query with the recommender's confidence.

    Attributes:
        hits: (item, score) best first; score as the index reports it (cosine similarity, or the
            Euclidean distance for a ``euclidean`` index).
        confidence: the recommender's label-free confidence for this query.
        threshold: the calibrated threshold stored with the index (None: never calibrated).
        confident: confidence >= threshold (the only case in which the page shows the hits); True
            when there is no threshold.
        score_name: which confidence score the recommender uses.
    """

    hits: list[tuple[ItemRecord, float]]
    confidence: float
    threshold: float | None
    confident: bool
    score_name: str


class StyleEngine:
    """Search, browse and compare over one catalog index.

    Args:
        index: the :class:`stylespace.index.CatalogIndex` to search (items, metadata, image sources).
        model: the :class:`stylespace.models.EmbeddingModel` that embeds queries (the index's own).
        recommender: the :class:`stylespace.recommend.SelectiveRecommender` with the calibrated threshold.
        catalog: the :class:`stylespace.data.Catalog` whose reader serves the items' image bytes.
        judge: a :class:`stylespace.compat.judge.CompatibilityJudge`, or None (no /compare).
        device: the torch device queries are embedded on.
    """

    def __init__(self, index, model, recommender, catalog, judge=None, device="cpu"):
        from stylespace.models import model_id

        index.check_model(model_id(model), "queries embedded by the given model")
        self.index = index
        self.model = model.eval()
        self.recommender = recommender
        self.catalog = catalog
        self.judge = judge
        self.device = device
        # The index's items, read once: browsing and item pages never touch SQLite or the catalog.
        ids = index.ids
        rows = index.items.rows(index.keys_of(ids)) if ids else {}
        self._records: dict[str, ItemRecord] = {}
        self._sources: dict[str, str] = {}
        for item_id, source, label, meta in rows.values():
            self._records[item_id] = _record(item_id, label, meta)
            self._sources[item_id] = source
        self._order = [i for i in ids if i in self._records]
        self._by_label: dict[str, list[str]] = collections.defaultdict(list)
        for item_id in self._order:
            label = self._records[item_id].label
            if label is not None:
                self._by_label[label].append(item_id)
        self._class_counts = sorted(((label, len(members)) for label, members in self._by_label.items()),
                                    key=lambda kv: (-kv[1], kv[0]))
        # One forward pass at a time: concurrent passes on a small CPU only fight over its cores.
        self._model_lock = threading.Lock()

    @classmethod
    def load(cls, index_dir: str | os.PathLike, model_dir: str | os.PathLike | None = None,
             compat_dir: str | os.PathLike | None = None, device: str = "auto") -> "StyleEngine":
        """Load everything the service needs from disk (once, at start-up)."""
        from stylespace.data import load_catalog
        from stylespace.index import CatalogIndex
        from stylespace.models import load_model
        from stylespace.recommend import SelectiveRecommender
        from stylespace.utils import pick_device

        target = pick_device(device)
        index = CatalogIndex.open(index_dir)
        folder = model_dir or index.model_dir
        if folder is None:
            raise StylespaceError(f"the index at {index_dir} records no model folder; pass the model that built it "
                                  "(--model MODEL_DIR)")
        model = load_model(folder, device=target)
        if index.catalog_path is None or not index.catalog_path.exists():
            raise StylespaceError(f"the index at {index_dir} names the catalog {index.catalog_path}, which is not "
                                  "there; its images are served from it (rebuild the index from where the catalog is)")
        catalog = load_catalog(index.catalog_path)
        judge = None
        if compat_dir is not None:
            from stylespace.compat.judge import CompatibilityJudge

            judge = CompatibilityJudge.load(compat_dir, device=str(target))
        return cls(index, model, SelectiveRecommender.from_index(index), catalog, judge, target)

    # --- what is loaded -----------------------------------------------------------------------------
    @property
    def size(self) -> int:
        return len(self._order)

    @property
    def model_id(self) -> str:
        return self.index.model_id

    @property
    def input_size(self) -> tuple[int, int]:
        return tuple(self.model.config.input_size)

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
                      "backbone": self.judge.model.config.backbone}
        return {"items": self.size, "classes": len(self._class_counts), "model_id": self.model_id,
                "embedding_dim": self.model.config.embedding_dim, "metric": self.index.metric,
                "threshold": self.recommender.threshold, "confidence_score": self.recommender.score_name,
                "compatibility": compat, "catalog": str(self.catalog.source_path)}

    # --- search -------------------------------------------------------------------------------------
    def embed(self, pixels: np.ndarray) -> np.ndarray:
        """(H, W, 3) or (N, H, W, 3) uint8 at the model's input size -> (N, D) unit vectors."""
        from stylespace.embeddings import embed_images

        # A copy: decoded images are read-only views of PIL's buffer, which torch will not wrap.
        batch = np.array(pixels[None] if pixels.ndim == 3 else pixels, dtype=np.uint8)
        with self._model_lock:
            return embed_images(self.model, batch, batch_size=len(batch), device=self.device)

    def search(self, pixels: np.ndarray, k: int) -> Ranking:
        """The ``k`` items closest to an image (H, W, 3) uint8 at :attr:`input_size`."""
        return self._rank(self.embed(pixels), k, exclude=None)

    def similar(self, item_id: str, k: int) -> Ranking:
        """The ``k`` items closest to a catalog item (its stored vector), the item itself left out."""
        self.item(item_id)
        return self._rank(self.index.vectors([item_id]), k, exclude=[[item_id]])

    def _rank(self, vectors: np.ndarray, k: int, exclude) -> Ranking:
        recommendation = self.recommender.recommend(vectors, k=k, exclude_ids=exclude,
                                                    model_id=self.index.model_id)[0]
        hits = [(self._records[hit.id], float(hit.score)) for hit in recommendation.items]
        return Ranking(hits=hits, confidence=float(recommendation.confidence), threshold=self.recommender.threshold,
                       confident=recommendation.confident, score_name=self.recommender.score_name)

    # --- the catalog --------------------------------------------------------------------------------
    def item(self, item_id: str) -> ItemRecord:
        try:
            return self._records[item_id]
        except KeyError:
            raise UnknownItem(f"no item with id {item_id!r} in this catalog") from None

    def image(self, item_id: str) -> tuple[bytes, str]:
        """The item's image bytes as stored in the catalog (folder or zip) and their media type."""
        from stylespace.data import Item

        item = Item(item_id, self._sources[self.item(item_id).id])
        try:
            data = self.catalog.read_bytes(item)
            media_type = mimetypes.guess_type(item.source)[0] or "application/octet-stream"
        except AttributeError:  # an in-memory catalog (Fashion-MNIST IDX): no stored file, so encode one
            buffer = io.BytesIO()
            self.catalog.read_image(item).save(buffer, format="PNG")
            data, media_type = buffer.getvalue(), "image/png"
        except (OSError, KeyError) as exc:
            raise StylespaceError(f"item {item_id!r}: cannot read its image {item.source!r} from "
                                  f"{self.catalog.source_path} ({exc})") from None
        return data, media_type

    def item_pixels(self, item_id: str, size: tuple[int, int]) -> np.ndarray:
        """The item's image decoded at ``size`` = (H, W) by the training decoder."""
        from stylespace.data import Item, load_rgb

        image = self.catalog.read_image(Item(item_id, self._sources[self.item(item_id).id]))
        return load_rgb(image, size=size)

    def classes(self) -> list[tuple[str, int]]:
        return list(self._class_counts)

    def items(self, label: str | None, offset: int, limit: int) -> tuple[int, list[ItemRecord]]:
        """A page of items (all, or one label's), in catalog order; an unknown label is a 404."""
        if label is None:
            ids = self._order
        elif label in self._by_label:
            ids = self._by_label[label]
        else:
            raise UnknownItem(f"no items with label {label!r}; GET /classes lists the labels")
        return len(ids), [self._records[i] for i in ids[offset:offset + limit]]

    # --- compatibility ------------------------------------------------------------------------------
    def compare(self, pixels_a: np.ndarray, pixels_b: np.ndarray) -> dict:
        if self.judge is None:
            raise StylespaceError("no compatibility model is loaded")
        with self._model_lock:
            verdict = self.judge.judge(pixels_a, pixels_b)
        return {"distance": verdict.distance, "cutoff": verdict.cutoff, "cutoff_method": self.judge.cutoff.method,
                "compatible": verdict.compatible, "message": verdict.message}


def _record(item_id: str, label: str | None, meta: dict) -> ItemRecord:
    meta = {str(k): str(v) for k, v in meta.items()}
    name = next((meta[c] for c in NAME_COLUMNS if meta.get(c)), None)
    return ItemRecord(item_id, label, name, meta)
