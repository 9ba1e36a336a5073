"""The same support-set classifiers scored on coarser labels (task 4 step 4 of seed 004), without retraining.

Two readings of "how good is the model at categories":
- ``results``: the classifier votes / builds prototypes directly on the coarse labels;
- ``via_fine``: it predicts the fine label and the prediction is mapped to its coarse label.
"""
from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import numpy as np

from stylespace.evaluation.classification import ClassificationMetrics, balanced_accuracy
from stylespace.evaluation.support_set import SupportSetClassifier, evaluate_support_set
from stylespace.utils import StylespaceError


def coarsen(labels: Sequence[str], mapping: Mapping[str, str], level: str = "coarse") -> np.ndarray:
    """Map each fine label to its coarse label; every label must be in ``mapping``."""
    labels = np.asarray(list(labels), dtype=object)
    missing = sorted({str(label) for label in labels if label not in mapping or not mapping[label]})
    if missing:
        raise StylespaceError(f"no {level} for label(s) {missing[:10]}{' ...' if len(missing) > 10 else ''}; "
                              f"the mapping must cover every label")
    return np.array([mapping[label] for label in labels], dtype=object)


@dataclasses.dataclass
class HierarchyResult:
    """One coarse level: metrics per classifier on coarse labels, and fine predictions mapped up."""

    level: str
    n_fine_classes: int
    n_coarse_classes: int
    results: dict[str, ClassificationMetrics]
    via_fine: dict[str, dict[str, float]]  # name -> {"accuracy", "balanced_accuracy"}


def evaluate_hierarchy(classifiers: Sequence[SupportSetClassifier], X_support, y_support: Sequence[str],
                       X_query, y_query: Sequence[str], mapping: Mapping[str, str], level: str) -> HierarchyResult:
    """Score ``classifiers`` on the ``level`` labels that ``mapping`` gives the fine labels."""
    coarse_support = coarsen(y_support, mapping, level)
    coarse_query = coarsen(y_query, mapping, level)
    results = evaluate_support_set(classifiers, X_support, coarse_support, X_query, coarse_query)
    via_fine = {}
    for classifier in classifiers:
        predicted = coarsen(classifier.fit(X_support, y_support).predict(X_query), mapping, level)
        via_fine[classifier.name] = {"accuracy": float(np.mean(predicted == coarse_query)),
                                     "balanced_accuracy": balanced_accuracy(coarse_query, predicted)}
    return HierarchyResult(level, len(set(map(str, y_support)) | set(map(str, y_query))),
                           len(set(coarse_support) | set(coarse_query)), results, via_fine)
