"""Evaluation on plain arrays: classification, support-set classification in 004's four scenarios, open
set, bounded-memory retrieval, coarser labels, pair verification, and the report that holds them all.

Nothing here needs a model: every function takes vectors and labels (numpy arrays), so embeddings from
any extractor can be scored the same way. Search is exact, with FAISS. The two exceptions run models:
:mod:`stylespace.evaluation.sources` (`SplitEvaluator`), which turns model folders and embeddings files
into those vectors for `stylespace evaluate`, and :mod:`stylespace.evaluation.benchmarks` (`run_benchmark`), which
runs the published protocols of `stylespace bench` (training a model where the protocol does).
Each name below is imported from its module when first used (the CLI reads ``EvaluationConfig``'s defaults
without loading scikit-learn).
"""
from stylespace.utils import lazy_exports

_EXPORTS = {
    "classification": ["ClassificationMetrics", "OpenSetMetrics", "balanced_accuracy", "classification_metrics",
                       "open_set_metrics"],
    "dedupe": ["WithoutCopies", "scenario_leaks"],
    "hierarchy": ["HierarchyResult", "coarsen", "evaluate_hierarchy"],
    "pairs": ["CutoffRow", "PairVerification", "label_pairs", "verify_pairs"],
    "plan": ["EvaluationPlan", "Scenario", "plan_for", "scenario_split"],
    "protocol": ["evaluate", "make_classifiers"],
    "config": ["EvaluationConfig"],
    "report": ["DedupeSummary", "EvaluationReport", "compare_markdown", "load_headlines"],
    "retrieval": ["RetrievalMetrics", "retrieval_metrics"],
    "scenarios": ["OpenSetResult", "ScenarioResult", "evaluate_open_set", "evaluate_scenarios"],
    "search": ["ExactSearch", "indexed_pair_distances", "pair_distances", "prepare"],
    "support_set": ["RejectThreshold", "SupportSetClassifier", "choose_reject_distance", "evaluate_support_set"],
    "vectors": ["VectorTable"],
}
__all__ = [name for names in _EXPORTS.values() for name in names]
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
