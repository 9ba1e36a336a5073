"""Retrieval figures in bounded memory: precision@1, recall@k, R-precision and MAP@R.

For each query, R is the number of references of its class (the query itself left out when the
queries are the references). Definitions (metric-learning convention, as in Musgrave et al. 2020,
"A Metric Learning Reality Check"):

- precision@1: the nearest reference has the query's class.
- recall@k: at least one of the ``k`` nearest references has the query's class.
- R-precision: the share of the ``R`` nearest references that have the query's class.
- MAP@R: ``(1/R) * sum_{i <= R} P(i) * rel(i)``, with P(i) the precision of the first ``i`` results
  and rel(i) = 1 when result ``i`` has the query's class.

Queries whose class has no reference (R = 0) cannot be scored and are counted apart.

Memory: queries are searched in chunks against a flat FAISS index (which itself works in tiles), so
nothing of size queries x references is ever held; a chunk holds (chunk, k) results with
k = max(R in the chunk, max ks). Queries are ordered by R so each chunk asks for about the k it needs.
``max_r`` caps R (then R-precision / MAP@R are "at min(R, max_r)"), bounding k for huge classes.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from stylespace.evaluation.search import ExactSearch, as_labels, check_metric, prepare
from stylespace.utils import StylespaceError, at_least, each, validate

# Bytes a chunk may spend per (query, neighbour) result: distance, index, relevance, running sums.
_BYTES_PER_RESULT = 40


@dataclasses.dataclass
class RetrievalMetrics:
    """Mean retrieval figures over the scored queries (those with R >= 1)."""

    metric: str
    n_queries: int
    n_references: int
    n_scored: int
    n_without_match: int
    self_excluded: bool
    max_r: int | None
    largest_r: int
    precision_at_1: float
    recall_at_k: dict[int, float]
    r_precision: float
    map_at_r: float


def retrieval_metrics(query_vectors, query_labels: Sequence[str], reference_vectors=None,
                      reference_labels: Sequence[str] | None = None, ks: Sequence[int] = (1, 5, 10),
                      metric: str = "cosine", max_r: int | None = None,
                      memory_budget_mb: float = 256.0) -> RetrievalMetrics:
    """Retrieval figures of queries against references, computed chunk by chunk.

    Args:
        query_vectors: (Q, D); query_labels: Q labels.
        reference_vectors, reference_labels: (N, D) and N labels; None (both) means "the queries are the
            references", and each query's own entry is left out of its results.
        ks: the k of recall@k.
        metric: ``cosine`` or ``euclidean``.
        max_r: cap on R (None: no cap; the largest class then sets the search depth).
        memory_budget_mb: the most a chunk's results may take; chunks shrink for deep searches.
    """
    check_metric(metric)
    same_set = reference_vectors is None
    if same_set != (reference_labels is None):
        raise StylespaceError("give both reference_vectors and reference_labels, or neither (queries = references)")
    validate([each("ks", ks, 1), at_least("max_r", max_r, 1, none_ok=True)])
    ks = sorted({int(k) for k in ks})
    queries = prepare(query_vectors, metric, "query vectors")
    query_labels = as_labels(query_labels, len(queries), "query labels")
    if same_set:
        search, reference_labels = ExactSearch(queries, metric), query_labels
    else:
        search = ExactSearch(reference_vectors, metric)
        reference_labels = as_labels(reference_labels, len(search), "reference labels")
    classes, codes = np.unique(np.concatenate([query_labels, reference_labels]).astype(str), return_inverse=True)
    query_codes, reference_codes = codes[:len(queries)], codes[len(queries):]
    r = np.bincount(reference_codes, minlength=len(classes))[query_codes] - (1 if same_set else 0)
    largest_r = int(r.max(initial=0))
    if max_r is not None:
        r = np.minimum(r, max_r)
    n_available = len(search) - (1 if same_set else 0)
    if ks[-1] > n_available:
        raise StylespaceError(f"recall@{ks[-1]} needs at least {ks[-1]} references, there are {n_available}")

    scored = np.flatnonzero(r >= 1)
    order = scored[np.argsort(r[scored], kind="stable")]  # shallow searches first, deep ones last
    totals = {"p1": 0.0, "r_precision": 0.0, "map": 0.0, **{f"recall@{k}": 0.0 for k in ks}}
    budget = memory_budget_mb * 2**20
    start = 0
    while start < len(order):
        # The deepest query of the chunk sets k; grow the chunk while its results fit the budget.
        k_first = max(int(r[order[start]]), ks[-1])
        size = max(1, min(len(order) - start, int(budget // (k_first * _BYTES_PER_RESULT))))
        k = max(int(r[order[start + size - 1]]), ks[-1])
        while size > 1 and size * k * _BYTES_PER_RESULT > budget:
            size //= 2
            k = max(int(r[order[start + size - 1]]), ks[-1])
        chunk = order[start:start + size]
        _, neighbours = search.search(queries[chunk], k, exclude=chunk if same_set else None, prepared=True)
        relevant = reference_codes[neighbours] == query_codes[chunk][:, None]  # (B, k)
        _accumulate(totals, relevant, r[chunk], ks)
        start += size

    n_scored = len(scored)
    mean = (lambda key: totals[key] / n_scored) if n_scored else (lambda key: float("nan"))
    return RetrievalMetrics(
        metric=metric, n_queries=len(queries), n_references=len(search), n_scored=n_scored,
        n_without_match=len(queries) - n_scored, self_excluded=same_set, max_r=max_r, largest_r=largest_r,
        precision_at_1=mean("p1"), recall_at_k={k: mean(f"recall@{k}") for k in ks},
        r_precision=mean("r_precision"), map_at_r=mean("map"),
    )


def _accumulate(totals: dict, relevant: np.ndarray, r: np.ndarray, ks: list[int]) -> None:
    """Add one chunk's per-query figures to the running sums. relevant: (B, k) bool, nearest first."""
    totals["p1"] += float(relevant[:, 0].sum())
    for k in ks:
        totals[f"recall@{k}"] += float(relevant[:, :k].any(axis=1).sum())
    within_r = relevant & (np.arange(relevant.shape[1])[None, :] < r[:, None])
    hits = np.cumsum(within_r, axis=1, dtype=np.int32)
    totals["r_precision"] += float((hits[:, -1] / r).sum())
    precision_at_i = hits / np.arange(1, relevant.shape[1] + 1, dtype=np.float32)
    totals["map"] += float((np.where(within_r, precision_at_i, 0.0).sum(axis=1) / r).sum())

