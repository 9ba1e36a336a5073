"""A linear probe: a logistic regression fitted on a model's embeddings, its strength chosen on a validation
part only, and the top-k accuracies it is scored with.

How a published classification protocol is run for a model that was not trained on it: the model embeds,
the probe learns the classes from the training part's vectors, and the test part is scored once, at the end.

>>> probe = LinearProbe().fit(train_x, train_y, val_x, val_y)
>>> top_k_accuracy(probe.scores(test_x), probe.classes, test_y, k=5)
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from stylespace.utils import StylespaceError, at_least, each, validate


@dataclasses.dataclass
class LinearProbe:
    """Multinomial logistic regression (scikit-learn, lbfgs) on L2-normalised vectors.

    Args:
        strengths: the inverse regularisation strengths C tried; the one with the best validation top-1
            accuracy (the smaller C on a tie) is kept, then refitted on training + validation vectors.
        max_iter: lbfgs iterations per fit.

    After :meth:`fit`: ``classes`` (the labels, sorted), ``chosen`` (the C kept) and ``validation``
    (C -> validation top-1 accuracy).
    """

    strengths: tuple[float, ...] = (0.1, 1.0, 10.0, 100.0)
    max_iter: int = 1000
    classes: list = dataclasses.field(default_factory=list, init=False)
    chosen: float | None = dataclasses.field(default=None, init=False)
    validation: dict[float, float] = dataclasses.field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        validate([each("strengths", self.strengths, 0, None, "()", integer=False),
                  at_least("max_iter", self.max_iter, 1)], owner="LinearProbe")

    def fit(self, train_x: np.ndarray, train_y: Sequence, val_x: np.ndarray, val_y: Sequence) -> "LinearProbe":
        """Choose C on (``val_x``, ``val_y``), then fit on both parts; returns self."""
        from sklearn.linear_model import LogisticRegression
        from threadpoolctl import threadpool_limits

        train_y, val_y = np.asarray(train_y), np.asarray(val_y)
        if len(np.unique(train_y)) < 2:
            raise StylespaceError("a linear probe needs training vectors of at least 2 classes")
        if len(val_y) == 0:
            raise StylespaceError("a linear probe needs a validation part to choose its strength on")
        train_x, val_x = _unit(train_x), _unit(val_x)
        make = lambda c: LogisticRegression(C=c, max_iter=self.max_iter)
        # one BLAS thread: on a shared 2-core machine more only spin against each other
        with threadpool_limits(1):
            for c in self.strengths:
                fitted = make(c).fit(train_x, train_y)
                self.validation[c] = float((fitted.predict(val_x) == val_y).mean())
            best = max(self.validation.values())
            self.chosen = min(c for c, accuracy in self.validation.items() if accuracy == best)
            self._model = make(self.chosen).fit(np.concatenate([train_x, val_x]), np.concatenate([train_y, val_y]))
        self.classes = list(self._model.classes_)
        return self

    def scores(self, x: np.ndarray) -> np.ndarray:
        """(N, len(classes)) class probabilities."""
        if self.chosen is None:
            raise StylespaceError("fit the probe before scoring with it")
        return self._model.predict_proba(_unit(x))


def top_k_accuracy(scores: np.ndarray, classes: Sequence, truth: Sequence, k: int) -> float:
    """Share of rows whose true label is among the ``k`` best-scored ``classes``; a true label that is not one
    of ``classes`` (a class the classifier never learnt) always counts as an error."""
    truth = list(truth)
    if len(truth) == 0:
        raise StylespaceError("top-k accuracy of no items")
    scores = np.asarray(scores)
    if scores.shape != (len(truth), len(classes)):
        raise StylespaceError(f"scores of shape {scores.shape} do not match {len(truth)} items x {len(classes)} classes")
    column = {c: j for j, c in enumerate(classes)}
    k = min(k, len(classes))
    best = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    hits = [column.get(label, -1) in row for label, row in zip(truth, best)]
    return float(np.mean(hits))


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
