"""What every feature extractor looks like, and the batch loop they share.

A feature extractor turns a batch of images into one vector each, L2-normalised so that the dot product
of two vectors is their cosine similarity: the same interface as a trained CNN's ``embed`` (see
``stylespace.models``), so search, evaluation and ensembles take any of them.
"""
from __future__ import annotations

import inspect
import time
from typing import Callable, Protocol, runtime_checkable

import numpy as np

from stylespace.utils import StylespaceError, at_least, validate


@runtime_checkable
class FeatureExtractor(Protocol):
    """Anything with a ``name``, a vector width ``dim`` and ``embed``.

    ``embed(pixels)``: uint8 (N, H, W, 3) RGB -> float32 (N, dim), every row of unit L2 norm (or all
    zeros where the image carries no signal for this extractor, e.g. a blank image's edges).
    """

    name: str

    @property
    def dim(self) -> int: ...

    def embed(self, pixels: np.ndarray) -> np.ndarray: ...


def check_pixels(pixels, what: str = "pixels") -> np.ndarray:
    """``pixels`` as a uint8 (N, H, W, 3) array; a clear error for anything else."""
    array = np.asarray(pixels)
    if array.ndim == 3 and array.shape[-1] == 3:
        raise StylespaceError(f"{what}: got one image of shape {array.shape}; expected a batch (N, H, W, 3), "
                              "e.g. pixels[None]")
    if array.ndim != 4 or array.shape[-1] != 3:
        raise StylespaceError(f"{what}: expected uint8 RGB images of shape (N, H, W, 3), got shape {array.shape}")
    if array.dtype != np.uint8:
        raise StylespaceError(f"{what}: expected dtype uint8 (0-255 RGB, as the image cache stores them), "
                              f"got {array.dtype}")
    return array


# ITU-R 601 luma weights: the grey level people perceive, so patterns are found where the eye sees them.
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def to_grey(pixels: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W, 3) -> float32 (N, H, W) luma in [0, 1]."""
    return (pixels.astype(np.float32) @ LUMA) / 255.0


def l2_normalise(vectors: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows scaled to unit L2 norm, float32; all-zero rows stay zero (no signal is not a direction)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, eps)


class BatchedDescriptor:
    """Base of the hand-made descriptors: ``describe`` one batch, ``embed`` any number of images.

    Subclasses set ``name`` and implement ``describe(pixels) -> float32 (N, dim)``: the raw features,
    before normalisation (a blank image's HOG is all zeros there). ``normalise`` maps raw features to the
    embedding; by default plain L2 normalisation.
    """

    name = "descriptor"
    batch_size = 256

    @property
    def dim(self) -> int:
        raise NotImplementedError

    def describe(self, pixels: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def normalise(self, raw: np.ndarray) -> np.ndarray:
        return l2_normalise(raw)

    def embed(self, pixels: np.ndarray, progress: bool = False) -> np.ndarray:
        """uint8 (N, H, W, 3) -> float32 (N, dim), L2-normalised, ``batch_size`` images at a time.

        ``pixels`` may be a memory map: only one batch is read into memory at a time.
        """
        pixels = check_pixels(pixels)
        out = np.empty((len(pixels), self.dim), dtype=np.float32)
        for start, stop in batches(len(pixels), self.batch_size, progress, f"{self.name}: describing"):
            batch = np.ascontiguousarray(pixels[start:stop])
            out[start:stop] = self.normalise(self.describe(batch))
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, dim={self.dim})"


def batches(n: int, batch_size: int, progress: bool, description: str):
    """(start, stop) of consecutive batches over ``n`` items, with a Rich progress bar on stderr."""
    from stylespace.progress import steps  # the project's one progress bar (stderr, transient)

    validate([at_least("batch_size", batch_size, 1)])
    with steps(progress and n > 0, n, f"{description} {n:,} images") as advance:
        for start in range(0, n, batch_size):
            stop = min(n, start + batch_size)
            yield start, stop
            advance(stop - start)


def timed_embed(extractor: FeatureExtractor, pixels: np.ndarray, progress: bool = False) -> tuple[np.ndarray, float]:
    """(vectors, seconds): ``extractor.embed(pixels)`` and its wall-clock time."""
    embed: Callable = extractor.embed
    # The protocol only promises embed(pixels); ours also take progress=.
    kwargs = {"progress": progress} if "progress" in inspect.signature(embed).parameters else {}
    started = time.perf_counter()
    vectors = embed(pixels, **kwargs)
    return vectors, time.perf_counter() - started
