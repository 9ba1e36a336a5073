"""Numbers behind the report's readings, computed on plain arrays: confusion vs map overlap, the line
between two class centroids, and samples of a split."""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from stylespace.report.maps import as_labelled, symmetric_pair_scores
from stylespace.utils import StylespaceError, at_least, validate


# --- confusion vs overlap on the 2-D maps ---------------------------------------------------------


@dataclasses.dataclass
class PairScore:
    """One class pair: its symmetric confusion rate and its overlap on each map, with ranks (1 = highest)."""

    class_a: str
    class_b: str
    confusion_rate: float
    confusion_rank: int
    overlap: dict[str, float]
    overlap_rank: dict[str, int]


@dataclasses.dataclass
class ConfusionOverlapReading:
    """Do the most confused class pairs overlap most on the 2-D maps?

    spearman: map name -> Spearman rank correlation between pair confusion rate and pair overlap, over
        all C (C - 1) / 2 pairs; spearman_p: its two-sided p-value (NaN when undefined).
    top_pairs: the ``top`` most confused pairs (only pairs confused at least once) with their overlap
        ranks; ranks are competition ranks (ties share the best rank, 1 = highest).
    top_agreement: map name -> how many of ``top_pairs`` rank among the ``top`` most overlapping pairs
        on that map.
    """

    classes: list[str]
    n_pairs: int
    top: int
    spearman: dict[str, float]
    spearman_p: dict[str, float]
    top_pairs: list[PairScore]
    top_agreement: dict[str, int]

    def summary(self) -> list[str]:
        """The measured answer, one statement per map: rank correlation and top-pair agreement."""
        lines = []
        for name, rho in self.spearman.items():
            p = self.spearman_p[name]
            p_text = "undefined" if np.isnan(p) else f"{p:.2g}"
            lines.append(f"Spearman rank correlation between pair confusion rate and {name} overlap over "
                         f"{self.n_pairs} class pairs: {_fmt(rho)} (p = {p_text}).")
            lines.append(f"{self.top_agreement[name]} of the {len(self.top_pairs)} most confused pairs rank "
                         f"among the {self.top} most overlapping pairs on the {name} map.")
        if not self.top_pairs:
            lines.append("No pair of these classes was confused.")
        return lines


def _fmt(value: float) -> str:
    return "undefined (constant scores)" if np.isnan(value) else f"{value:+.2f}"


def confusion_pair_rates(confusion: np.ndarray) -> np.ndarray:
    """(C, C) counts (rows true, columns predicted) -> symmetric pair confusion rates.

    ``rate[i, j] = (C[i, j] / n_i + C[j, i] / n_j) / 2``: how often either class is taken for the other.
    """
    confusion = np.asarray(confusion, dtype=np.float64)
    if confusion.ndim != 2 or confusion.shape[0] != confusion.shape[1]:
        raise StylespaceError(f"a confusion matrix must be square, got shape {confusion.shape}")
    totals = confusion.sum(axis=1, keepdims=True)
    rates = np.divide(confusion, totals, out=np.zeros_like(confusion), where=totals > 0)
    return symmetric_pair_scores(rates)


def read_confusion_vs_overlap(confusion: np.ndarray, overlaps: dict[str, np.ndarray], classes: Sequence[str],
                              top: int = 5) -> ConfusionOverlapReading:
    """Rank class pairs by confusion and by overlap on each map, and compare the rankings.

    Args:
        confusion: (C, C) counts, rows = true class, columns = predicted class, in ``classes`` order.
        overlaps: map name -> (C, C) overlap matrix from :func:`knn_class_overlap` (same class order).
        top: how many of the most confused pairs to list.
    """
    from scipy.stats import rankdata, spearmanr

    classes = list(classes)
    c = len(classes)
    if c < 2:
        raise StylespaceError(f"comparing confusion with overlap needs at least 2 classes, got {c}")
    rates = confusion_pair_rates(confusion)
    if rates.shape[0] != c:
        raise StylespaceError(f"confusion matrix is {rates.shape}, but {c} classes were named")
    iu = np.triu_indices(c, k=1)
    confusion_values = rates[iu]
    n_pairs = len(confusion_values)
    top = max(1, min(top, n_pairs))
    # Ties share the best rank (1, 2, 2, 4): many pairs are never confused and never overlap.
    confusion_rank = rankdata(-confusion_values, method="min").astype(int)
    listed = [p for p in np.lexsort((np.arange(n_pairs), -confusion_values))[:top] if confusion_values[p] > 0]
    pair_overlap, overlap_rank, spearman, spearman_p, agreement = {}, {}, {}, {}, {}
    for name, overlap in overlaps.items():
        overlap = np.asarray(overlap, dtype=np.float64)
        if overlap.shape != (c, c):
            raise StylespaceError(f"overlap matrix for {name} is {overlap.shape}, expected ({c}, {c})")
        values = np.nan_to_num(symmetric_pair_scores(overlap)[iu], nan=0.0)
        pair_overlap[name] = values
        overlap_rank[name] = rankdata(-values, method="min").astype(int)
        if np.ptp(values) == 0 or np.ptp(confusion_values) == 0:
            spearman[name], spearman_p[name] = float("nan"), float("nan")
        else:
            result = spearmanr(confusion_values, values)
            spearman[name], spearman_p[name] = float(result.statistic), float(result.pvalue)
        agreement[name] = int(sum(overlap_rank[name][p] <= top for p in listed))
    top_pairs = [
        PairScore(classes[iu[0][p]], classes[iu[1][p]], float(confusion_values[p]), int(confusion_rank[p]),
                  {name: float(v[p]) for name, v in pair_overlap.items()},
                  {name: int(r[p]) for name, r in overlap_rank.items()})
        for p in listed
    ]
    return ConfusionOverlapReading(classes, n_pairs, top, spearman, spearman_p, top_pairs, agreement)


# --- the line between two class centroids ---------------------------------------------------------


@dataclasses.dataclass
class CentroidLine:
    """Two class centroids in one split and the items that sit nearest to them and to the line between.

    All indices point into the ``vectors`` / ``labels`` given to :func:`centroid_line`.

    nearest_a / nearest_b: the item nearest each centroid (over the items of both classes), with its
        Euclidean distance in the embedding space.
    steps: (S,) positions t in [0, 1] of evenly spaced points ``(1 - t) * centroid_a + t * centroid_b``.
    strip: (S,) for each point, the nearest item not already picked for an earlier point;
        strip_distance: its distance to that point.
    positions: (M,) the position t of every item of the two classes projected onto the line
        (0 = centroid a, 1 = centroid b); position_labels: their labels.
    """

    class_a: str
    class_b: str
    n_a: int
    n_b: int
    centroid_a: np.ndarray
    centroid_b: np.ndarray
    centroid_distance: float
    nearest_a: int
    nearest_a_distance: float
    nearest_b: int
    nearest_b_distance: float
    steps: np.ndarray
    strip: np.ndarray
    strip_distance: np.ndarray
    positions: np.ndarray
    position_labels: list[str]


def centroid_line(vectors: np.ndarray, labels: Sequence[str], class_a: str, class_b: str,
                  steps: int = 9) -> CentroidLine:
    """Centroids (mean vectors) of ``class_a`` and ``class_b`` and the items along the line between them.

    Candidates for "nearest item" are the items of the two classes, so the strip shows the transition
    from one class to the other (and where the other class's items intrude).

    Args:
        vectors: (N, D) embeddings (L2-normalised, as the model's ``embed`` returns).
        labels: N labels.
        steps: number of evenly spaced points on the line, both centroids included (>= 2).
    """
    vectors, labels = as_labelled(vectors, labels)
    validate([at_least("steps", steps, 2, note="both centroids")])
    if class_a == class_b:
        raise StylespaceError(f"the two classes must differ, got {class_a!r} twice")
    mask_a, mask_b = labels == class_a, labels == class_b
    for name, mask in ((class_a, mask_a), (class_b, mask_b)):
        if not mask.any():
            raise StylespaceError(f"class {name!r} has no items here")
    candidates = np.flatnonzero(mask_a | mask_b)
    pool = vectors[candidates]
    centroid_a, centroid_b = vectors[mask_a].mean(axis=0), vectors[mask_b].mean(axis=0)
    direction = centroid_b - centroid_a
    length_sq = float(direction @ direction)

    def nearest(point: np.ndarray, exclude: set[int] = frozenset()) -> tuple[int, float]:
        distances = np.linalg.norm(pool - point, axis=1)
        for position in np.argsort(distances, kind="stable"):
            if int(candidates[position]) not in exclude:
                return int(candidates[position]), float(distances[position])
        position = int(np.argmin(distances))  # more steps than candidates: repeat the nearest
        return int(candidates[position]), float(distances[position])

    nearest_a, dist_a = nearest(centroid_a)
    nearest_b, dist_b = nearest(centroid_b)
    ts = np.linspace(0.0, 1.0, steps)
    strip, strip_distance, used = [], [], set()
    for t in ts:
        index, distance = nearest(centroid_a + t * direction, used)
        used.add(index)
        strip.append(index)
        strip_distance.append(distance)
    positions = ((pool - centroid_a) @ direction / length_sq) if length_sq > 0 else np.zeros(len(pool))
    return CentroidLine(class_a, class_b, int(mask_a.sum()), int(mask_b.sum()), centroid_a.astype(np.float32),
                        centroid_b.astype(np.float32), float(np.sqrt(length_sq)), nearest_a, dist_a, nearest_b,
                        dist_b, ts, np.array(strip), np.array(strip_distance), positions.astype(np.float64),
                        list(labels[candidates]))


# --- sampling -------------------------------------------------------------------------------------


def sample_indices(n: int, size: int, seed: int = 0, labels: Sequence[str] | None = None) -> np.ndarray:
    """``size`` of ``range(n)`` at random without replacement (all of them when ``size >= n``), sorted.

    With ``labels``, every class keeps at least one item when ``size`` allows, so rare classes stay on the map.
    """
    validate([at_least("sample size", size, 1)])
    if size >= n:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    if labels is None:
        return np.sort(rng.choice(n, size=size, replace=False))
    labels = np.asarray(labels, dtype=object)
    keep = [int(rng.choice(np.flatnonzero(labels == c))) for c in dict.fromkeys(labels.tolist())]
    keep = keep[:size]
    rest = np.setdiff1d(np.arange(n), keep)
    extra = rng.choice(rest, size=size - len(keep), replace=False)
    return np.sort(np.concatenate([np.array(keep, dtype=np.int64), extra]))
