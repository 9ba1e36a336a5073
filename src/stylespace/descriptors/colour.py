"""HSV colour histogram (seed 002, approach 1): what colours an item has, wherever they are.

Every pixel is counted once, so the histogram ignores where a colour sits: a mirrored or shifted
image has the same histogram. Catalog photos are shot on white, and the white would otherwise fill
most of the histogram, so near-white pixels are left out (unless the image is nothing but white).
"""
from __future__ import annotations

import dataclasses

import numpy as np
from skimage.color import rgb2hsv

from stylespace.descriptors.base import BatchedDescriptor, check_pixels, l2_normalise
from stylespace.utils import StylespaceError, at_least, each, in_range, validate


@dataclasses.dataclass
class ColourHistogramConfig:
    """bins: (hue, saturation, value) bins of the joint histogram (dim = their product).
    white_threshold: pixels whose R, G and B are all at least this (0-255) are background and not
        counted; None counts every pixel.
    soft: each pixel votes for the two nearest bins of each channel, by closeness, so a shade on a bin
        edge does not flip between bins; False: one vote for the bin holding it.
    bands: horizontal bands, one histogram each (top to bottom: where on the item a colour is);
        mirroring left-right still gives the same histograms.
    """

    bins: tuple[int, int, int] = (8, 4, 4)
    white_threshold: int | None = 240
    soft: bool = True
    bands: int = 3

    def __post_init__(self) -> None:
        validate([
            each("bins", self.bins, 1, count=3, note="hue, saturation, value"),
            at_least("bands", self.bands, 1),
            in_range("white_threshold", self.white_threshold, 0, 255, none_ok=True, note="None: every pixel counts"),
        ], "colour histogram")
        self.bins = tuple(int(b) for b in self.bins)


class ColourHistogram(BatchedDescriptor):
    """Joint HSV histogram of the non-background pixels.

    ``describe``: (N, H, W, 3) uint8 -> (N, h*s*v) float32, each row the share of counted pixels per bin
    (sums to 1). ``embed``: the square root of those shares, which already has unit L2 norm; the dot
    product of two embeddings is then the Bhattacharyya coefficient of the two histograms, which weighs
    small shared colours more than a plain dot product of shares would.
    """

    name = "colour"

    def __init__(self, config: ColourHistogramConfig | None = None):
        self.config = config or ColourHistogramConfig()

    @property
    def bins_per_band(self) -> int:
        h, s, v = self.config.bins
        return h * s * v

    @property
    def dim(self) -> int:
        return self.config.bands * self.bins_per_band

    def describe(self, pixels: np.ndarray) -> np.ndarray:
        pixels = check_pixels(pixels)
        n, height = pixels.shape[:2]
        if n == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        c = self.config
        if height < c.bands:
            raise StylespaceError(f"{c.bands} colour bands need images at least {c.bands} px high, got {height}")
        counted = np.ones(pixels.shape[:3], dtype=bool)
        if c.white_threshold is not None:
            counted = ~(pixels >= c.white_threshold).all(axis=-1)
            counted[~counted.any(axis=(1, 2))] = True  # an all-white image: count its white
        # Each counted pixel's offset in the (image, band) block of the batch's flat histogram.
        band = np.arange(height) * c.bands // height
        block = (np.arange(n)[:, None, None] * c.bands + band[None, :, None]) * self.bins_per_band
        block = np.broadcast_to(block, counted.shape)[counted]
        hsv = rgb2hsv(pixels[counted]).astype(np.float32)  # (P, 3) in [0, 1]
        counts = np.zeros(n * self.dim, dtype=np.float64)
        for code, weight in self._bin_votes(hsv):
            counts += np.bincount(block + code, weights=weight, minlength=n * self.dim)
        counts = counts.reshape(n * c.bands, self.bins_per_band)
        # Each band's shares sum to 1 (a band with no counted pixel stays empty), then bands share the image.
        counts /= np.maximum(counts.sum(axis=1, keepdims=True), 1e-12)
        return (counts.reshape(n, self.dim) / c.bands).astype(np.float32)

    def _bin_votes(self, hsv: np.ndarray):
        """(flat bin code (P,), weight (P,)) pairs: one per bin a pixel votes for.

        Hard binning: the bin holding the value. Soft binning: the two nearest bin centres per channel,
        weighted by closeness (8 bins in all), hue wrapping round (red is at both ends).
        """
        bins = np.asarray(self.config.bins)
        if not self.config.soft:
            # A value of exactly 1.0 belongs in the last bin, not one past it.
            codes = np.minimum((hsv * bins).astype(np.int64), bins - 1)
            yield (codes[:, 0] * bins[1] + codes[:, 1]) * bins[2] + codes[:, 2], None
            return
        position = hsv * bins - 0.5  # bin centres sit at whole numbers
        lower = np.floor(position).astype(np.int64)
        upper_weight = position - lower
        for corner in np.ndindex(2, 2, 2):
            codes = lower + np.asarray(corner)
            codes[:, 0] %= bins[0]
            codes[:, 1:] = np.clip(codes[:, 1:], 0, bins[1:] - 1)
            weight = np.prod(np.where(np.asarray(corner, dtype=bool), upper_weight, 1.0 - upper_weight), axis=1)
            yield (codes[:, 0] * bins[1] + codes[:, 1]) * bins[2] + codes[:, 2], weight

    def normalise(self, raw: np.ndarray) -> np.ndarray:
        return l2_normalise(np.sqrt(raw))
