"""Queries against an index: the model that embeds them, and image files or catalog ids made into vectors.

A query image must be embedded by the index's own model and decoded the way the index's items were (the
canonical view of the same version), or its similarities mean nothing; both are checked here, once, for
every command and notebook that queries an index.

>>> batch = embed_queries(index, ["photo.jpg", "folder/"])
>>> index.search(batch.vectors, k=10, exclude_ids=batch.exclusions())
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
from typing import Sequence

import numpy as np

from stylespace.index.build import embed_query_views, image_files
from stylespace.index.catalog_index import CatalogIndex
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
    """

    names: list[str]
    vectors: np.ndarray
    own_ids: list[str]
    blank: list[bool] | None

    def exclusions(self) -> list[list[str]]:
        """Per query, the ids to leave out of its results: the query itself."""
        return [[i] for i in self.own_ids]


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
                  progress: bool = True) -> QueryBatch:
    """Vectors for query image paths or folders of images (embedded by the index's model), or, with
    ``by_id``, for ids of items already in the index (their stored vectors)."""
    if not queries:
        raise StylespaceError("give at least one query: image files, a folder of images, or ids with --id")
    if by_id:
        names = [str(q) for q in queries]
        return QueryBatch(names, index.vectors(names), names, None)
    files = image_files(queries)
    model = open_query_model(index, model_path, device)
    status = console.status(f"embedding {len(files)} query image(s)") if progress else contextlib.nullcontext()
    with status:
        vectors, blank = embed_query_views(model, files, device=device)
    return QueryBatch([str(f) for f in files], vectors, [f.stem for f in files], blank)


def index_summary(index: CatalogIndex) -> dict:
    """What an index holds and how it was made (``stylespace index info``), as plain JSON-ready values (the
    recommendation's calibration saved beside it: ``stylespace.recommend.calibration_summary``)."""
    c = index.config
    marker = index.marker
    return {"folder": str(index.folder), "backend": c.backend, "uri": c.uri, "collection": c.collection,
            "count": len(index), "stale": c.stale, "dim": c.dim, "metric": c.metric,
            "kind": c.kind, "whitened_items": c.whitened_items, "model_id": c.model_id, "model_path": c.model_path,
            "input_size": list(c.input_size), "catalog": c.catalog, "metadata_columns": c.metadata_columns,
            "recall_at_10": c.recall_at_10, "view_version": c.view_version, "view_outdated": index.view_outdated,
            "typicality": c.typicality, "generation": marker.generation, "revision": marker.revision,
            "space_version": marker.space_version, "updated": c.updated}
