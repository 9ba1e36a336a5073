"""Risk-coverage: how the error rate of the recommendations shown and the share shown (coverage) move
with the confidence threshold, the area under that curve (AURC), and thresholds for a target.

A recommendation is shown when ``confidence >= threshold``. For every distinct confidence value t
(taken as a threshold) we get coverage(t) = share of queries shown and risk(t) = error rate among
them. AURC is the area under risk as a function of coverage (a step curve from coverage 0 to 1); with
no ties it equals the mean over n of the error rate among the n most confident queries. Lower is
better; a perfect ranking of an error rate e has AURC about e^2 / 2, a random one about e.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from stylespace.utils import StylespaceError, in_range, validate


@dataclasses.dataclass
class OperatingPoint:
    """A chosen threshold and what it does on the calibration queries.

    Attributes:
        threshold: show a recommendation when confidence >= threshold (None: no threshold meets the target).
        coverage: share of queries shown, in [0, 1]. error: error rate among those shown, in [0, 1].
        target: what was asked, e.g. ``{"error": 0.05}`` or ``{"coverage": 0.8}``.
        reached: whether the target is met on the calibration set.
    """

    threshold: float | None
    coverage: float
    error: float
    target: dict
    reached: bool


@dataclasses.dataclass
class RiskCoverage:
    """The risk-coverage curve of one confidence score.

    Attributes:
        thresholds: (T,) distinct confidence values, descending (each one a possible threshold).
        coverage: (T,) share of queries with confidence >= threshold, ascending.
        error: (T,) error rate among those queries.
        aurc: area under the risk-coverage curve.
        n: queries; n_errors: how many recommendations are wrong when all are shown.
    """

    thresholds: np.ndarray
    coverage: np.ndarray
    error: np.ndarray
    aurc: float
    n: int
    n_errors: int

    @property
    def error_at_full_coverage(self) -> float:
        return self.n_errors / self.n

    def for_error(self, target: float) -> OperatingPoint:
        """The threshold with the largest coverage whose error rate is <= ``target``."""
        validate([in_range("target error rate", target, 0, 1, note="0.05 = 5 %")])
        ok = np.flatnonzero((self.error <= target + 1e-12) & self._selectable)
        if not len(ok):
            return OperatingPoint(None, 0.0, float("nan"), {"error": target}, False)
        best = ok[np.argmax(self.coverage[ok])]
        return self._point(best, {"error": target}, True)

    def for_coverage(self, target: float) -> OperatingPoint:
        """The highest threshold whose coverage is >= ``target`` (the fewest shown that meet it)."""
        validate([in_range("target coverage", target, 0, 1, "(]", note="0.8 = 80 %")])
        ok = np.flatnonzero((self.coverage >= target - 1e-12) & self._selectable)
        if len(ok):
            return self._point(int(ok[0]), {"coverage": target}, True)
        finite = np.flatnonzero(self._selectable)
        if not len(finite):
            return OperatingPoint(None, 0.0, float("nan"), {"coverage": target}, False)
        return self._point(int(finite[-1]), {"coverage": target}, False)

    @property
    def _selectable(self) -> np.ndarray:
        # queries whose score is undefined (NaN, ranked as -inf) are never shown, so -inf is no threshold
        return np.isfinite(self.thresholds)

    def coverage_at_error(self, target: float) -> float:
        return self.for_error(target).coverage

    def _point(self, row: int, target: dict, reached: bool) -> OperatingPoint:
        return OperatingPoint(float(self.thresholds[row]), float(self.coverage[row]), float(self.error[row]),
                              target, reached)

    def to_dict(self, max_points: int = 200) -> dict:
        """JSON-friendly summary with the curve thinned to at most ``max_points`` points."""
        rows = np.unique(np.linspace(0, len(self.thresholds) - 1, min(max_points, len(self.thresholds))).astype(int))
        return {"aurc": self.aurc, "n": self.n, "error_at_full_coverage": self.error_at_full_coverage,
                "curve": {"threshold": [t if np.isfinite(t) else None for t in self.thresholds[rows].tolist()], "coverage": self.coverage[rows].tolist(),
                          "error": self.error[rows].tolist()}}


def risk_coverage(confidence, correct) -> RiskCoverage:
    """The risk-coverage curve of ``confidence`` (N,) for recommendations that are ``correct`` (N,) bool.

    NaN confidences (a score undefined for a query) rank below every other value.
    """
    confidence = np.asarray(confidence, dtype=np.float64).ravel()
    correct = np.asarray(correct).ravel()
    if correct.dtype != bool:
        if not np.isin(correct, (0, 1)).all():
            raise StylespaceError("correct must be booleans (or 0/1), one per query")
        correct = correct.astype(bool)
    if len(confidence) != len(correct):
        raise StylespaceError(f"{len(confidence)} confidences but {len(correct)} correctness values")
    if len(confidence) == 0:
        raise StylespaceError("risk-coverage needs at least one query")
    confidence = np.where(np.isnan(confidence), -np.inf, confidence)
    order = np.argsort(-confidence, kind="stable")
    ranked, wrong = confidence[order], ~correct[order]
    errors = np.cumsum(wrong)
    # the last position of each run of equal confidence: a threshold shows a tie group whole or not at all
    ends = np.flatnonzero(np.r_[ranked[1:] != ranked[:-1], True])
    shown = ends + 1
    n = len(confidence)
    coverage = shown / n
    error = errors[ends] / shown
    widths = np.diff(np.r_[0.0, coverage])
    return RiskCoverage(ranked[ends], coverage, error, float(np.sum(error * widths)), n, int(errors[-1]))
