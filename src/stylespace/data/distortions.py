"""How a customer's picture of a product differs from the catalog's packshot: one function per change.

Each distortion takes the packshot (an RGB ``PIL.Image`` as the catalog stores it), a seeded
``numpy.random.Generator`` and a second catalog image (for "a second item in the frame"), and returns
the *file* a customer would upload (bytes: a JPEG at quality 92 unless the distortion is about the
encoding), so that the whole query path (decoding, EXIF, canonical view) is measured, not only the model.

Used by the robustness measurement (``stylespace robustness``, ``benchmarks/bench_robustness.py``) and
the tests. Parameters are fixed here, so that a figure names exactly what was done.
"""
from __future__ import annotations

import dataclasses
import io
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageOps


def encode(image: Image.Image, quality: int = 92, exif: Image.Exif | None = None) -> bytes:
    """``image`` as JPEG bytes (with ``exif`` when given)."""
    buffer = io.BytesIO()
    kwargs = {"exif": exif.tobytes()} if exif is not None else {}
    image.convert("RGB").save(buffer, "JPEG", quality=quality, **kwargs)
    return buffer.getvalue()


def _pad_square(image: Image.Image, colour: tuple[int, int, int]) -> Image.Image:
    side = max(image.size)
    return ImageOps.pad(image, (side, side), color=colour)


def _backdrop(image: Image.Image) -> np.ndarray:
    """(H, W) bool: the near-white pixels connected to the border (the packshot's backdrop)."""
    from stylespace.data.images import border_connected

    return border_connected(np.asarray(image.convert("RGB")).min(axis=2) >= 235)


def pad_white(image, rng, other):
    """Padded to a square on white, then resized to 300 x 300 (a marketplace thumbnail)."""
    return encode(_pad_square(image, (255, 255, 255)).resize((300, 300), Image.Resampling.BICUBIC))


def pad_grey(image, rng, other):
    """Padded to a square on light grey (225), then resized to 300 x 300."""
    return encode(_pad_square(image, (225, 225, 225)).resize((300, 300), Image.Resampling.BICUBIC))


def stretch(image, rng, other):
    """Stretched to a 224 x 224 square (the aspect ratio distorted)."""
    return encode(image.resize((224, 224), Image.Resampling.BICUBIC))


def mirror(image, rng, other):
    """Mirrored left to right."""
    return encode(ImageOps.mirror(image))


def crop85(image, rng, other):
    """The central 85 % of the width and of the height (72 % of the area)."""
    w, h = image.size
    dx, dy = round(0.075 * w), round(0.075 * h)
    return encode(image.crop((dx, dy, w - dx, h - dy)))


def rotate8(image, rng, other):
    """Rotated 8 degrees (direction drawn at random), corners filled white."""
    angle = 8.0 if rng.random() < 0.5 else -8.0
    return encode(image.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=(255, 255, 255)))


def darker30(image, rng, other):
    """Every pixel 30 % darker (an underexposed photo; the white backdrop becomes grey)."""
    return encode(Image.eval(image, lambda v: int(v * 0.7)))


def greyscale(image, rng, other):
    """Greyscale."""
    return encode(ImageOps.grayscale(image).convert("RGB"))


def jpeg30(image, rng, other):
    """Re-encoded as JPEG at quality 30."""
    return encode(image, quality=30)


def upscale4(image, rng, other):
    """Upscaled 4x (bicubic), as a CDN serving a small original large."""
    return encode(image.resize((image.width * 4, image.height * 4), Image.Resampling.BICUBIC))


def blur1(image, rng, other):
    """Gaussian blur of radius 1 px on the 60 x 80 packshot (out of focus; 2 px there erases the product's
    details, as 60 px would on a 1800 x 2400 photo)."""
    return encode(image.filter(ImageFilter.GaussianBlur(1)))


def perspective(image, rng, other):
    """Seen from an angle: a perspective warp that narrows the top by 12 % (a phone held below the item)."""
    big = image.resize((image.width * 4, image.height * 4), Image.Resampling.BICUBIC)
    w, h = big.size
    inset = 0.06 * w
    # PERSPECTIVE maps output to input; solve the 8 coefficients from four corner correspondences.
    src = [(0, 0), (w, 0), (w, h), (0, h)]
    dst = [(inset, 0), (w - inset, 0), (w, h), (0, h)]
    matrix = []
    for (x, y), (u, v) in zip(dst, src):
        matrix.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        matrix.append([0, 0, 0, x, y, 1, -v * x, -v * y])
    coeffs = np.linalg.solve(np.array(matrix, dtype=np.float64), np.array(src, dtype=np.float64).ravel())
    warped = big.transform((w, h), Image.Transform.PERSPECTIVE, tuple(coeffs), Image.Resampling.BICUBIC,
                           fillcolor=(255, 255, 255))
    return encode(warped)


def shadow(image, rng, other):
    """A soft shadow: the image darkened by up to 40 % along a gradient from one side."""
    rgb = np.asarray(image, dtype=np.float32)
    h, w = rgb.shape[:2]
    ramp = np.linspace(0.6, 1.0, w, dtype=np.float32)
    if rng.random() < 0.5:
        ramp = ramp[::-1]
    return encode(Image.fromarray((rgb * ramp[None, :, None]).clip(0, 255).astype(np.uint8)))


def second_item(image, rng, other):
    """A second, smaller item in the frame: another catalog image at 55 % of the size beside the product."""
    w, h = image.size
    canvas = Image.new("RGB", (int(w * 1.6), h), (255, 255, 255))
    canvas.paste(image, (0, 0))
    small = other.resize((max(1, int(other.width * 0.55)), max(1, int(other.height * 0.55))), Image.Resampling.BICUBIC)
    canvas.paste(small, (w, (h - small.height) // 2))
    return encode(canvas)


def coloured_backdrop(image, rng, other):
    """The white backdrop replaced by a studio colour (beige, light blue or pale green), padded 10 %."""
    colours = [(226, 208, 180), (190, 214, 232), (200, 226, 196)]
    colour = colours[int(rng.integers(len(colours)))]
    rgb = np.asarray(image.convert("RGB")).copy()
    rgb[_backdrop(image)] = colour
    out = ImageOps.expand(Image.fromarray(rgb), border=max(1, image.width // 10), fill=colour)
    return encode(out)


def phone_exif(image, rng, other):
    """A phone photo stored sideways: upscaled to 1200 px high, pixels rotated 90 degrees, EXIF orientation 6."""
    big = image.resize((round(image.width * 1200 / image.height), 1200), Image.Resampling.BICUBIC)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to view": the pixels are stored turned 90 degrees counter-clockwise
    return encode(big.transpose(Image.Transpose.ROTATE_90), exif=exif)


def _small_in_frame(share: float) -> Callable:
    def small_in_frame(image, rng, other):
        width = max(1, round(SMALL_FRAME * share))
        height = max(1, round(width * image.height / image.width))
        backdrop = 222 + rng.normal(0, 2.0, (SMALL_FRAME, SMALL_FRAME, 1))  # a light-grey table, not quite flat
        canvas = Image.fromarray(np.repeat(backdrop, 3, axis=2).clip(0, 255).astype(np.uint8))
        left = int(rng.integers(0, SMALL_FRAME - width + 1))
        top = int(rng.integers(0, max(1, SMALL_FRAME - height + 1)))
        canvas.paste(image.resize((width, height), Image.Resampling.BICUBIC), (left, top))
        return encode(canvas)

    small_in_frame.__doc__ = (f"Small in the frame: the packshot at {100 * share:g} % of the width of a {SMALL_FRAME} x "
                              f"{SMALL_FRAME} photo of a light-grey table, placed at random (a shopper's photo of "
                              "one item, taken from a step back).")
    return small_in_frame


SMALL_FRAME = 1200  # px: the side of the "small in the frame" photos
SMALL_SHARES = (0.10, 0.25, 0.50)


def none(image, rng, other):
    """Unchanged (the packshot itself, re-encoded as JPEG at quality 92)."""
    return encode(image)


@dataclasses.dataclass(frozen=True)
class Distortion:
    """A named change of a packshot: ``apply(image, rng, other) -> bytes``; ``target`` is the exact-product
    R@1 the product promises under it (None: reported without a target)."""

    name: str
    apply: Callable
    target: float | None

    @property
    def description(self) -> str:
        return " ".join((self.apply.__doc__ or "").split())


DISTORTIONS: dict[str, Distortion] = {d.name: d for d in [
    Distortion("none", none, 0.985),
    Distortion("pad_white", pad_white, 0.95),
    Distortion("pad_grey", pad_grey, 0.95),
    Distortion("stretch", stretch, 0.90),
    Distortion("mirror", mirror, 0.95),
    Distortion("crop85", crop85, 0.95),
    Distortion("rotate8", rotate8, 0.95),
    Distortion("darker30", darker30, 0.95),
    Distortion("greyscale", greyscale, None),
    Distortion("jpeg30", jpeg30, 0.95),
    Distortion("upscale4", upscale4, 0.85),
    Distortion("blur1", blur1, 0.85),
    Distortion("perspective", perspective, 0.85),
    Distortion("shadow", shadow, 0.85),
    Distortion("second_item", second_item, 0.85),
    Distortion("coloured_backdrop", coloured_backdrop, 0.85),
    Distortion("phone_exif", phone_exif, 0.85),
    # the "small in the frame" family (issue 29): reported without a target until it is measured
    *[Distortion(f"small_in_frame{round(100 * share)}", _small_in_frame(share), None) for share in SMALL_SHARES],
]}
FAMILIES: dict[str, tuple[str, ...]] = {
    "small_in_frame": tuple(f"small_in_frame{round(100 * share)}" for share in SMALL_SHARES),
}


def junk_images(size: tuple[int, int] = (480, 640), seed: int = 0) -> dict[str, bytes]:
    """Uploads that are not product photos, as JPEG bytes of ``size`` = (W, H): blank, near-uniform grey,
    noise, a gradient, a screenshot of text, a landscape."""
    rng = np.random.default_rng(seed)
    w, h = size
    out = {"blank": Image.new("RGB", size, (255, 255, 255))}
    grey = np.full((h, w, 3), 128, np.float32) + rng.normal(0, 1.5, (h, w, 1))
    out["near_uniform"] = Image.fromarray(grey.clip(0, 255).astype(np.uint8))
    out["noise"] = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    ramp = np.linspace(0, 255, w, dtype=np.float32)
    out["gradient"] = Image.fromarray(np.stack([np.tile(ramp, (h, 1)), np.tile(ramp[::-1], (h, 1)),
                                                np.full((h, w), 90, np.float32)], axis=2).astype(np.uint8))
    text = Image.new("RGB", size, (250, 250, 250))
    draw = ImageDraw.Draw(text)
    for line in range(0, h - 20, 18):
        words = " ".join("".join(chr(97 + int(c)) for c in rng.integers(0, 26, int(rng.integers(2, 9))))
                         for _ in range(8))
        draw.text((12, 8 + line), words, fill=(20, 20, 20))
    draw.rectangle((0, 0, w - 1, 6), fill=(40, 90, 200))
    out["text_screenshot"] = text
    sky = np.linspace([90, 150, 230], [200, 225, 250], h // 2, dtype=np.float32)[:, None, :].repeat(w, 1)
    field = np.linspace([60, 140, 40], [30, 90, 20], h - h // 2, dtype=np.float32)[:, None, :].repeat(w, 1)
    land = np.concatenate([sky, field]) + rng.normal(0, 12, (h, w, 3))
    out["landscape"] = Image.fromarray(land.clip(0, 255).astype(np.uint8))
    return {name: encode(image) for name, image in out.items()}
