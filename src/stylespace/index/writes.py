"""Changing a live catalog item by item: the one code path behind the write API, the CLI and Python.

``POST /items`` and ``stylespace index put`` (an uploaded image), ``stylespace index add`` (catalog images),
``PATCH /items/{id}`` and ``stylespace index set`` (metadata), ``DELETE /items/{id}`` and ``stylespace index
remove`` all end here, on a :class:`~stylespace.index.CatalogIndex` and vectors already embedded (the
callers embed: the service with its query model, the CLI with the index's model):

* :func:`put_items` adds items, or replaces those whose id is there, and leaves alone those whose id,
  vector, label, metadata and image are already exactly what is asked (a retried request changes nothing
  and is answered like the first);
* :func:`update_items` changes labels and metadata (the item keeps its vector; it is written again under
  a new key, in one transaction, so readers see the old item or the new, never a mix);
* :func:`remove_items` removes items.

Each is one transaction of the index (:meth:`CatalogIndex.add`): committed whole or not at all, and the
:class:`WriteResult` carries the revision it committed. An uploaded image is kept in the index folder
(``uploads/ab/<sha256>.<ext>``, written and fsynced before the transaction that names it commits), so the
service serves it as it serves a catalog image; its source reads ``index:uploads/...``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from stylespace.index.catalog_index import CatalogIndex
from stylespace.index import structures
from stylespace.utils import StylespaceError

UPLOADS_DIR = "uploads"
# A source kept in the index folder (an uploaded image), not in the catalog.
INDEX_SOURCE = "index:"
# Stored and new vectors closer than this (largest difference of a component, prepared) are the same vector:
# re-embedding one image may move the last bits (another batch, another thread count).
SAME_VECTOR_TOLERANCE = 1e-4
_EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "BMP": "bmp", "TIFF": "tif"}


class UnknownItems(StylespaceError):
    """Ids that are not in the index (the API answers 404 with this code, naming this field)."""

    code, field = "unknown_item", "item_id"

    def __init__(self, ids: Sequence[str]):
        self.ids = list(ids)
        shown = ", ".join(repr(i if len(i) <= 64 else i[:64] + "…") for i in self.ids[:5])
        super().__init__(f"no item with id {shown} in this catalog" if len(self.ids) == 1 else
                         f"{len(self.ids)} ids not in this catalog: {shown}")


@dataclasses.dataclass
class NewItem:
    """One item to put: its id, its vector as embedded (D,), and what is shown with it."""

    id: str
    vector: np.ndarray
    label: str | None = None
    meta: dict[str, str] = dataclasses.field(default_factory=dict)
    source: str = ""


@dataclasses.dataclass
class ItemPatch:
    """A change of one item's label and metadata: ``label`` replaces it when ``set_label``; each ``meta``
    column is set to its value, or dropped when the value is None; the rest is kept."""

    meta: dict[str, str | None] = dataclasses.field(default_factory=dict)
    label: str | None = None
    set_label: bool = False


@dataclasses.dataclass
class WriteResult:
    """What one committed change did: the index's generation and revision after it, and each id by fate."""

    generation: int
    revision: int
    created: list[str] = dataclasses.field(default_factory=list)
    replaced: list[str] = dataclasses.field(default_factory=list)
    updated: list[str] = dataclasses.field(default_factory=list)
    removed: list[str] = dataclasses.field(default_factory=list)
    unchanged: list[str] = dataclasses.field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.created or self.replaced or self.updated or self.removed)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def put_items(index: CatalogIndex, items: Sequence[NewItem], *, model_id: str, existing: str = "replace",
              remove_ids: Sequence[str] = ()) -> WriteResult:
    """Add ``items`` to ``index`` (and remove ``remove_ids``) in one transaction.

    Args:
        items: the items; their ids must be distinct.
        model_id: the model that embedded their vectors (must be the index's).
        existing: what an id already in the index gets: ``replace`` (new vector, label, metadata; left
            alone when all of them are already what is asked), ``skip`` (left as it is) or ``error``.
        remove_ids: items removed in the same transaction (each must be in the index).
    """
    if existing not in ("replace", "skip", "error"):
        raise StylespaceError(f"existing must be replace, skip or error, got {existing!r}")
    ids = [str(item.id) for item in items]
    if len(set(ids)) != len(ids):
        raise StylespaceError("the items to put repeat an id; give each item once")
    if remove_ids:
        found = index.items.find(list(remove_ids))
        missing = [i for i in remove_ids if i not in found]
        if missing:
            raise UnknownItems(missing)
    present = index.items.find(ids) if ids else {}
    if present and existing == "error":
        raise StylespaceError(f"{len(present)} id(s) already in the index ({', '.join(map(repr, list(present)[:5]))}); "
                              "remove them first, or replace them")
    unchanged = set(present) if existing == "skip" else _unchanged(index, [i for i in items if i.id in present])
    writing = [item for item in items if item.id not in unchanged]
    if not writing and not remove_ids:
        return _result(index, unchanged=[i for i in ids if i in unchanged])
    vectors = (np.stack([np.asarray(item.vector, dtype=np.float32).reshape(-1) for item in writing]) if writing
               else np.empty((0, index.config.dim), dtype=np.float32))
    index.add([item.id for item in writing], vectors, model_id=model_id, labels=[item.label for item in writing],
              metas=[item.meta for item in writing], sources=[item.source for item in writing], replace=True,
              remove_ids=list(remove_ids))
    return _result(index, created=[i.id for i in writing if i.id not in present],
                   replaced=[i.id for i in writing if i.id in present], removed=list(remove_ids),
                   unchanged=[i for i in ids if i in unchanged])


def update_items(index: CatalogIndex, patches: Mapping[str, ItemPatch]) -> WriteResult:
    """Change the labels and metadata of items (their vectors kept) in one transaction; unknown ids:
    :class:`UnknownItems`, and nothing is changed."""
    ids = list(patches)
    current = current_items(index, ids)
    items = []
    for item_id in ids:
        item = current[item_id]
        patch = patches[item_id]
        meta = dict(item.meta)
        for column, value in patch.meta.items():
            if value is None:
                meta.pop(column, None)
            else:
                meta[str(column)] = str(value)
        label = patch.label if patch.set_label else item.label
        items.append(dataclasses.replace(item, meta=meta, label=label))
    changed = [new for new, item_id in zip(items, ids)
               if (new.label, new.meta) != (current[item_id].label, current[item_id].meta)]
    if not changed:
        return _result(index, unchanged=ids)
    index.add([i.id for i in changed], np.stack([i.vector for i in changed]), model_id=index.model_id,
              labels=[i.label for i in changed], metas=[i.meta for i in changed],
              sources=[i.source for i in changed], replace=True)
    done = {i.id for i in changed}
    return _result(index, updated=[i for i in ids if i in done], unchanged=[i for i in ids if i not in done])


def remove_items(index: CatalogIndex, ids: Sequence[str], missing_ok: bool = False) -> WriteResult:
    """Remove items in one transaction; an unknown id is :class:`UnknownItems` (nothing removed) unless
    ``missing_ok`` (then it is reported as unchanged)."""
    ids = list(dict.fromkeys(str(i) for i in ids))
    found = index.items.find(ids)
    missing = [i for i in ids if i not in found]
    if missing and not missing_ok:
        raise UnknownItems(missing)
    if not found:
        return _result(index, unchanged=missing)
    index.remove([i for i in ids if i in found], missing_ok=missing_ok)
    return _result(index, removed=[i for i in ids if i in found], unchanged=missing)


def current_items(index: CatalogIndex, ids: Sequence[str]) -> dict[str, NewItem]:
    """The items of ``ids`` as the index holds them (vector prepared as stored, label, metadata, source);
    :class:`UnknownItems` for ids not there."""
    found = index.items.find(list(ids))
    missing = [i for i in ids if i not in found]
    if missing:
        raise UnknownItems(missing)
    keys = np.array([found[i] for i in ids], dtype=np.int64)
    rows = index.items.rows(keys)
    vectors = index.vectors_of_keys(keys)
    out = {}
    for item_id, key, vector in zip(ids, keys, vectors):
        _, source, label, meta = rows[int(key)]
        out[item_id] = NewItem(item_id, vector, label, dict(meta), source)
    return out


def _unchanged(index: CatalogIndex, items: Sequence[NewItem]) -> set[str]:
    """The ids of ``items`` the index already holds exactly so (same label, metadata, source and vector)."""
    if not items:
        return set()
    current = current_items(index, [i.id for i in items])
    same = set()
    for item in items:
        held = current[item.id]
        if (held.label, held.meta, held.source) != (item.label, dict(item.meta), item.source):
            continue
        new = structures.prepare_vectors(np.asarray(item.vector, dtype=np.float32).reshape(1, -1),
                                         index.config.metric, index.config.dim, "new item vectors")[0]
        if np.abs(new - held.vector).max() <= SAME_VECTOR_TOLERANCE:
            same.add(item.id)
    return same


def _result(index: CatalogIndex, **fates: list[str]) -> WriteResult:
    marker = index.marker
    return WriteResult(marker.generation, marker.revision, **fates)


def put_images(index: CatalogIndex, model, images: Sequence[bytes], ids: Sequence[str | None], *,
               labels: Sequence[str | None] | None = None, metas: Sequence[Mapping[str, str]] | None = None,
               device: str = "auto", existing: str = "replace") -> WriteResult:
    """Put items given as image bytes (what ``POST /items`` does, for the CLI and Python): each decoded into
    its canonical view at the model's input size (a blank picture is refused), embedded by ``model`` (the
    index's), kept in the index folder, and put with :func:`put_items` in one transaction. An id of None
    is made from the image and metadata (:func:`made_id`)."""
    from stylespace.data import load_view
    from stylespace.embeddings import embed_images
    from stylespace.models import model_id

    n = len(images)
    labels = [None] * n if labels is None else list(labels)
    metas = [{}] * n if metas is None else [dict(m) for m in metas]
    if not (len(ids) == len(labels) == len(metas) == n):
        raise StylespaceError(f"{n} images but {len(ids)} ids, {len(labels)} labels and {len(metas)} metadata; "
                              "expected one each")
    size = tuple(model.config.input_size)
    views, formats = [], []
    for number, data in enumerate(images):
        view = load_view(data, size=size)
        if view.blank:
            raise StylespaceError(f"image {number + 1} ({ids[number] or 'no id'}): the picture is blank or almost "
                                  "uniform; give a photo of the product")
        views.append(view)
        formats.append(_format_of(data))
    vectors = embed_images(model, np.stack([v.pixels for v in views]), device=device) if views else []
    items = []
    for data, fmt, item_id, label, meta, vector in zip(images, formats, ids, labels, metas, vectors):
        item_id = item_id if item_id is not None else made_id(data, label, meta)
        items.append(NewItem(item_id, vector, label, meta, save_image(index.folder, data, fmt)))
    return put_items(index, items, model_id=model_id(model), existing=existing)


def _format_of(data: bytes) -> str | None:
    import io

    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.format
    except Exception:  # decoded fine above; the extension is only a hint for serving it
        return None


# --- uploaded images ---------------------------------------------------------------------------------------


def save_image(folder: str | os.PathLike, data: bytes, image_format: str | None) -> str:
    """Keep an uploaded image in the index folder under its content hash (written, fsynced and renamed into
    place before the item that names it is committed); returns its source (``index:uploads/...``). The
    same bytes uploaded twice are one file."""
    digest = hashlib.sha256(data).hexdigest()
    name = f"{UPLOADS_DIR}/{digest[:2]}/{digest}.{_EXTENSIONS.get((image_format or '').upper(), 'img')}"
    path = Path(folder) / name
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    return INDEX_SOURCE + name


def image_path(folder: str | os.PathLike, source: str) -> Path | None:
    """The file of an image kept in the index folder (a source from :func:`save_image`); None for a source
    in the catalog. A source that would lead out of the folder is refused."""
    if not source.startswith(INDEX_SOURCE):
        return None
    name = source[len(INDEX_SOURCE):]
    parts = Path(name).parts
    if not name.startswith(UPLOADS_DIR + "/") or ".." in parts or Path(name).is_absolute():
        raise StylespaceError(f"item source {source!r} is not an image kept in the index folder")
    return Path(folder) / name


def made_id(data: bytes, label: str | None, meta: Mapping[str, str]) -> str:
    """An id for an item given without one, made from its image and metadata: the same request sent
    again makes the same id (so a retry does not add the item twice)."""
    digest = hashlib.sha256(data)
    digest.update(json.dumps([label, dict(sorted(meta.items()))], ensure_ascii=False).encode())
    return "item-" + digest.hexdigest()[:20]


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
