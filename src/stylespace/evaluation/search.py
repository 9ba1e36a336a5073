"""Exact nearest-neighbour search with FAISS, the one place evaluation turns vectors into distances.

Distances are in one convention everywhere in :mod:`stylespace.evaluation`:

- ``cosine``: ``1 - cos(a, b)`` in [0, 2]; vectors are L2-normalised and searched by inner product.
- ``euclidean``: ``||a - b||`` (FAISS returns squared L2; we take the square root).

Smaller is closer in both, so thresholds, cutoffs and rankings read the same way for either metric.
"""
from __future__ import annotations

import numpy as np

from stylespace.utils import StylespaceError

METRICS = ("cosine", "euclidean")


def check_metric(metric: str) -> str:
    if metric not in METRICS:
        raise StylespaceError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
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


def pair_distances(first, second, metric: str) -> np.ndarray:
    """Row-wise distance between ``first[i]`` and ``second[i]``: (P, D) x (P, D) -> (P,) float64."""
    first, second = prepare(first, metric, "first"), prepare(second, metric, "second")
    if first.shape != second.shape:
        raise StylespaceError(f"pair distances need two arrays of the same shape, got {first.shape} and {second.shape}")
    if metric == "cosine":
        return 1.0 - np.einsum("ij,ij->i", first, second, dtype=np.float64)
    return np.linalg.norm(first.astype(np.float64) - second, axis=1)


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
        if k < 1:
            raise StylespaceError(f"k must be >= 1, got {k}")
        queries = as_vectors(queries, "query vectors") if prepared else prepare(queries, self.metric, "query vectors")
        if queries.shape[1] != self.dim:
            raise StylespaceError(f"query vectors have {queries.shape[1]} dimensions, the references {self.dim}")
        available = len(self) - (1 if exclude is not None else 0)
        if k > available:
            raise StylespaceError(f"asked for {k} neighbours, but only {available} references can be returned")
        wanted = k + (1 if exclude is not None else 0)
        scores, indices = self.index.search(queries, wanted)
        if exclude is not None:
            scores, indices = _drop_excluded(scores, indices, np.asarray(exclude, dtype=np.int64))
        return self._distances(scores), indices

    def _distances(self, scores: np.ndarray) -> np.ndarray:
        if self.metric == "cosine":
            return np.subtract(1.0, scores, dtype=np.float32)
        return np.sqrt(np.maximum(scores, 0.0, out=scores), out=scores)


def _drop_excluded(scores: np.ndarray, indices: np.ndarray, exclude: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Remove one column per row: the excluded index where it was returned, else the last (farthest) one.

    An item is not always its own first hit (duplicates tie with it), so we look for it rather than
    dropping column 0.
    """
    if exclude.shape != (len(indices),):
        raise StylespaceError(f"exclude must hold one index per query ({len(indices)}), got shape {exclude.shape}")
    drop = indices == exclude[:, None]
    first_hit = drop.argmax(axis=1)
    missing = ~drop.any(axis=1)
    first_hit[missing] = indices.shape[1] - 1
    keep = np.ones_like(drop)
    keep[np.arange(len(indices)), first_hit] = False
    rows, width = len(indices), indices.shape[1] - 1
    return scores[keep].reshape(rows, width), indices[keep].reshape(rows, width)
