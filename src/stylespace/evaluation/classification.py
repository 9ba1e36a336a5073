"""Classification figures (task 1 of seed 004) and their open-set variant ("none of these" answers).

Accuracy is the share of correct answers; balanced accuracy is the mean over true classes of each
class's recall (004's equations 1 and 2). Both come from scikit-learn.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix, precision_recall_fscore_support

from stylespace.evaluation.search import as_labels
from stylespace.utils import StylespaceError


@dataclasses.dataclass
class ClassificationMetrics:
    """Closed-set figures for one set of predictions.

    ``classes`` orders ``precision``, ``recall``, ``support`` and both axes of ``confusion``
    (rows = true class, columns = predicted class, counts). ``support`` counts true items per class.
    """

    n: int
    accuracy: float
    balanced_accuracy: float
    classes: list[str]
    precision: list[float]
    recall: list[float]
    support: list[int]
    confusion: list[list[int]]

    def per_class(self) -> list[dict]:
        return [{"class": c, "precision": p, "recall": r, "support": s}
                for c, p, r, s in zip(self.classes, self.precision, self.recall, self.support)]


def classification_metrics(y_true: Sequence, y_pred: Sequence, classes: Sequence[str] | None = None) -> ClassificationMetrics:
    """Accuracy, balanced accuracy, per-class precision / recall and the confusion matrix.

    Args:
        y_true, y_pred: N labels each (strings); no rejected (None) predictions, see :func:`open_set_metrics`.
        classes: the class order of the per-class lists and the matrix (default: sorted union of both).
    """
    y_true, y_pred = _labels_pair(y_true, y_pred)
    if any(p is None for p in y_pred):
        raise StylespaceError("closed-set metrics got rejected (None) predictions; use open_set_metrics")
    if classes is None:
        classes = sorted(set(y_true) | set(y_pred))
    classes = [str(c) for c in classes]
    precision, recall, _, support = precision_recall_fscore_support(
        y_true, y_pred, labels=classes, zero_division=0.0)
    return ClassificationMetrics(
        n=len(y_true),
        accuracy=float(accuracy_score(y_true, y_pred)),
        balanced_accuracy=balanced_accuracy(y_true, y_pred),
        classes=classes,
        precision=[float(v) for v in precision],
        recall=[float(v) for v in recall],
        support=[int(v) for v in support],
        confusion=confusion_matrix(y_true, y_pred, labels=classes).tolist(),
    )


def balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean recall over the classes present in ``y_true``.

    scikit-learn also averages over classes that are only predicted (their recall is 0/0, which it warns
    about and drops); 004 defines the mean over true classes, which is what remains.
    """
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        return float(balanced_accuracy_score(y_true, y_pred))


@dataclasses.dataclass
class OpenSetMetrics:
    """Figures for predictions that may be "none of these" (None).

    coverage: share of items answered (not rejected); rejection_rate = 1 - coverage.
    accepted_accuracy: share of answered items whose answer is right (NaN when nothing is answered); an
        answered item of a class the support set does not have is always wrong.
    accepted_balanced_accuracy: balanced accuracy over the answered items.
    known / unknown: items whose true class is / is not among ``known_classes``;
        ``unknown_rejection_rate`` is how often a class the support set lacks is correctly refused,
        ``known_rejection_rate`` how often a known class is refused (NaN when there are none).
    open_set_accuracy: (right answers + refused unknowns) / all items.
    """

    n: int
    coverage: float
    rejection_rate: float
    accepted_accuracy: float
    accepted_balanced_accuracy: float
    n_known: int
    n_unknown: int
    known_rejection_rate: float
    unknown_rejection_rate: float
    open_set_accuracy: float


def open_set_metrics(y_true: Sequence, y_pred: Sequence, known_classes: Sequence[str] | None = None) -> OpenSetMetrics:
    """Open-set figures; ``y_pred`` holds a label or None (rejected) per item.

    Args:
        known_classes: the classes the support set has (default: every true class is known).
    """
    y_true, y_pred = _labels_pair(y_true, y_pred)
    n = len(y_true)
    accepted = np.array([p is not None for p in y_pred], dtype=bool)
    known = np.ones(n, bool) if known_classes is None else np.isin(y_true, np.asarray(list(known_classes), dtype=object))
    correct = accepted & (y_true == y_pred)
    n_accepted = int(accepted.sum())
    return OpenSetMetrics(
        n=n,
        coverage=n_accepted / n,
        rejection_rate=1.0 - n_accepted / n,
        accepted_accuracy=_rate(correct.sum(), n_accepted),
        accepted_balanced_accuracy=balanced_accuracy(y_true[accepted], y_pred[accepted]) if n_accepted else float("nan"),
        n_known=int(known.sum()),
        n_unknown=int((~known).sum()),
        known_rejection_rate=_rate((~accepted & known).sum(), known.sum()),
        unknown_rejection_rate=_rate((~accepted & ~known).sum(), (~known).sum()),
        open_set_accuracy=float((correct.sum() + (~accepted & ~known).sum()) / n),
    )


def _rate(part, whole) -> float:
    return float(part) / float(whole) if whole else float("nan")


def _labels_pair(y_true: Sequence, y_pred: Sequence) -> tuple[np.ndarray, np.ndarray]:
    y_pred = np.asarray(list(y_pred), dtype=object)  # None = rejected, allowed here
    y_true = as_labels(y_true, what="true labels")
    if len(y_true) != len(y_pred):
        raise StylespaceError(f"{len(y_true)} true labels but {len(y_pred)} predictions; expected one per item")
    if len(y_true) == 0:
        raise StylespaceError("no items to score (empty label list)")
    return y_true, y_pred
