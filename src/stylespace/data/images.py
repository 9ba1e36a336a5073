"""Decoding one product image into the fixed-size RGB array every model sees.

This is the only place that turns bytes into pixels, so training, indexing and the web service all
see identical preprocessing: convert to RGB (transparency onto white, CMYK and grey converted), pad to
the target aspect ratio on white (catalog photos have white backgrounds) and resize.
"""
from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from stylespace.utils import StylespaceError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")

# Pillow warns above ~89 Mpx and raises above twice that; a product photo is far below either,
# so anything above this is treated as a decompression bomb and refused.
MAX_PIXELS = 40_000_000
Image.MAX_IMAGE_PIXELS = MAX_PIXELS


class ImageDecodeError(StylespaceError):
    """The bytes are not a usable image (empty, truncated, unknown format, too large)."""


def open_image(source: bytes | str | os.PathLike | Image.Image, draft: tuple[int, int] = (512, 512)) -> Image.Image:
    """Open ``source`` (bytes, a path or an image) as an RGB ``PIL.Image``, fully decoded.

    A JPEG is decoded at the smallest 1/2, 1/4 or 1/8 scale that still covers ``draft`` = (W, H) pixels.

    Raises :class:`ImageDecodeError` with the reason when it cannot be decoded.
    """
    if isinstance(source, Image.Image):
        image = source
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
                    raise ImageDecodeError(
                        f"{name}: {image.width}x{image.height} px is over the {MAX_PIXELS:,} px limit (decompression bomb?)"
                    )
                # JPEG can decode at a reduced scale directly, which makes huge photos cheap.
                image.draft("RGB", draft)
                image.load()
        except ImageDecodeError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageDecodeError(f"{name}: refused as a decompression bomb ({exc})") from None
        except Exception as exc:  # Pillow raises many types for broken files
            raise ImageDecodeError(f"{name}: cannot decode image ({type(exc).__name__}: {exc})") from None
    return to_rgb(image)


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any mode to RGB; transparent pixels become white, as on a catalog page."""
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode == "CMYK":
        # Pillow's CMYK conversion ignores Adobe's inverted CMYK JPEGs; plain convert is right for the rest.
        return image.convert("RGB")
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float32)
        array = 255.0 * (array - array.min()) / max(float(array.max() - array.min()), 1.0)
        return Image.fromarray(array.astype(np.uint8)).convert("RGB")
    return image.convert("RGB")


def fit_to_size(image: Image.Image, size: tuple[int, int]) -> np.ndarray:
    """Pad ``image`` on white to the aspect ratio of ``size`` = (H, W), resize, return (H, W, 3) uint8."""
    height, width = size
    if height < 1 or width < 1:
        raise StylespaceError(f"image size must be positive (H, W), got {size}")
    target_ratio = width / height
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


def load_rgb(source: bytes | str | os.PathLike | Image.Image, size: tuple[int, int] = (80, 60)) -> np.ndarray:
    """Decode ``source`` and return it as an (H, W, 3) uint8 array of the given ``size`` = (H, W)."""
    # Twice the target size is enough for a clean downscale; a 1800 x 2400 photo then decodes at 1/8 scale.
    return fit_to_size(open_image(source, draft=(2 * size[1], 2 * size[0])), size)
