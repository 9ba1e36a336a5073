"""Pair-verification figures on style distances (small distance = compatible): AUC, cutoffs, cutoff table.

Distances are turned into scores by negation, so scikit-learn's ROC reads "closer" as "more compatible".
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

from stylespace.utils import StylespaceError


def _check(labels: np.ndarray, distances: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels).reshape(-1)
    distances = np.asarray(distances, dtype=np.float64).reshape(-1)
    if len(labels) != len(distances):
        raise StylespaceError(f"{len(labels)} labels but {len(distances)} distances")
    if len(np.unique(labels)) != 2:
        raise StylespaceError("ROC needs both compatible (1) and incompatible (0) pairs")
    return labels, distances


def pair_auc(labels: np.ndarray, distances: np.ndarray) -> float:
    """Area under the ROC curve when pairs at smaller distance are called compatible."""
    labels, distances = _check(labels, distances)
    return float(roc_auc_score(labels, -distances))


def max_tpr_minus_fpr_cutoff(labels: np.ndarray, distances: np.ndarray) -> tuple[float, float, float]:
    """003's optimal cutoff c* = argmax_c TPR(c) - FPR(c); returns (cutoff, TPR, FPR). Compatible iff d <= c*."""
    labels, distances = _check(labels, distances)
    fpr, tpr, thresholds = roc_curve(labels, -distances)
    best = int(np.argmax(tpr - fpr))
    return float(-thresholds[best]), float(tpr[best]), float(fpr[best])


def cutoff_table(labels: np.ndarray, distances: np.ndarray,
                 fpr_targets: Sequence[float] = (0.05, 0.10, 0.20)) -> list[dict[str, float]]:
    """003's Table 7: for each target FPR, the largest cutoff whose FPR does not exceed it, and its TPR."""
    labels, distances = _check(labels, distances)
    fpr, tpr, thresholds = roc_curve(labels, -distances)
    rows = []
    for target in fpr_targets:
        if not 0.0 < target < 1.0:
            raise StylespaceError(f"FPR targets must be in (0, 1), got {target}")
        k = int(np.flatnonzero(fpr <= target + 1e-12)[-1])
        cutoff = float(-thresholds[k]) if np.isfinite(thresholds[k]) else float(distances.min()) - 1e-6
        rows.append({"fpr_target": target, "fpr": float(fpr[k]), "tpr": float(tpr[k]), "cutoff": cutoff})
    return rows
