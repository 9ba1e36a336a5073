"""A decoded, resized uint8 image cache, so that epochs read pixels instead of decoding files.

One cache per (catalog source, image size), memory-mapped from ``<cache root>/images/<key>/``. It is
built once with parallel decoding and a progress bar, written to a temporary folder and swapped in
whole, and rebuilt automatically when the catalog's source changes (the key includes its fingerprint).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import multiprocessing as mp
import os
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from stylespace.data.catalog import ArrayReader, Catalog
from stylespace.data import images
from stylespace.data.images import VIEW_VERSION, ImageDecodeError, View, canonical_view, fit_to_size, open_image
from stylespace.progress import steps
from stylespace.utils import StylespaceError, atomic_dir, cache_root, each, validate

CACHE_VERSION = 1  # bump when the cache's layout changes; the canonical view has its own VIEW_VERSION


@dataclasses.dataclass
class ImageArray:
    """Decoded images of a catalog.

    Attributes:
        ids: item ids, in catalog order, without the items that failed to decode.
        pixels: (N, H, W, 3) uint8, memory-mapped (read-only) or in memory.
        failed: id -> reason for every item whose image could not be decoded.
        folder: the cache folder, or None for an in-memory array.
        build_seconds: time spent decoding, 0 when it came from the cache.
        blank: ids (in catalog order) of the decoded items whose image is blank or nearly uniform
            (:attr:`stylespace.data.View.blank`): they have pixels, but nothing in them to recognise.
    """

    ids: list[str]
    pixels: np.ndarray
    failed: dict[str, str]
    folder: Path | None = None
    build_seconds: float = 0.0
    blank: list[str] = dataclasses.field(default_factory=list)

    def __post_init__(self) -> None:
        self._index = {item_id: i for i, item_id in enumerate(self.ids)}

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def size(self) -> tuple[int, int]:
        return int(self.pixels.shape[1]), int(self.pixels.shape[2])

    def index_of(self, item_id: str) -> int:
        try:
            return self._index[item_id]
        except KeyError:
            reason = self.failed.get(item_id, "not in this catalog")
            raise StylespaceError(f"no decoded image for item {item_id!r}: {reason}") from None

    def indices(self, ids: Sequence[str]) -> np.ndarray:
        return np.array([self.index_of(i) for i in ids], dtype=np.int64)

    def take(self, ids: Sequence[str]) -> np.ndarray:
        """Pixels for the given ids, (len(ids), H, W, 3) uint8, in that order."""
        idx = self.indices(ids)
        order = np.argsort(idx)  # sorted reads are much faster on a memory map
        out = np.empty((len(idx), *self.pixels.shape[1:]), dtype=np.uint8)
        out[order] = self.pixels[idx[order]]
        return out


def cache_key(catalog: Catalog, size: tuple[int, int]) -> str:
    # The blank rule's thresholds are in the key too: the cache records which items are blank.
    raw = (f"{CACHE_VERSION}|view{VIEW_VERSION}|blank{images.BLANK_SHARE},{images.BLANK_SPREAD}|"
           f"{catalog.fingerprint()}|{size[0]}x{size[1]}")
    return hashlib.sha256(raw.encode()).hexdigest()[:20]


def load_image_array(catalog: Catalog, size: tuple[int, int] = (80, 60), cache_dir: str | os.PathLike | None = None,
                     workers: int | None = None, progress: bool = True, rebuild: bool = False) -> ImageArray:
    """Decoded images of ``catalog`` at ``size`` = (H, W): from the cache, or built now (then cached).

    Args:
        cache_dir: where caches live (default ``$STYLESPACE_CACHE`` or ``~/.cache/stylespace``).
        workers: decoding processes (default: the number of CPU cores).
        progress: show a Rich progress bar on stderr while building.
        rebuild: ignore an existing cache and build again.
    """
    size = (int(size[0]), int(size[1]))
    validate([each("image size", size, 8, count=2, note="H, W")])
    root = Path(cache_dir) if cache_dir is not None else cache_root()
    folder = root / "images" / cache_key(catalog, size)
    if not rebuild:
        cached = _open_cache(folder, catalog)
        if cached is not None:
            return cached
    return _build_cache(catalog, size, folder, workers, progress)


def cache_exists(catalog: Catalog, size: tuple[int, int] = (80, 60), cache_dir: str | os.PathLike | None = None) -> bool:
    """Whether :func:`load_image_array` would find ``catalog``'s cache at ``size`` (and so not build it)."""
    root = Path(cache_dir) if cache_dir is not None else cache_root()
    return (root / "images" / cache_key(catalog, (int(size[0]), int(size[1]))) / "meta.json").is_file()


def _open_cache(folder: Path, catalog: Catalog) -> ImageArray | None:
    meta_file = folder / "meta.json"
    if not meta_file.is_file():
        return None
    try:
        meta = json.loads(meta_file.read_text())
        shape = tuple(meta["shape"])
        pixels = np.memmap(folder / "pixels.u8", dtype=np.uint8, mode="r", shape=shape) if shape[0] else np.zeros(shape, np.uint8)
    except (OSError, ValueError, KeyError):
        return None  # a damaged cache is rebuilt, never trusted
    if meta.get("all_ids") != catalog.ids:
        return None
    if "blank" not in meta:
        return None  # made before blank images were recorded: built again, so that they are known
    return ImageArray(meta["ids"], pixels, meta["failed"], folder, blank=list(meta["blank"]))


def _build_cache(catalog: Catalog, size: tuple[int, int], folder: Path, workers: int | None,
                 progress: bool) -> ImageArray:
    n = len(catalog)
    workers = max(1, min(workers or os.cpu_count() or 1, 32))
    started = time.perf_counter()
    with atomic_dir(folder) as tmp:
        pixel_file = tmp / "pixels.u8"
        with open(pixel_file, "wb") as handle:
            handle.truncate(n * size[0] * size[1] * 3)
        chunks = [list(range(i, min(i + 256, n))) for i in range(0, n, 256)]
        failed: dict[int, str] = {}
        blank: set[int] = set()
        tasks = [(catalog, size, pixel_file, n, chunk) for chunk in chunks]
        with steps(progress, n, f"decoding {n:,} images") as advance:
            if workers == 1 or n < 512 or isinstance(catalog.reader, ArrayReader):
                for task in tasks:
                    chunk_failed, chunk_blank = _decode_chunk(task)
                    failed.update(chunk_failed)
                    blank.update(chunk_blank)
                    advance(len(task[-1]))
            else:
                ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
                with ctx.Pool(workers) as pool:
                    for task, (chunk_failed, chunk_blank) in zip(tasks, pool.imap(_decode_chunk, tasks)):
                        failed.update(chunk_failed)
                        blank.update(chunk_blank)
                        advance(len(task[-1]))
        # Compact: drop failed rows so that row i is ids[i].
        keep = [i for i in range(n) if i not in failed]
        all_ids = catalog.ids
        if failed:
            source = np.memmap(pixel_file, dtype=np.uint8, mode="r", shape=(n, *size, 3))
            compact_file = tmp / "pixels.compact"
            target = np.memmap(compact_file, dtype=np.uint8, mode="w+", shape=(len(keep), *size, 3)) if keep else None
            if target is not None:
                target[:] = source[keep]
                target.flush()
            del source, target
            if keep:
                os.replace(compact_file, pixel_file)
            else:
                os.truncate(pixel_file, 0)
        meta = {
            "version": CACHE_VERSION,
            "view_version": VIEW_VERSION,
            "source": str(catalog.source_path),
            "kind": catalog.kind,
            "size": list(size),
            "shape": [len(keep), size[0], size[1], 3],
            "ids": [all_ids[i] for i in keep],
            "all_ids": all_ids,
            "failed": {all_ids[i]: reason for i, reason in sorted(failed.items())},
            "blank": [all_ids[i] for i in sorted(blank)],
            "build_seconds": round(time.perf_counter() - started, 2),
        }
        (tmp / "meta.json").write_text(json.dumps(meta))
    array = _open_cache(folder, catalog)
    if array is None:
        raise StylespaceError(f"{folder}: the image cache could not be read back after building it")
    array.build_seconds = meta["build_seconds"]
    return array


def _decode_chunk(task) -> tuple[dict[int, str], list[int]]:
    """Decode one chunk of items into the pixel file: ({row: reason} that failed, rows that are blank)."""
    catalog, size, pixel_file, n, chunk = task
    out = np.memmap(pixel_file, dtype=np.uint8, mode="r+", shape=(n, size[0], size[1], 3))
    failed, blank = {}, []
    for i in chunk:
        view, reason = decode_item(catalog, catalog.items[i], size)
        if view is None:
            failed[i] = reason
            continue
        out[i] = view.pixels
        if view.blank:
            blank.append(i)
    out.flush()
    del out
    return failed, blank


def decode_item(catalog: Catalog, item, size: tuple[int, int]) -> tuple[View | None, str]:
    """(the item's canonical :class:`View`, "") or (None, why it has none): the cache's one rule for
    undecodable items, also used where images are decoded elsewhere (on Ray workers)."""
    try:
        return item_view(catalog, item, size), ""
    except ImageDecodeError as exc:
        return None, "image that fails to decode" if "zero" not in str(exc) else "zero-byte image"
    except Exception as exc:  # any reader problem is this item's problem, not the run's
        return None, f"image that cannot be read ({type(exc).__name__})"


def item_view(catalog: Catalog, item, size: tuple[int, int]) -> View:
    """One item's canonical :class:`View` at ``size``; for an array dataset (Fashion-MNIST: centred items on
    black, already the benchmark's input) its pixels are the image only resized, the rest (``blank``...)
    is measured as for a photo."""
    image = catalog.read_image(item)
    view = canonical_view(image, size)
    if isinstance(catalog.reader, ArrayReader):
        return dataclasses.replace(view, pixels=fit_to_size(image, size))
    return view


def pixel_hashes(pixels: np.ndarray, batch: int = 2048) -> list[bytes]:
    """A 128-bit BLAKE2 hash of each decoded image's bytes, (N, H, W, 3) uint8 -> N digests: equal digests are
    pixel-identical images (the audit's exact copies, the robustness measure's same product)."""
    out = []
    for start in range(0, len(pixels), batch):
        block = np.ascontiguousarray(pixels[start:start + batch])
        out.extend(hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in block)
    return out


def decode_one(catalog: Catalog, item, size: tuple[int, int]) -> np.ndarray:
    """One item's (an :class:`Item` or an id) pixels without the cache, exactly as the cache holds them."""
    return item_view(catalog, item, size).pixels


__all__ = ["ImageArray", "load_image_array", "decode_item", "decode_one", "cache_key", "item_view", "open_image"]
