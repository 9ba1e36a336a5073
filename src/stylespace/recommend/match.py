"""The match score a shopper reads: the recommendation's confidence mapped through its calibration to [0, 1].

A confidence score's own scale means nothing to a shopper (``top1`` is a cosine, ``combined`` an unbounded
log-odds, 2.74). The calibration queries say, for each confidence, how often the recommendation was right:
:class:`MatchScale` is that relation made monotone (isotonic regression, pool-adjacent-violators) and kept
as knots, so that ``match score = P(the top items are the right kind of product | confidence)``, estimated on
the calibration queries. The decision stays the confidence's: a recommendation is shown when its confidence
clears the threshold and the picture is a product photo. :meth:`MatchScale.score` keeps the two in step,
always: a shown recommendation scores at least :meth:`MatchScale.threshold_score`, any other below it, and
a picture that is not a product photo scores 0.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import numpy as np

from stylespace.utils import StylespaceError

MAX_KNOTS = 64  # what is saved with the calibration: enough for a smooth score, small in recommendation.json
BELOW = 0.001  # how far under the threshold's score an unconfident recommendation is kept


@dataclasses.dataclass(frozen=True)
class MatchScale:
    """Confidence -> match score in [0, 1]: linear between ``confidence`` knots (ascending), flat beyond.

    Attributes:
        confidence: (K,) knots on the confidence score's own scale, ascending.
        probability: (K,) the share of calibration queries answered right around each knot, non-decreasing.
        n: calibration queries it was fitted on.
    """

    confidence: tuple[float, ...]
    probability: tuple[float, ...]
    n: int = 0

    def __post_init__(self) -> None:
        c, p = np.asarray(self.confidence, float), np.asarray(self.probability, float)
        if len(c) == 0 or len(c) != len(p) or not np.all(np.isfinite(c)) or np.any(np.diff(c) < 0) \
                or np.any(np.diff(p) < -1e-12) or np.any((p < 0) | (p > 1)):
            raise StylespaceError("a match scale needs ascending confidence knots and non-decreasing "
                                  "probabilities in [0, 1], as many of each")

    @classmethod
    def fit(cls, confidence, correct, max_knots: int = MAX_KNOTS) -> "MatchScale":
        """Fitted on calibration queries: their ``confidence`` (N,) (NaN / -inf: undefined, taken as the lowest)
        and whether each recommendation was ``correct`` (N,)."""
        confidence = np.asarray(confidence, dtype=np.float64).ravel()
        correct = np.asarray(correct, dtype=np.float64).ravel()
        if len(confidence) != len(correct) or len(confidence) == 0:
            raise StylespaceError(f"{len(confidence)} confidences for {len(correct)} correctness values")
        finite = np.isfinite(confidence)
        floor = confidence[finite].min() if finite.any() else 0.0
        confidence = np.where(finite, confidence, floor)
        order = np.argsort(confidence, kind="stable")
        x, y = confidence[order], correct[order]
        # pool adjacent violators, on runs of equal confidence first (a tie is one value)
        starts = np.flatnonzero(np.r_[True, x[1:] != x[:-1]])
        sums, counts = np.add.reduceat(y, starts), np.diff(np.r_[starts, len(x)]).astype(float)
        xs = np.add.reduceat(x, starts)
        blocks: list[list[float]] = []  # [sum of y, count, sum of x]
        for s, c, xx in zip(sums, counts, xs):
            blocks.append([s, c, xx])
            while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] >= blocks[-1][0] / blocks[-1][1]:
                s2, c2, x2 = blocks.pop()
                blocks[-1][0] += s2
                blocks[-1][1] += c2
                blocks[-1][2] += x2
        knots_x = np.array([b[2] / b[1] for b in blocks])
        knots_p = np.array([b[0] / b[1] for b in blocks])
        if len(knots_x) > max_knots:  # thinned evenly; the ends are kept
            keep = np.unique(np.linspace(0, len(knots_x) - 1, max_knots).round().astype(int))
            knots_x, knots_p = knots_x[keep], knots_p[keep]
        return cls(tuple(float(v) for v in knots_x), tuple(float(v) for v in knots_p), int(len(confidence)))

    def probability_at(self, confidence) -> np.ndarray:
        values = np.asarray(confidence, dtype=np.float64)
        values = np.where(np.isfinite(values), values, self.confidence[0])
        return np.interp(values, self.confidence, self.probability)

    def threshold_score(self, threshold: float) -> float:
        """The match score a recommendation needs to be shown: the scale at the confidence threshold."""
        return float(self.probability_at(threshold))

    def score(self, confidence: float, threshold: float | None, confident: bool, not_a_product: bool = False) -> float:
        """The match score of one recommendation (see the module docstring): >= the threshold's score exactly
        when it is ``confident``; 0 for a picture that is not a product photo."""
        if not_a_product:
            return 0.0
        value = float(self.probability_at(confidence))
        if threshold is None:
            return value
        at = self.threshold_score(threshold)
        return max(value, at) if confident else max(0.0, min(value, at - BELOW))

    def to_dict(self) -> dict[str, Any]:
        return {"confidence": list(self.confidence), "probability": list(self.probability), "n": self.n}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> "MatchScale | None":
        """The scale saved with a calibration, or None for a calibration made before it was saved."""
        if not data or "confidence" not in data:
            return None
        return cls(tuple(data["confidence"]), tuple(data["probability"]), int(data.get("n", 0)))
