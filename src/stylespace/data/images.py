"""Decoding one product image into the fixed-size RGB array every model sees: its canonical view.

This is the only place that turns bytes into pixels, so training, indexing and the web service all
see identical preprocessing. The canonical view of an image is, in order:

1. decoded and converted to RGB (transparency onto white, CMYK and grey converted), turned upright by
   its EXIF orientation tag (phones store pixels sideways and say so in the tag);
2. reduced to about twice the model's input size (a JPEG decodes at 1/2, 1/4 or 1/8 scale directly);
3. trimmed to the product: the margin colour is the median of the image's outer frame; when most of
   the frame is that colour (a packshot, a marketplace thumbnail padded on white or grey, a coloured
   studio background), pixels further than ``tolerance`` from it in any channel are the product, and
   the rows and columns holding enough of them bound it (a few stray JPEG pixels or a faint shadow
   do not). The background connected to the border becomes white, the colour of the catalog's own
   packshots, so a grey or coloured backdrop does not look like another product. A photo without a
   uniform frame (a scene, a close-up) is kept whole;
4. when the product is small in its frame (its box under half the working copy both ways and smaller
   than the view), its box, found on the working copy, is cut from the decoded image itself (not from the
   working copy) with a little room, and trimmed again there, so a product small in a large frame keeps
   its pixels and its edges (a product that fills its frame keeps the working copy's crop: an upscaled copy
   of a packshot then looks like the packshot, as the audit's near-copy test needs): a 10 %-wide product in a 1200 px photo is cut from 120 px, not from the
   working copy's 8. A JPEG decoded at a reduced scale is decoded again at the scale the product needs
   (within the budget). An image no larger than twice the model's input (a catalog packshot) has no
   reduced working copy, so this step changes nothing;
5. padded on white to the model's aspect ratio (never stretched) and resized.

What one image may cost is bounded by a :class:`PixelBudget`, checked from the header before a pixel
is allocated: ``decoded`` caps the pixels the decoder makes (after a JPEG's reduced-scale decode, so a
24 Mpx phone photo decoded at 1/8 passes where a 36 Mpx PNG of one colour is refused with
:class:`ImageTooLarge`, which names the limit), and ``working`` caps every array the steps after it
make: a working copy still over it is reduced further, and an image whose white padding would pass it
(a 20000 x 1 line padded to 3:4 is 400 Mpx) is resized before it is padded rather than after.

A stretched image (a 60 x 80 packshot resized to 224 x 224) cannot be told from a wide product, so it
is not undone here; the training recipe's aspect-ratio augmentation (+-35 %) makes the model
indifferent to it instead (docs/benchmarks.md, robustness).
"""
from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import dataclasses

import numpy as np
from PIL import Image, ImageOps, PngImagePlugin, UnidentifiedImageError
from scipy import ndimage

from stylespace.utils import StylespaceError, at_least, each, in_range, validate

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")

# Pillow warns above ~89 Mpx and raises above twice that; a product photo is far below either,
# so anything above this is treated as a decompression bomb and refused.
MAX_PIXELS = 40_000_000
Image.MAX_IMAGE_PIXELS = MAX_PIXELS
# The most pixels any step after decoding works on (the working copy, the padded canvas): far above
# what an image of ordinary shape needs at twice the model's input size, far below what a hostile
# aspect ratio would make.
WORK_PIXELS = 1_000_000
# What the service accepts of one uploaded image by default (`stylespace serve --max-upload-mb`, `--max-decode-mpx`):
# the file's bytes and the pixels it decodes at (a JPEG at up to 1/8 scale, so a phone's photo passes). Here, below
# the service, so that what measures uploads from a lower floor (`index.robustness.measure_photos`) reads the same.
UPLOAD_BYTES = 10_000_000
UPLOAD_PIXELS = 4_000_000
# A PNG may carry compressed text chunks that Pillow inflates while reading the header (1 MB each,
# 64 MB in all by default); a product photo needs none of that.
PngImagePlugin.MAX_TEXT_CHUNK = 256 * 1024
PngImagePlugin.MAX_TEXT_MEMORY = 1024 * 1024

# Bumped whenever the canonical view changes: image caches and indexes record it, so pixels made
# the old way are rebuilt rather than compared with pixels made the new way.
VIEW_VERSION = 4  # 4: the product cut from the decoded image, not the working copy (same pixels for a packshot)
# A pixel is product, not margin, when it differs from the margin colour by more than this in some
# channel (0-255): above JPEG/WebP noise on a flat background (< 12) and the soft shadow under a shoe.
MARGIN_TOLERANCE = 28
# The margin colour must cover this share of the outer frame, else the image has no uniform margin.
FRAME_SHARE = 0.6
# A product row or column holds at least this share of product pixels (and at least 2 pixels).
LINE_SHARE = 0.02
# Room left around the trimmed product, as a share of its longer side.
BOX_MARGIN = 0.03
# Below this share of product pixels (or this pixel spread), an image is blank or nearly uniform.
BLANK_SHARE = 0.004
BLANK_SPREAD = 5.0


class ImageDecodeError(StylespaceError):
    """The bytes are not a usable image (empty, truncated, unknown format, too large)."""


class UnknownImageFormat(ImageDecodeError):
    """The bytes are in no image format Pillow reads (text, HTML, ...), as opposed to a broken image."""


class DecompressionBomb(ImageDecodeError):
    """An image whose header claims more pixels than any photo has (over :data:`MAX_PIXELS`): refused unread."""


class ImageTooLarge(ImageDecodeError):
    """An image whose decoded size is over the :class:`PixelBudget` (refused before it is decoded).

    Attributes:
        width, height: the size it would decode at (after a JPEG's reduced-scale decode).
        limit: the budget's ``decoded`` pixels.
    """

    def __init__(self, message: str, width: int, height: int, limit: int):
        super().__init__(message)
        self.width, self.height, self.limit = width, height, limit


@dataclasses.dataclass(frozen=True)
class PixelBudget:
    """What decoding one image may allocate, in pixels (a pixel is 3-4 bytes in each array made).

    Attributes:
        decoded: the most pixels the decoder may make, read from the header (a JPEG's after its 1/2, 1/4
            or 1/8 scale decode); over it the image is refused (:class:`ImageTooLarge`).
        working: the most pixels of the working copy and of the padded canvas (see the module docstring);
            over it they are reduced, never refused.
    """

    decoded: int = MAX_PIXELS
    working: int = WORK_PIXELS

    def __post_init__(self) -> None:
        validate([
            in_range("decoded", self.decoded, 1, MAX_PIXELS, integer=True, note="pixels; the decompression-bomb limit"),
            at_least("working", self.working, 1, note="pixels"),
        ], "pixel budget")


DEFAULT_BUDGET = PixelBudget()


@dataclasses.dataclass(frozen=True)
class Probe:
    """What an image's header says, read without decoding it: its format, its stored size and the size it
    decodes at when asked for a view of ``draft`` (a JPEG at a reduced scale, everything else whole)."""

    format: str | None
    width: int
    height: int
    decoded_width: int
    decoded_height: int
    mode: str

    @property
    def decoded_pixels(self) -> int:
        return self.decoded_width * self.decoded_height


def _draft_box(size: tuple[int, int]) -> tuple[int, int]:
    """The (W, H) a decoder is asked to cover for a view of ``size`` = (H, W): twice it, for a clean downscale."""
    return 2 * size[1], 2 * size[0]


def probe_image(source: bytes, size: tuple[int, int] = (80, 60)) -> Probe:
    """Read the header of image bytes (nothing decoded, nothing allocated beyond the header) and say what
    decoding them for a view of ``size`` = (H, W) would make. Raises :class:`ImageDecodeError`."""
    if not source:
        raise ImageDecodeError("image bytes: zero bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(source)) as image:
                width, height = image.size
                if width * height <= MAX_PIXELS:
                    image.draft("RGB", _draft_box(size))
                return Probe(image.format, width, height, image.width, image.height, image.mode)
    except UnidentifiedImageError:
        raise UnknownImageFormat("image bytes: not an image in a known format") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DecompressionBomb(f"image bytes: refused as a decompression bomb ({exc})") from None
    except Exception as exc:
        raise ImageDecodeError(f"image bytes: cannot decode image ({type(exc).__name__}: {exc})") from None


def open_image(source: bytes | str | os.PathLike | Image.Image, draft: tuple[int, int] = (512, 512),
               budget: PixelBudget = DEFAULT_BUDGET) -> Image.Image:
    """Open ``source`` (bytes, a path or an image) as an RGB ``PIL.Image``, fully decoded.

    A JPEG is decoded at the smallest 1/2, 1/4 or 1/8 scale that still covers ``draft`` = (W, H) pixels.

    Raises :class:`ImageDecodeError` with the reason when it cannot be decoded, :class:`ImageTooLarge`
    (before decoding) when it would decode at more than ``budget.decoded`` pixels.
    """
    if isinstance(source, Image.Image):
        image = _upright(source)
        name = "image"
    else:
        name = str(source) if not isinstance(source, bytes) else "image bytes"
        if isinstance(source, bytes):
            if not source:
                raise ImageDecodeError(f"{name}: zero bytes")
            stream = io.BytesIO(source)
        else:
            path = Path(source)
            try:
                if path.stat().st_size == 0:
                    raise ImageDecodeError(f"{path}: zero-byte file")
            except FileNotFoundError:
                raise ImageDecodeError(f"{path}: file not found") from None
            stream = path.open("rb")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                image = Image.open(stream)
                if image.width * image.height > MAX_PIXELS:
                    raise DecompressionBomb(
                        f"{name}: {image.width}x{image.height} px is over the {MAX_PIXELS:,} px limit (decompression bomb?)"
                    )
                # JPEG can decode at a reduced scale directly, which makes huge photos cheap.
                image.draft("RGB", draft)
                if image.width * image.height > budget.decoded:  # the size it decodes at, still unallocated
                    raise ImageTooLarge(
                        f"{name}: {image.width}x{image.height} px ({image.width * image.height / 1e6:.1f} Mpx) is "
                        f"over the {budget.decoded / 1e6:g} Mpx limit on decoded pixels; send a smaller image "
                        "(a JPEG of any size decodes at up to 1/8 scale and passes more easily)",
                        image.width, image.height, budget.decoded)
                image.load()
                image = _upright(image)
        except ImageDecodeError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise DecompressionBomb(f"{name}: refused as a decompression bomb ({exc})") from None
        except Exception as exc:  # Pillow raises many types for broken files
            raise ImageDecodeError(f"{name}: cannot decode image ({type(exc).__name__}: {exc})") from None
    return to_rgb(image)


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any mode to RGB; transparent pixels become white, as on a catalog page."""
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image if image.mode == "RGBA" else image.convert("RGBA")
        # Pasted through its alpha onto white: the very pixels of alpha-compositing onto opaque white
        # (tests/test_canonical_view.py), with two full-size copies fewer.
        out = Image.new("RGB", rgba.size, (255, 255, 255))
        out.paste(rgba, mask=rgba.getchannel("A"))
        return out
    if image.mode == "CMYK":
        # Pillow's CMYK conversion ignores Adobe's inverted CMYK JPEGs; plain convert is right for the rest.
        return image.convert("RGB")
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float32)
        low, span = array.min(), max(float(array.max() - array.min()), 1.0)
        array = array - low  # then in place: 255 (x - min) / span, the same values with one array, not three
        array *= 255.0
        array /= span
        return Image.fromarray(array.astype(np.uint8)).convert("RGB")
    return image.convert("RGB")


def fit_to_size(image: Image.Image, size: tuple[int, int], working: int = WORK_PIXELS) -> np.ndarray:
    """Pad ``image`` on white to the aspect ratio of ``size`` = (H, W), resize, return (H, W, 3) uint8.

    When the padded canvas would be over ``working`` pixels (an extreme aspect ratio), the image is first
    resized to twice the target scale, so the canvas stays small; ordinary shapes are padded as they are.
    """
    validate([each("image size", size, 1, count=2, note="H, W")])
    height, width = size
    target_ratio = width / height
    ratio = image.width / image.height
    canvas = max(image.width, round(image.height * target_ratio)) * max(image.height, round(image.width / target_ratio))
    if canvas > working:
        scale = min(2 * width / image.width, 2 * height / image.height)
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                             Image.Resampling.BILINEAR, reducing_gap=2.0)
        ratio = image.width / image.height
    if abs(ratio - target_ratio) > 1e-3:
        if ratio > target_ratio:  # too wide: pad top and bottom
            new_h = round(image.width / target_ratio)
            pad = new_h - image.height
            border = (0, pad // 2, 0, pad - pad // 2)
        else:  # too narrow: pad left and right
            new_w = round(image.height * target_ratio)
            pad = new_w - image.width
            border = (pad // 2, 0, pad - pad // 2, 0)
        image = ImageOps.expand(image, border=border, fill=(255, 255, 255))
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.BILINEAR, reducing_gap=2.0)
    return np.asarray(image, dtype=np.uint8)


def _upright(image: Image.Image) -> Image.Image:
    """The image turned by its EXIF orientation tag (1-8), or itself without one; a broken tag is ignored."""
    try:
        orientation = image.getexif().get(0x0112, 1)
    except Exception:  # a damaged EXIF block is not a reason to refuse the photo
        return image
    if orientation in (2, 3, 4, 5, 6, 7, 8):
        try:
            return ImageOps.exif_transpose(image)
        except Exception:
            return image
    return image


@dataclasses.dataclass
class View:
    """The canonical view of one image.

    Attributes:
        pixels: (H, W, 3) uint8 at the requested size: the product trimmed, on white, padded to shape.
        background: the margin colour (R, G, B) that was trimmed, or None when the image has no uniform
            margin (it was kept whole).
        box: (left, top, right, bottom) of the product as a share (0-1) of the upright image's width / height.
        product_share: share of the image's pixels that are product (differ from the margin colour).
        spread: standard deviation of the image's pixel values (0-255, all channels).
    """

    pixels: np.ndarray
    background: tuple[int, int, int] | None
    box: tuple[float, float, float, float]
    product_share: float
    spread: float

    @property
    def blank(self) -> bool:
        """True for a blank or nearly uniform image: nothing in it to recognise."""
        return self.product_share < BLANK_SHARE or self.spread < BLANK_SPREAD


def _working_copy(image: Image.Image, size: tuple[int, int], working: int = WORK_PIXELS) -> Image.Image:
    """``image`` reduced (box filter, integer factor) to no less than ``size`` = (H, W): the trim and the
    final resize then cost the same for a 60 x 80 thumbnail and a 24 Mpx PNG. One still over ``working``
    pixels (a very long, thin image) is reduced further, keeping its shape."""
    factor = min(image.width // size[1], image.height // size[0])
    if factor >= 2:
        image = image.reduce(factor)
    if image.width * image.height > working:
        more = int(np.ceil(np.sqrt(image.width * image.height / working)))
        image = image.reduce((min(more, image.width), min(more, image.height)))
    return image


def border_connected(mask: np.ndarray) -> np.ndarray:
    """The ``True`` pixels of ``mask`` that are 4-connected to its border: (H, W) -> (H, W) bool, or a batch
    (B, H, W) -> (B, H, W), each image labelled on its own (one labelling call for the whole batch)."""
    mask = np.asarray(mask, dtype=bool)
    batch = mask if mask.ndim == 3 else mask[None]
    structure = np.zeros((3, 3, 3), dtype=bool)
    structure[1] = [[0, 1, 0], [1, 1, 1], [0, 1, 0]]  # within an image, never across images of a batch
    regions, count = ndimage.label(batch, structure=structure)
    touches = np.zeros(count + 1, dtype=bool)
    touches[regions[:, 0]] = touches[regions[:, -1]] = touches[regions[:, :, 0]] = touches[regions[:, :, -1]] = True
    touches[0] = False
    found = touches[regions]
    return found if mask.ndim == 3 else found[0]


def _close(pixels: np.ndarray, colour: np.ndarray) -> np.ndarray:
    """(..., 3) pixels -> (...) bool: within MARGIN_TOLERANCE of ``colour`` in every channel (channel by
    channel: numpy reduces a last axis of 3 slowly)."""
    diff = np.abs(pixels.astype(np.int16) - colour)
    return (diff[..., 0] <= MARGIN_TOLERANCE) & (diff[..., 1] <= MARGIN_TOLERANCE) & (diff[..., 2] <= MARGIN_TOLERANCE)


def _frame(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The 2-pixel outer frame of ``rgb``: (colours (M, 3) int16, their rows (M,), their columns (M,))."""
    h, w = rgb.shape[:2]
    ring = np.zeros((h, w), dtype=bool)
    ring[:2] = ring[-2:] = True
    ring[:, :2] = ring[:, -2:] = True
    rows, cols = np.nonzero(ring)  # row-major, as rgb[ring] is: no (H, W) coordinate grids
    return rgb[rows, cols].astype(np.int16), rows, cols


def _margin_colour(rgb: np.ndarray) -> np.ndarray | None:
    """The margin colour of ``rgb``: (3,) int16 for a uniform frame (the median of the 2-pixel frame), an
    (H, W, 3) plane for a frame with a shadow or light falling across it (a colour that changes
    linearly over the image, fitted on the frame), or None when the frame is neither (a scene)."""
    edges = np.concatenate([rgb[:2].reshape(-1, 3), rgb[-2:].reshape(-1, 3),
                            rgb[:, :2].reshape(-1, 3), rgb[:, -2:].reshape(-1, 3)]).astype(np.int16)
    colour = np.median(edges, axis=0).astype(np.int16)
    if _close(edges, colour).mean() >= FRAME_SHARE:
        return colour
    frame, rows, cols = _frame(rgb)
    # A gradient: colour = a + b * row + c * col per channel, fitted twice (the second time without
    # the frame pixels the first fit calls product).
    h, w = rgb.shape[:2]
    design = np.stack([np.ones(len(rows)), rows / h, cols / w], axis=1)
    keep = np.ones(len(frame), dtype=bool)
    for _ in range(2):
        coef, *_ = np.linalg.lstsq(design[keep], frame[keep].astype(np.float64), rcond=None)
        keep = _close(frame, design @ coef)
        if keep.sum() < 3:
            return None
    if keep.mean() < FRAME_SHARE:
        return None
    plane = coef[0] + coef[1] * (np.arange(h) / h)[:, None, None] + coef[2] * (np.arange(w) / w)[None, :, None]
    return np.clip(np.round(plane), 0, 255).astype(np.int16)


def _trim_once(rgb: np.ndarray, colour: np.ndarray) -> tuple[np.ndarray, tuple[int, int, int, int] | None, float]:
    """One trim of the ``colour`` margin: (pixels with the backdrop made white, (top, bottom, left, right)
    of the product with a little room, or None when all is margin, product share)."""
    h, w = rgb.shape[:2]
    product = ~_close(rgb, colour)
    share = float(product.mean())
    rows = np.flatnonzero(product.sum(axis=1) >= max(2, LINE_SHARE * w))
    cols = np.flatnonzero(product.sum(axis=0) >= max(2, LINE_SHARE * h))
    if len(rows) == 0 or len(cols) == 0:
        return rgb, None, share
    out = rgb
    if colour.ndim > 1 or (colour < 255 - MARGIN_TOLERANCE // 2).any():
        # A grey or coloured backdrop (margin-coloured pixels connected to the border) becomes white;
        # margin-coloured pixels enclosed by the product (a grey logo on a grey shirt) stay. A white
        # backdrop is left as it is, so that a cream earring on white keeps its faint pixels.
        out = rgb.copy()
        out[border_connected(~product)] = 255
    top, bottom, left, right = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    room = int(round(BOX_MARGIN * max(bottom - top, right - left)))
    box = (max(0, top - room), min(h, bottom + room), max(0, left - room), min(w, right + room))
    return out, box, share


@dataclasses.dataclass
class _Trim:
    """Where the product is in a working copy of ``work_size`` = (W, H): its box (top, bottom, left, right) in
    the working copy's pixels."""

    work_size: tuple[int, int]
    box: tuple[int, int, int, int]

    def small(self, size: tuple[int, int]) -> bool:
        """Whether the product is small in its frame: its box under half the working copy's height and width and
        smaller than the view ``size`` = (H, W) both ways (it would be enlarged). A packshot's product fills most
        of its frame one way or the other, so an upscaled copy of one keeps the working copy's crop, close to the
        original's own view (re-cut from the larger picture it would be sharper: another near copy's pixels)."""
        top, bottom, left, right = self.box
        width, height = self.work_size
        return (bottom - top < min(size[0], height / 2)) and (right - left < min(size[1], width / 2))


def canonical_view(image: Image.Image, size: tuple[int, int], working: int = WORK_PIXELS) -> View:
    """The canonical view (see the module docstring) of an RGB, upright ``image`` at ``size`` = (H, W).

    Margins inside margins (a white packshot padded on grey by a marketplace) are trimmed in turn, up
    to three times. ``working`` bounds the pixels of every array made on the way (PixelBudget.working).
    """
    view, _ = _view_and_trim(image, size, working)
    return view


def _view_and_trim(image: Image.Image, size: tuple[int, int], working: int,
                   refine: bool = True) -> tuple[View, _Trim | None]:
    """The view, and where the product was found in the working copy (None when the image is kept whole).
    ``refine``: when the working copy is reduced, trim again on the product's box cut from ``image``."""
    work = _working_copy(image, size, working)
    rgb = np.asarray(work, dtype=np.uint8)
    h, w = rgb.shape[:2]
    spread = float(rgb.std())
    colour = _margin_colour(rgb)
    if colour is None:  # no uniform margin: a scene or a close-up, kept whole
        return View(fit_to_size(work, size, working), None, (0.0, 0.0, 1.0, 1.0), 1.0, spread), None
    background = tuple(int(c) for c in (colour if colour.ndim == 1 else np.median(colour.reshape(-1, 3), axis=0)))
    top, left, share = 0, 0, None
    for _ in range(3):
        trimmed, box, pass_share = _trim_once(rgb, colour)
        share = pass_share if share is None else share
        if box is None:
            if top == 0 and left == 0 and rgb.shape[:2] == (h, w):  # all margin: nothing to trim to
                return View(fit_to_size(work, size, working), background, (0.0, 0.0, 1.0, 1.0), share, spread), None
            break
        b_top, b_bottom, b_left, b_right = box
        rgb = trimmed[b_top:b_bottom, b_left:b_right]
        top, left = top + b_top, left + b_left
        colour = _margin_colour(rgb) if min(rgb.shape[:2]) >= 8 else None
        if colour is not None and colour.ndim > 1:  # a gradient inside the trimmed box: the product itself
            colour = None
        if colour is None or (box == (0, trimmed.shape[0], 0, trimmed.shape[1])):
            break
    bottom, right = top + rgb.shape[0], left + rgb.shape[1]
    trim = _Trim(work.size, (top, bottom, left, right))
    # The product's box is cut again from the decoded image only where the working copy's crop would have to be
    # enlarged to fill the view (smaller than it both ways: a small product in a large frame). A product the
    # working copy already holds at the view's size keeps that crop: re-cutting it from a larger picture (an
    # upscaled copy of a packshot) would sharpen it and move its colours away from the original's view.
    if work.size == image.size or not refine or not trim.small(size):  # a packshot, or a product big enough already
        pixels = fit_to_size(Image.fromarray(rgb), size, working)
    else:
        pixels = _refined(image, trim, size, working)
    return View(pixels, background, (left / w, top / h, right / w, bottom / h), share, spread), trim


def _refined(image: Image.Image, trim: _Trim, size: tuple[int, int], working: int) -> np.ndarray:
    """The product's box (found on a working copy of the same picture, reduced from ``image``) cut from
    ``image`` itself with one working-copy pixel of room on each side, reduced as it is cut (no full-size copy
    of a large product), and trimmed again at that resolution: the product keeps its pixels and its edges."""
    top, bottom, left, right = trim.box
    sx, sy = image.width / trim.work_size[0], image.height / trim.work_size[1]
    box = (max(0, int(np.floor((left - 1) * sx))), max(0, int(np.floor((top - 1) * sy))),
           min(image.width, int(np.ceil((right + 1) * sx))), min(image.height, int(np.ceil((bottom + 1) * sy))))
    factor = min((box[2] - box[0]) // size[1], (box[3] - box[1]) // size[0])
    crop = image.reduce(factor, box) if factor >= 2 else image.crop(box)
    return _view_and_trim(crop, size, working, refine=False)[0].pixels


def load_view(source: bytes | str | os.PathLike | Image.Image, size: tuple[int, int] = (80, 60),
              budget: PixelBudget = DEFAULT_BUDGET) -> View:
    """Decode ``source`` and return its canonical :class:`View` at ``size`` = (H, W), within ``budget``.

    A JPEG is first decoded at the reduced scale that covers twice ``size`` (a 1800 x 2400 photo at 1/8); when
    the product found there is smaller than that, it is decoded again at the scale the product needs (within
    ``budget``), so that a small product in a large photo is cut from enough pixels.
    """
    return decode_view(source, size, budget)[0]


def decode_view(source: bytes | str | os.PathLike | Image.Image, size: tuple[int, int] = (80, 60),
                budget: PixelBudget = DEFAULT_BUDGET) -> tuple[View, Image.Image]:
    """:func:`load_view`, and the decoded, upright RGB image the view was made from (at the reduced scale a
    JPEG was first decoded at), so that other views of the same picture need no second decode."""
    image = open_image(source, draft=_draft_box(size), budget=budget)
    view, trim = _view_and_trim(image, size, budget.working)
    stored = _stored_size(source)
    if trim is None or stored is None or stored == image.size or not trim.small(size):
        return view, image
    need = _draft_for_box(view.box, size)
    if need[0] <= image.width and need[1] <= image.height:
        return view, image  # the first decode already covers the product at twice the model's input
    try:  # a square box: the decoder's box is in the stored orientation, ``need`` in the upright one
        finer = open_image(source, draft=(max(need), max(need)), budget=budget)
    except ImageDecodeError:  # over the budget at a finer scale: the first decode's view stands
        return view, image
    if finer.size == image.size:
        return view, image
    return dataclasses.replace(view, pixels=_refined(finer, trim, size, budget.working)), image


def _stored_size(source) -> tuple[int, int] | None:
    """The (W, H) a JPEG source stores, when it may decode at a reduced scale; None for other sources."""
    if isinstance(source, Image.Image):
        return None
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as header:
            return header.size if header.format == "JPEG" else None
    except Exception:
        return None


def _draft_for_box(box: tuple[float, float, float, float], size: tuple[int, int]) -> tuple[int, int]:
    """The (W, H) a decode must cover for the product in ``box`` (shares of the image) to span twice ``size``."""
    left, top, right, bottom = box
    return (int(np.ceil(2 * size[1] / max(right - left, 1e-3))), int(np.ceil(2 * size[0] / max(bottom - top, 1e-3))))


def load_rgb(source: bytes | str | os.PathLike | Image.Image, size: tuple[int, int] = (80, 60),
             budget: PixelBudget = DEFAULT_BUDGET) -> np.ndarray:
    """Decode ``source`` and return its canonical view as an (H, W, 3) uint8 array of ``size`` = (H, W)."""
    return load_view(source, size, budget).pixels
