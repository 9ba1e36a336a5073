"""Queries against an index: the model that embeds them, and image files or catalog ids made into vectors.

A query image must be embedded by the index's own model and decoded the way the index's items were (the
canonical view of the same version), or its similarities mean nothing; both are checked here, once, for
every command and notebook that queries an index.

>>> batch = embed_queries(index, ["photo.jpg", "folder/"])
>>> index.search(batch.vectors, k=10, exclude_ids=batch.exclusions())
>>> batch = embed_queries(index, ["photo.jpg"], query_views="all")  # also mirrored and un-stretched
>>> batch.search(index, k=10)  # each item's best score over the views
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
from typing import Any, Mapping, Sequence

import numpy as np

from stylespace.data.query_views import QueryViews
from stylespace.index.build import embed_query_view_sets, image_files
from stylespace.index.catalog_index import CatalogIndex, Hit
from stylespace.index.query_views import ViewVectors, search_views
from stylespace.progress import console
from stylespace.utils import StylespaceError


@dataclasses.dataclass
class QueryBatch:
    """Queries as vectors.

    Attributes:
        names: (Q,) what each query was (a file path or a catalog id).
        vectors: (Q, D) float32, as the index's model makes them.
        own_ids: (Q,) the catalog id each query is, or may be (an id, or an image file named ``<id>.<ext>``):
            what ``--exclude-self`` leaves out of its results.
        blank: (Q,) whether each query image is blank or almost uniform; None for id queries.
        views: every view of each query image (:class:`ViewVectors`) when query views were asked for; None
            for id queries and for images searched as their canonical view alone (``vectors``).
    """

    names: list[str]
    vectors: np.ndarray
    own_ids: list[str]
    blank: list[bool] | None
    views: ViewVectors | None = None

    def exclusions(self) -> list[list[str]]:
        """Per query, the ids to leave out of its results: the query itself."""
        return [[i] for i in self.own_ids]

    def searched(self) -> tuple[np.ndarray, np.ndarray | None]:
        """What a search takes: ((N, D) vectors, (N,) the query of each row, or None when each query is one row)."""
        return (self.vectors, None) if self.views is None else (self.views.vectors, self.views.query_of)

    def search(self, index: CatalogIndex, k: int = 10, *, exclude_self: bool = False,
               where: Mapping[str, Any] | None = None, metric: str | None = None) -> list[list[Hit]]:
        """Each query's ``k`` nearest items (``CatalogIndex.search``), over all its views when it has several
        (each item's best score); ``exclude_self`` leaves each query's own id out."""
        exclude = self.exclusions() if exclude_self else None
        if self.views is None:
            return index.search(self.vectors, k, exclude_ids=exclude, where=where, metric=metric)
        return search_views(index, self.views, k, exclude_ids=exclude, where=where, metric=metric)


def open_query_model(index: CatalogIndex, model_path: str | os.PathLike | None = None, device: str = "auto"):
    """The model that embeds queries for ``index``: ``model_path`` or the folder the index records. It must be
    the model that embedded the index (same weights), and the index must use today's canonical view."""
    from stylespace.models import load_model, model_id
    from stylespace.utils import pick_device

    folder = model_path or index.model_dir
    if folder is None:
        raise StylespaceError(f"the index at {index.folder} records no model folder; pass --model MODEL_DIR")
    model = load_model(folder, device=pick_device(device))
    index.check_model(model_id(model), f"queries embedded with {folder}")
    index.check_view()
    return model


def embed_queries(index: CatalogIndex, queries: Sequence[str], *, by_id: bool = False,
                  model_path: str | os.PathLike | None = None, device: str = "auto",
                  progress: bool = True, query_views: QueryViews | str | None = None) -> QueryBatch:
    """Vectors for query image paths or folders of images (embedded by the index's model), or, with
    ``by_id``, for ids of items already in the index (their stored vectors). ``query_views``
    (:class:`QueryViews`, or ``mirror,unstretch`` / ``all`` / ``none``): the images are also embedded as those
    views, for :meth:`QueryBatch.search` (an id query has its stored vector only)."""
    if not queries:
        raise StylespaceError("give at least one query: image files, a folder of images, or ids with --id")
    views = QueryViews.of(query_views)
    if by_id:
        names = [str(q) for q in queries]
        return QueryBatch(names, index.vectors(names), names, None)
    files = image_files(queries)
    model = open_query_model(index, model_path, device)
    status = console.status(f"embedding {len(files)} query image(s)") if progress else contextlib.nullcontext()
    with status:
        embedded = embed_query_view_sets(model, files, views, device=device)
    return QueryBatch([str(f) for f in files], embedded.canonical, [f.stem for f in files], embedded.blank,
                      embedded if views.enabled else None)


def index_summary(index: CatalogIndex) -> dict:
    """What an index holds and how it was made (``stylespace index info``), as plain JSON-ready values (the
    recommendation's calibration saved beside it: ``stylespace.recommend.calibration_summary``)."""
    c = index.config
    marker = index.marker
    return {"folder": str(index.folder), "backend": c.backend, "uri": c.uri, "collection": c.collection,
            "count": len(index), "stale": c.stale, "dim": c.dim, "search_dims": c.search_dims, "metric": c.metric,
            "kind": c.kind, "whitened_items": c.whitened_items, "model_id": c.model_id, "model_path": c.model_path,
            "input_size": list(c.input_size), "catalog": c.catalog, "metadata_columns": c.metadata_columns,
            "recall_at_10": c.recall_at_10, "view_version": c.view_version, "view_outdated": index.view_outdated,
            "typicality": c.typicality, "generation": marker.generation, "revision": marker.revision,
            "space_version": marker.space_version, "updated": c.updated}
