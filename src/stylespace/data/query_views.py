"""A query image as a few views (issue 24): the canonical view, mirrored, and un-stretched.

A customer's photo may be the catalog's product mirrored (a selfie, a scanned page) or stretched to another
aspect ratio (a marketplace's square thumbnail of a 3:4 packshot). The canonical view
(:mod:`stylespace.data.images`) undoes neither: it pads to the model's aspect ratio and never stretches, as a
stretched image cannot be told from a wide product. So a query can be searched as several views, each
searched and the best score per catalog item kept (:mod:`stylespace.index.query_views`):

- ``canonical``: the canonical view, as every search uses (always searched);
- ``mirror``: the canonical view flipped left to right;
- ``unstretch``: the decoded, upright image resized *straight* to the model's aspect ratio (the catalog's
  usual one, 3:4 for the shared catalog), at twice the model's input size (the canonical view's working
  scale), and then made into its canonical view (margins trimmed, padded on white): for a 60 x 80 packshot
  stretched to 224 x 224 this is the packshot's own view again. An image already at the model's aspect
  ratio (within :data:`UNSTRETCH_TOLERANCE`) has nothing to undo: its un-stretched view would repeat the
  canonical one and is left out, so a photo of the catalog's shape costs no third view.

All the views of one picture come from one decode. What they cost: one forward pass over 1-3 views per query
instead of one, and a search per view.
"""
from __future__ import annotations

import dataclasses
import os

import numpy as np
from PIL import Image

from stylespace.data import images
from stylespace.data.images import DEFAULT_BUDGET, PixelBudget, View
from stylespace.utils import StylespaceError, some_of, validate

# Every view a query can be searched as, in the order they are made; the canonical view is always the first.
QUERY_VIEWS = ("canonical", "mirror", "unstretch")
# The views a user may add to the canonical one.
EXTRA_VIEWS = QUERY_VIEWS[1:]
# An image whose aspect ratio (W / H) is within this share of the model's has no un-stretched view.
UNSTRETCH_TOLERANCE = 0.02
# What a user may write for "no extra views" and for "every extra view".
_NONE_WORDS = ("", "none", "off", "canonical")
_ALL_WORDS = ("all", "on")


@dataclasses.dataclass(frozen=True)
class QueryViews:
    """Which views of a query image are searched besides its canonical view.

    Attributes:
        views: names from :data:`EXTRA_VIEWS` (``mirror``, ``unstretch``), each once; empty (the default) searches
            the canonical view alone, exactly as before query views existed.
    """

    views: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        validate([some_of("views", self.views, EXTRA_VIEWS, empty_ok=True)], owner="query views:")
        # one spelling of each choice: the names in the order they are made
        object.__setattr__(self, "views", tuple(v for v in EXTRA_VIEWS if v in self.views))

    @property
    def enabled(self) -> bool:
        """Whether any view besides the canonical one is searched."""
        return bool(self.views)

    @property
    def names(self) -> tuple[str, ...]:
        """Every view searched, the canonical one first."""
        return ("canonical", *self.views)

    def describe(self) -> str:
        """A short name of the choice (``canonical`` or ``canonical+mirror+unstretch``)."""
        return "+".join(self.names)

    @classmethod
    def parse(cls, text: str) -> "QueryViews":
        """From what a user writes: ``none`` (or ``off``), ``all`` (or ``on``), or comma-separated names of
        :data:`EXTRA_VIEWS` (``canonical`` may be listed too: it is always searched)."""
        if not isinstance(text, str):
            raise StylespaceError(f"query views: expected none, all or comma-separated names of "
                                  f"{', '.join(EXTRA_VIEWS)}; got {text!r}")
        words = [w.strip().lower() for w in text.split(",") if w.strip()]
        if not words or all(w in _NONE_WORDS for w in words):
            return cls()
        if len(words) == 1 and words[0] in _ALL_WORDS:
            return cls(EXTRA_VIEWS)
        return cls(tuple(w for w in words if w != "canonical"))

    @classmethod
    def of(cls, value: "QueryViews | str | tuple | list | None") -> "QueryViews":
        """``value`` as a :class:`QueryViews`: itself, text for :meth:`parse`, a sequence of names, or None (none)."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            return cls.parse(value)
        if isinstance(value, (tuple, list)):
            return cls(tuple(value))
        raise StylespaceError(f"query views: expected none, all or names of {', '.join(EXTRA_VIEWS)}; got {value!r}")


@dataclasses.dataclass
class ViewSet:
    """The views of one query image.

    Attributes:
        view: its canonical :class:`View` (what was trimmed, whether the picture is blank).
        pixels: (V, H, W, 3) uint8, one row per view, the canonical view first (V = 1 to 3).
        names: (V,) which view each row is (names of :data:`QUERY_VIEWS`).
    """

    view: View
    pixels: np.ndarray
    names: tuple[str, ...]

    @property
    def blank(self) -> bool:
        """The picture is blank or almost uniform (its canonical view's ``blank``)."""
        return self.view.blank


def mirrored(pixels: np.ndarray) -> np.ndarray:
    """(H, W, 3) -> (H, W, 3): the view flipped left to right."""
    return np.ascontiguousarray(pixels[:, ::-1])


def is_stretched(image: Image.Image, size: tuple[int, int]) -> bool:
    """Whether ``image``'s aspect ratio differs from that of ``size`` = (H, W) by more than :data:`UNSTRETCH_TOLERANCE`."""
    ratio, target = image.width / image.height, size[1] / size[0]
    return abs(ratio / target - 1.0) > UNSTRETCH_TOLERANCE


def unstretched(image: Image.Image, size: tuple[int, int], working: int = images.WORK_PIXELS) -> np.ndarray:
    """(H, W, 3) uint8: the upright RGB ``image`` resized straight to twice ``size`` = (H, W) (its aspect ratio
    made the model's, nothing padded), then made into its canonical view at ``size``."""
    height, width = size
    resized = image.resize((2 * width, 2 * height), Image.Resampling.BILINEAR, reducing_gap=2.0)
    return images.canonical_view(resized, size, working).pixels


def load_query_views(source: bytes | str | os.PathLike | Image.Image, size: tuple[int, int] = (80, 60),
                     views: QueryViews = QueryViews(), budget: PixelBudget = DEFAULT_BUDGET) -> ViewSet:
    """Decode ``source`` once and make its views at ``size`` = (H, W): the canonical view (as
    :func:`stylespace.data.images.load_view` makes it), then those ``views`` asks for, in the order of
    :data:`QUERY_VIEWS` (an un-stretched view only for an image whose aspect ratio is not the model's).
    Raises :class:`stylespace.data.ImageDecodeError` as ``load_view`` does."""
    view, image = images.decode_view(source, size, budget)
    rows, names = [view.pixels], ["canonical"]
    if "mirror" in views.views:
        rows.append(mirrored(view.pixels))
        names.append("mirror")
    if "unstretch" in views.views and is_stretched(image, size):
        rows.append(unstretched(image, size, budget.working))
        names.append("unstretch")
    return ViewSet(view, np.stack(rows), tuple(names))
