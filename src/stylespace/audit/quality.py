"""Images with nothing to learn from or that do not belong: blank or nearly uniform, tiny, outliers."""
from __future__ import annotations

import dataclasses
import io
from typing import Sequence

import numpy as np

from stylespace.utils import at_least, in_range, validate


@dataclasses.dataclass
class Blank:
    """A blank (one colour) or nearly uniform image: ``kind`` is ``blank`` or ``nearly uniform``;
    ``spread`` the standard deviation of the decoded image's pixel values (0-255), ``product_share`` the
    share of its pixels that differ from its margin colour (None when not measured)."""

    id: str
    kind: str
    spread: float
    product_share: float | None = None


ONE_COLOUR_SPREAD = 1.0  # below this pixel spread (0-255) a blank image is one colour ("blank")


def blank_items(array, catalog=None) -> list[Blank]:
    """The blank and nearly uniform images of an :class:`~stylespace.data.ImageArray`.

    The cache records them (``ImageArray.blank``, measured by :attr:`stylespace.data.View.blank` on the
    decoded image); an array without that record is measured here on its canonical views (pixels that
    differ from the white backdrop by more than ``MARGIN_TOLERANCE``, and the pixel spread). With the
    ``catalog``, each one found is decoded again to say whether it is one colour or nearly uniform (its
    canonical view is white either way).
    """
    from stylespace.data.images import BLANK_SHARE, BLANK_SPREAD, MARGIN_TOLERANCE, ImageDecodeError, canonical_view

    recorded = getattr(array, "blank", None)
    if recorded is None:
        recorded = []
        for start in range(0, len(array.ids), 4096):
            block = np.asarray(array.pixels[start:start + 4096])
            product = (block.min(axis=3) < 255 - MARGIN_TOLERANCE).reshape(len(block), -1).mean(axis=1)
            spread = block.reshape(len(block), -1).std(axis=1)
            hit = (product < BLANK_SHARE) | (spread < BLANK_SPREAD)
            recorded.extend(array.ids[start + i] for i in np.flatnonzero(hit))
    rows = {item_id: i for i, item_id in enumerate(array.ids)}
    out = []
    for item_id in recorded:
        spread, share = float(np.asarray(array.pixels[rows[item_id]]).std()), None
        if catalog is not None and item_id in catalog:
            try:
                view = canonical_view(catalog.read_image(item_id), array.size)
                spread, share = view.spread, round(float(view.product_share), 5)
            except (ImageDecodeError, OSError, KeyError):
                pass
        out.append(Blank(item_id, "blank" if spread < ONE_COLOUR_SPREAD else "nearly uniform", round(spread, 2), share))
    return out


@dataclasses.dataclass
class Tiny:
    """An item whose original image is under the tiny size on a side: (width, height) from its header."""

    id: str
    width: int
    height: int


def tiny_items(catalog, ids: Sequence[str], side: int) -> tuple[list[Tiny], str]:
    """Items of ``catalog`` whose image header says it is under ``side`` pixels wide or high (nothing is
    decoded), and a note: "" or why the check did not run (an in-memory dataset such as Fashion-MNIST)."""
    import zipfile

    from PIL import Image

    from stylespace.data.catalog import ArrayReader, FileReader, ZipReader

    reader = catalog.reader
    if isinstance(reader, ArrayReader):
        return [], "tiny images not checked: the catalog is an in-memory array dataset without image files"
    archive = zipfile.ZipFile(reader.path) if isinstance(reader, ZipReader) else None

    def stream(source: str):
        # Only the header is read: a file or zip member is opened, not read whole (a 24 Mpx photo stays cheap).
        if archive is not None:
            return archive.open(source)
        if isinstance(reader, FileReader):
            return open(reader.root / source, "rb")
        return io.BytesIO(reader.read(source))

    out = []
    try:
        for item_id in ids:
            try:
                with stream(catalog[item_id].source) as handle, Image.open(handle) as image:
                    width, height = image.size
            except Exception:  # unreadable images are the cache's finding ("failed"), not this one
                continue
            if width < side or height < side:
                out.append(Tiny(item_id, int(width), int(height)))
    finally:
        if archive is not None:
            archive.close()
    return out, ""


@dataclasses.dataclass
class Outlier:
    """An item far from all of its k nearest items: ``distance`` to the k-th (cosine)."""

    id: str
    distance: float


@dataclasses.dataclass
class OutlierRule:
    """The measured distribution of k-th neighbour distances and the cutoff an outlier is above."""

    k: int
    median: float
    robust_sd: float
    percentile: float
    percentile_value: float
    cutoff: float

    def __post_init__(self) -> None:
        validate([
            at_least("k", self.k, 1),
            in_range("percentile", self.percentile, 0, 100),
            at_least("robust_sd", self.robust_sd, 0, integer=False),
        ], "outlier rule")


def outliers(ids: Sequence[str], kth_distance: np.ndarray, k: int, percentile: float,
             spread: float) -> tuple[list[Outlier], OutlierRule | None]:
    """Items whose distance to their k-th nearest item is above both the ``percentile`` of all items' and
    the median + ``spread`` robust standard deviations; furthest first."""
    validate([at_least("k", k, 1), in_range("percentile", percentile, 0, 100),
              at_least("spread", spread, 0, integer=False)], "outliers")
    if len(kth_distance) == 0:
        return [], None
    values = np.asarray(kth_distance, dtype=np.float64)
    median = float(np.median(values))
    robust_sd = 1.4826 * float(np.median(np.abs(values - median)))
    at_percentile = float(np.percentile(values, percentile))
    cutoff = max(at_percentile, median + spread * robust_sd)
    rule = OutlierRule(k, round(median, 6), round(robust_sd, 6), percentile, round(at_percentile, 6), round(cutoff, 6))
    hits = np.flatnonzero(values > cutoff)
    hits = hits[np.argsort(-values[hits], kind="stable")]
    return [Outlier(ids[i], round(float(values[i]), 6)) for i in hits], rule
