"""Histogram of oriented gradients (scikit-image): the item's outline and silhouette, cell by cell.

Gradient orientations are histogrammed per cell of ``pixels_per_cell`` pixels and normalised over
blocks of cells, so HOG describes shape (a collar, a sleeve, a heel) independently of colour and of
overall contrast. A blank image has no gradient and so an all-zero HOG.
"""
from __future__ import annotations

import dataclasses

import numpy as np
from skimage.feature import hog

from stylespace.descriptors.base import BatchedDescriptor, check_pixels, to_grey
from stylespace.utils import StylespaceError, at_least, each, one_of, validate

BLOCK_NORMS = ("L1", "L1-sqrt", "L2", "L2-Hys")


@dataclasses.dataclass
class HogConfig:
    """orientations: gradient orientation bins over 0-180 degrees.
    pixels_per_cell: (rows, columns) of pixels per histogram cell.
    cells_per_block: (rows, columns) of cells normalised together.
    block_norm: scikit-image's block normalisation (L1, L1-sqrt, L2, L2-Hys).
    colour: gradients on every RGB channel, keeping the strongest per pixel (a red shirt on a blue
        background has an edge even where the two greys are equal); False: on the grey image.
    """

    orientations: int = 9
    pixels_per_cell: tuple[int, int] = (8, 8)
    cells_per_block: tuple[int, int] = (2, 2)
    block_norm: str = "L2-Hys"
    colour: bool = True

    def __post_init__(self) -> None:
        validate([
            at_least("orientations", self.orientations, 1),
            each("pixels_per_cell", self.pixels_per_cell, 1, count=2, note="rows, columns"),
            each("cells_per_block", self.cells_per_block, 1, count=2, note="rows, columns"),
            one_of("block_norm", self.block_norm, BLOCK_NORMS),
        ], "hog")
        self.pixels_per_cell = tuple(int(v) for v in self.pixels_per_cell)
        self.cells_per_block = tuple(int(v) for v in self.cells_per_block)


class HogDescriptor(BatchedDescriptor):
    """HOG of each image; ``describe``: (N, H, W, 3) uint8 -> (N, dim) float32, block-normalised.

    ``dim`` depends on the image size, so it is known once an image size is: set at construction
    (``image_size``, default the catalog's 80 x 60) and checked on every batch.
    """

    name = "hog"

    def __init__(self, config: HogConfig | None = None, image_size: tuple[int, int] = (80, 60)):
        self.config = config or HogConfig()
        self.image_size = (int(image_size[0]), int(image_size[1]))
        cells = [self.image_size[i] // self.config.pixels_per_cell[i] for i in (0, 1)]
        blocks = [cells[i] - self.config.cells_per_block[i] + 1 for i in (0, 1)]
        if min(blocks) < 1:
            raise StylespaceError(f"hog: images of {self.image_size[0]}x{self.image_size[1]} px hold {cells[0]}x{cells[1]} "
                                  f"cells of {self.config.pixels_per_cell} px, fewer than one block of "
                                  f"{self.config.cells_per_block} cells; use smaller cells or blocks")
        self._dim = blocks[0] * blocks[1] * self.config.cells_per_block[0] * self.config.cells_per_block[1] \
            * self.config.orientations

    @property
    def dim(self) -> int:
        return self._dim

    def describe(self, pixels: np.ndarray) -> np.ndarray:
        pixels = check_pixels(pixels)
        if pixels.shape[1:3] != self.image_size:
            raise StylespaceError(f"hog was set up for {self.image_size[0]}x{self.image_size[1]} images, got "
                                  f"{pixels.shape[1]}x{pixels.shape[2]}; build it with image_size={pixels.shape[1:3]}")
        c = self.config
        out = np.empty((len(pixels), self.dim), dtype=np.float32)
        images = pixels if c.colour else to_grey(pixels)
        for i, image in enumerate(images):
            out[i] = hog(image, orientations=c.orientations, pixels_per_cell=c.pixels_per_cell,
                         cells_per_block=c.cells_per_block, block_norm=c.block_norm,
                         channel_axis=-1 if c.colour else None, feature_vector=True)
        return out
