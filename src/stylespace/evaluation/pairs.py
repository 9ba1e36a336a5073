"""Pair verification (seed 003): from the distances of labelled pairs to an ROC curve, its AUC, the cutoff
that maximises TPR - FPR and a table of cutoffs at chosen false-positive rates.

A pair is called positive (same class / goes well together) when its distance is at most the cutoff.
The ROC comes from scikit-learn on the negated distances, so "closer" reads as "more positive".
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

from stylespace.utils import StylespaceError, at_least, each, validate

FPR_TARGETS = (0.05, 0.10, 0.20)
CURVE_POINTS = 101  # the ROC kept in a report: TPR at FPR = 0, 0.01, ..., 1


@dataclasses.dataclass
class CutoffRow:
    """The operating point with the highest TPR whose FPR is at most ``fpr_target``."""

    fpr_target: float
    cutoff: float
    tpr: float
    fpr: float


@dataclasses.dataclass
class PairVerification:
    """ROC summary of a labelled pair set.

    best_cutoff: argmax over cutoffs of TPR - FPR (003's c*), with its TPR and FPR.
    curve_fpr / curve_tpr: the ROC sampled at ``CURVE_POINTS`` FPR values (highest TPR at FPR <= x).
    """

    n_pairs: int
    n_positive: int
    auc: float
    best_cutoff: float
    best_tpr: float
    best_fpr: float
    cutoffs: list[CutoffRow]
    curve_fpr: list[float]
    curve_tpr: list[float]
    positive_mean_distance: float
    negative_mean_distance: float


def verify_pairs(distances, positive, fpr_targets: Sequence[float] = FPR_TARGETS) -> PairVerification:
    """ROC / AUC / cutoffs for pairs with ``distances`` (P,) and ``positive`` (P,) flags (1 = same / compatible)."""
    distances = np.asarray(distances, dtype=np.float64).reshape(-1)
    positive = np.asarray(positive).reshape(-1)
    if len(distances) != len(positive):
        raise StylespaceError(f"{len(distances)} distances but {len(positive)} pair labels; expected one per pair")
    if not np.isin(positive, (0, 1)).all():
        raise StylespaceError("pair labels must be 0/1 or booleans")
    positive = positive.astype(bool)
    if positive.all() or not positive.any():
        raise StylespaceError("an ROC needs both positive and negative pairs; this pair set has only one kind")
    if not np.isfinite(distances).all():
        raise StylespaceError("pair distances contain NaN or infinite values")
    validate([each("FPR targets", fpr_targets, 0, 1, "()", integer=False, empty_ok=True)])
    fpr, tpr, thresholds = roc_curve(positive, -distances)
    # roc_curve's first threshold is +inf (nothing called positive); as a distance cutoff that is "below the
    # smallest distance", which we write as the next float down so the table stays finite and exact.
    cutoffs = -thresholds
    cutoffs[0] = np.nextafter(distances.min(), -np.inf)
    best = int(np.argmax(tpr - fpr))
    rows = []
    for target in fpr_targets:
        at = int(np.flatnonzero(fpr <= target)[-1])  # fpr rises with the cutoff, so the last one is the best TPR
        rows.append(CutoffRow(float(target), float(cutoffs[at]), float(tpr[at]), float(fpr[at])))
    grid = np.linspace(0.0, 1.0, CURVE_POINTS)
    curve_tpr = tpr[np.searchsorted(fpr, grid, side="right") - 1]
    return PairVerification(
        n_pairs=len(distances), n_positive=int(positive.sum()), auc=float(roc_auc_score(positive, -distances)),
        best_cutoff=float(cutoffs[best]), best_tpr=float(tpr[best]), best_fpr=float(fpr[best]), cutoffs=rows,
        curve_fpr=[round(float(x), 4) for x in grid], curve_tpr=[float(y) for y in curve_tpr],
        positive_mean_distance=float(distances[positive].mean()),
        negative_mean_distance=float(distances[~positive].mean()),
    )


def label_pairs(labels: Sequence[str], max_pairs: int = 1_000_000, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs of items labelled by whether they share a class: every unordered pair when there are at most
    ``max_pairs`` of them, else ``max_pairs`` drawn uniformly (so positives keep their natural share).

    Returns:
        first (P,), second (P,) int64 item indices (first != second) and same (P,) bool.
    """
    labels = np.asarray(list(labels), dtype=object)
    n = len(labels)
    if n < 2:
        raise StylespaceError(f"pairs need at least 2 items, got {n}")
    validate([at_least("max_pairs", max_pairs, 1)])
    if n * (n - 1) // 2 <= max_pairs:
        first, second = np.triu_indices(n, k=1)
    else:
        rng = np.random.default_rng(seed)
        first = rng.integers(n, size=max_pairs)
        # An offset in [1, n) makes second != first without rejection and keeps (first, second) uniform.
        second = (first + rng.integers(1, n, size=max_pairs)) % n
    _, codes = np.unique(labels.astype(str), return_inverse=True)
    return first.astype(np.int64), second.astype(np.int64), codes[first] == codes[second]
