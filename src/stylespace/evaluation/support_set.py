"""Classifying with a labelled support set, without retraining (task 2 of seed 004).

A query takes the majority class of its ``k`` nearest support items (``knn``) or the class of the
nearest class prototype, the mean support embedding of each class (``prototype``). With a
``reject_distance``, a query farther than that from every support item (knn) or prototype is answered
"none of these" (``None``): the open-set answer for an item of a class the support set lacks.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from stylespace.evaluation.classification import ClassificationMetrics, classification_metrics
from stylespace.evaluation.search import ExactSearch, as_labels, check_metric, prepare, row_distances
from stylespace.utils import StylespaceError, at_least, in_range, one_of, validate

METHODS = ("knn", "prototype")
CHUNK = 4096  # queries per vote step: bounds the (chunk, n_classes) vote table


class SupportSetClassifier:
    """k-NN vote or nearest prototype over a support set, with an optional "none of these" distance.

    Args:
        method: ``knn`` or ``prototype``.
        k: neighbours that vote (knn only; ties go to the tied class with the nearest member).
        metric: ``cosine`` or ``euclidean`` (see :mod:`stylespace.evaluation.search` for the distances).
        reject_distance: answer None when the nearest support item (knn) or prototype is farther than this.
    """

    def __init__(self, method: str = "knn", k: int = 1, metric: str = "cosine", reject_distance: float | None = None):
        validate([
            one_of("method", method, METHODS),
            at_least("k", k, 1),
            (method != "prototype" or k == 1,
             f"k={k} applies to method='knn' only; prototypes take the single nearest class"),
            at_least("reject_distance", reject_distance, 0, integer=False, none_ok=True),
        ])
        self.method, self.k, self.metric = method, int(k), check_metric(metric)
        self.reject_distance = None if reject_distance is None else float(reject_distance)
        self.classes_: np.ndarray | None = None

    @property
    def name(self) -> str:
        return f"kNN k={self.k}" if self.method == "knn" else "prototype"

    def get_params(self) -> dict:
        return {"method": self.method, "k": self.k, "metric": self.metric, "reject_distance": self.reject_distance}

    def with_reject_distance(self, reject_distance: float | None) -> "SupportSetClassifier":
        """A copy that shares the fitted support set but rejects at ``reject_distance``."""
        other = SupportSetClassifier(self.method, self.k, self.metric, reject_distance)
        other.__dict__.update({k: v for k, v in self.__dict__.items() if k.endswith("_")})
        return other

    # --- fitting ---------------------------------------------------------------------------------

    def fit(self, X_support, y_support: Sequence[str]) -> "SupportSetClassifier":
        """Remember the support set: (N, D) vectors and N class labels."""
        X = prepare(X_support, self.metric, "support vectors")
        y = as_labels(y_support, len(X), "support labels")
        if len(X) == 0:
            raise StylespaceError("the support set is empty; it needs at least one labelled item")
        self.classes_, self.support_codes_ = np.unique(y.astype(str), return_inverse=True)
        self.support_ = X
        if self.method == "knn":
            if self.k > len(X):
                raise StylespaceError(f"k={self.k} but the support set has only {len(X)} items")
            self.search_ = ExactSearch(X, self.metric)
        else:
            self.prototypes_ = class_means(X, self.support_codes_, len(self.classes_), self.metric)
            self.search_ = ExactSearch(self.prototypes_, self.metric)
        return self

    def _check_fitted(self) -> None:
        if self.classes_ is None:
            raise StylespaceError("this SupportSetClassifier is not fitted yet; call fit(X_support, y_support) first")

    # --- predicting ------------------------------------------------------------------------------

    def kneighbors(self, X, n_neighbors: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Distances (Q, n) ascending and indices (Q, n): into the support items (knn) or ``classes_`` (prototype)."""
        self._check_fitted()
        n_neighbors = self.k if n_neighbors is None else n_neighbors
        return self.search_.search(X, n_neighbors)

    def predict_with_distance(self, X) -> tuple[np.ndarray, np.ndarray]:
        """(labels (Q,) object, None where rejected; nearest distance (Q,) float64 to a support item / prototype)."""
        self._check_fitted()
        X = prepare(X, self.metric, "query vectors")
        labels = np.empty(len(X), dtype=object)
        nearest = np.empty(len(X), dtype=np.float64)
        for start in range(0, len(X), CHUNK):
            distances, indices = self.search_.search(X[start:start + CHUNK], self.k, prepared=True)
            codes = self._vote(indices) if self.method == "knn" else indices[:, 0]
            labels[start:start + len(codes)] = self.classes_[codes]
            nearest[start:start + len(codes)] = distances[:, 0]
        if self.reject_distance is not None:
            labels[nearest > self.reject_distance] = None
        return labels, nearest

    def predict(self, X) -> np.ndarray:
        """(Q,) labels; None for "none of these" when ``reject_distance`` is set."""
        return self.predict_with_distance(X)[0]

    def _vote(self, indices: np.ndarray) -> np.ndarray:
        """Majority class of each row of neighbour indices; ties go to the class whose member is nearest."""
        codes = self.support_codes_[indices]
        if self.k == 1:
            return codes[:, 0]
        rows = np.arange(len(codes))
        counts = np.zeros((len(codes), len(self.classes_)), dtype=np.int64)
        first = np.full_like(counts, self.k)
        for j in range(self.k - 1, -1, -1):  # backwards so the nearest occurrence is written last
            counts[rows, codes[:, j]] += 1
            first[rows, codes[:, j]] = j
        return np.argmax(counts * (self.k + 1) - first, axis=1)

    def leave_one_out(self) -> tuple[np.ndarray, np.ndarray]:
        """Predict every support item from the others: (labels (N,), nearest distance (N,)), never rejecting.

        The support set as its own validation set, to choose a ``reject_distance`` without test data.
        For prototypes, an item's own class prototype is recomputed without it (a class of one item then
        has no prototype for it).
        """
        self._check_fitted()
        n = len(self.support_)
        if self.method == "knn":
            if n <= self.k:
                raise StylespaceError(f"leave-one-out with k={self.k} needs more than {self.k} support items")
            labels = np.empty(n, dtype=object)
            nearest = np.empty(n, dtype=np.float64)
            for start in range(0, n, CHUNK):
                chunk = np.arange(start, min(n, start + CHUNK))
                distances, indices = self.search_.search(self.support_[chunk], self.k, exclude=chunk, prepared=True)
                labels[chunk] = self.classes_[self._vote(indices)]
                nearest[chunk] = distances[:, 0]
            return labels, nearest
        return self._prototype_leave_one_out()

    def _prototype_leave_one_out(self) -> tuple[np.ndarray, np.ndarray]:
        X, codes, n_classes = self.support_, self.support_codes_, len(self.classes_)
        sizes = np.bincount(codes, minlength=n_classes)
        sums = np.zeros((n_classes, X.shape[1]), dtype=np.float64)
        np.add.at(sums, codes, X)
        labels = np.empty(len(X), dtype=object)
        nearest = np.empty(len(X), dtype=np.float64)
        for start in range(0, len(X), CHUNK):
            x = X[start:start + CHUNK].astype(np.float64)
            own = codes[start:start + CHUNK]
            distances = _distances_to(x, self.prototypes_.astype(np.float64), self.metric)
            rest = np.maximum(sizes[own] - 1, 1)[:, None]
            own_without = (sums[own] - x) / rest  # the own-class mean without this item
            if self.metric == "cosine":
                own_without /= np.maximum(np.linalg.norm(own_without, axis=1, keepdims=True), 1e-12)
            own_distance = row_distances(x, own_without, self.metric)
            own_distance[sizes[own] == 1] = np.inf
            distances[np.arange(len(x)), own] = own_distance
            best = np.argmin(distances, axis=1)
            labels[start:start + len(x)] = self.classes_[best]
            nearest[start:start + len(x)] = distances[np.arange(len(x)), best]
        return labels, nearest


def class_means(X: np.ndarray, codes: np.ndarray, n_classes: int, metric: str) -> np.ndarray:
    """(C, D) float32 mean vector per class code; re-normalised for cosine (a mean of unit vectors is shorter)."""
    sums = np.zeros((n_classes, X.shape[1]), dtype=np.float64)
    np.add.at(sums, codes, X)
    means = sums / np.bincount(codes, minlength=n_classes)[:, None]
    if metric == "cosine":
        means /= np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-12)
    return means.astype(np.float32)


def _distances_to(x: np.ndarray, centres: np.ndarray, metric: str) -> np.ndarray:
    """(B, D) x (C, D) -> (B, C) distances; small C (prototypes), so a dense matrix is fine."""
    if metric == "cosine":
        return 1.0 - x @ centres.T
    squared = (x * x).sum(1)[:, None] - 2 * x @ centres.T + (centres * centres).sum(1)[None, :]
    return np.sqrt(np.maximum(squared, 0.0))


@dataclasses.dataclass
class RejectThreshold:
    """A chosen "none of these" distance and what it did on the validation set it was chosen on."""

    distance: float
    target: str  # "coverage=0.95" or "accuracy=0.9"
    validation_items: int
    validation_coverage: float
    validation_accepted_accuracy: float


def choose_reject_distance(distances, correct, target_coverage: float | None = None,
                           target_accuracy: float | None = None) -> RejectThreshold:
    """Pick a ``reject_distance`` on a validation set from each item's nearest distance and whether its answer was right.

    Give exactly one target:
        target_coverage: answer this share of validation items (the smallest distance that does).
        target_accuracy: the largest distance whose answered items are right at least this often (so the
            most items answered at that accuracy).
    """
    distances = np.asarray(distances, dtype=np.float64).reshape(-1)
    correct = np.asarray(correct, dtype=bool).reshape(-1)
    if len(distances) != len(correct) or len(distances) == 0:
        raise StylespaceError(f"need one correctness flag per distance and at least one item, got "
                              f"{len(distances)} distances and {len(correct)} flags")
    if (target_coverage is None) == (target_accuracy is None):
        raise StylespaceError("give exactly one of target_coverage or target_accuracy")
    order = np.argsort(distances, kind="stable")
    sorted_distances = distances[order]
    accuracy_if_cut = np.cumsum(correct[order]) / np.arange(1, len(order) + 1)
    # A cut can only fall after the last of a run of equal distances (all of them are accepted together).
    cut_ok = np.r_[sorted_distances[1:] > sorted_distances[:-1], True]
    if target_coverage is not None:
        validate([in_range("target_coverage", target_coverage, 0, 1, "(]")])
        position = int(np.ceil(target_coverage * len(order))) - 1
        position = int(np.flatnonzero(cut_ok[position:])[0]) + position
        target = f"coverage={target_coverage:g}"
    else:
        validate([in_range("target_accuracy", target_accuracy, 0, 1, "(]")])
        good = np.flatnonzero(cut_ok & (accuracy_if_cut >= target_accuracy))
        if len(good) == 0:
            raise StylespaceError(f"no distance reaches accuracy {target_accuracy:g} on the validation set "
                                  f"(the closest items alone reach {accuracy_if_cut[0]:.3f}); lower the target")
        position = int(good[-1])
        target = f"accuracy={target_accuracy:g}"
    return RejectThreshold(float(sorted_distances[position]), target, len(order),
                           (position + 1) / len(order), float(accuracy_if_cut[position]))


def evaluate_support_set(classifiers: Sequence[SupportSetClassifier], X_support, y_support: Sequence[str],
                         X_query, y_query: Sequence[str]) -> dict[str, ClassificationMetrics]:
    """Fit each classifier on the support set and score its answers on the queries: name -> metrics.

    The class order of the per-class figures is the support set's classes, then any query-only classes.
    """
    classes = sorted(set(map(str, y_support))) + sorted(set(map(str, y_query)) - set(map(str, y_support)))
    results = {}
    for classifier in classifiers:
        if classifier.reject_distance is not None:
            raise StylespaceError(f"{classifier.name}: closed-set scoring needs reject_distance=None")
        predicted = classifier.fit(X_support, y_support).predict(X_query)
        results[classifier.name] = classification_metrics(y_query, predicted, classes)
    return results
