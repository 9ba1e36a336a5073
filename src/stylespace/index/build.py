"""Indexing with a model: catalog images -> embeddings -> a :class:`CatalogIndex`; query images -> vectors.

Catalog images come through the decoded image cache and query images through
:func:`stylespace.data.images.load_rgb`, at the model's input size, so an item embedded for the
index and the same photo given as a query see identical pixels.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from stylespace.data.images import VIEW_VERSION
from stylespace.index.catalog_index import CatalogIndex
from stylespace.index.config import IndexSettings
from stylespace.index.query_views import ViewVectors, stack_views
from stylespace.models.shipped import resolve_model_dir
from stylespace.progress import steps
from stylespace.utils import StylespaceError

# Images decoded and embedded per step when indexing: bounded memory for a catalog subset.
_CHUNK = 4096
# Why a blank catalog image is left out of an index (a reason like those of undecodable images).
BLANK_REASON = "blank or nearly uniform image"


def embed_items(model, catalog, ids: Sequence[str] | None = None, *, cache_dir: str | os.PathLike | None = None,
                batch_size: int = 256, device: str = "auto", progress: bool = True, include_blank: bool = True,
                ray=None):
    """Embeddings of catalog items (all, or ``ids``) under ``model``, through the decoded image cache, or
    decoded and embedded on a Ray cluster when ``ray`` is a :class:`stylespace.ray_embedding.RayConfig`.

    Returns ``(Embeddings, failed)`` where ``failed`` maps the ids left out to why: their image could not
    be decoded, or (unless ``include_blank``) it is blank or nearly uniform (:data:`BLANK_REASON`).
    """
    if ray is not None:
        return _embed_items_on_ray(model, catalog, ids, ray, batch_size, device, progress, include_blank)
    from stylespace.data import load_image_array
    from stylespace.embeddings import array_vectors, cached_array_vectors, embed_images

    array = load_image_array(catalog, size=tuple(model.config.input_size), cache_dir=cache_dir, progress=progress)
    wanted = array.ids if ids is None else [str(i) for i in ids]
    decoded = set(array.ids)
    failed = {i: array.failed.get(i, "not in the catalog") for i in wanted if i not in decoded}
    if not include_blank and array.blank:
        blank = set(array.blank)
        failed.update({i: BLANK_REASON for i in wanted if i in blank})
    kept = [i for i in wanted if i not in failed]
    contiguous = ids is None and len(kept) == len(array.ids)  # kept is then array.ids, row for row
    # the whole array's vectors kept in the cache (another command embedded it, or this one keeps them)
    whole = cached_array_vectors(model, array)
    if whole is None and ids is None:
        whole = array_vectors(model, array, batch_size=batch_size, device=device, progress=progress)
    if whole is not None:
        vectors = np.asarray(whole)[[array.index_of(i) for i in kept]] if not contiguous else np.asarray(whole)
        return _item_embeddings(model, catalog, kept, vectors), failed
    vectors = np.empty((len(kept), model.output_dim), dtype=np.float32)
    with steps(progress, len(kept), f"embedding {len(kept):,} images") as advance:
        for start in range(0, len(kept), _CHUNK):
            chunk = kept[start:start + _CHUNK]
            # the whole catalog: contiguous slices of the memory map; a subset: gathered rows
            pixels = np.array(array.pixels[start:start + _CHUNK]) if contiguous else array.take(chunk)
            vectors[start:start + len(chunk)] = embed_images(model, pixels, batch_size=batch_size, device=device)
            advance(len(chunk))
    return _item_embeddings(model, catalog, kept, vectors), failed


def _embed_items_on_ray(model, catalog, ids, ray, batch_size: int, device: str, progress: bool, include_blank: bool):
    """:func:`embed_items` with the decoding and embedding on a Ray cluster: the same ids, vectors and reasons."""
    from stylespace.ray_embedding import embed_items_ray

    made = embed_items_ray(model, catalog, ids, ray, batch_size=batch_size, device=device, progress=progress)
    failed = dict(made.failed) if ids is not None else {}  # as above: the whole catalog means its decodable items
    if not include_blank:
        failed.update({i: BLANK_REASON for i in made.blank})
    keep = [k for k, i in enumerate(made.ids) if i not in failed]
    return _item_embeddings(model, catalog, [made.ids[k] for k in keep], made.vectors[keep]), failed


def _item_embeddings(model, catalog, ids: list[str], vectors: np.ndarray):
    from stylespace.embeddings import Embeddings
    from stylespace.models import model_id

    labels = [catalog[i].label for i in ids]
    return Embeddings(ids, vectors, labels if any(v is not None for v in labels) else None, model_id(model),
                      {"catalog": str(catalog.source_path), "catalog_fingerprint": catalog.fingerprint()})


def build_index(model, catalog, folder: str | os.PathLike, *, ids: Sequence[str] | None = None,
                labels: Mapping[str, str] | None = None, model_path: str | os.PathLike = "",
                kind: str = IndexSettings.kind, metric: str = IndexSettings.metric,
                whiten: bool = IndexSettings.whiten, overwrite: bool = False,
                cache_dir: str | os.PathLike | None = None, batch_size: int = 256, device: str = "auto",
                progress: bool = True, include_blank: bool = False, ray=None,
                **settings: Any) -> tuple[CatalogIndex, dict[str, str]]:
    """Embed a catalog (or the ``ids`` of it) with ``model`` and write an index to ``folder``.

    Args:
        labels: id -> label overriding the catalog's (a split manifest's labels, after class merging).
        model_path: the model folder, recorded so that ``search`` can embed queries with the same model.
        whiten: whiten the vectors with a PCA fitted on these items (see :class:`IndexConfig`); on by
            default here, where a model embeds a whole catalog (``CatalogIndex.create`` indexes vectors as given).
        include_blank: index items whose image is blank or nearly uniform too (default: left out, as a
            picture with nothing in it matches blank uploads and nothing else; the image cache knows them).
        ray: a :class:`stylespace.ray_embedding.RayConfig`: decode and embed on a Ray cluster (the same index).
        settings: other :class:`IndexConfig` fields (nlist, nprobe, hnsw_m, search_dims, ...).
    Returns:
        (the index, {id: reason} for items left out: their image could not be decoded, or it is blank
        (:data:`BLANK_REASON`)).
    """
    embeddings, failed = embed_items(model, catalog, ids, cache_dir=cache_dir, batch_size=batch_size,
                                     device=device, progress=progress, include_blank=include_blank, ray=ray)
    if not len(embeddings):
        raise StylespaceError(f"{catalog.source_path}: no decodable images to index")
    items = [catalog[i] for i in embeddings.ids]
    item_labels = [labels.get(i.id, i.label) if labels is not None else i.label for i in items]
    index = CatalogIndex.create(
        folder, embeddings.ids, embeddings.vectors, model_id=embeddings.model_id, metric=metric, kind=kind,
        labels=item_labels, metas=[i.meta for i in items], sources=[i.source for i in items], whiten=whiten,
        overwrite=overwrite, model_path=str(resolve_model_dir(model_path).resolve()) if model_path else "",
        input_size=tuple(model.config.input_size), catalog=str(Path(catalog.source_path).resolve()),
        catalog_fingerprint=catalog.fingerprint(), metadata_columns=list(catalog.metadata_columns),
        view_version=VIEW_VERSION, **settings)
    return index, failed


def add_items(index: CatalogIndex, model, catalog, ids: Sequence[str] | None = None, *, replace: bool = False,
              labels: Mapping[str, str] | None = None, cache_dir: str | os.PathLike | None = None,
              batch_size: int = 256, device: str = "auto", progress: bool = True,
              include_blank: bool = False, ray=None) -> tuple[int, dict[str, str]]:
    """Embed catalog items (all, or ``ids``) and add them to ``index``; items already in it are skipped
    unless ``replace``, blank ones unless ``include_blank`` (as in :func:`build_index`). Returns (how many
    were added, {id: reason} of those left out: undecodable or blank). ``ray``: embed on a Ray cluster."""
    wanted = catalog.ids if ids is None else [str(i) for i in ids]
    if not replace:
        present = index.items.find(wanted)
        wanted = [i for i in wanted if i not in present]
    if not wanted:
        return 0, {}
    embeddings, failed = embed_items(model, catalog, wanted, cache_dir=cache_dir, batch_size=batch_size,
                                     device=device, progress=progress, include_blank=include_blank, ray=ray)
    if not len(embeddings):
        return 0, failed
    from stylespace.index.writes import NewItem, put_items

    new = [NewItem(item.id, vector, labels.get(item.id, item.label) if labels is not None else item.label,
                   dict(item.meta), item.source)
           for item, vector in zip((catalog[i] for i in embeddings.ids), embeddings.vectors)]
    result = put_items(index, new, model_id=embeddings.model_id, existing="replace" if replace else "error")
    return len(result.created) + len(result.replaced), failed


def embed_query_images(model, sources: Sequence, device: str = "auto", batch_size: int = 64) -> np.ndarray:
    """(Q, D) embeddings of query images of any size (paths, bytes or PIL images), decoded by
    :func:`stylespace.data.images.load_rgb` at the model's input size, as the catalog was."""
    return embed_query_views(model, sources, device=device, batch_size=batch_size)[0]


def embed_query_views(model, sources: Sequence, device: str = "auto",
                      batch_size: int = 64) -> tuple[np.ndarray, list[bool]]:
    """((Q, D) embeddings, (Q,) blank flags) of query images of any size (paths, bytes or PIL images),
    decoded into their canonical views (:func:`stylespace.data.load_view`) at the model's input size, as
    the catalog was; a flag says the picture is blank or almost uniform (``View.blank``)."""
    embedded = embed_query_view_sets(model, sources, device=device, batch_size=batch_size)
    return embedded.vectors, embedded.blank


def embed_query_view_sets(model, sources: Sequence, views=None, device: str = "auto",
                          batch_size: int = 64) -> ViewVectors:
    """Query images of any size (paths, bytes or PIL images) embedded as the views ``views`` (a
    :class:`stylespace.data.query_views.QueryViews`; None: the canonical view alone) asks for, each decoded once
    (:func:`stylespace.data.query_views.load_query_views`); every view of ``batch_size`` queries in one forward
    pass. Returns :class:`ViewVectors` ((N, D) vectors, the query of each row, (Q,) blank flags)."""
    from stylespace.data.query_views import QueryViews, load_query_views

    views = QueryViews.of(views)
    size = tuple(model.config.input_size)
    sets = [load_query_views(source, size, views) for source in sources]
    return embed_view_sets(model, sets, views, device=device, batch_size=batch_size)


def embed_view_sets(model, sets: Sequence, views=None, device: str = "auto", batch_size: int = 64) -> ViewVectors:
    """Query images already decoded into their views (:class:`stylespace.data.query_views.ViewSet`, made by
    ``load_query_views`` with the ``views`` given here) embedded; every view of ``batch_size`` queries in one
    forward pass. What :func:`embed_query_view_sets` does after decoding, for a caller that decodes itself (within
    a pixel budget, keeping the images that fail apart)."""
    from stylespace.data.query_views import QueryViews
    from stylespace.embeddings import embed_images

    views = QueryViews.of(views)
    if not sets:
        return ViewVectors(np.empty((0, model.output_dim), np.float32), np.empty(0, np.int64), [], [])
    pixels, query_of = stack_views([s.pixels for s in sets])
    vectors = embed_images(model, pixels, batch_size=batch_size * len(views.names), device=device)
    return ViewVectors(vectors, query_of, [name for s in sets for name in s.names], [bool(s.blank) for s in sets])


def image_files(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """Query image files from paths that are image files or folders (their images, sorted, not recursive)."""
    from stylespace.data.images import IMAGE_EXTENSIONS

    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
            if not found:
                raise StylespaceError(f"{path}: a folder with no images ({', '.join(IMAGE_EXTENSIONS)})")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise StylespaceError(f"{path}: no such image file or folder (pass --id to search by catalog id)")
    return files
