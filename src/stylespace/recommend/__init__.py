"""Selective recommendation: top-3 similar catalog items with a label-free confidence, shown only when
the confidence clears a threshold calibrated for a target error rate or coverage (seed 004, task 3).

>>> calibration = calibrate(index, query_vectors, query_labels, model_id=mid, target_error=0.05)
>>> calibration.save(index)                       # the chosen score + threshold, beside the index
>>> SelectiveRecommender.from_index(index).recommend(vectors, model_id=mid)
"""
from stylespace.recommend.combined import CombinedScore
from stylespace.recommend.junk import JunkRule
from stylespace.recommend.match import MatchScale
from stylespace.recommend.risk import OperatingPoint, RiskCoverage, risk_coverage
from stylespace.recommend.scores import (
    ConfidenceScore,
    DensityRatio,
    LocalAccuracy,
    Margin,
    MeanSimilarity,
    NeighbourAgreement,
    NeighbourContext,
    NeighbourhoodOverlap,
    Reciprocity,
    TopSimilarity,
    default_scores,
    score_by_name,
)
from stylespace.recommend.saved import (
    CALIBRATION_FILE,
    SavedCalibration,
    calibration_stamp,
    calibration_summary,
    load_calibration,
    save_calibration,
)
from stylespace.recommend.selective import (
    Calibration,
    Recommendation,
    SelectiveRecommender,
    calibrate,
    correct_recommendations,
    saved_score,
)

__all__ = [
    "CALIBRATION_FILE", "Calibration", "CombinedScore", "ConfidenceScore", "DensityRatio", "JunkRule", "LocalAccuracy", "Margin", "MatchScale", "MeanSimilarity", "NeighbourAgreement",
    "NeighbourContext", "NeighbourhoodOverlap", "OperatingPoint", "Reciprocity", "Recommendation",
    "RiskCoverage", "SavedCalibration", "calibration_stamp", "calibration_summary", "load_calibration", "save_calibration", "SelectiveRecommender", "TopSimilarity", "calibrate", "correct_recommendations",
    "default_scores", "risk_coverage", "saved_score", "score_by_name",
]
