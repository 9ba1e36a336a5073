"""The recommender a user asks for, and an index calibrated on a labelled selection of items.

Both are policy, not presentation: a threshold is calibrated for one score (another score's values live on
another scale), so overriding the score drops the saved threshold unless one is given; and calibration
queries must be embedded by the index's own model and carry labels. The CLI, the demo and a notebook call
these the same way.

>>> recommender, note = choose_recommender(index, score="top1")
>>> calibration, failed = calibrate_index(index, model, select_items("split.csv", side="query"))
"""
from __future__ import annotations

from typing import Sequence

from stylespace.data.selection import Selection
from stylespace.index.build import embed_items
from stylespace.index.catalog_index import CatalogIndex
from stylespace.recommend.saved import load_calibration
from stylespace.recommend.selective import Calibration, SelectiveRecommender, calibrate, saved_score
from stylespace.utils import StylespaceError


# Why every recommendation is shown when the index has no threshold for the score in use.
UNCALIBRATED_NOTE = ("this index has no calibrated threshold, so every recommendation is shown; run "
                     "`stylespace calibrate-threshold` on labelled queries first")


def choose_recommender(index: CatalogIndex, score: str | None = None,
                       threshold: float | None = None) -> tuple[SelectiveRecommender, str | None]:
    """The recommender saved with ``index``, with its score and/or threshold overridden.

    Returns (recommender, note): the note (or None) says why every recommendation will be shown: the index
    was never calibrated, or its threshold belongs to another score than the one asked for.
    """
    saved = SelectiveRecommender.from_index(index)
    if score is None and threshold is None:
        return saved, None if saved.calibrated else UNCALIBRATED_NOTE
    same_score = score in (None, saved.score_name)
    calibration = load_calibration(index)
    # a local score can reuse the calibration queries the index saved (for its chosen score)
    chosen = saved.score if same_score else saved_score(
        score, {}, calibration.arrays(index.folder) if calibration and score.startswith("local") else None)
    kept = threshold if threshold is not None else saved.threshold if same_score else None
    recommender = SelectiveRecommender(index, chosen, kept, saved.n_items, saved.junk,
                                       saved.match_scale if same_score else None)  # the scale is the saved score's
    note = None
    if not same_score and threshold is None and calibration is not None and calibration.threshold is not None:
        note = (f"the index's threshold was calibrated for the {calibration.confidence} score, not {score}; every "
                "recommendation is shown (give --threshold, or calibrate with --score to choose one)")
    elif not recommender.calibrated:
        note = UNCALIBRATED_NOTE
    return recommender, note


def calibrate_index(index: CatalogIndex, model, selection: Selection, *, scores: Sequence[str] | None = None,
                    target_error: float | None = None, target_coverage: float | None = None,
                    batch_size: int = 256, device: str = "auto",
                    progress: bool = True) -> tuple[Calibration, dict[str, str]]:
    """Embed the labelled query items of ``selection`` with ``model`` (the index's) and :func:`calibrate` the
    index on them. Returns (calibration, {id: reason} of queries that could not be decoded); nothing is saved
    (``calibration.save(index)`` does it)."""
    embeddings, failed = embed_items(model, selection.catalog, selection.ids, batch_size=batch_size, device=device,
                                     progress=progress)
    labels = ([selection.labels[i] for i in embeddings.ids] if selection.labels is not None
              else embeddings.labels)
    if labels is None or any(v is None for v in labels):
        raise StylespaceError(f"{selection.description}: calibration queries need labels (a catalog with a label "
                              "column, or a split manifest)")
    calibration = calibrate(index, embeddings, labels, query_ids=embeddings.ids, scores=scores,
                            target_error=target_error, target_coverage=target_coverage,
                            queries=selection.description)
    return calibration, failed
