"""A confidence score that weighs several label-free scores together, with weights fitted on the labelled
calibration queries (a logistic regression predicting whether the recommendation is correct).

At recommendation time it reads the same neighbourhood facts as its parts, never the catalog's labels:
the labels of the calibration queries only set its weights, as they set the threshold. Its AURC in a
calibration is measured on cross-fitted values (each fold scored by weights fitted on the other folds),
so it competes with the single scores on queries it was not fitted on.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from stylespace.recommend.scores import ConfidenceScore, NeighbourContext, score_by_name
from stylespace.utils import StylespaceError

# local accuracy at four scales: a few close calibration queries see a narrow region, fifty a broad one; together
# they beat any one of them on scenario 4 (AURC 0.0366 vs 0.0377-0.0405 with one)
DEFAULT_PARTS = ("top1", "mean3", "mean10", "agreement10", "reciprocity10", "overlap10", "density10",
                 "local5", "local10", "local20", "local50")


class CombinedScore(ConfidenceScore):
    """``w . standardised(part scores) + b``: the log-odds that the recommendation is correct.

    Args:
        parts: the scores combined (objects or names).
        coef, intercept, mean, scale: fitted parameters (see :meth:`fit`); None = not fitted yet.
    """

    name = "combined"

    def __init__(self, parts: Sequence[ConfidenceScore | str] = DEFAULT_PARTS, coef=None, intercept: float = 0.0,
                 mean=None, scale=None):
        self.parts = [score_by_name(p) if isinstance(p, str) else p for p in parts]
        if not self.parts:
            raise StylespaceError("a combined score needs at least one part")
        self.neighbours_needed = max(p.neighbours_needed for p in self.parts)
        self.reads_queries = any(p.reads_queries for p in self.parts)
        self.coef = None if coef is None else np.asarray(coef, dtype=np.float64)
        self.intercept = float(intercept)
        self.mean = None if mean is None else np.asarray(mean, dtype=np.float64)
        self.scale = None if scale is None else np.asarray(scale, dtype=np.float64)
        for name, value in (("coef", self.coef), ("mean", self.mean), ("scale", self.scale)):
            if value is not None and value.shape != (len(self.parts),):
                raise StylespaceError(f"combined score: {name} needs one value per part ({len(self.parts)})")

    def features(self, context: NeighbourContext) -> np.ndarray:
        """(Q, P) the parts' values."""
        return np.column_stack([part(context) for part in self.parts])

    def fit(self, features: np.ndarray, correct: np.ndarray) -> "CombinedScore":
        """Fit the weights on (Q, P) part values of labelled queries and whether each was ``correct``."""
        from sklearn.linear_model import LogisticRegression

        correct = np.asarray(correct, dtype=bool)
        if correct.all() or not correct.any():
            raise StylespaceError("the combined score needs calibration queries with both correct and wrong "
                                  "recommendations")
        self.mean = np.nanmean(features, axis=0)
        self.scale = np.nanstd(features, axis=0)
        self.scale[~(self.scale > 0)] = 1.0
        model = LogisticRegression(C=1.0, max_iter=2000).fit(self._standardise(features), correct)
        self.coef, self.intercept = model.coef_[0].astype(np.float64), float(model.intercept_[0])
        return self

    def decision(self, features: np.ndarray) -> np.ndarray:
        """(Q,) log-odds from (Q, P) part values."""
        if self.coef is None:
            raise StylespaceError("the combined score is not fitted; calibrate it on labelled queries first")
        return self._standardise(features) @ self.coef + self.intercept

    def score(self, context: NeighbourContext) -> np.ndarray:
        return self.decision(self.features(context))

    def _standardise(self, features: np.ndarray) -> np.ndarray:
        z = (np.asarray(features, dtype=np.float64) - self.mean) / self.scale
        return np.nan_to_num(z, nan=0.0, posinf=0.0, neginf=0.0)  # an undefined part counts as average

    def params(self) -> dict:
        """What :meth:`from_params` needs (saved in index.json)."""
        if self.coef is None:
            raise StylespaceError("the combined score is not fitted")
        return {"parts": [p.name for p in self.parts], "coef": self.coef.tolist(), "intercept": self.intercept,
                "mean": self.mean.tolist(), "scale": self.scale.tolist()}

    @classmethod
    def from_params(cls, params: dict) -> "CombinedScore":
        try:
            return cls(params["parts"], params["coef"], params["intercept"], params["mean"], params["scale"])
        except KeyError as exc:
            raise StylespaceError(f"the index's combined confidence score lacks {exc}; calibrate it again") from None


def cross_fitted(score: CombinedScore, features: np.ndarray, correct: np.ndarray, folds: int = 5,
                 seed: int = 0) -> np.ndarray:
    """(Q,) values of ``score`` for each query from weights fitted on the other folds; then ``score`` itself
    is fitted on every query."""
    from sklearn.model_selection import StratifiedKFold

    correct = np.asarray(correct, dtype=bool)
    folds = min(folds, int(correct.sum()), int((~correct).sum()))
    if folds < 2:
        raise StylespaceError("the combined score needs at least 2 correct and 2 wrong calibration recommendations")
    values = np.empty(len(correct))
    for train, test in StratifiedKFold(folds, shuffle=True, random_state=seed).split(features, correct):
        part = CombinedScore(score.parts).fit(features[train], correct[train])
        values[test] = part.decision(features[test])
    score.fit(features, correct)
    return values
