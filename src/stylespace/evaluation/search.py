"""Exact nearest-neighbour search with FAISS, the one place evaluation turns vectors into distances.

Distances are in one convention everywhere in :mod:`stylespace.evaluation`:

- ``cosine``: ``1 - cos(a, b)`` in [0, 2]; vectors are L2-normalised and searched by inner product.
- ``euclidean``: ``||a - b||`` (FAISS returns squared L2; we take the square root).

Smaller is closer in both, so thresholds, cutoffs and rankings read the same way for either metric.
"""
from __future__ import annotations

import os

import numpy as np

from stylespace.utils import METRICS, StylespaceError, at_least, one_of, validate

DENSE_MIN_K = 1024  # from this depth (or N / 64) a search scores whole rows instead of using FAISS's reservoir
DENSE_BLOCK_BYTES = 64 * 2**20


def check_metric(metric: str) -> str:
    validate([one_of("metric", metric, METRICS)])
    return metric


def as_vectors(vectors, what: str = "vectors") -> np.ndarray:
    """(N, D) finite float32, C-contiguous (what FAISS needs); a clear error otherwise."""
    array = np.ascontiguousarray(vectors, dtype=np.float32)
    if array.ndim != 2:
        raise StylespaceError(f"{what}: expected a 2-D (N, D) array, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise StylespaceError(f"{what}: contains NaN or infinite values; re-run the embedding step")
    return array


def as_labels(labels, n: int | None = None, what: str = "labels") -> np.ndarray:
    """Labels as an object array, checked: one per vector (when ``n`` is given) and none missing (None)."""
    labels = np.asarray(list(labels), dtype=object)
    if n is not None and len(labels) != n:
        raise StylespaceError(f"{n} {what.split()[0]} vectors but {len(labels)} {what}; expected one label per vector")
    if any(label is None for label in labels):
        raise StylespaceError(f"{what} contain None; every item scored or used as support needs a class")
    return labels


def prepare(vectors, metric: str, what: str = "vectors") -> np.ndarray:
    """Vectors as searched under ``metric``: L2-normalised for cosine (a copy; the input is untouched)."""
    import faiss

    array = as_vectors(vectors, what)
    if check_metric(metric) == "cosine":
        array = array.copy()
        faiss.normalize_L2(array)  # zero vectors stay zero: distance 1 to everything
    return array


def row_distances(first: np.ndarray, second: np.ndarray, metric: str) -> np.ndarray:
    """Distance between ``first[i]`` and ``second[i]`` of vectors already :func:`prepare`-d, (P,) float64."""
    first = np.asarray(first, dtype=np.float64)
    if metric == "cosine":
        return 1.0 - np.einsum("ij,ij->i", first, second)
    return np.linalg.norm(first - second, axis=1)


def pair_distances(first, second, metric: str) -> np.ndarray:
    """Row-wise distance between ``first[i]`` and ``second[i]``: (P, D) x (P, D) -> (P,) float64."""
    first, second = prepare(first, metric, "first"), prepare(second, metric, "second")
    if first.shape != second.shape:
        raise StylespaceError(f"pair distances need two arrays of the same shape, got {first.shape} and {second.shape}")
    return row_distances(first, second, metric)


def indexed_pair_distances(vectors, first, second, metric: str, chunk: int = 65_536) -> np.ndarray:
    """Distance between ``vectors[first[i]]`` and ``vectors[second[i]]`` for many pairs, (P,) float64.

    Works through the pairs in chunks, so a million pairs never gather two (P, D) copies of the vectors.
    """
    vectors = prepare(vectors, metric)
    first, second = np.asarray(first, dtype=np.int64), np.asarray(second, dtype=np.int64)
    if first.shape != second.shape or first.ndim != 1:
        raise StylespaceError(f"pair indices must be two (P,) arrays, got {first.shape} and {second.shape}")
    out = np.empty(len(first), dtype=np.float64)
    for start in range(0, len(first), chunk):
        out[start:start + chunk] = row_distances(vectors[first[start:start + chunk]],
                                                 vectors[second[start:start + chunk]], metric)
    return out


class ExactSearch:
    """A flat (exact) FAISS index over reference vectors.

    Args:
        references: (N, D) vectors.
        metric: ``cosine`` (inner product on L2-normalised vectors) or ``euclidean`` (L2).
    """

    def __init__(self, references, metric: str = "cosine"):
        import faiss

        self.metric = check_metric(metric)
        self.references = prepare(references, metric, "reference vectors")
        n, dim = self.references.shape
        if n == 0:
            raise StylespaceError("cannot search an empty set of reference vectors")
        self.index = faiss.IndexFlatIP(dim) if metric == "cosine" else faiss.IndexFlatL2(dim)
        self.index.add(self.references)

    def __len__(self) -> int:
        return self.index.ntotal

    @property
    def dim(self) -> int:
        return self.index.d

    def search(self, queries, k: int, exclude: np.ndarray | None = None,
               prepared: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest references of each query, nearest first.

        Args:
            queries: (B, D) vectors.
            k: neighbours per query (at most the number of references, fewer when ``exclude`` removes one).
            exclude: optional (B,) reference index to leave out per query (its own position when queries are
                the references); -1 leaves nothing out.
            prepared: the queries are already :func:`prepare`-d for this metric (skips a copy).
        Returns:
            distances (B, k) float32 ascending, indices (B, k) int64 into the references.
        """
        validate([at_least("k", k, 1)])
        queries = as_vectors(queries, "query vectors") if prepared else prepare(queries, self.metric, "query vectors")
        if queries.shape[1] != self.dim:
            raise StylespaceError(f"query vectors have {queries.shape[1]} dimensions, the references {self.dim}")
        available = len(self) - (1 if exclude is not None else 0)
        if k > available:
            raise StylespaceError(f"asked for {k} neighbours, but only {available} references can be returned")
        exclude = None if exclude is None else np.asarray(exclude, dtype=np.int64)
        if exclude is not None and exclude.shape != (len(queries),):
            raise StylespaceError(f"exclude must hold one index per query ({len(queries)}), got shape {exclude.shape}")
        if k >= max(DENSE_MIN_K, len(self) // 64):
            scores, indices = self._dense_search(queries, k, exclude)
        else:
            scores, indices = self.index.search(queries, k + (1 if exclude is not None else 0))
            if exclude is not None:
                scores, indices = _drop_excluded(scores, indices, exclude)
        return self._distances(scores), indices

    def _dense_search(self, queries: np.ndarray, k: int, exclude: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Deep searches (k in the thousands, e.g. R of a big class) by blocks of full score rows.

        FAISS keeps a k-deep reservoir per query, which gets slow for large k; a BLAS product, a partition
        and a sort of the k best is faster there. Blocks run on a thread per core (numpy's partition and
        sort release the GIL). Scores are in FAISS's convention (inner product, or squared L2); memory is
        one (rows, N) block of about ``DENSE_BLOCK_BYTES`` per thread.
        """
        from concurrent.futures import ThreadPoolExecutor

        n = len(self)
        rows = max(1, int(DENSE_BLOCK_BYTES // (n * 16)))  # scores (4) + argpartition's int64 (8) + slack
        out_scores = np.empty((len(queries), k), dtype=np.float32)
        out_indices = np.empty((len(queries), k), dtype=np.int64)
        squared = np.einsum("ij,ij->i", self.references, self.references) if self.metric == "euclidean" else None

        def block(start: int) -> None:
            part = queries[start:start + rows]
            cost = part @ self.references.T  # (rows, N), smaller = nearer after the next lines
            if squared is None:
                np.negative(cost, out=cost)
            else:
                cost *= -2.0
                cost += squared[None, :]
                cost += np.einsum("ij,ij->i", part, part)[:, None]
            if exclude is not None:
                own = exclude[start:start + rows]
                hit = own >= 0
                cost[np.flatnonzero(hit), own[hit]] = np.inf
            best = np.argpartition(cost, k - 1, axis=1)[:, :k]
            best_cost = np.take_along_axis(cost, best, axis=1)
            order = np.argsort(best_cost, axis=1)
            out_indices[start:start + rows] = np.take_along_axis(best, order, axis=1)
            out_scores[start:start + rows] = np.take_along_axis(best_cost, order, axis=1)

        starts = range(0, len(queries), rows)
        with ThreadPoolExecutor(max_workers=min(len(starts), os.cpu_count() or 1)) as pool:
            list(pool.map(block, starts))
        if squared is None:
            np.negative(out_scores, out=out_scores)
        return out_scores, out_indices

    def _distances(self, scores: np.ndarray) -> np.ndarray:
        if self.metric == "cosine":
            return np.subtract(1.0, scores, dtype=np.float32)
        return np.sqrt(np.maximum(scores, 0.0, out=scores), out=scores)


def _drop_excluded(scores: np.ndarray, indices: np.ndarray, exclude: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Remove one column per row: the excluded index where it was returned, else the last (farthest) one.

    An item is not always its own first hit (duplicates tie with it), so we look for it rather than
    dropping column 0.
    """
    drop = indices == exclude[:, None]
    first_hit = drop.argmax(axis=1)
    missing = ~drop.any(axis=1)
    first_hit[missing] = indices.shape[1] - 1
    keep = np.ones_like(drop)
    keep[np.arange(len(indices)), first_hit] = False
    rows, width = len(indices), indices.shape[1] - 1
    return scores[keep].reshape(rows, width), indices[keep].reshape(rows, width)
