"""``CatalogIndex``: a catalog's embeddings, searchable, in one folder, updated atomically.

Folder layout::

    INDEX_DIR/
      index.json               IndexConfig: model, metric, kind, threshold, and the current generation's files
      items-000007.sqlite      items (id <-> key, source, label, metadata, vector), see ``items.py``
      vectors-000007.faiss     the FAISS structure over the same keys
      .lock                    held by a writer

Every change (build, add, remove, rebuild) writes a *new generation*: the item table is copied, changed
and closed, the FAISS structure is written beside it, and only then is ``index.json`` replaced (one
``os.replace``) to name the new files. A crash at any point before that rename leaves ``index.json``
naming the previous generation, whose files were never touched, so the previous index loads and
answers; the orphaned files are removed by the next write. The previous generation's files are kept
one generation longer so that a reader that has just read ``index.json`` can still open them.
"""
from __future__ import annotations

import collections
import contextlib
import dataclasses
import datetime as _dt
import hashlib
import io
import json
import math
import os
import re
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from stylespace.embeddings import vectors_and_model
from stylespace.index import structures
from stylespace.index.neighbour_memo import NeighbourMemo
from stylespace.index.config import CONFIG_FILE, IndexConfig
from stylespace.index.items import ItemStore
from stylespace.utils import StylespaceError, atomic_write, load_dataclass, write_json

_GENERATION_FILE = re.compile(r"^(items|vectors)-(\d{6,})\.(sqlite|faiss)(-journal)?$")


@dataclasses.dataclass
class Hit:
    """One search result: the catalog item's ``id``, its ``score`` (cosine similarity, or Euclidean
    distance when the metric is ``euclidean``), its ``label`` (None when unlabelled), image ``source``
    and metadata."""

    id: str
    score: float
    meta: dict[str, str]
    label: str | None = None
    source: str = ""


@dataclasses.dataclass
class Neighbours:
    """Raw search results as arrays, for code that scores them (recommendation confidence).

    Attributes:
        keys: (Q, k) int64 item keys, nearest first; -1 where fewer than k items qualified.
        similarities: (Q, k) float32, larger is closer: the cosine (metric ``cosine``) or minus the
            Euclidean distance (``euclidean``); NaN where the key is -1.
        metric: the metric of the index.
    """

    keys: np.ndarray
    similarities: np.ndarray
    metric: str

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def k(self) -> int:
        return self.keys.shape[1]

    @property
    def counts(self) -> np.ndarray:
        """(Q,) how many neighbours each query got."""
        return (self.keys >= 0).sum(axis=1)

    def head(self, k: int) -> "Neighbours":
        return Neighbours(self.keys[:, :k], self.similarities[:, :k], self.metric)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


class CatalogIndex:
    """A searchable catalog index in a folder. Open with :meth:`open`, make with :meth:`create`.

    >>> index = CatalogIndex.create("idx", ids, vectors, model_id="1d528f4c0cfa")
    >>> index.search(query_vectors, k=10, where={"gender": "Men"}, model_id="1d528f4c0cfa")[0][0]
    Hit(id='15970', score=0.93, meta={...})
    """

    def __init__(self, folder: Path, config: IndexConfig, items: ItemStore, structure):
        self.folder = Path(folder)
        self.config = config
        self.items = items
        self.structure = structure
        self._stale = items.stale_keys()
        self._where_cache: dict[str, np.ndarray] = {}
        self._neighbour_memo = NeighbourMemo()  # items' own neighbours, searched once per generation

    # --- opening and making ------------------------------------------------------------------------

    @classmethod
    def open(cls, folder: str | os.PathLike) -> "CatalogIndex":
        """Open the index in ``folder`` (its current generation)."""
        folder = Path(folder)
        config = read_config(folder)
        items = ItemStore(folder / config.items_file)
        faiss_path = folder / config.faiss_file
        if not faiss_path.is_file():
            items.close()
            raise StylespaceError(f"{faiss_path}: the index's FAISS file is missing; the index folder is damaged "
                                  "(rebuild it with `stylespace index`)")
        try:
            structure = structures.from_bytes(faiss_path.read_bytes())
        except RuntimeError as exc:
            items.close()
            raise StylespaceError(f"{faiss_path}: not a readable FAISS index ({str(exc).splitlines()[0]})") from None
        return cls(folder, config, items, structure)

    @classmethod
    def create(cls, folder: str | os.PathLike, ids: Sequence[str], vectors, *, model_id: str,
               metric: str = "cosine", kind: str = "exact", labels: Sequence[str | None] | None = None,
               metas: Sequence[Mapping[str, str]] | None = None, sources: Sequence[str] | None = None,
               overwrite: bool = False, measure_recall: bool = True, **settings: Any) -> "CatalogIndex":
        """Make an index of ``vectors`` (N, D) with item ``ids`` in ``folder``.

        Args:
            model_id: the id of the model that embedded ``vectors`` (recorded; queries are checked against it).
            metric, kind: see :class:`IndexConfig`.
            labels, metas, sources: per item, optional (labels are used only to calibrate recommendations).
            overwrite: replace an index already in ``folder`` (atomically, like any other write).
            measure_recall: for ``ivf``/``hnsw``, measure recall@10 against exact search (stored in index.json).
            settings: other :class:`IndexConfig` fields (nlist, nprobe, hnsw_m, model_path, catalog, ...).
        """
        folder = Path(folder)
        vectors = np.asarray(vectors)
        if vectors.ndim != 2:
            raise StylespaceError(f"index vectors: expected a 2-D (N, D) array, got shape {vectors.shape}")
        unknown = sorted(set(settings) - {f.name for f in dataclasses.fields(IndexConfig)})
        if unknown:
            raise StylespaceError(f"unknown index setting(s) {unknown}")
        config = IndexConfig(model_id=model_id, dim=int(vectors.shape[1]), metric=metric, kind=kind, **settings)
        config.validate()
        config.created = _now()
        rows = _ItemRows.build(ids, len(vectors), labels, metas, sources)
        if not config.metadata_columns:
            config.metadata_columns = sorted({column for meta in rows.metas for column in meta})
        prepared = structures.prepare_vectors(vectors, config.metric, config.dim, "index vectors")
        if (folder / CONFIG_FILE).exists() and not overwrite:
            raise StylespaceError(f"{folder} already holds an index; pass overwrite (--overwrite) to replace it, "
                                  "or add items with `stylespace index add`")
        folder.mkdir(parents=True, exist_ok=True)
        with _writer_lock(folder):
            previous = read_config(folder).generation if (folder / CONFIG_FILE).exists() else 0
            generation = previous + 1
            store = ItemStore.create(folder / _items_name(generation))
            try:
                keys = store.insert(rows.ids, rows.sources, rows.labels, rows.metas, vectors)
                store.commit()
            finally:
                store.close()
            structure = structures.new_structure(config, prepared)
            structure.add_with_ids(prepared, keys)
            config.whitened_items = len(keys) if structures.is_whitened(structure) else 0
            if config.kind != "exact" and measure_recall and len(keys):
                config.recall_at_10 = structures.measure_recall(structure, config, keys, prepared)
            config.typicality = structures.typicality(structure, config, keys, prepared)
            config.count = len(keys)
            index = cls._commit(folder, config, generation, structure)
        return index

    # --- what it holds ---------------------------------------------------------------------------------

    def __len__(self) -> int:
        return self.config.count

    def __contains__(self, item_id: str) -> bool:
        return bool(self.items.find([item_id]))

    @property
    def model_id(self) -> str:
        """The id of the model that embedded the items."""
        return self.config.model_id

    @property
    def metric(self) -> str:
        return self.config.metric

    @property
    def model_dir(self) -> Path | None:
        """The model folder the index was built with (None when it was built from bare vectors)."""
        return Path(self.config.model_path) if self.config.model_path else None

    @property
    def catalog_path(self) -> Path | None:
        """The catalog the items came from (None when unknown)."""
        return Path(self.config.catalog) if self.config.catalog else None

    @property
    def ids(self) -> list[str]:
        """Every item id, in key order (the order items were added)."""
        return self.items.all_ids()

    def keys_of(self, ids: Sequence[str]) -> np.ndarray:
        """(N,) int64 keys of item ids (stable for an item's whole life in the index)."""
        return self.items.keys_of(list(ids))

    def vectors(self, ids: Sequence[str]) -> np.ndarray:
        """(N, D) the stored vectors of item ids, normalised for cosine (usable as queries)."""
        return self.vectors_of_keys(self.keys_of(ids))

    def vectors_of_keys(self, keys: np.ndarray) -> np.ndarray:
        """Stored vectors of ``keys`` (any shape) -> ``keys.shape + (D,)``, normalised for cosine (what a
        search takes as a query; a whitened index transforms them further, see :meth:`search_space`);
        NaN rows for -1."""
        keys = np.asarray(keys, dtype=np.int64)
        raw = self.items.vectors(keys, self.config.dim).reshape(-1, self.config.dim)
        valid = ~np.isnan(raw).any(axis=1)
        if self.config.metric == "cosine" and valid.any():
            raw[valid] = structures.prepare_vectors(raw[valid], "cosine")
        return raw.reshape(*keys.shape, self.config.dim)

    def search_space(self, vectors: np.ndarray) -> np.ndarray:
        """(N, D) vectors as stored (see :meth:`vectors_of_keys`) -> as searches compare them: whitened and
        normalised when the index is whitened, unchanged otherwise. Their dot products (cosine) or
        distances (euclidean) are the similarities searches report."""
        return structures.search_space(self.structure, vectors)

    def centre_distances(self, vectors: np.ndarray) -> np.ndarray | None:
        """(N,) distance of vectors as stored (see :meth:`vectors_of_keys`) from the catalog's centre under
        the index's whitening (a Mahalanobis distance); None when the index is not whitened."""
        return structures.centre_distances(self.structure, vectors)

    def labels_of_keys(self, keys: np.ndarray) -> np.ndarray:
        """Labels of ``keys`` (any shape, object array; None for -1 and unlabelled items)."""
        return self.items.labels(keys)

    def check_model(self, model_id: str | None, what: str = "the query vectors") -> None:
        """Refuse vectors made by another model than the index's (no check when ``model_id`` is None)."""
        if model_id is not None and model_id != self.config.model_id:
            made_by = self.config.model_id + (f" ({self.config.model_path})" if self.config.model_path else "")
            raise StylespaceError(
                f"{what} were embedded by model {model_id}, but the index at {self.folder} was made by model "
                f"{made_by}; embed with that model, or build a new index with this model (`stylespace index`)")

    @property
    def view_outdated(self) -> bool:
        """True when the catalog's images were decoded by another image preprocessing than today's (an index
        built from a catalog before the canonical view, or with an older one): image queries would be decoded
        differently from the items they are compared with."""
        from stylespace.data.images import VIEW_VERSION

        return bool(self.config.catalog) and self.config.view_version != VIEW_VERSION

    def check_view(self) -> None:
        """Refuse image queries against an index whose catalog images were decoded another way (see
        :attr:`view_outdated`), saying how to rebuild it."""
        from stylespace.data.images import VIEW_VERSION

        if self.view_outdated:
            made = (f"image preprocessing version {self.config.view_version}" if self.config.view_version
                    else "the image preprocessing before the canonical view")
            raise StylespaceError(
                f"the index at {self.folder} was built with {made}; query images are now decoded with version "
                f"{VIEW_VERSION} (EXIF orientation, margins trimmed), so they would not match its items. Build it "
                f"again: stylespace index build {self.config.model_path or 'MODEL'} {self.config.catalog} "
                f"-o {self.folder} --overwrite")

    # --- search ---------------------------------------------------------------------------------------

    def neighbours(self, queries, k: int = 10, *, exclude_ids=None, where: Mapping[str, Any] | None = None,
                   model_id: str | None = None, prepared: bool = False) -> Neighbours:
        """The ``k`` nearest live items of each query that pass the filters, as arrays.

        Args:
            queries: (Q, D) vectors, or an object with ``vectors`` and ``model_id`` (``Embeddings``).
            k: neighbours per query.
            exclude_ids: ids never returned: a list of ids for every query, or one list per query.
            where: metadata filter, column -> value or list of values (any value matches; all columns must).
            model_id: the model that embedded ``queries``; refused when it is not the index's model.
            prepared: ``queries`` are already prepared for this index's metric (skips normalising).
        Returns:
            :class:`Neighbours` (Q, k); rows are padded with key -1 when fewer than k items qualify.
        """
        queries, model_id = vectors_and_model(queries, model_id)
        self.check_model(model_id)
        if not isinstance(k, (int, np.integer)) or k < 1:
            raise StylespaceError(f"k must be an integer >= 1, got {k!r}")
        queries = (structures.prepare_vectors(queries, self.config.metric, self.config.dim, "query vectors")
                   if not prepared else np.ascontiguousarray(queries, dtype=np.float32))
        allowed = self._allowed(where)
        banned, per_query = self._exclusions(exclude_ids, len(queries))
        return self._search(queries, int(k), allowed, banned, per_query)

    def search(self, queries, k: int = 10, *, exclude_ids=None, where: Mapping[str, Any] | None = None,
               model_id: str | None = None, metric: str | None = None) -> list[list[Hit]]:
        """The ``k`` nearest items of each query as :class:`Hit` lists (see :meth:`neighbours` for the
        arguments). ``metric`` picks how scores are reported: a cosine index can report Euclidean
        distances between its unit vectors (same order); the default is the index's metric."""
        neighbours = self.neighbours(queries, k, exclude_ids=exclude_ids, where=where, model_id=model_id)
        return self.hits(neighbours, metric)

    def search_ids(self, ids: Sequence[str], k: int = 10, *, exclude_self: bool = True, exclude_ids=None,
                   where: Mapping[str, Any] | None = None, metric: str | None = None) -> list[list[Hit]]:
        """Search with catalog items as queries (their stored vectors; no model needed)."""
        ids = list(ids)
        vectors = self.vectors(ids)
        exclusions = _per_query(exclude_ids, len(ids))
        if exclude_self:
            exclusions = [list(e) + [i] for e, i in zip(exclusions, ids)]
        neighbours = self.neighbours(vectors, k, exclude_ids=exclusions, where=where, prepared=True)
        return self.hits(neighbours, metric)

    def neighbours_of_keys(self, keys: np.ndarray, k: int, exclude_keys: np.ndarray | None = None) -> Neighbours:
        """The ``k`` nearest other items of catalog items given by key (M,), each never returning itself
        nor the keys in its row of ``exclude_keys`` (M, E) (-1 = nothing)."""
        remembered = self._neighbour_memo.neighbours_of_keys(self, keys, k, exclude_keys)
        if remembered is not None:
            return Neighbours(*remembered, self.config.metric)
        keys = np.asarray(keys, dtype=np.int64).ravel()
        per_query = keys[:, None] if exclude_keys is None else np.concatenate(
            [keys[:, None], np.asarray(exclude_keys, dtype=np.int64).reshape(len(keys), -1)], axis=1)
        vectors = self.vectors_of_keys(keys)
        vectors[keys < 0] = 0.0  # searched but thrown away below
        found = self._search(np.ascontiguousarray(vectors), int(k), None, np.empty(0, np.int64), per_query)
        found.keys[keys < 0] = -1  # a missing item (-1) has no neighbours
        found.similarities[keys < 0] = np.nan
        return found

    def hits(self, neighbours: Neighbours, metric: str | None = None) -> list[list[Hit]]:
        """Turn :class:`Neighbours` into :class:`Hit` lists (one SQLite lookup for all rows)."""
        metric = metric or self.config.metric
        if metric not in ("cosine", "euclidean"):
            raise StylespaceError(f"metric must be cosine or euclidean, got {metric!r}")
        if metric != self.config.metric and self.config.metric == "euclidean":
            raise StylespaceError(f"the index at {self.folder} was built for euclidean distance on unnormalised vectors; "
                                  "rebuild it with `stylespace index rebuild --metric cosine` to search by cosine")
        rows = self.items.rows(np.unique(neighbours.keys[neighbours.keys >= 0]))
        out = []
        for keys, similarities in zip(neighbours.keys, neighbours.similarities):
            hits = []
            for key, similarity in zip(keys, similarities):
                if key < 0:
                    break
                item_id, source, label, meta = rows[int(key)]
                hits.append(Hit(item_id, _report_score(float(similarity), self.config.metric, metric), meta, label, source))
            out.append(hits)
        return out

    def _allowed(self, where: Mapping[str, Any] | None) -> np.ndarray | None:
        """Sorted keys that pass ``where`` (None = no filter), cached per filter until the next write."""
        if not where:
            return None
        if not isinstance(where, Mapping):
            raise StylespaceError(f"where must map a metadata column to a value or a list of values, got {where!r}")
        normalised = {}
        for column, values in where.items():
            if column != "label" and column not in self.config.metadata_columns:
                raise StylespaceError(f"cannot filter on {column!r}: the index's items have metadata columns "
                                      f"{self.config.metadata_columns} (and label)")
            values = [values] if isinstance(values, (str, int, float)) else list(values)
            if not values:
                raise StylespaceError(f"filter on {column!r} lists no values")
            normalised[column] = sorted(str(v) for v in values)
        cache_key = json.dumps(normalised, sort_keys=True)
        if cache_key not in self._where_cache:
            self._where_cache[cache_key] = self.items.keys_where(normalised)
        return self._where_cache[cache_key]

    def _exclusions(self, exclude_ids, n_queries: int) -> tuple[np.ndarray, np.ndarray]:
        """(keys excluded for every query (sorted), (Q, E) keys excluded per query, -1 padded)."""
        if exclude_ids is None or len(exclude_ids) == 0:
            return np.empty(0, np.int64), np.empty((n_queries, 0), np.int64)
        if isinstance(exclude_ids, str):
            raise StylespaceError("exclude_ids must be a list of ids (or one list per query), not a single string")
        if all(isinstance(e, str) for e in exclude_ids):
            found = self.items.find(list(exclude_ids))
            return np.array(sorted(found.values()), dtype=np.int64), np.empty((n_queries, 0), np.int64)
        lists = _per_query(exclude_ids, n_queries)
        found = self.items.find(sorted({i for ids in lists for i in ids}))
        width = max((len(ids) for ids in lists), default=0)
        per_query = np.full((n_queries, width), -1, dtype=np.int64)
        for row, ids in enumerate(lists):
            keys = [found[i] for i in ids if i in found]
            per_query[row, :len(keys)] = keys
        return np.empty(0, np.int64), per_query

    def _search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None, banned: np.ndarray,
                per_query: np.ndarray) -> Neighbours:
        """Search with over-fetch: ask FAISS for more than k, drop what the filters refuse, and ask again
        (4x more) for the rows still short, until each row has k or the whole index was returned."""
        n_queries = len(queries)
        keys_out = np.full((n_queries, k), -1, dtype=np.int64)
        sims_out = np.full((n_queries, k), np.nan, dtype=np.float32)
        total = int(self.structure.ntotal)
        if n_queries == 0 or total == 0 or (allowed is not None and len(allowed) == 0):
            return Neighbours(keys_out, sims_out, self.config.metric)
        refused = np.union1d(self._stale, banned)
        expected = k + len(refused) + per_query.shape[1]
        if allowed is not None:
            # enough candidates that, at the filter's share of the catalog, k of them pass
            expected = math.ceil(expected * total / len(allowed) * 1.25)
        fetch = min(max(expected, k), total)
        pending = np.arange(n_queries)
        while len(pending):
            sims, keys = structures.search_structure(self.structure, self.config, queries[pending], fetch)
            keep = keys >= 0
            if len(refused):
                keep &= ~np.isin(keys, refused)
            if allowed is not None:
                keep &= np.isin(keys, allowed)
            if per_query.shape[1]:
                keep &= ~(keys[:, :, None] == per_query[pending][:, None, :]).any(axis=2)
            enough = (keep.sum(axis=1) >= k) | (fetch >= total)
            rows = np.flatnonzero(enough)
            # the first k kept columns of each finished row, in rank order (a stable sort puts kept first)
            order = np.argsort(~keep[rows], axis=1, kind="stable")[:, :k]
            picked_keys = np.take_along_axis(keys[rows], order, axis=1)
            picked_sims = np.take_along_axis(sims[rows], order, axis=1)
            picked_keep = np.take_along_axis(keep[rows], order, axis=1)
            width = picked_keys.shape[1]
            keys_out[pending[rows], :width] = np.where(picked_keep, picked_keys, -1)
            sims_out[pending[rows], :width] = np.where(picked_keep, picked_sims, np.nan)
            pending = pending[~enough]
            fetch = min(total, fetch * 4)
        return Neighbours(keys_out, sims_out, self.config.metric)

    # --- changing it ------------------------------------------------------------------------------------

    def add(self, ids: Sequence[str], vectors, *, model_id: str | None = None,
            labels: Sequence[str | None] | None = None, metas: Sequence[Mapping[str, str]] | None = None,
            sources: Sequence[str] | None = None, replace: bool = False) -> np.ndarray:
        """Add items without rebuilding; returns their new keys (N,) int64.

        Args:
            ids, vectors: N new item ids and their (N, D) vectors (or an ``Embeddings`` as ``vectors``).
            model_id: the model that embedded ``vectors``; required, and must be the index's model.
            replace: items whose id is already in the index are replaced (new vector and key); without it
                an existing id is an error.
        """
        vectors, model_id = vectors_and_model(vectors, model_id)
        if model_id is None:
            raise StylespaceError("adding items needs the model_id of the model that embedded them "
                                  f"(the index was made by {self.config.model_id})")
        self.check_model(model_id, "the new items' vectors")
        vectors = np.asarray(vectors)
        prepared = structures.prepare_vectors(vectors, self.config.metric, self.config.dim, "new item vectors")
        rows = _ItemRows.build(ids, len(prepared), labels, metas, sources)
        existing = self.items.find(rows.ids)
        if existing and not replace:
            shown = ", ".join(repr(i) for i in list(existing)[:5])
            raise StylespaceError(f"{len(existing)} id(s) already in the index ({shown}); remove them first or "
                                  "pass replace (--replace) to update them")
        new_columns = sorted({c for meta in rows.metas for c in meta} - set(self.config.metadata_columns))

        def change(store: ItemStore, structure, config: IndexConfig) -> np.ndarray:
            if existing:
                self._delete(store, structure, config, np.array(sorted(existing.values()), dtype=np.int64))
            keys = store.insert(rows.ids, rows.sources, rows.labels, rows.metas, vectors)
            structure.add_with_ids(prepared, keys)
            config.count += len(keys)
            config.metadata_columns = config.metadata_columns + new_columns
            return keys

        return self._write(change)

    def remove(self, ids: Sequence[str], missing_ok: bool = False) -> int:
        """Remove items by id without rebuilding; returns how many were removed.

        An unknown id is an error unless ``missing_ok``. In an HNSW index the vectors stay (stale) and
        are skipped by searches until :meth:`rebuild`.
        """
        ids = list(ids)
        found = self.items.find(ids)
        if not missing_ok and len(found) != len(set(ids)):
            missing = [i for i in ids if i not in found]
            raise StylespaceError(f"{len(missing)} id(s) not in the index: {', '.join(map(repr, missing[:5]))}")
        if not found:
            return 0
        keys = np.array(sorted(found.values()), dtype=np.int64)
        self._write(lambda store, structure, config: self._delete(store, structure, config, keys))
        return len(keys)

    def rebuild(self, kind: str | None = None, metric: str | None = None, measure_recall: bool = True,
                **settings: Any) -> "CatalogIndex":
        """Remake the FAISS structure from the stored vectors (compaction: stale vectors dropped, IVF cells
        retrained, the whitening fitted again on the items held now), optionally as another ``kind`` or
        ``metric`` or with other settings (nlist, hnsw_m, whiten...). Item keys are kept. A calibration
        made before a whitening changed is marked ``calibration["outdated"]`` until calibrated again."""
        allowed = {"nlist", "nprobe", "hnsw_m", "ef_construction", "ef_search", "whiten"}
        unknown = sorted(set(settings) - allowed)
        if unknown:
            raise StylespaceError(f"rebuild cannot change {unknown}; it can change kind, metric and {sorted(allowed)}")

        def change(store: ItemStore, structure, config: IndexConfig):
            config.kind = kind or config.kind
            config.metric = metric or config.metric
            for name, value in settings.items():
                setattr(config, name, value)
            config.validate()
            batches = list(store.iter_vectors())
            keys = np.concatenate([b[0] for b in batches]) if batches else np.empty(0, np.int64)
            vectors = (np.concatenate([b[1] for b in batches]) if batches
                       else np.empty((0, config.dim), np.float32))
            prepared = structures.prepare_vectors(vectors, config.metric, config.dim, "stored vectors")
            fresh = structures.new_structure(config, prepared)
            fresh.add_with_ids(prepared, keys)
            was_whitened = config.whitened_items
            config.whitened_items = len(keys) if structures.is_whitened(fresh) else 0
            if config.threshold is not None and (was_whitened or config.whitened_items):
                # similarities move with a refitted (or switched) whitening; the threshold was set on the old ones
                config.calibration = {**config.calibration, "outdated": True}
            store.clear_stale()
            config.stale = 0
            config.recall_at_10 = None
            if config.kind != "exact" and measure_recall and len(keys):
                config.recall_at_10 = structures.measure_recall(fresh, config, keys, prepared)
            config.typicality = structures.typicality(fresh, config, keys, prepared)
            return fresh

        self._write(change, replaces_structure=True, vacuum=True)
        return self

    def set_calibration(self, confidence: str, threshold: float | None, calibration: Mapping[str, Any],
                        confidence_params: Mapping[str, Any] | None = None,
                        arrays: Mapping[str, np.ndarray] | None = None) -> None:
        """Record the recommendation confidence score (its fitted parameters, and the ``arrays`` it learnt,
        if any), its threshold and the calibration figures. index.json is the commit point: the arrays
        are written to their own file first, and the previous calibration's file is removed after."""
        if threshold is not None and not math.isfinite(threshold):
            raise StylespaceError(f"threshold must be a finite number, got {threshold}")
        with _writer_lock(self.folder):
            self._refresh_locked()
            calibration_file = ""
            if arrays:
                buffer = io.BytesIO()
                np.savez(buffer, **{name: np.asarray(value) for name, value in arrays.items()})
                data = buffer.getvalue()
                calibration_file = f"calibration-{hashlib.sha256(data).hexdigest()[:12]}.npz"
                with atomic_write(self.folder / calibration_file) as handle:
                    handle.write(data)
            config = dataclasses.replace(self.config, confidence=confidence,
                                         confidence_params=json.loads(json.dumps(dict(confidence_params or {}))),
                                         threshold=None if threshold is None else float(threshold),
                                         calibration_file=calibration_file,
                                         calibration=json.loads(json.dumps(dict(calibration))), updated=_now())
            config.validate()
            write_json(self.folder / CONFIG_FILE, dataclasses.asdict(config))
            self.config = config
            for old in self.folder.glob("calibration-*.npz"):
                if old.name != calibration_file:
                    with contextlib.suppress(FileNotFoundError):
                        old.unlink()

    def calibration_arrays(self) -> dict[str, np.ndarray]:
        """The arrays the calibrated confidence score learnt (empty when it learnt none)."""
        if not self.config.calibration_file:
            return {}
        path = self.folder / self.config.calibration_file
        try:
            with np.load(path, allow_pickle=False) as data:
                return {name: data[name] for name in data.files}
        except FileNotFoundError:
            raise StylespaceError(f"{path}: the calibration's file is missing (calibrated again meanwhile? open the "
                                  "index again; otherwise run `stylespace calibrate-threshold` again)") from None
        except (OSError, ValueError) as exc:
            raise StylespaceError(f"{path}: not a readable calibration file ({exc}); run "
                                  "`stylespace calibrate-threshold` again") from None

    def refresh(self) -> bool:
        """Load a newer generation written by another process, if there is one; returns whether it did."""
        current = read_config(self.folder)
        if current.generation == self.config.generation and current == self.config:
            return False
        fresh = CatalogIndex.open(self.folder)
        self._adopt(fresh)
        return True

    def close(self) -> None:
        self.items.close()

    # --- the write path ----------------------------------------------------------------------------------

    def _delete(self, store: ItemStore, structure, config: IndexConfig, keys: np.ndarray) -> None:
        import faiss

        if config.kind == "hnsw":
            store.delete(keys, keep_stale=True)
            config.stale += len(keys)
        else:
            store.delete(keys, keep_stale=False)
            removed = structure.remove_ids(faiss.IDSelectorBatch(keys))
            if removed != len(keys):
                raise StylespaceError(f"{self.folder}: FAISS held {removed} of {len(keys)} removed keys; the index is "
                                      "inconsistent (run `stylespace index rebuild`)")
        config.count -= len(keys)

    def _write(self, change, replaces_structure: bool = False, vacuum: bool = False):
        """Apply ``change(store, structure, config)`` as a new generation and commit it atomically.

        ``change`` works on a copy of the item table, a clone of the FAISS structure (or returns a new one
        when ``replaces_structure``) and a copy of the config; nothing in memory or on disk that readers
        use is touched until index.json is replaced.
        """
        with _writer_lock(self.folder):
            self._refresh_locked()
            generation = self.config.generation + 1
            store = self.items.copy_to(self.folder / _items_name(generation))
            config = dataclasses.replace(self.config, metadata_columns=list(self.config.metadata_columns))
            try:
                try:
                    structure = None if replaces_structure else structures.copy_structure(self.structure)
                    result = change(store, structure, config)
                    store.commit()
                    if vacuum:
                        store.vacuum()
                finally:
                    store.close()
                if replaces_structure:
                    structure = result
                fresh = self._commit(self.folder, config, generation, structure)
            except BaseException:
                # index.json still names the previous generation; what we wrote is never referenced
                _collect_garbage(self.folder, keep={self.config.generation, self.config.generation - 1})
                raise
            self._adopt(fresh)
        return result

    @classmethod
    def _commit(cls, folder: Path, config: IndexConfig, generation: int, structure) -> "CatalogIndex":
        """Write the FAISS file and then index.json (the commit point); drop files of older generations."""
        config.generation = generation
        config.items_file = _items_name(generation)
        config.faiss_file = f"vectors-{generation:06d}.faiss"
        config.updated = _now()
        with atomic_write(folder / config.faiss_file) as handle:
            handle.write(structures.to_bytes(structure))
        write_json(folder / CONFIG_FILE, dataclasses.asdict(config))
        _collect_garbage(folder, keep={generation, generation - 1})
        return cls(folder, config, ItemStore(folder / config.items_file), structure)

    def _refresh_locked(self) -> None:
        """Under the writer lock: make sure we change the newest generation, not a stale one we hold."""
        current = read_config(self.folder)
        if current.generation != self.config.generation:
            self._adopt(CatalogIndex.open(self.folder))

    def _adopt(self, other: "CatalogIndex") -> None:
        old = self.items
        self.config, self.items, self.structure = other.config, other.items, other.structure
        self._stale = other._stale
        self._where_cache = {}
        old.close()


# --- helpers ------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class _ItemRows:
    ids: list[str]
    labels: list[str | None]
    metas: list[dict[str, str]]
    sources: list[str]

    @classmethod
    def build(cls, ids, n: int, labels, metas, sources) -> "_ItemRows":
        ids = [str(i) for i in ids]
        if len(ids) != n:
            raise StylespaceError(f"{len(ids)} ids but {n} vectors; expected one id per vector")
        if len(set(ids)) != len(ids):
            dupes = [i for i, count in collections.Counter(ids).items() if count > 1]
            raise StylespaceError(f"item ids must be unique; repeated: {', '.join(map(repr, dupes[:5]))}")
        labels = [None] * n if labels is None else [None if v is None else str(v) for v in labels]
        metas = [{}] * n if metas is None else [{str(c): str(v) for c, v in dict(m).items()} for m in metas]
        sources = [""] * n if sources is None else [str(s) for s in sources]
        for name, values in (("labels", labels), ("metas", metas), ("sources", sources)):
            if len(values) != n:
                raise StylespaceError(f"{len(values)} {name} for {n} items; expected one per item")
        return cls(ids, labels, metas, sources)


def _per_query(exclude_ids, n_queries: int) -> list[list[str]]:
    """Exclusions as one list per query (a flat list applies to every query)."""
    if exclude_ids is None or len(exclude_ids) == 0:
        return [[] for _ in range(n_queries)]
    if all(isinstance(e, str) for e in exclude_ids):
        return [list(exclude_ids) for _ in range(n_queries)]
    lists = [[e] if isinstance(e, str) else list(e or []) for e in exclude_ids]
    if len(lists) != n_queries:
        raise StylespaceError(f"exclude_ids has {len(lists)} lists for {n_queries} queries; expected one per query")
    return [[str(i) for i in ids] for ids in lists]


def _report_score(similarity: float, index_metric: str, metric: str) -> float:
    if index_metric == "euclidean":
        return -similarity
    if metric == "euclidean":  # distance between unit vectors, from their cosine
        return math.sqrt(max(0.0, 2.0 - 2.0 * similarity))
    return similarity


def _items_name(generation: int) -> str:
    return f"items-{generation:06d}.sqlite"


def read_config(folder: Path) -> IndexConfig:
    """The index.json of ``folder``; a clear error when the folder is not an index."""
    path = Path(folder) / CONFIG_FILE
    if not path.is_file():
        raise StylespaceError(f"{folder}: not an index folder (no {CONFIG_FILE}); build one with "
                              "`stylespace index MODEL CATALOG -o FOLDER`")
    return load_dataclass(IndexConfig, path).validate()


def _collect_garbage(folder: Path, keep: set[int]) -> None:
    """Delete generation files not in ``keep`` and temporary files left by crashed writes."""
    for entry in folder.iterdir():
        match = _GENERATION_FILE.match(entry.name)
        crashed_temp = entry.name.startswith(".") and entry.name.endswith(".tmp")
        if (match and int(match.group(2)) not in keep) or crashed_temp:
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()


@contextlib.contextmanager
def _writer_lock(folder: Path) -> Iterator[None]:
    """One writer at a time per index folder (an OS file lock, released if the process dies)."""
    import fcntl

    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
