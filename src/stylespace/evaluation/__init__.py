"""Evaluation on plain arrays: classification, support-set classification in 004's four scenarios, open
set, bounded-memory retrieval, coarser labels, pair verification, and the report that holds them all.

Nothing here needs a model: every function takes vectors and labels (numpy arrays), so embeddings from
any extractor can be scored the same way. Search is exact, with FAISS. The two exceptions run models:
:mod:`stylespace.evaluation.sources` (`SplitEvaluator`), which turns model folders and embeddings files
into those vectors for `stylespace evaluate`, and :mod:`stylespace.evaluation.benchmarks` (`run_benchmark`), which
runs the published protocols of `stylespace bench` (training a model where the protocol does).
"""
from stylespace.evaluation.classification import (
    ClassificationMetrics,
    OpenSetMetrics,
    balanced_accuracy,
    classification_metrics,
    open_set_metrics,
)
from stylespace.evaluation.dedupe import WithoutCopies, scenario_leaks
from stylespace.evaluation.hierarchy import HierarchyResult, coarsen, evaluate_hierarchy
from stylespace.evaluation.pairs import CutoffRow, PairVerification, label_pairs, verify_pairs
from stylespace.evaluation.plan import EvaluationPlan, Scenario, plan_for, scenario_split
from stylespace.evaluation.protocol import evaluate, make_classifiers
from stylespace.evaluation.report import (
    DedupeSummary,
    EvaluationConfig,
    EvaluationReport,
    compare_markdown,
    load_headlines,
)
from stylespace.evaluation.retrieval import RetrievalMetrics, retrieval_metrics
from stylespace.evaluation.scenarios import OpenSetResult, ScenarioResult, evaluate_open_set, evaluate_scenarios
from stylespace.evaluation.search import ExactSearch, indexed_pair_distances, pair_distances, prepare
from stylespace.evaluation.support_set import (
    RejectThreshold,
    SupportSetClassifier,
    choose_reject_distance,
    evaluate_support_set,
)
from stylespace.evaluation.vectors import VectorTable

__all__ = [
    "ClassificationMetrics", "OpenSetMetrics", "balanced_accuracy", "classification_metrics", "open_set_metrics",
    "HierarchyResult", "coarsen", "evaluate_hierarchy",
    "CutoffRow", "PairVerification", "label_pairs", "verify_pairs",
    "EvaluationPlan", "Scenario", "plan_for", "scenario_split",
    "evaluate", "make_classifiers",
    "DedupeSummary", "EvaluationConfig", "EvaluationReport", "compare_markdown", "load_headlines",
    "WithoutCopies", "scenario_leaks",
    "RetrievalMetrics", "retrieval_metrics",
    "OpenSetResult", "ScenarioResult", "evaluate_open_set", "evaluate_scenarios",
    "ExactSearch", "indexed_pair_distances", "pair_distances", "prepare",
    "RejectThreshold", "SupportSetClassifier", "choose_reject_distance", "evaluate_support_set",
    "VectorTable",
]
