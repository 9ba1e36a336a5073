"""The support-set scenarios of seed 004 (and of the other split layouts), read from a split manifest.

| scenario | support set | query set |
| --- | --- | --- |
| 1 | main train | main test |
| 2 | main support | main test |
| 3 | new support | new test |
| 4 | main + new support | main + new test |

:mod:`stylespace.evaluation.plan` decides which items play which part for each layout (004's protocol,
held-out classes, stratified); vectors come from a :class:`~stylespace.evaluation.vectors.VectorTable`. Items
of the manifest without a vector (an image that failed to decode) are left out and counted.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from stylespace.evaluation.classification import ClassificationMetrics, OpenSetMetrics, open_set_metrics
from stylespace.evaluation.config import SCENARIO_NUMBERS  # 004's four; which a split has: evaluation.plan
from stylespace.evaluation.support_set import (
    RejectThreshold,
    SupportSetClassifier,
    choose_reject_distance,
    evaluate_support_set,
)
from stylespace.evaluation.plan import plan_for, scenario_split
from stylespace.evaluation.vectors import VectorTable
from stylespace.utils import StylespaceError, one_of, validate


@dataclasses.dataclass
class ScenarioResult:
    """One scenario: set sizes, items without a vector, and metrics per classifier name."""

    number: int
    description: str
    n_support: int
    n_query: int
    n_missing: int
    results: dict[str, ClassificationMetrics]


def scenario_sets(table: VectorTable, manifest, number: int) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray], int]:
    """((support X, support y), (query X, query y), items without a vector) of scenario ``number``."""
    support, query = scenario_split(manifest, number)
    if len(support) == 0 or len(query) == 0:
        raise StylespaceError(f"scenario {number} ({plan_for(manifest).scenario(number).description}): the split has "
                              f"{len(support)} support and {len(query)} query items; it needs both")
    X_s, y_s, missing_s = table.take(support.ids, support.labels)
    X_q, y_q, missing_q = table.take(query.ids, query.labels)
    if len(X_s) == 0 or len(X_q) == 0:
        raise StylespaceError(f"scenario {number}: none of the split's {'support' if len(X_s) == 0 else 'query'} items "
                              "has a vector; were the embeddings made from this split's catalog?")
    return (X_s, y_s), (X_q, y_q), missing_s + missing_q


def evaluate_scenarios(table: VectorTable, manifest, classifiers: Sequence[SupportSetClassifier],
                       scenarios: Sequence[int] = (1, 2, 3, 4)) -> list[ScenarioResult]:
    """Fit every classifier on each scenario's support set and score it on its query set (a scenario the
    split's layout lacks is an error naming what it needs; ``plan_for(manifest).numbers`` lists those it has)."""
    out = []
    plan = plan_for(manifest)
    for number in scenarios:
        validate([one_of("scenario", number, SCENARIO_NUMBERS)])
        description = plan.scenario(number).description
        (X_s, y_s), (X_q, y_q), missing = scenario_sets(table, manifest, number)
        results = evaluate_support_set(classifiers, X_s, y_s, X_q, y_q)
        out.append(ScenarioResult(number, description, len(X_s), len(X_q), missing, results))
    return out


@dataclasses.dataclass
class OpenSetResult:
    """Main support (main train when the split has no support part) as the support set, main + new test as
    queries: new-class items should be refused.

    The reject distance is chosen on the support set itself (leave-one-out), never on the test items.
    """

    classifier: str
    threshold: RejectThreshold
    metrics: OpenSetMetrics
    n_support: int
    n_query: int


def evaluate_open_set(table: VectorTable, manifest, classifiers: Sequence[SupportSetClassifier],
                      target_coverage: float = 0.95) -> list[OpenSetResult]:
    """Open-set scores: each classifier fitted on main support (or main train), its reject distance set so
    that ``target_coverage`` of the support items (each predicted from the others) are answered, then run on
    main + new test."""
    plan = plan_for(manifest)
    if not plan.open_set_support:
        raise StylespaceError("the open-set check needs classes held out of training (group new, with test items); "
                              f"this {plan.layout} split has none")
    support = manifest.select(group=plan.open_set_support[0][0], split=plan.open_set_support[0][1])
    _, query = scenario_split(manifest, plan.broadest.number)
    X_s, y_s, _ = table.take(support.ids, support.labels)
    X_q, y_q, _ = table.take(query.ids, query.labels)
    if len(X_s) < 2 or len(X_q) == 0:
        raise StylespaceError("the open-set check needs main support items and main/new test items with vectors")
    out = []
    for classifier in classifiers:
        classifier.fit(X_s, y_s)
        validation_labels, validation_distances = classifier.leave_one_out()
        threshold = choose_reject_distance(validation_distances, validation_labels == y_s, target_coverage=target_coverage)
        predicted = classifier.with_reject_distance(threshold.distance).predict(X_q)
        metrics = open_set_metrics(y_q, predicted, known_classes=classifier.classes_.tolist())
        out.append(OpenSetResult(classifier.name, threshold, metrics, len(X_s), len(X_q)))
    return out
