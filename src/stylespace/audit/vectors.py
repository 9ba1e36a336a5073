"""What the audit compares items by: a model's embeddings, or, without a model, small pixel vectors.

Both are L2-normalised rows compared by cosine distance (``1 - cos``), the convention of
:mod:`stylespace.evaluation.search`, so the near-copy threshold and the outlier distances read the same way.
"""
from __future__ import annotations

import numpy as np

# The pixel vectors of an audit without a model: the canonical view box-averaged down to this (H, W), in
# colour, each image minus its own mean (so a darker copy of a photo stays close), L2-normalised.
PIXEL_GRID = (16, 12)


def pixel_vectors(pixels: np.ndarray, grid: tuple[int, int] = PIXEL_GRID, batch: int = 4096) -> np.ndarray:
    """(N, H, W, 3) uint8 canonical views -> (N, gh * gw * 3) float32 unit rows (a coarse colour thumbnail)."""
    n, h, w = pixels.shape[:3]
    gh, gw = grid
    fh, fw = max(1, h // gh), max(1, w // gw)
    gh, gw = h // fh, w // fw
    out = np.empty((n, gh * gw * 3), dtype=np.float32)
    for start in range(0, n, batch):
        block = np.asarray(pixels[start:start + batch, :gh * fh, :gw * fw], dtype=np.float32)
        small = block.reshape(len(block), gh, fh, gw, fw, 3).mean(axis=(2, 4)).reshape(len(block), -1)
        small -= small.mean(axis=1, keepdims=True)
        norms = np.linalg.norm(small, axis=1, keepdims=True)
        small /= np.maximum(norms, 1e-6)
        out[start:start + len(block)] = small
    return out


class Embedder:
    """Turns canonical views (N, H, W, 3) uint8 into unit vectors: the model's ``embed``, or pixel vectors.

    Args:
        model: an :class:`~stylespace.models.EmbeddingModel`, or None for :func:`pixel_vectors`.
    """

    def __init__(self, model=None, batch_size: int = 512, device: str = "auto"):
        self.model, self.batch_size, self.device = model, batch_size, device

    @property
    def name(self) -> str:
        return "model" if self.model is not None else "pixels"

    def __call__(self, pixels: np.ndarray, progress: bool = False) -> np.ndarray:
        if self.model is None:
            return pixel_vectors(pixels)
        from stylespace.embeddings import embed_images

        return embed_images(self.model, pixels, batch_size=self.batch_size, device=self.device, progress=progress)
