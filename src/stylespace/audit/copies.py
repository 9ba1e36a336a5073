"""Copies in a catalog: pixel-identical images (a hash of the decoded canonical view) and near copies (close
embeddings whose pixels also agree), grouped into clusters (connected components).

Two steps decide a near copy, because on a fashion catalog an embedding alone cannot: items shot in one
studio template (the same model, pose and cut in another colour, a lipstick in another shade) sit as close
in the style space as a re-encoded copy of one photo (see :mod:`stylespace.audit.config` for the numbers).

1. candidates: each item's ``neighbours`` nearest items (exact cosine search) closer than ``near_distance``;
2. the pixel test: the two canonical views, box-averaged to about 20 px high, differ by less than
   ``near_pixels`` grey levels (mean absolute difference, 0-255, over the pixels that are product, not
   white backdrop, in either view) and their colours by less than ``near_shift`` (the mean signed
   difference of a channel): :func:`pixel_difference`.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from stylespace.data.cache import pixel_hashes  # noqa: F401  (re-exported: part of this module's API)
from stylespace.utils import StylespaceError

POOLED_HEIGHT = 20  # the pixel test compares views box-averaged to about this many rows
PRODUCT_TOLERANCE = 16  # a pooled pixel further than this from white (in some channel) is product


def exact_groups(ids: Sequence[str], hashes: Sequence[bytes], skip: set[str] = frozenset()) -> list[list[str]]:
    """Groups (2+ members, in ``ids`` order, groups ordered by first member) of ids with the same hash."""
    by_hash: dict[bytes, list[str]] = {}
    for item_id, digest in zip(ids, hashes):
        if item_id not in skip:
            by_hash.setdefault(digest, []).append(item_id)
    return [members for members in by_hash.values() if len(members) > 1]


def pooled_views(pixels: np.ndarray, height: int = POOLED_HEIGHT, batch: int = 4096) -> np.ndarray:
    """(N, H, W, 3) uint8 -> (N, h, w, 3) uint8 box averages with h about ``height`` (an integer factor)."""
    n, h, w = pixels.shape[:3]
    factor = max(1, h // height)
    ph, pw = h // factor, w // factor
    out = np.empty((n, ph, pw, 3), dtype=np.uint8)
    for start in range(0, n, batch):
        block = np.asarray(pixels[start:start + batch, :ph * factor, :pw * factor], dtype=np.float32)
        small = block.reshape(len(block), ph, factor, pw, factor, 3).mean(axis=(2, 4))
        out[start:start + len(block)] = np.rint(small).astype(np.uint8)
    return out


def pixel_difference(pooled: np.ndarray, first: np.ndarray, second: np.ndarray,
                     chunk: int = 16384) -> tuple[np.ndarray, np.ndarray]:
    """How much ``pooled[first[i]]`` and ``pooled[second[i]]`` differ, on the product pixels of either view
    (pooled pixels further than ``PRODUCT_TOLERANCE`` from white in some channel), so that a thin product (a
    tie, an eyeliner) on a large white backdrop is compared on itself, not on the backdrop.

    Returns:
        (difference, shift), (P,) float32 each, in grey levels (0-255): the mean absolute difference (over
        the channels), and the colour shift: the largest per-channel mean *signed* difference. Re-encoding
        and resampling noise averages out in the shift; another shade of the same product does not.
    """
    difference = np.empty(len(first), dtype=np.float32)
    shift = np.empty(len(first), dtype=np.float32)
    for start in range(0, len(first), chunk):
        a = pooled[first[start:start + chunk]].astype(np.int16)
        b = pooled[second[start:start + chunk]].astype(np.int16)
        signed = (a - b).reshape(len(a), -1, 3).astype(np.float32)
        product = ((a.min(axis=3) < 255 - PRODUCT_TOLERANCE) | (b.min(axis=3) < 255 - PRODUCT_TOLERANCE)).reshape(len(a), -1)
        counted = np.maximum(product.sum(axis=1), 1).astype(np.float32)
        difference[start:start + chunk] = (np.abs(signed).mean(axis=2) * product).sum(axis=1) / counted
        shift[start:start + chunk] = np.abs((signed * product[..., None]).sum(axis=1) / counted[:, None]).max(axis=1)
    return difference, shift


@dataclasses.dataclass
class Neighbours:
    """Each searched item's nearest other items: ``rows`` (the searched rows into the vectors),
    ``distances`` (R, k) ascending cosine distances and ``indices`` (R, k) rows into the vectors."""

    rows: np.ndarray
    distances: np.ndarray
    indices: np.ndarray


def nearest(vectors: np.ndarray, rows: np.ndarray, k: int) -> Neighbours:
    """The ``k`` nearest of ``vectors[rows]`` among ``vectors[rows]`` (cosine, exact, itself left out)."""
    from stylespace.evaluation.search import ExactSearch

    rows = np.asarray(rows, dtype=np.int64)
    k = min(k, len(rows) - 1)
    if k < 1:
        return Neighbours(rows, np.zeros((len(rows), 0), np.float32), np.zeros((len(rows), 0), np.int64))
    subset = vectors[rows]
    distances, local = ExactSearch(subset, "cosine").search(subset, k, exclude=np.arange(len(rows)))
    return Neighbours(rows, distances, rows[local])


def near_pairs(neighbours: Neighbours, pooled: np.ndarray, near_distance: float, near_pixels: float,
               near_shift: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Pairs (first rows, second rows, embedding distances, pixel differences) that pass both tests,
    each unordered pair once."""
    if neighbours.indices.size == 0:
        empty = np.zeros(0, np.int64)
        return empty, empty, np.zeros(0, np.float32), np.zeros(0, np.float32)
    close = neighbours.distances < near_distance
    first = np.repeat(neighbours.rows, neighbours.indices.shape[1])[close.ravel()]
    second = neighbours.indices.ravel()[close.ravel()]
    distance = neighbours.distances.ravel()[close.ravel()]
    low, high = np.minimum(first, second), np.maximum(first, second)
    keys, unique = np.unique(low * (int(high.max(initial=0)) + 1) + high, return_index=True)
    low, high, distance = low[unique], high[unique], distance[unique]
    difference, shift = pixel_difference(pooled, low, high)
    keep = (difference < near_pixels) & (shift < near_shift)
    return low[keep], high[keep], distance[keep], difference[keep]


def components(n: int, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Connected-component label of each of ``n`` nodes given undirected edges (union-find)."""
    parent = np.arange(n)

    def find(x: int) -> int:
        root = x
        while parent[root] != root:
            root = parent[root]
        while parent[x] != root:
            parent[x], x = root, parent[x]
        return root

    for a, b in zip(first.tolist(), second.tolist()):
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return np.array([find(i) for i in range(n)])


@dataclasses.dataclass
class CopyClusters:
    """Clusters of copies among ``ids``.

    Attributes:
        groups: pixel-identical groups (2+ ids each).
        clusters: connected components (2+ ids each, in ``ids`` order) of the pixel-identical groups and
            the near-copy pairs together, ordered by their first member.
        near: (id_a, id_b, embedding distance, pixel difference) of every near-copy pair found.
    """

    groups: list[list[str]]
    clusters: list[list[str]]
    near: list[tuple[str, str, float, float]]


def cluster_copies(ids: Sequence[str], hashes: Sequence[bytes], vectors: np.ndarray | None,
                   pooled: np.ndarray | None, near_distance: float, near_pixels: float, near_shift: float,
                   neighbours: int = 10, skip: set[str] = frozenset(), found: Neighbours | None = None) -> CopyClusters:
    """Pixel-identical groups and near copies of ``ids`` (row i of ``vectors`` / ``pooled`` is ``ids[i]``);
    ``skip`` (blank images) takes part in neither. ``found``: neighbours already searched (else searched here);
    ``vectors`` None: exact copies only."""
    ids = list(ids)
    if len(hashes) != len(ids):
        raise StylespaceError(f"{len(ids)} ids but {len(hashes)} pixel hashes")
    groups = exact_groups(ids, hashes, skip)
    row = {item_id: i for i, item_id in enumerate(ids)}
    edges_a = [row[g[0]] for g in groups for _ in g[1:]]
    edges_b = [row[m] for g in groups for m in g[1:]]
    near: list[tuple[str, str, float, float]] = []
    if vectors is not None and pooled is not None:
        if found is None:
            keep = np.array([i for i, item_id in enumerate(ids) if item_id not in skip], dtype=np.int64)
            found = nearest(vectors, keep, neighbours)
        a, b, distance, difference = near_pairs(found, pooled, near_distance, near_pixels, near_shift)
        same = np.array([hashes[i] == hashes[j] for i, j in zip(a.tolist(), b.tolist())], dtype=bool)
        for i, j, d, p in zip(a[~same].tolist(), b[~same].tolist(), distance[~same].tolist(), difference[~same].tolist()):
            near.append((ids[i], ids[j], round(float(d), 6), round(float(p), 3)))
        edges_a += a[~same].tolist()
        edges_b += b[~same].tolist()
    labels = components(len(ids), np.asarray(edges_a, np.int64), np.asarray(edges_b, np.int64))
    members: dict[int, list[str]] = {}
    for i, label in enumerate(labels.tolist()):
        members.setdefault(label, []).append(ids[i])
    clusters = [m for m in members.values() if len(m) > 1]
    clusters.sort(key=lambda m: row[m[0]])
    return CopyClusters(groups, clusters, near)
