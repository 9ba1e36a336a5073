"""The whole evaluation protocol on one table of vectors and one split: every figure of seeds 003 and 004."""
from __future__ import annotations

import time
from typing import Sequence

import numpy as np

from stylespace.evaluation.classification import classification_metrics
from stylespace.evaluation.hierarchy import evaluate_hierarchy
from stylespace.evaluation.pairs import label_pairs, verify_pairs
from stylespace.evaluation.report import EvaluationConfig, EvaluationReport
from stylespace.evaluation.retrieval import retrieval_metrics
from stylespace.evaluation.scenarios import evaluate_open_set, evaluate_scenarios, scenario_sets
from stylespace.evaluation.search import check_metric, indexed_pair_distances
from stylespace.evaluation.support_set import SupportSetClassifier
from stylespace.evaluation.vectors import VectorTable
from stylespace.utils import StylespaceError

RETRIEVAL_SETS = ("test", "all")


def make_classifiers(config: EvaluationConfig) -> list[SupportSetClassifier]:
    classifiers = [SupportSetClassifier("knn", k=k, metric=config.metric) for k in config.knn_k]
    if config.prototypes:
        classifiers.append(SupportSetClassifier("prototype", metric=config.metric))
    if not classifiers:
        raise StylespaceError("no classifier to evaluate: give at least one knn k or keep prototypes")
    return classifiers


def evaluate(table: VectorTable, manifest, config: EvaluationConfig | None = None, *, name: str = "model",
             source: str = "", model_id: str = "", split_path: str = "",
             pairs: tuple[Sequence[str], Sequence[str], Sequence[int]] | None = None, pairs_source: str = "",
             head: tuple[Sequence[str], Sequence[str]] | None = None, log=None) -> EvaluationReport:
    """Evaluate the vectors of ``table`` on the items of ``manifest`` (a ``SplitManifest``).

    Args:
        table: item id -> vector for (at least) the split's items.
        config: what to measure (default :class:`EvaluationConfig`).
        pairs: (ids_a, ids_b, labels 0/1) of a labelled pair set; pairs with an id not in ``table`` are left
            out (and noted). None: same-class vs different-class pairs of the main + new test items.
        head: (true labels, predicted labels) of the model's classifier head on main test (task 1), if any.
        log: a ``print``-like callable for progress (stderr in the CLI).
    """
    config = config or EvaluationConfig()
    check_metric(config.metric)
    unknown = sorted(set(config.retrieval_sets) - set(RETRIEVAL_SETS))
    if unknown:
        raise StylespaceError(f"unknown retrieval set(s) {unknown}; expected some of {', '.join(RETRIEVAL_SETS)}")
    log = log or (lambda message: None)
    classifiers = make_classifiers(config)
    seconds: dict[str, float] = {}
    notes: list[str] = []
    clock = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[stage] = round(now - clock, 3)
        clock = now
        log(f"{stage}: {seconds[stage]:.1f} s")

    head_metrics = None
    if head is not None:
        head_metrics = classification_metrics(head[0], head[1])
        lap("task 1 head")
    scenarios = evaluate_scenarios(table, manifest, classifiers, config.scenarios)
    missing = max((s.n_missing for s in scenarios), default=0)
    if missing:
        notes.append(f"up to {missing} split items per scenario have no vector (undecodable images) and are left out")
    lap("scenarios")
    open_set = evaluate_open_set(table, manifest, classifiers, config.open_set_coverage) if config.open_set_coverage else []
    lap("open set")

    retrieval = {}
    for which in config.retrieval_sets:
        rows = manifest if which == "all" else manifest.scenario(4)[1]
        X, y, _ = table.take(rows.ids, rows.labels)
        ks = [k for k in config.retrieval_ks if k < len(X)]
        if len(ks) < len(config.retrieval_ks):
            notes.append(f"retrieval {which}: {len(X)} items, so recall@k is reported for k in {ks} only")
        if not ks:
            continue
        retrieval[which] = retrieval_metrics(X, y, ks=ks, metric=config.metric, max_r=config.max_r)
        lap(f"retrieval {which}")

    hierarchy = []
    (X_s, y_s), (X_q, y_q), _ = scenario_sets(table, manifest, 2)
    for level in config.hierarchy_levels:
        try:
            mapping = manifest.hierarchy(level)
        except StylespaceError as exc:
            notes.append(f"hierarchy {level} skipped: {exc}")
            continue
        hierarchy.append(evaluate_hierarchy(classifiers, X_s, y_s, X_q, y_q, mapping, level))
    lap("hierarchy")

    verification, pairs_source = _verify_pairs(table, manifest, config, pairs, pairs_source, notes)
    lap("pairs")
    return EvaluationReport(
        name=name, source=source, model_id=model_id, split=split_path, split_sha256=manifest.sha256, config=config,
        n_vectors=len(table), dim=table.dim, head=head_metrics, scenarios=scenarios, open_set=open_set,
        retrieval=retrieval, hierarchy=hierarchy, pairs=verification, pairs_source=pairs_source,
        seconds=seconds, notes=notes,
    )


def _verify_pairs(table: VectorTable, manifest, config: EvaluationConfig, pairs, pairs_source: str,
                  notes: list[str]):
    if pairs is None:
        query = manifest.scenario(4)[1]
        X, y, _ = table.take(query.ids, query.labels)
        first, second, same = label_pairs(y, config.max_pairs, config.pair_seed)
        return verify_pairs(indexed_pair_distances(X, first, second, config.metric), same), (
            f"same vs different article type, main + new test, {'all' if len(X) * (len(X) - 1) // 2 <= config.max_pairs else 'sampled'} pairs")
    ids_a, ids_b, labels = (list(part) for part in pairs)
    rows_a, found_a = table.rows(ids_a)
    rows_b, found_b = table.rows(ids_b)
    both = found_a & found_b
    if not both.any():
        raise StylespaceError(f"{pairs_source or 'pair set'}: none of its {len(ids_a)} pairs has both items among the "
                              "embedded ids; are the pairs about this catalog?")
    if not both.all():
        notes.append(f"{int((~both).sum())} of {len(ids_a)} pairs left out: an item has no vector")
    # rows() lists only found ids; keep the rows of pairs whose other end was found too.
    rows_a = rows_a[both[found_a]]
    rows_b = rows_b[both[found_b]]
    distances = indexed_pair_distances(table.vectors, rows_a, rows_b, config.metric)
    return verify_pairs(distances, np.asarray(labels)[both]), pairs_source or "pair file"
