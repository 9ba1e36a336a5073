"""``CatalogIndex``: a catalog's embeddings, searchable, in one folder, changed in place and crash-safely.

``index.json`` (:class:`IndexConfig`) says how the index was made and which backend holds its items:
``faiss`` (embedded: FAISS + SQLite in the folder, the default; its crash-safe change protocol is at the
top of :mod:`stylespace.index.embedded`) or ``milvus`` (a Milvus Lite file or a Milvus server / cluster,
:mod:`stylespace.index.milvus`). The operations are the same for both (:class:`IndexBackend`): create and
open, add, remove, search with ``where`` filters and exclusions, rebuild, and a :class:`IndexMarker` that
says whether the index changed since (what a saved recommendation calibration checks).

One writer at a time per folder (an OS file lock, released if the process dies); readers pick up what
writers committed with :meth:`CatalogIndex.refresh` and never see half of a change.
"""
from __future__ import annotations

import collections
import contextlib
import dataclasses
import datetime as _dt
import math
import os
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from stylespace.embeddings import vectors_and_model
from stylespace.index import structures
from stylespace.index.backend import (IndexBackend, IndexChanges, IndexMarker, IndexPosition, ItemRows, Neighbours,
                                      keys_in_order)
from stylespace.index.backends import backend_class, upgrade_format
from stylespace.index.config import CONFIG_FILE, FORMAT_VERSION, LEGACY_CALIBRATION_FIELDS, IndexConfig
from stylespace.index.neighbour_memo import NeighbourMemo
from stylespace.utils import METRICS, StylespaceError, dataclass_from_dict, one_of, read_json, validate


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


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


class CatalogIndex:
    """A searchable catalog index in a folder. Open with :meth:`open`, make with :meth:`create`.

    >>> index = CatalogIndex.create("idx", ids, vectors, model_id="1d528f4c0cfa")
    >>> index.search(query_vectors, k=10, where={"gender": "Men"}, model_id="1d528f4c0cfa")[0][0]
    Hit(id='15970', score=0.93, meta={...})
    """

    def __init__(self, folder: Path, backend: IndexBackend):
        self.folder = Path(folder)
        self.backend = backend
        self._neighbour_memo = NeighbourMemo()  # items' own neighbours, searched once per index state
        # index.json as last read by refresh (parsing it costs milliseconds; a stat, microseconds)
        self._config_stamp: tuple | None = None

    @property
    def config(self) -> IndexConfig:
        return self.backend.config

    @property
    def items(self) -> IndexBackend:
        """The items (``find``, ``rows``, ``labels``, ``labelled_count``, ``all_ids``)."""
        return self.backend

    @property
    def structure(self):
        """The FAISS structure searches use (for ``milvus``: the whitening only)."""
        return self.backend.structure

    @property
    def marker(self) -> IndexMarker:
        """Where this handle stands (generation, revision, space version): compare with
        :meth:`current_marker` or a marker saved earlier to know whether the index changed since."""
        return self.backend.marker

    @staticmethod
    def current_marker(folder: str | os.PathLike) -> IndexMarker:
        """The marker of the index in ``folder`` as committed now (cheap: no structure is loaded)."""
        config = read_config(Path(folder))
        revision = backend_class(config.backend).current_revision(Path(folder), config)
        return IndexMarker(config.generation, revision, config.space_version)

    # --- opening and making ------------------------------------------------------------------------

    @classmethod
    def open(cls, folder: str | os.PathLike) -> "CatalogIndex":
        """Open the index in ``folder`` (as last committed)."""
        folder = Path(folder)
        for attempt in range(3):
            config = read_config(folder)
            if config.version < FORMAT_VERSION:
                with _writer_lock(folder):
                    upgrade_format(folder, read_config(folder))
                continue
            try:
                return cls(folder, backend_class(config.backend).open(folder, config))
            except StylespaceError:
                # a rebuild or checkpoint committed between reading index.json and opening its files
                if attempt == 2 or read_config(folder) == config:
                    raise
        raise StylespaceError(f"{folder}: the index changed three times while it was being opened; try again")

    @classmethod
    def create(cls, folder: str | os.PathLike, ids: Sequence[str], vectors, *, model_id: str,
               metric: str = "cosine", kind: str = "exact", labels: Sequence[str | None] | None = None,
               metas: Sequence[Mapping[str, str]] | None = None, sources: Sequence[str] | None = None,
               whiten: bool = False, overwrite: bool = False, measure_recall: bool = True,
               **settings: Any) -> "CatalogIndex":
        """Make an index of ``vectors`` (N, D) with item ``ids`` in ``folder``.

        Args:
            vectors: (N, D) float array, or any array-like read in chunks (a ``np.memmap`` of a catalog
                larger than memory).
            model_id: the id of the model that embedded ``vectors`` (recorded; queries are checked against it).
            metric, kind: see :class:`IndexConfig`.
            labels, metas, sources: per item, optional (labels are used only to calibrate recommendations).
            whiten: whiten the vectors (see :class:`IndexSettings`); off here, where vectors are indexed as given
                (``build_index``, which embeds a catalog with a model, whitens by default).
            search_dims (a setting): search only the top N whitened dimensions (needs ``whiten``; see
                :class:`IndexSettings`).
            overwrite: replace an index already in ``folder`` (atomically, like any other write).
            measure_recall: for approximate kinds, measure recall@10 against exact search (stored in index.json).
            settings: other :class:`IndexConfig` fields (backend, uri, nlist, nprobe, hnsw_m, model_path, ...).
        """
        folder = Path(folder)
        if not hasattr(vectors, "shape"):
            vectors = np.asarray(vectors, dtype=np.float32)
        if len(vectors.shape) != 2:
            raise StylespaceError(f"index vectors: expected a 2-D (N, D) array, got shape {vectors.shape}")
        unknown = sorted(set(settings) - {f.name for f in dataclasses.fields(IndexConfig)})
        if unknown:
            raise StylespaceError(f"unknown index setting(s) {unknown}")
        config = IndexConfig(model_id=model_id, dim=int(vectors.shape[1]), metric=metric, kind=kind, whiten=whiten,
                             **settings)
        config.created = _now()
        rows = _item_rows(ids, len(vectors), labels, metas, sources)
        if not config.metadata_columns:
            config.metadata_columns = sorted({column for meta in rows.metas for column in meta})
        backend = backend_class(config.backend)  # a missing extra is said before anything is written
        if (folder / CONFIG_FILE).exists() and not overwrite:
            raise StylespaceError(f"{folder} already holds an index; pass overwrite (--overwrite) to replace it, "
                                  "or add items with `stylespace index add`")
        folder.mkdir(parents=True, exist_ok=True)
        with _writer_lock(folder):
            previous = _previous_config(folder)
            config.updated = _now()
            return cls(folder, backend.create(folder, config, rows, vectors, previous, measure_recall))

    # --- what it holds ---------------------------------------------------------------------------------

    def __len__(self) -> int:
        return self.backend.count()

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
        ids = list(ids)
        return keys_in_order(self.backend.find(ids), ids)

    def vectors(self, ids: Sequence[str]) -> np.ndarray:
        """(N, D) the stored vectors of item ids, normalised for cosine (usable as queries)."""
        return self.vectors_of_keys(self.keys_of(ids))

    def vectors_of_keys(self, keys: np.ndarray) -> np.ndarray:
        """Stored vectors of ``keys`` (any shape) -> ``keys.shape + (D,)``, normalised for cosine (what a
        search takes as a query; a whitened index transforms them further, see :meth:`search_space`);
        NaN rows for -1."""
        return self.backend.vectors(np.asarray(keys, dtype=np.int64))

    def search_space(self, vectors: np.ndarray) -> np.ndarray:
        """(N, D) vectors as stored (see :meth:`vectors_of_keys`) -> as searches compare them (N, D'): whitened
        and normalised when the index is whitened (D' = ``search_dims`` when set, else D), unchanged otherwise.
        Their dot products (cosine) or distances (euclidean) are the similarities searches report."""
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
        validate([one_of("metric", metric, METRICS)])
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
                if int(key) not in rows:  # purged by a second rebuild since this handle last refreshed
                    continue
                item_id, source, label, meta = rows[int(key)]
                hits.append(Hit(item_id, _report_score(float(similarity), self.config.metric, metric), meta, label, source))
            out.append(hits)
        return out

    def _allowed(self, where: Mapping[str, Any] | None) -> dict[str, list[str]] | None:
        """``where`` checked against the index's metadata columns, as column -> sorted values (None = no filter)."""
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
        return normalised

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

    def _search(self, queries: np.ndarray, k: int, where: Mapping[str, list[str]] | None, banned: np.ndarray,
                per_query: np.ndarray) -> Neighbours:
        return self.backend.search(queries, k, where, banned, per_query)

    # --- changing it ------------------------------------------------------------------------------------

    def add(self, ids: Sequence[str], vectors, *, model_id: str | None = None,
            labels: Sequence[str | None] | None = None, metas: Sequence[Mapping[str, str]] | None = None,
            sources: Sequence[str] | None = None, replace: bool = False,
            remove_ids: Sequence[str] = ()) -> np.ndarray:
        """Add items without rebuilding; returns their new keys (N,) int64. One transaction: a crash
        leaves the index without any of them; readers see all of them after their next refresh.

        Args:
            ids, vectors: N new item ids and their (N, D) vectors (or an ``Embeddings`` as ``vectors``).
            model_id: the model that embedded ``vectors``; required, and must be the index's model.
            replace: items whose id is already in the index are replaced (new vector and key); without it
                an existing id is an error.
            remove_ids: items removed in the same transaction (each must be in the index, and not among ``ids``).
        """
        vectors, model_id = vectors_and_model(vectors, model_id)
        if model_id is None:
            raise StylespaceError("adding items needs the model_id of the model that embedded them "
                                  f"(the index was made by {self.config.model_id})")
        self.check_model(model_id, "the new items' vectors")
        raw = np.array(vectors, dtype=np.float32, order="C", ndmin=2)
        structures.prepare_vectors(raw, self.config.metric, self.config.dim, "new item vectors")  # checks only
        rows = _item_rows(ids, len(raw), labels, metas, sources)
        with _writer_lock(self.folder):
            self._catch_up_locked()
            existing = self.items.find(rows.ids)
            if existing and not replace:
                shown = ", ".join(repr(i) for i in list(existing)[:5])
                raise StylespaceError(f"{len(existing)} id(s) already in the index ({shown}); remove them first or "
                                      "pass replace (--replace) to update them")
            removed = self.items.find(list(remove_ids))
            missing = [i for i in remove_ids if i not in removed]
            if missing:
                raise StylespaceError(f"{len(missing)} id(s) to remove not in the index: "
                                      f"{', '.join(map(repr, missing[:5]))}")
            both = sorted(set(removed) & set(rows.ids))
            if both:
                raise StylespaceError(f"id(s) both added and removed in one change: {', '.join(map(repr, both[:5]))}")
            new_columns = sorted({c for meta in rows.metas for c in meta} - set(self.config.metadata_columns))
            gone = np.array(sorted({*existing.values(), *removed.values()}), dtype=np.int64)
            return self.backend.add(rows, raw, gone, new_columns)

    def remove(self, ids: Sequence[str], missing_ok: bool = False) -> int:
        """Remove items by id without rebuilding; returns how many were removed.

        An unknown id is an error unless ``missing_ok``. In an HNSW index the vectors stay (stale) and
        are skipped by searches until :meth:`rebuild`.
        """
        ids = list(ids)
        with _writer_lock(self.folder):
            self._catch_up_locked()
            found = self.items.find(ids)
            if not missing_ok and len(found) != len(set(ids)):
                missing = [i for i in ids if i not in found]
                raise StylespaceError(f"{len(missing)} id(s) not in the index: {', '.join(map(repr, missing[:5]))}")
            if not found:
                return 0
            keys = np.array(sorted(found.values()), dtype=np.int64)
            self.backend.remove(keys)
        return len(keys)

    def rebuild(self, kind: str | None = None, metric: str | None = None, measure_recall: bool = True,
                **settings: Any) -> "CatalogIndex":
        """Remake the structure from the stored vectors (compaction: removed items dropped, IVF cells and
        codebooks retrained, the whitening fitted again on the items held now), optionally as another
        ``kind`` or ``metric`` or with other settings (nlist, hnsw_m, whiten, search_dims...). Item keys are kept.
        A rebuild that can move similarities (a whitening fitted again or switched, another metric) bumps
        ``space_version``, which tells a saved recommendation calibration that it is out of date."""
        allowed = {"nlist", "nprobe", "hnsw_m", "ef_construction", "ef_search", "whiten", "pq_m", "rerank",
                   "search_dims"}
        unknown = sorted(set(settings) - allowed)
        if unknown:
            raise StylespaceError(f"rebuild cannot change {unknown}; it can change kind, metric and {sorted(allowed)}")
        with _writer_lock(self.folder):
            self._catch_up_locked()
            old = self.config
            config = dataclasses.replace(old, kind=kind or old.kind, metric=metric or old.metric,
                                         metadata_columns=list(old.metadata_columns), **settings)
            if config.metric != old.metric or old.whitened_items or structures.whitens(config, len(self)):
                config.space_version = old.space_version + 1  # similarities may move: calibrations are outdated
            config.updated = _now()
            self._adopt(self.backend.rebuild(config, measure_recall))
        return self

    def refresh(self) -> bool:
        """Pick up what other processes committed (items added or removed, a rebuild); returns whether
        anything changed."""
        stamp = config_stamp(self.folder)
        if stamp is None or stamp != self._config_stamp:  # index.json rewritten: a rebuild, or a checkpoint
            current = read_config(self.folder)
            if _generation_of(current) != _generation_of(self.config):
                self._adopt(CatalogIndex.open(self.folder).backend)
                self._config_stamp = stamp
                return True
            self._config_stamp = stamp
        return self.backend.catch_up()

    @property
    def position(self) -> IndexPosition:
        """Exactly which committed state this handle holds (generation, revision, last key)."""
        return self.backend.position

    def changes_since(self, position: IndexPosition) -> IndexChanges | None:
        """The items added and the keys removed between ``position`` (an earlier :attr:`position` of this
        handle) and now, at the cost of the change; None when that is not known (another generation
        since: a rebuild; or a backend that keeps no change log): read the items again."""
        return self.backend.changes_since(position)

    @property
    def changed_items(self) -> int | None:
        """Items added, replaced or removed over the index's life, as committed (None: the backend does not
        count them); a saved calibration records it to tell how far the items moved since."""
        return self.backend.changed_items()

    def close(self) -> None:
        self.backend.close()

    def writer_lock(self):
        """The folder's writer lock (a context manager): what writes beside the index (a recommendation's
        calibration) holds so that it never interleaves with another write."""
        return _writer_lock(self.folder)

    # --- the write path ----------------------------------------------------------------------------------

    def _catch_up_locked(self) -> None:
        """Under the writer lock: make sure we change the newest state, not a stale one we hold."""
        self.refresh()

    def _adopt(self, backend: IndexBackend) -> None:
        old, self.backend = self.backend, backend
        if old is not backend:
            old.close()


# --- helpers ------------------------------------------------------------------------------------------------


def _item_rows(ids, n: int, labels, metas, sources) -> ItemRows:
    ids = [str(i) for i in ids]
    if len(ids) != n:
        raise StylespaceError(f"{len(ids)} ids but {n} vectors; expected one id per vector")
    if len(set(ids)) != len(ids):
        dupes = [i for i, count in collections.Counter(ids).items() if count > 1]
        raise StylespaceError(f"item ids must be unique; repeated: {', '.join(map(repr, dupes[:5]))}")
    labels = [None] * n if labels is None else [None if v is None else str(v) for v in labels]
    metas = [{}] * n if metas is None else [_string_meta(m) for m in metas]
    sources = [""] * n if sources is None else [str(s) for s in sources]
    for name, values in (("labels", labels), ("metas", metas), ("sources", sources)):
        if len(values) != n:
            raise StylespaceError(f"{len(values)} {name} for {n} items; expected one per item")
    return ItemRows(ids, labels, metas, sources)


def _string_meta(meta: Mapping) -> dict[str, str]:
    """``meta`` as str -> str (the very dict when it is one already: ten million items may share a few)."""
    if isinstance(meta, dict) and all(type(c) is str and type(v) is str for c, v in meta.items()):
        return meta
    return {str(c): str(v) for c, v in dict(meta).items()}


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


def _generation_of(config: IndexConfig) -> tuple:
    """What identifies one generation of an index (a checkpoint within it changes none of these)."""
    return (config.backend, config.uri, config.collection, config.generation, config.items_file)


def _previous_config(folder: Path) -> IndexConfig | None:
    """The configuration an index being written replaces (None when there is none, or it is unreadable)."""
    if not (folder / CONFIG_FILE).exists():
        return None
    try:
        return read_config(folder)
    except StylespaceError:
        return None


def config_stamp(folder: str | os.PathLike) -> tuple | None:
    """What changes whenever ``index.json`` in ``folder`` is written (it is always replaced whole: a new
    inode); None when it is not there."""
    try:
        stat = (Path(folder) / CONFIG_FILE).stat()
    except FileNotFoundError:
        return None
    return stat.st_mtime_ns, stat.st_size, stat.st_ino


def read_config(folder: Path) -> IndexConfig:
    """The index.json of ``folder``; a clear error when the folder is not an index."""
    path = Path(folder) / CONFIG_FILE
    if not path.is_file():
        raise StylespaceError(f"{folder}: not an index folder (no {CONFIG_FILE}); build one with "
                              "`stylespace index MODEL CATALOG -o FOLDER`")
    data = read_json(path, "IndexConfig JSON")
    if isinstance(data, dict):
        data.setdefault("whiten", False)  # an index.json that does not say was made before whitening existed
    if isinstance(data, dict) and any(name in data for name in LEGACY_CALIBRATION_FIELDS):
        legacy = {name: data.pop(name) for name in LEGACY_CALIBRATION_FIELDS if name in data}
        if legacy.get("threshold") is not None or legacy.get("confidence"):
            data["legacy_calibration"] = legacy
    return dataclass_from_dict(IndexConfig, data, source=str(path))


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
