"""The whole evaluation protocol on one table of vectors and one split: every figure of seeds 003 and 004.

Any split layout is scored (:mod:`stylespace.evaluation.plan`): 004's protocol, held-out classes, or a plain
stratified split; what a layout cannot measure is listed in the report's notes.
"""
from __future__ import annotations

import time
from typing import Sequence

import numpy as np

from stylespace.evaluation.classification import classification_metrics
from stylespace.evaluation.dedupe import WithoutCopies
from stylespace.evaluation.hierarchy import evaluate_hierarchy
from stylespace.evaluation.pairs import label_pairs, verify_pairs
from stylespace.evaluation.plan import plan_for
from stylespace.evaluation.report import DedupeSummary, EvaluationConfig, EvaluationReport
from stylespace.evaluation.retrieval import retrieval_metrics
from stylespace.evaluation.scenarios import evaluate_open_set, evaluate_scenarios, scenario_sets
from stylespace.evaluation.search import indexed_pair_distances
from stylespace.evaluation.support_set import SupportSetClassifier
from stylespace.evaluation.vectors import VectorTable
from stylespace.utils import StylespaceError


def make_classifiers(config: EvaluationConfig) -> list[SupportSetClassifier]:
    classifiers = [SupportSetClassifier("knn", k=k, metric=config.metric) for k in config.knn_k]
    if config.prototypes:
        classifiers.append(SupportSetClassifier("prototype", metric=config.metric))
    return classifiers


def evaluate(table: VectorTable, manifest, config: EvaluationConfig | None = None, *, name: str = "model",
             source: str = "", model_id: str = "", split_path: str = "",
             pairs: tuple[Sequence[str], Sequence[str], Sequence[int]] | None = None, pairs_source: str = "",
             head: tuple[Sequence[str], Sequence[str]] | None = None, head_ids: Sequence[str] | None = None,
             copies: Sequence[Sequence[str]] | None = None, copies_source: str = "", log=None) -> EvaluationReport:
    """Evaluate the vectors of ``table`` on the items of ``manifest`` (a ``SplitManifest``).

    Args:
        table: item id -> vector for (at least) the split's items.
        config: what to measure (default :class:`EvaluationConfig`).
        pairs: (ids_a, ids_b, labels 0/1) of a labelled pair set; pairs with an id not in ``table`` are left
            out (and noted). None: same-class vs different-class pairs of the main + new test items.
        head: (true labels, predicted labels) of the model's classifier head on main test (task 1), if any.
        head_ids: the item ids of ``head``'s rows (needed to leave copies out of the head's figures).
        copies: groups of item ids that are copies of one image (``stylespace audit``'s clusters): the
            figures are then measured a second time without the query items that have a copy on the
            reference side (:mod:`stylespace.evaluation.dedupe`), in ``report.dedupe``.
        copies_source: where ``copies`` came from (recorded).
        log: a ``print``-like callable for progress (stderr in the CLI).
    """
    log = log or (lambda message: None)
    report = _evaluate(table, manifest, config, name=name, source=source, model_id=model_id, split_path=split_path,
                       pairs=pairs, pairs_source=pairs_source, head=head, log=log)
    if copies is None:
        return report
    view = WithoutCopies(manifest, copies)
    clean_head = None
    if head is not None and head_ids is not None:
        if len(head_ids) != len(head[0]):
            raise StylespaceError(f"head_ids has {len(head_ids)} ids for {len(head[0])} head predictions")
        keep = view.head_keep([str(i) for i in head_ids])
        clean_head = ([t for t, k in zip(head[0], keep) if k], [p for p, k in zip(head[1], keep) if k])
    deduped = _evaluate(table, view, config, name=f"{name} without copies", source=source, model_id=model_id,
                        split_path=split_path, pairs=pairs, pairs_source=pairs_source, head=clean_head,
                        log=lambda message: log(f"without copies: {message}"))
    if head is not None and clean_head is None:
        deduped.notes.append("task 1 head not measured without copies: the head's item ids were not given")
    groups = [g for g in copies if len(g) > 1]
    report.dedupe = DedupeSummary(source=copies_source, n_groups=len(groups), n_items=sum(len(g) for g in groups),
                                  dropped=dict(view.dropped), report=deduped)
    return report


def _evaluate(table: VectorTable, manifest, config: EvaluationConfig | None, *, name: str, source: str,
              model_id: str, split_path: str, pairs, pairs_source: str, head, log) -> EvaluationReport:
    """One pass of :func:`evaluate` over ``manifest`` (a ``SplitManifest`` or a ``WithoutCopies`` view)."""
    config = config or EvaluationConfig()  # checked when made
    classifiers = make_classifiers(config)
    plan = plan_for(manifest, split_path or "the split manifest")
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
    numbers = [n for n in config.scenarios if n in plan.numbers]
    skipped = [n for n in config.scenarios if n not in plan.numbers]
    if skipped:
        notes.append(f"scenario{'s' if len(skipped) > 1 else ''} {', '.join(map(str, skipped))} not measured: this "
                     f"{plan.layout} split has scenario{'s' if len(plan.numbers) > 1 else ''} "
                     f"{', '.join(map(str, plan.numbers))} only")
    scenarios = evaluate_scenarios(table, manifest, classifiers, numbers)
    missing = max((s.n_missing for s in scenarios), default=0)
    if missing:
        notes.append(f"up to {missing} split items per scenario have no vector (undecodable images) and are left out")
    lap("scenarios")
    open_set = []
    if config.open_set_coverage and plan.open_set_support:
        open_set = evaluate_open_set(table, manifest, classifiers, config.open_set_coverage)
    elif config.open_set_coverage:
        notes.append(f"open set not measured: this {plan.layout} split holds no classes out of training")
    lap("open set")

    retrieval = {}
    for which in config.retrieval_sets:
        rows = _retrieval_rows(manifest, which)
        X, y, _ = table.take(rows.ids, rows.labels)
        ks = [k for k in config.retrieval_ks if k < len(X)]
        if len(ks) < len(config.retrieval_ks):
            notes.append(f"retrieval {which}: {len(X)} items, so recall@k is reported for k in {ks} only")
        if not ks:
            continue
        retrieval[which] = retrieval_metrics(X, y, ks=ks, metric=config.metric, max_r=config.max_r)
        lap(f"retrieval {which}")

    hierarchy = []
    (X_s, y_s), (X_q, y_q), _ = scenario_sets(table, manifest, plan.hierarchy_scenario)
    for level in config.hierarchy_levels:
        try:
            mapping = manifest.hierarchy(level)
        except StylespaceError as exc:
            notes.append(f"hierarchy {level} skipped: {exc}")
            continue
        hierarchy.append(evaluate_hierarchy(classifiers, X_s, y_s, X_q, y_q, mapping, level))
    if hierarchy and plan.hierarchy_scenario != 2:
        notes.append(f"coarser labels measured on scenario {plan.hierarchy_scenario}'s sets (no main support part)")
    lap("hierarchy")

    verification, pairs_source = _verify_pairs(table, manifest, config, pairs, pairs_source, notes)
    lap("pairs")
    return EvaluationReport(
        name=name, source=source, model_id=model_id, split=split_path, split_sha256=manifest.sha256, config=config,
        n_vectors=len(table), dim=table.dim, head=head_metrics, scenarios=scenarios, open_set=open_set,
        retrieval=retrieval, hierarchy=hierarchy, pairs=verification, pairs_source=pairs_source,
        seconds=seconds, notes=notes,
    )


def _retrieval_rows(manifest, which: str):
    """The items of retrieval set ``which``; without copies, one item per copy group."""
    if isinstance(manifest, WithoutCopies):
        rows = manifest.manifest if which == "all" else plan_for(manifest).test_rows(manifest.manifest)
        return manifest.one_per_group(rows, f"retrieval {which}")
    return manifest if which == "all" else plan_for(manifest).test_rows(manifest)


def _verify_pairs(table: VectorTable, manifest, config: EvaluationConfig, pairs, pairs_source: str,
                  notes: list[str]):
    if pairs is None:
        if isinstance(manifest, WithoutCopies):
            query = manifest.one_per_group(plan_for(manifest).test_rows(manifest.manifest), "pairs (test items)")
        else:
            query = plan_for(manifest).test_rows(manifest)
        X, y, _ = table.take(query.ids, query.labels)
        first, second, same = label_pairs(y, config.max_pairs, config.pair_seed)
        return verify_pairs(indexed_pair_distances(X, first, second, config.metric), same), (
            f"same vs different label, {'main + new' if plan_for(manifest).layout != 'stratified' else 'all'} test, {'all' if len(X) * (len(X) - 1) // 2 <= config.max_pairs else 'sampled'} pairs")
    ids_a, ids_b, labels = (list(part) for part in pairs)
    if isinstance(manifest, WithoutCopies):
        keep = manifest.pair_keep(ids_a, ids_b)
        ids_a, ids_b, labels = ([v for v, k in zip(part, keep) if k] for part in (ids_a, ids_b, labels))
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
