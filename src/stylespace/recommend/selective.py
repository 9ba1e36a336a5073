"""Selective recommendation (seed 004, task 3): the n most similar catalog items for a query, shown only
when a label-free confidence clears a threshold.

``SelectiveRecommender`` holds an index, a confidence score and a threshold; ``calibrate`` compares
scores on labelled queries (a recommendation is correct when at least one of its items shares the
query's class), keeps the one with the lowest AURC and picks the threshold for a target error rate
or coverage; ``Calibration.save`` records both beside the index (``stylespace.recommend.saved``) for
``recommend`` and the service.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from stylespace.embeddings import vectors_and_model
from stylespace.index import structures
from stylespace.index.catalog_index import CatalogIndex, Hit
from stylespace.index.query_views import first_rows, neighbours_of_views
from stylespace.recommend.combined import CombinedScore, cross_fitted
from stylespace.recommend.junk import JUNK_REASONS, UNSURE, JunkRule
from stylespace.recommend.match import MatchScale
from stylespace.recommend.plot import plot_risk_coverage
from stylespace.recommend.risk import OperatingPoint, RiskCoverage, risk_coverage
from stylespace.recommend.saved import SavedCalibration, load_calibration, save_calibration
from stylespace.recommend.scores import (ConfidenceScore, LocalAccuracy, NeighbourContext, default_scores,
                                         score_by_name)
from stylespace.utils import StylespaceError, at_least, validate

DEFAULT_SCORE = "top1"


@dataclasses.dataclass
class Recommendation:
    """One query's recommendation: its ``items`` (nearest first), the ``confidence`` and whether it is
    ``confident`` enough to be shown (confidence >= threshold, and the query passes the junk test; True
    without a threshold unless it fails the junk test).

    ``match_score`` is the confidence mapped through the calibration to [0, 1] (:mod:`stylespace.recommend.match`),
    None for an index calibrated before the scale was saved (or never). ``reason`` says, in words a shopper can
    read, why it is not confident (None when it is): one of
    :data:`stylespace.recommend.junk.JUNK_REASONS` when the query is not a product photo (see
    :attr:`junk`), else :data:`stylespace.recommend.junk.UNSURE`.
    """

    items: list[Hit]
    confidence: float
    confident: bool
    reason: str | None = None
    match_score: float | None = None  # in [0, 1], >= the threshold's exactly when confident (recommend.match)

    @property
    def junk(self) -> bool:
        """The query was judged not a product photo (blank, or unlike anything in the catalog)."""
        return self.reason in JUNK_REASONS

    @property
    def ids(self) -> list[str]:
        return [hit.id for hit in self.items]

    @property
    def scores(self) -> list[float]:
        return [hit.score for hit in self.items]


class SelectiveRecommender:
    """Top-``n_items`` recommendations with a confidence and a show/abstain decision.

    Args:
        index: the catalog to recommend from.
        score: a :class:`ConfidenceScore` or its name (``top1``, ``reciprocity10``...).
        threshold: show when confidence >= threshold; None shows everything (uncalibrated) but junk.
        n_items: items per recommendation (3 in seed 004).
        junk: the junk test's floors (:class:`JunkRule`); default: those the index measured on its own
            items (``JunkRule.from_index``). ``JunkRule()`` turns the embedding tests off (blank pictures
            are still refused).
        match_scale: confidence -> match score in [0, 1], fitted by the calibration (None: no match score).
    """

    def __init__(self, index: CatalogIndex, score: ConfidenceScore | str = DEFAULT_SCORE,
                 threshold: float | None = None, n_items: int = 3, junk: JunkRule | None = None,
                 match_scale: MatchScale | None = None):
        validate([at_least("n_items", n_items, 1)])
        self.index = index
        self.score = score_by_name(score) if isinstance(score, str) else score
        self.threshold = threshold
        self.n_items = n_items
        self.junk = JunkRule.from_index(index) if junk is None else junk
        self.match_scale = match_scale

    @classmethod
    def from_index(cls, index: CatalogIndex, n_items: int = 3) -> "SelectiveRecommender":
        """The recommender saved with the index by ``calibrate-threshold`` (top-1 similarity and no
        threshold when the index was never calibrated)."""
        saved = load_calibration(index)
        if saved is None:
            return cls(index, DEFAULT_SCORE, None, n_items)
        score = saved_score(saved.confidence or DEFAULT_SCORE, saved.confidence_params, saved.arrays(index.folder))
        return cls(index, score, saved.threshold, n_items,
                   match_scale=MatchScale.from_dict(saved.calibration.get("match_scale")))

    @property
    def match_threshold(self) -> float | None:
        """The match score (0-1) a recommendation needs to be shown; None without a threshold or a scale."""
        if self.match_scale is None or self.threshold is None:
            return None
        return self.match_scale.threshold_score(self.threshold)

    @property
    def calibrated(self) -> bool:
        return self.threshold is not None

    @property
    def score_name(self) -> str:
        return self.score.name

    def context(self, queries, *, model_id: str | None = None, exclude_ids=None,
                where: Mapping | None = None, query_keys: np.ndarray | None = None,
                scores: Sequence[ConfidenceScore] | None = None, k: int = 0,
                query_of: np.ndarray | None = None) -> NeighbourContext:
        """Search once for what ``scores`` (default: this recommender's) need, and at least ``k`` neighbours.

        ``query_of`` (N,): the rows of ``queries`` (N, D) are views of Q queries (``query_of[i]`` is row i's,
        each query's canonical view first; :mod:`stylespace.index.query_views`): every view is searched and each
        item keeps its best score; the scores and the junk test that read the query read its canonical view.
        """
        scores = list(scores or [self.score])
        k = max([k, self.n_items] + [s.neighbours_needed for s in scores])
        queries, model_id = vectors_and_model(queries, model_id)
        self.index.check_model(model_id)
        # prepared once: the search takes them as they are, and the scores that read the query keep them
        prepared = structures.prepare_vectors(queries, self.index.metric, self.index.config.dim, "query vectors")
        if query_of is None:
            neighbours = self.index.neighbours(prepared, k, exclude_ids=exclude_ids, where=where, prepared=True)
        else:
            neighbours = neighbours_of_views(self.index, prepared, query_of, k, exclude_ids=exclude_ids, where=where,
                                             prepared=True)
            prepared = prepared[first_rows(query_of, len(neighbours))]
        # kept for every score: the scores that read the query, and the junk test (its distance from the centre)
        return NeighbourContext(self.index, neighbours, self.n_items, query_keys, prepared)

    def confidence(self, context: NeighbourContext) -> np.ndarray:
        """(Q,) confidence of each query's recommendation; -inf where the score is undefined."""
        values = self.score(context)
        return np.where(np.isnan(values), -np.inf, values)

    def recommend(self, queries, *, k: int | None = None, model_id: str | None = None, exclude_ids=None,
                  where: Mapping | None = None, blank: Sequence[bool] | None = None,
                  query_of: np.ndarray | None = None) -> list[Recommendation]:
        """A :class:`Recommendation` per query of ``queries`` (Q, D) (see ``CatalogIndex.neighbours``).

        ``k`` lists more items than the ``n_items`` the confidence judges (default: ``n_items``).
        ``blank`` (Q,) says which queries' pictures are blank or almost uniform (``View.blank`` of their
        canonical views); those, and queries whose embedding fails the junk test, are never confident.
        ``query_of`` (N,): ``queries`` (N, D) are views of Q queries, searched together (see :meth:`context`).
        """
        k = self.n_items if k is None else k
        validate([at_least("k", k, 1)])
        context = self.context(queries, model_id=model_id, exclude_ids=exclude_ids, where=where, k=k,
                               query_of=query_of)
        if blank is not None and len(blank) != len(context.neighbours):
            raise StylespaceError(f"{len(blank)} blank flags for {len(context.neighbours)} queries")
        confidence = self.confidence(context)
        junk = self.junk_reasons(context, exclude_ids=exclude_ids, where=where, blank=blank)
        hits = self.index.hits(context.neighbours.head(k))
        out = []
        for items, c, reason in zip(hits, confidence, junk):
            if reason is None and self.threshold is not None and not c >= self.threshold:
                reason = UNSURE
            match = None if self.match_scale is None else self.match_scale.score(
                float(c), self.threshold, reason is None, reason in JUNK_REASONS)
            out.append(Recommendation(items, float(c), reason is None, reason, match))
        return out

    def junk_reasons(self, context: NeighbourContext, *, exclude_ids=None, where: Mapping | None = None,
                     blank: Sequence[bool] | None = None) -> list[str | None]:
        """Per query of ``context``, why it is not a product photo (None: it passes), by :attr:`junk`.

        The top-1 test reads the nearest item of the whole catalog (a ``where`` filter narrows what is
        recommended, not what the query is compared with), the query's own item left out as the floor's
        leave-one-out figures leave it out.
        """
        n = len(context.neighbours)
        top1 = centre = None
        if self.junk.top1_floor is not None and n:
            if where is None:
                top1 = context.neighbours.similarities[:, 0]
            else:
                top1 = self.index.neighbours(context.query_vectors, 1, exclude_ids=exclude_ids,
                                             prepared=True).similarities[:, 0]
        if self.junk.centre_ceiling is not None and n:
            centre = self.index.centre_distances(context.query_vectors)
        return self.junk.reasons(top1, centre, blank, n=n)


@dataclasses.dataclass
class Calibration:
    """The outcome of :func:`calibrate`.

    Attributes:
        chosen: the name of the score with the lowest AURC. point: its operating point for the target.
        curves: score name -> :class:`RiskCoverage`, in the order they were compared.
        n_queries: labelled queries used; n_items: items per recommendation.
        accuracy: share of correct recommendations when all are shown (the same for every score).
        queries: where the queries came from (for the record in index.json).
        junk: what the junk test (the index's floors) does to these queries: the share it refuses
            (``flagged``) and the share it refuses that the threshold would show (``flagged_shown``).
    """

    chosen: str
    point: OperatingPoint
    curves: dict[str, RiskCoverage]
    n_queries: int
    n_items: int
    accuracy: float
    queries: str = ""
    chosen_params: dict = dataclasses.field(default_factory=dict)
    chosen_arrays: dict = dataclasses.field(default_factory=dict, repr=False)
    junk: dict = dataclasses.field(default_factory=dict)
    match_scale: MatchScale | None = None

    def table(self) -> list[dict]:
        """One row per score, best AURC first: name, AURC, coverage at the target's error (or error at
        the target coverage) and its threshold."""
        rows = []
        for name, curve in sorted(self.curves.items(), key=lambda kv: kv[1].aurc):
            point = _operating_point(curve, self.point.target)
            rows.append({"score": name, "aurc": curve.aurc, "threshold": point.threshold,
                         "coverage": point.coverage, "error": point.error, "reached": point.reached})
        return rows

    def to_dict(self, curves: bool = False) -> dict:
        result = {"chosen": self.chosen, "threshold": self.point.threshold, "target": self.point.target,
                  "coverage": self.point.coverage, "error": self.point.error, "reached": self.point.reached,
                  "aurc": self.curves[self.chosen].aurc, "accuracy_at_full_coverage": self.accuracy,
                  "n_queries": self.n_queries, "n_items": self.n_items, "queries": self.queries,
                  "scores": self.table(), "junk": self.junk}
        if self.match_scale is not None:
            result["match_scale"] = self.match_scale.to_dict()
            if self.point.threshold is not None:
                result["match_threshold"] = self.match_scale.threshold_score(self.point.threshold)
        if curves:
            result["curves"] = {name: curve.to_dict() for name, curve in self.curves.items()}
        return result

    def save(self, index: CatalogIndex) -> SavedCalibration:
        """Record the chosen score and threshold (and these figures) beside the index."""
        if not self.point.reached or self.point.threshold is None:
            raise StylespaceError(f"no threshold meets the target {self.point.target} on these {self.n_queries} "
                                  "queries; nothing saved (aim for a looser target or train a better model)")
        return save_calibration(index, self.chosen, self.point.threshold, self.to_dict(), self.chosen_params,
                                self.chosen_arrays)

    def recommender(self, index: CatalogIndex) -> SelectiveRecommender:
        """The chosen score (fitted, for ``combined``) with the chosen threshold, over ``index``."""
        return SelectiveRecommender(index, saved_score(self.chosen, self.chosen_params, self.chosen_arrays),
                                    self.point.threshold, self.n_items, JunkRule.from_index(index), self.match_scale)

    def plot(self, path: str | Path, top: int = 4) -> Path:
        return plot_risk_coverage(self.curves, self.chosen, self.point, path,
                                  f"Top-{self.n_items} recommendations on {self.n_queries:,} queries", top)


def correct_recommendations(index: CatalogIndex, keys: np.ndarray, query_labels: Sequence[str]) -> np.ndarray:
    """(Q,) bool: at least one of the recommended items (keys (Q, n)) has the query's label."""
    labels = index.labels_of_keys(keys)
    query_labels = np.asarray([str(label) for label in query_labels], dtype=object)
    return (labels == query_labels[:, None]).any(axis=1)


def calibrate(index: CatalogIndex, query_vectors, query_labels: Sequence[str], *, model_id: str | None = None,
              query_ids: Sequence[str] | None = None, scores: Sequence[ConfidenceScore | str] | None = None,
              target_error: float | None = None, target_coverage: float | None = None, n_items: int = 3,
              where: Mapping | None = None, queries: str = "") -> Calibration:
    """Compare confidence scores on labelled queries and choose one score and its threshold.

    Args:
        index: the catalog (its items must have labels: they decide whether a recommendation is correct).
        query_vectors: (Q, D) embeddings of the queries (made by the index's model, checked by ``model_id``).
        query_labels: (Q,) the queries' classes.
        query_ids: the queries' ids; queries that are themselves catalog items are excluded from their own
            recommendations (and from their items' neighbourhoods), so they cannot match themselves.
        scores: scores to compare (objects or names); default :func:`default_scores` and ``combined`` (a
            logistic regression over several of them, fitted on these queries, its AURC cross-fitted).
        target_error / target_coverage: the target (one of them; default error 5 %).
        where: an optional metadata filter applied to recommendations.
        queries: a description of the query set, recorded with the result.
    """
    if target_error is not None and target_coverage is not None:
        raise StylespaceError("give a target error rate or a target coverage, not both")
    target = {"coverage": target_coverage} if target_coverage is not None else {
        "error": 0.05 if target_error is None else target_error}
    query_labels = list(query_labels)
    if any(label is None or label == "" for label in query_labels):
        raise StylespaceError("every calibration query needs a label (its class)")
    scores = list(scores or [*default_scores(), CombinedScore.name])
    combine = [s for s in scores if isinstance(s, CombinedScore) or s == CombinedScore.name]
    scores = [score_by_name(s) if isinstance(s, str) else s for s in scores if s not in combine]
    combined = (combine[0] if isinstance(combine[0], CombinedScore) else CombinedScore()) if combine else None
    names = [s.name for s in scores] + ([combined.name] if combined else [])
    if len(set(names)) != len(names):
        raise StylespaceError(f"confidence scores must have distinct names, got {names}")
    if index.items.labelled_count() == 0:
        raise StylespaceError(f"the items of the index at {index.folder} have no labels; calibration needs a "
                              "labelled catalog (build the index from a catalog with a label column)")
    exclude, query_keys = None, None
    if query_ids is not None:
        query_ids = [str(i) for i in query_ids]
        if len(query_ids) != len(query_labels):
            raise StylespaceError(f"{len(query_ids)} query ids for {len(query_labels)} labels")
        found = index.items.find(query_ids)
        if found:
            exclude = [[i] for i in query_ids]
            query_keys = np.array([found.get(i, -1) for i in query_ids], dtype=np.int64)
    recommender = SelectiveRecommender(index, n_items=n_items)
    context = recommender.context(query_vectors, model_id=model_id, exclude_ids=exclude, where=where,
                                  query_keys=query_keys, scores=scores + ([combined] if combined else []))
    if len(context.neighbours) != len(query_labels):
        raise StylespaceError(f"{len(context.neighbours)} query vectors but {len(query_labels)} labels")
    correct = correct_recommendations(index, context.neighbours.keys[:, :n_items], query_labels)
    # local scores learn from these very queries; each query's value leaves the query itself out
    learnt = {"vectors": context.query_vectors, "correct": correct}
    scores = [_with_local_fitted(score, learnt) for score in scores]
    if combined is not None:
        _with_local_fitted(combined, learnt)
    context.leave_one_out = True
    values = {score.name: score(context) for score in scores}
    fitted = {score.name: score for score in scores}
    if combined is not None and min(correct.sum(), (~correct).sum()) >= 2:
        values[combined.name] = cross_fitted(combined, combined.features(context), correct)
        fitted[combined.name] = combined
    curves = {name: risk_coverage(value, correct) for name, value in values.items()}
    chosen = min(curves, key=lambda name: curves[name].aurc)
    point = _operating_point(curves[chosen], target)
    params = combined.params() if chosen == CombinedScore.name else {}
    flagged = np.array([r is not None for r in recommender.junk_reasons(context, exclude_ids=exclude, where=where)])
    shown = (values[chosen] >= point.threshold) if point.threshold is not None else np.ones(len(flagged), bool)
    junk = {**recommender.junk.to_dict(), "flagged": float(flagged.mean()) if len(flagged) else 0.0,
            "flagged_shown": float((flagged & shown).mean()) if len(flagged) else 0.0}
    return Calibration(chosen, point, curves, len(correct), n_items, float(correct.mean()), queries,
                       params, learnt if _local_parts(fitted[chosen]) else {}, junk,
                       MatchScale.fit(values[chosen], correct))


def _local_parts(score: ConfidenceScore) -> list[LocalAccuracy]:
    """The local accuracy scores a score is or contains (they learn from calibration queries)."""
    if isinstance(score, LocalAccuracy):
        return [score]
    return [part for part in getattr(score, "parts", []) if isinstance(part, LocalAccuracy)]


def _with_local_fitted(score: ConfidenceScore, learnt: Mapping) -> ConfidenceScore:
    """``score``, with its local parts (or itself, when local) fitted in place on ``learnt`` calibration
    queries ({"vectors": (R, D), "correct": (R,)})."""
    local = _local_parts(score)
    if not local:
        return score
    if not learnt or "vectors" not in learnt or "correct" not in learnt:
        raise StylespaceError(f"the {score.name} confidence score needs the calibration queries it learnt from, and "
                              "the index has none saved; run `stylespace calibrate-threshold` again")
    for part in local:
        part.fit(learnt["vectors"], learnt["correct"])
    return score


def saved_score(name: str, params: Mapping | None = None, arrays: Mapping | None = None) -> ConfidenceScore:
    """The confidence score saved in an index: by name, with its fitted parameters and the ``arrays`` it
    learnt (``SavedCalibration.arrays``) when it has some."""
    score = CombinedScore.from_params(dict(params or {})) if name == CombinedScore.name else score_by_name(name)
    return _with_local_fitted(score, arrays or {})


def _operating_point(curve: RiskCoverage, target: dict) -> OperatingPoint:
    if "coverage" in target:
        return curve.for_coverage(target["coverage"])
    return curve.for_error(target["error"])
