"""The catalog: items (id, image source, label, metadata) and where their image bytes come from."""
from __future__ import annotations

import collections
import dataclasses
import hashlib
import io
import mimetypes
import os
import zipfile
from pathlib import Path
from typing import Iterable, Protocol

import numpy as np
from PIL import Image

from stylespace.data.images import ImageDecodeError, open_image
from stylespace.utils import StylespaceError


class CatalogError(StylespaceError):
    """A path that is not a catalog, or a catalog that cannot be read."""


@dataclasses.dataclass(frozen=True)
class Item:
    """One catalog item. ``source`` is a key its catalog's reader understands (a path, a zip member...)."""

    id: str
    source: str
    label: str | None = None
    meta: dict[str, str] = dataclasses.field(default_factory=dict, hash=False, compare=False)


@dataclasses.dataclass(frozen=True)
class Skipped:
    """A row or file left out of the catalog, with where it was and why."""

    where: str
    reason: str


# --- where image bytes come from -------------------------------------------------------------


class ImageReader(Protocol):
    """Where a catalog's images come from; every reader gives each item's image as an encoded file.

    ``read(source)``: the image file's bytes (an in-memory array is encoded as PNG); ``media_type(source)``:
    their media type (``image/jpeg``); ``describe()``: where the images are, for messages.
    """

    def read(self, source: str) -> bytes: ...

    def media_type(self, source: str) -> str: ...

    def describe(self) -> str: ...


def _guessed_media_type(source: str) -> str:
    return mimetypes.guess_type(source)[0] or "application/octet-stream"


class FileReader:
    """Images on disk; sources are paths relative to ``root`` (or absolute)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def read(self, source: str) -> bytes:
        return (self.root / source).read_bytes()

    def media_type(self, source: str) -> str:
        return _guessed_media_type(source)

    def describe(self) -> str:
        return str(self.root)


class ZipReader:
    """Images inside a zip archive, read in place; each process opens its own handle."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._handle: zipfile.ZipFile | None = None
        self._pid: int | None = None

    def read(self, source: str) -> bytes:
        if self._handle is None or self._pid != os.getpid():
            self._handle = zipfile.ZipFile(self.path)
            self._pid = os.getpid()
        return self._handle.read(source)

    def __getstate__(self):
        return {"path": self.path}

    def __setstate__(self, state):
        self.__init__(state["path"])

    def media_type(self, source: str) -> str:
        return _guessed_media_type(source)

    def describe(self) -> str:
        return str(self.path)


class ArrayReader:
    """Images held in memory as a uint8 array (N, H, W) or (N, H, W, 3); sources are row numbers."""

    def __init__(self, images: np.ndarray, name: str):
        self.images = images
        self.name = name

    def read_array(self, source: str) -> np.ndarray:
        return self.images[int(source)]

    def read(self, source: str) -> bytes:
        """The row as a PNG file (there is no stored file to return)."""
        buffer = io.BytesIO()
        Image.fromarray(self.read_array(source)).save(buffer, format="PNG")
        return buffer.getvalue()

    def media_type(self, source: str) -> str:
        return "image/png"

    def describe(self) -> str:
        return self.name


# --- the catalog -------------------------------------------------------------------------------


@dataclasses.dataclass
class Catalog:
    """A set of product images with labels and metadata, from any of the supported layouts.

    Attributes:
        items: the usable items, in a stable order.
        kind: ``kaggle``, ``folder``, ``manifest``, ``idx`` or ``pairs``.
        source_path: the path the catalog was read from.
        label_column: the metadata column the labels came from (``articleType`` for Kaggle), if any.
        metadata_columns: the metadata columns every item carries in ``meta``.
        skipped: rows and files left out, each with its reason.
        pairs: for pair catalogs, ``(id_a, id_b, label)`` triples with label 1 = compatible/similar.
        fingerprint_parts: what identifies the source's content (sizes, mtimes), for cache keys.
    """

    items: list[Item]
    kind: str
    source_path: Path
    reader: ImageReader
    label_column: str | None = None
    metadata_columns: list[str] = dataclasses.field(default_factory=list)
    skipped: list[Skipped] = dataclasses.field(default_factory=list)
    pairs: list[tuple[str, str, int]] = dataclasses.field(default_factory=list)
    fingerprint_parts: tuple = ()

    def __post_init__(self) -> None:
        self._by_id = {item.id: i for i, item in enumerate(self.items)}

    # sequence-like access
    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self):
        return iter(self.items)

    def __getitem__(self, item_id: str) -> Item:
        try:
            return self.items[self._by_id[item_id]]
        except KeyError:
            raise CatalogError(f"{self.source_path}: no item with id {item_id!r}") from None

    def __contains__(self, item_id: str) -> bool:
        return item_id in self._by_id

    @property
    def ids(self) -> list[str]:
        return [item.id for item in self.items]

    @property
    def labels(self) -> list[str | None]:
        return [item.label for item in self.items]

    def class_counts(self) -> collections.Counter:
        """Items per label (unlabelled items are not counted)."""
        return collections.Counter(item.label for item in self.items if item.label is not None)

    def read_bytes(self, item: Item | str) -> bytes:
        """The bytes of an item's image file (for an in-memory catalog such as Fashion-MNIST, a PNG of it)."""
        item = self[item] if isinstance(item, str) else item
        return self.reader.read(item.source)

    def media_type(self, item: Item | str) -> str:
        """The media type of :meth:`read_bytes` (``image/jpeg``, ``image/png``...)."""
        item = self[item] if isinstance(item, str) else item
        return self.reader.media_type(item.source)

    def read_image(self, item: Item | str) -> Image.Image:
        """An item's image as an RGB ``PIL.Image``; raises ImageDecodeError naming the item when broken."""
        item = self[item] if isinstance(item, str) else item
        if isinstance(self.reader, ArrayReader):
            return open_image(Image.fromarray(self.reader.read_array(item.source)))
        try:
            data = self.reader.read(item.source)
        except (OSError, KeyError) as exc:
            raise ImageDecodeError(f"{item.source}: cannot read ({exc})") from None
        try:
            return open_image(data)
        except ImageDecodeError as exc:
            raise ImageDecodeError(f"{item.source}: {str(exc).split(': ', 1)[-1]}") from None

    def subset(self, ids: Iterable[str]) -> "Catalog":
        """A catalog with only the given ids (in the given order); unknown ids are an error."""
        chosen = [self[i] for i in ids]
        keep = {item.id for item in chosen}
        pairs = [p for p in self.pairs if p[0] in keep and p[1] in keep]
        return dataclasses.replace(self, items=chosen, pairs=pairs)

    def without(self, failed: dict[str, str]) -> "Catalog":
        """A catalog without the items in ``failed`` (id -> reason), recorded as skipped."""
        if not failed:
            return self
        items = [item for item in self.items if item.id not in failed]
        skipped = list(self.skipped) + [Skipped(self[i].source, reason) for i, reason in failed.items() if i in self]
        pairs = [p for p in self.pairs if p[0] not in failed and p[1] not in failed]
        return dataclasses.replace(self, items=items, skipped=skipped, pairs=pairs)

    def fingerprint(self) -> str:
        """A short hash that changes when the catalog's source changes (used to key caches)."""
        digest = hashlib.sha256(repr((self.kind, str(self.source_path.resolve()), self.fingerprint_parts)).encode())
        digest.update("\n".join(f"{i.id}\t{i.source}" for i in self.items).encode())
        return digest.hexdigest()[:16]

    # reporting
    def skip_reasons(self) -> collections.Counter:
        """How many rows/files were skipped for each reason."""
        return collections.Counter(s.reason for s in self.skipped)

    def summary_line(self) -> str:
        """One line: ``44,441 items loaded, 5 rows without image skipped``."""
        parts = [f"{len(self.items):,} items loaded"]
        for reason, count in sorted(self.skip_reasons().items(), key=lambda kv: -kv[1]):
            parts.append(f"{count:,} {_plural(reason, count)} skipped")
        if self.pairs:
            parts.append(f"{len(self.pairs):,} pairs")
        return ", ".join(parts)

    def summary(self) -> dict:
        """Everything ``stylespace catalog`` reports, as plain data."""
        counts = self.class_counts()
        return {
            "path": str(self.source_path),
            "kind": self.kind,
            "summary": self.summary_line(),
            "items": len(self.items),
            "label_column": self.label_column,
            "classes": len(counts),
            "class_counts": dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))),
            "unlabelled": sum(1 for item in self.items if item.label is None),
            "metadata_columns": list(self.metadata_columns),
            "skipped": [dataclasses.asdict(s) for s in self.skipped],
            "skip_reasons": dict(self.skip_reasons()),
            "pairs": len(self.pairs),
            "positive_pairs": sum(1 for p in self.pairs if p[2] == 1),
        }


def _plural(reason: str, count: int) -> str:
    """Reasons are written for one row ("row without image"); pluralise the first word for counts > 1."""
    if count == 1:
        return reason
    head, _, tail = reason.partition(" ")
    if head.endswith(("y",)) and not head.endswith(("ay", "ey", "oy")):
        head = head[:-1] + "ies"
    elif not head.endswith("s"):
        head += "s"
    return f"{head} {tail}".strip()
