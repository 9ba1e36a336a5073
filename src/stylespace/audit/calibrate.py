"""Measuring how far a copy of a photo lands from the photo, to choose the near-copy thresholds on data.

A "near copy" is the same photo re-encoded, resized or slightly cropped (a re-listing, a CDN's version, a
marketplace thumbnail). :func:`measure_copy_distances` makes such copies of a sample of catalog items with
:mod:`stylespace.data.distortions` (the bytes an upload would be: ``jpeg30``, ``upscale4``, ``crop85``),
runs them through the canonical view and the embedder, and compares their distance to the original (in the
embedding, and in the pixels, :func:`stylespace.audit.copies.pixel_difference`) with the distance from each
original to its nearest *distinct* catalog item (not a pixel-identical copy; the catalog's own unknown near
copies are among those, so the distinct rates are upper bounds on false near copies).

``stylespace audit --near-distance auto`` calls it to choose the embedding threshold for a model other than
the shipped one; the defaults in :mod:`stylespace.audit.config` were chosen with it (numbers there and in
docs/audit.md).
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from stylespace.utils import StylespaceError

COPY_DISTORTIONS = ("jpeg30", "upscale4", "crop85")
COPY_PERCENTILE = 99.0


@dataclasses.dataclass
class CopyMeasurement:
    """What :func:`measure_copy_distances` measured (distances: cosine ``1 - cos``; pixels: 0-255).

    copies: distortion -> {"distance p50/p90/p99", "pixels p50/p90/p99", "found"}: the copy-to-original
        distances and the share of copies both tests call a copy.
    distinct: {"distance p1/p5/p50", "pixels p1/p5/p50"} of each sampled original's nearest distinct item
        (nearest by embedding).
    near_distance: the chosen embedding threshold: the copies' 99th percentile (all distortions together),
        so that the embedding test alone loses no more than 1 % of them.
    near_pixels, near_shift: the pixel thresholds in force.
    distinct_close: share of sampled originals whose nearest distinct item is under ``near_distance``.
    distinct_found: share of them whose nearest distinct item passes both tests (would be called a copy).
    """

    embedder: str
    n_items: int
    distortions: tuple[str, ...]
    copies: dict[str, dict[str, float]]
    distinct: dict[str, float]
    near_distance: float
    near_pixels: float
    near_shift: float
    distinct_close: float
    distinct_found: float


def measure_copy_distances(catalog, ids: Sequence[str], vectors: np.ndarray, pooled: np.ndarray, embed,
                           size: tuple[int, int], near_pixels: float, near_shift: float, sample: int = 400,
                           distortions: Sequence[str] = COPY_DISTORTIONS, exclude: Sequence[str] = (),
                           seed: int = 0) -> CopyMeasurement:
    """Measure copy and distinct distances on ``sample`` items of ``catalog``.

    Args:
        ids, vectors, pooled: every audited item's id, unit vector and pooled view (row i is ``ids[i]``).
        embed: ``(N, H, W, 3) uint8 -> (N, D)`` unit vectors (an :class:`~stylespace.audit.vectors.Embedder`).
        size: (H, W) of the canonical views ``embed`` takes.
        near_pixels, near_shift: the pixel test's thresholds.
        exclude: ids never sampled (blank images, items with a pixel-identical copy).
    """
    from stylespace.audit.copies import pixel_difference, pooled_views
    from stylespace.data import distortions as made
    from stylespace.data.images import ImageDecodeError, load_view
    from stylespace.evaluation.search import ExactSearch

    unknown = [d for d in distortions if d not in made.DISTORTIONS]
    if unknown:
        raise StylespaceError(f"unknown distortion(s) {unknown}; expected some of {sorted(made.DISTORTIONS)}")
    row = {item_id: i for i, item_id in enumerate(ids)}
    skip = set(exclude)
    pool = [i for i in ids if i not in skip]
    if len(pool) < 2:
        raise StylespaceError("too few items to measure copy distances (need 2 that are neither blank nor copies)")
    rng = np.random.default_rng(seed)
    chosen = [pool[i] for i in sorted(rng.choice(len(pool), size=min(sample, len(pool)), replace=False))]
    copies, originals, kinds = [], [], []
    for item_id in chosen:
        try:
            image = catalog.read_image(item_id)
        except ImageDecodeError:
            continue
        for name in distortions:
            try:
                copies.append(load_view(made.DISTORTIONS[name].apply(image, rng, image), size).pixels)
            except ImageDecodeError:
                continue
            originals.append(row[item_id])
            kinds.append(name)
    if not copies:
        raise StylespaceError("no copy could be made of the sampled items")
    copy_pixels = np.stack(copies)
    originals, kinds = np.asarray(originals), np.asarray(kinds)
    copy_vectors = np.asarray(embed(copy_pixels), dtype=np.float64)
    copy_distance = 1.0 - np.einsum("ij,ij->i", copy_vectors, vectors[originals].astype(np.float64))
    joined = np.concatenate([pooled_views(copy_pixels), pooled[originals]])
    copy_pixels_diff, copy_shift = pixel_difference(joined, np.arange(len(originals)),
                                                    np.arange(len(originals), 2 * len(originals)))
    near_distance = max(float(np.percentile(copy_distance, COPY_PERCENTILE)), 1e-6)
    found = (copy_distance < near_distance) & (copy_pixels_diff < near_pixels) & (copy_shift < near_shift)

    sampled = np.asarray(sorted({int(r) for r in originals}))
    distances, neighbour = ExactSearch(vectors, "cosine").search(vectors[sampled], 1, exclude=sampled)
    distinct_distance = distances[:, 0].astype(np.float64)
    distinct_pixels, distinct_shift = pixel_difference(pooled, sampled, neighbour[:, 0])
    return CopyMeasurement(
        embedder=getattr(embed, "name", "custom"), n_items=len(sampled), distortions=tuple(distortions),
        copies={name: {**_pct(copy_distance[kinds == name], "distance", (50, 90, 99)),
                       **_pct(copy_pixels_diff[kinds == name], "pixels", (50, 90, 99)),
                       **_pct(copy_shift[kinds == name], "shift", (50, 90, 99)),
                       "found": round(float(found[kinds == name].mean()), 4)} for name in distortions},
        distinct={**_pct(distinct_distance, "distance", (1, 5, 50)), **_pct(distinct_pixels, "pixels", (1, 5, 50)),
                  **_pct(distinct_shift, "shift", (1, 5, 50))},
        near_distance=round(near_distance, 6), near_pixels=float(near_pixels), near_shift=float(near_shift),
        distinct_close=round(float((distinct_distance < near_distance).mean()), 4),
        distinct_found=round(float(((distinct_distance < near_distance) & (distinct_pixels < near_pixels)
                                    & (distinct_shift < near_shift)).mean()), 4),
    )


def _pct(values: np.ndarray, name: str, which: Sequence[float]) -> dict[str, float]:
    if len(values) == 0:
        return {}
    return {f"{name} p{p:g}": round(float(np.percentile(values, p)), 5 if name == "distance" else 2) for p in which}
