"""Searching a query as several views (:mod:`stylespace.data.query_views`): every view searched in one batch,
the results merged per query keeping each item's best score.

The merge is exact: the ``k`` best items over all views are among the ``k`` best of some view (an item whose
best score comes from view ``v`` and that is not among ``v``'s ``k`` best has ``k`` items above it there, and
so above it in the merge), so each view is searched for ``k`` items, filters and exclusions applied to every
view, and nothing is lost.

>>> views = embed_query_view_sets(model, ["photo.jpg"], QueryViews(("mirror", "unstretch")))
>>> index.hits(neighbours_of_views(index, views.vectors, views.query_of, k=10))
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import numpy as np

from stylespace.index.backend import Neighbours
from stylespace.utils import StylespaceError


@dataclasses.dataclass
class ViewVectors:
    """Query images embedded as their views.

    Attributes:
        vectors: (N, D) float32, one row per view of every query, each query's views together and its
            canonical view first (N = Q when each query has its canonical view alone).
        query_of: (N,) int64, the query (0..Q-1, non-decreasing) each row is a view of.
        names: (N,) which view each row is (``canonical``, ``mirror``, ``unstretch``).
        blank: (Q,) whether each query's picture is blank or almost uniform (its canonical view's ``blank``).
    """

    vectors: np.ndarray
    query_of: np.ndarray
    names: list[str]
    blank: list[bool]

    @property
    def n_queries(self) -> int:
        return len(self.blank)

    @property
    def first_rows(self) -> np.ndarray:
        """(Q,) the row of each query's canonical view."""
        return first_rows(self.query_of, self.n_queries)

    @property
    def canonical(self) -> np.ndarray:
        """(Q, D) each query's canonical view: the vectors a search without query views uses."""
        return self.vectors[self.first_rows]

    @property
    def views_per_query(self) -> float:
        """The mean number of views searched per query (what the views cost, 1.0 without them)."""
        return len(self.query_of) / max(self.n_queries, 1)


def first_rows(query_of: np.ndarray, n_queries: int) -> np.ndarray:
    """(Q,) the first row of each query in ``query_of`` (N,), which must number the queries 0..Q-1 in order,
    each at least once."""
    query_of = np.asarray(query_of, dtype=np.int64)
    steps = np.diff(query_of)
    if len(query_of) == 0 and n_queries == 0:
        return np.empty(0, np.int64)
    if not (len(query_of) and query_of[0] == 0 and query_of[-1] == n_queries - 1 and ((steps == 0) | (steps == 1)).all()):
        raise StylespaceError(f"query_of must number the queries 0..{n_queries - 1} in order, each at least once")
    return np.searchsorted(query_of, np.arange(n_queries))


def views_exclusions(exclude_ids, query_of: np.ndarray, n_queries: int):
    """Exclusions per query (None, one list of ids for every query, or one list per query) as the same per view row."""
    if exclude_ids is None or len(exclude_ids) == 0 or all(isinstance(e, str) for e in exclude_ids):
        return exclude_ids  # nothing, or the same ids for every row
    lists = [[e] if isinstance(e, str) else list(e or []) for e in exclude_ids]
    if len(lists) != n_queries:
        raise StylespaceError(f"exclude_ids has {len(lists)} lists for {n_queries} queries; expected one per query")
    return [lists[q] for q in np.asarray(query_of)]


def merge_views(neighbours: Neighbours, query_of: np.ndarray, n_queries: int, k: int) -> Neighbours:
    """Per query, the ``k`` best distinct items over its views' rows of ``neighbours`` (N, k'), each item
    with its best similarity (larger is closer), best first (ties: the smaller key). Returns (Q, k), padded
    with key -1 / NaN as :class:`Neighbours` is."""
    query_of = np.asarray(query_of, dtype=np.int64)
    width = neighbours.keys.shape[1]
    owner = np.repeat(query_of, width)
    keys = neighbours.keys.reshape(-1)
    sims = neighbours.similarities.reshape(-1)
    found = keys >= 0
    owner, keys, sims = owner[found], keys[found], sims[found]
    # each (query, item) once, with its best similarity
    order = np.lexsort((-sims, keys, owner))
    owner, keys, sims = owner[order], keys[order], sims[order]
    first = np.ones(len(owner), dtype=bool)
    first[1:] = (owner[1:] != owner[:-1]) | (keys[1:] != keys[:-1])
    owner, keys, sims = owner[first], keys[first], sims[first]
    # per query, best first
    order = np.lexsort((keys, -sims, owner))
    owner, keys, sims = owner[order], keys[order], sims[order]
    rank = np.arange(len(owner)) - np.searchsorted(owner, owner)
    kept = rank < k
    out_keys = np.full((n_queries, k), -1, dtype=np.int64)
    out_sims = np.full((n_queries, k), np.nan, dtype=np.float32)
    out_keys[owner[kept], rank[kept]] = keys[kept]
    out_sims[owner[kept], rank[kept]] = sims[kept]
    return Neighbours(out_keys, out_sims, neighbours.metric)


def neighbours_of_views(index, vectors: np.ndarray, query_of: np.ndarray, k: int = 10, *, exclude_ids=None,
                        where: Mapping[str, Any] | None = None, model_id: str | None = None,
                        prepared: bool = False, n_queries: int | None = None) -> Neighbours:
    """The ``k`` nearest items of each query searched as its views: ``vectors`` (N, D) are the views, ``query_of``
    (N,) the query each is a view of. All views are searched in one batch (``CatalogIndex.neighbours``, its
    ``exclude_ids`` / ``where`` / ``model_id`` / ``prepared`` given per query and applied to every view), and
    merged by :func:`merge_views`. Queries with one view each are searched exactly as ``CatalogIndex.neighbours``
    searches them. Returns :class:`Neighbours` (Q, k)."""
    query_of = np.asarray(query_of, dtype=np.int64)
    if n_queries is None:
        n_queries = int(query_of[-1]) + 1 if len(query_of) else 0
    first_rows(query_of, n_queries)
    if len(query_of) == n_queries:  # one view each: today's search, untouched
        return index.neighbours(vectors, k, exclude_ids=exclude_ids, where=where, model_id=model_id, prepared=prepared)
    found = index.neighbours(vectors, k, exclude_ids=views_exclusions(exclude_ids, query_of, n_queries), where=where,
                             model_id=model_id, prepared=prepared)
    return merge_views(found, query_of, n_queries, k)


def search_views(index, views: ViewVectors, k: int = 10, *, exclude_ids=None, where: Mapping[str, Any] | None = None,
                 model_id: str | None = None, metric: str | None = None) -> list[list]:
    """:func:`neighbours_of_views` for :class:`ViewVectors`, as ``CatalogIndex.search``'s :class:`Hit` lists."""
    found = neighbours_of_views(index, views.vectors, views.query_of, k, exclude_ids=exclude_ids, where=where,
                                model_id=model_id, n_queries=views.n_queries)
    return index.hits(found, metric)


def stack_views(pixels: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Each query's views (V_i, H, W, 3), or its one view (H, W, 3), for one or more queries -> ((N, H, W, 3)
    every view, (N,) ``query_of``)."""
    rows = [p[None] if p.ndim == 3 else p for p in pixels]
    query_of = np.repeat(np.arange(len(rows), dtype=np.int64), [len(r) for r in rows])
    return np.concatenate(rows), query_of
