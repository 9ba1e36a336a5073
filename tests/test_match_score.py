"""The match score a shopper reads: the confidence mapped through the calibration to [0, 1]; "confident" means
match score >= the threshold's, always (junk and blank pictures included); older calibrations still load."""
from __future__ import annotations

import json

import numpy as np
import pytest

from stylespace.index import CatalogIndex
from stylespace.recommend import MatchScale, SelectiveRecommender, calibrate
from stylespace.recommend.junk import JunkRule
from stylespace.recommend.saved import CALIBRATION_FILE
from stylespace.utils import StylespaceError
from conftest import CLUSTERED_MODEL as MODEL, clustered_index


def test_the_scale_is_the_isotonic_share_right_in_0_1():
    rng = np.random.default_rng(0)
    confidence = rng.normal(size=4000)
    truth = 1 / (1 + np.exp(-2 * confidence))
    correct = rng.random(4000) < truth
    scale = MatchScale.fit(confidence, correct)
    grid = np.linspace(-3, 3, 61)
    values = scale.probability_at(grid)
    assert np.all((values >= 0) & (values <= 1)) and np.all(np.diff(values) >= -1e-12)
    inner = (grid > -2) & (grid < 2)
    assert np.abs(values[inner] - 1 / (1 + np.exp(-2 * grid[inner]))).max() < 0.1  # calibrated: near the truth
    assert len(scale.confidence) <= 64
    assert MatchScale.from_dict(json.loads(json.dumps(scale.to_dict()))) == scale
    assert MatchScale.from_dict({}) is None  # a calibration saved before the scale: no match score
    with pytest.raises(StylespaceError):
        MatchScale((1.0, 0.0), (0.2, 0.5))


def test_undefined_confidences_take_the_lowest_share():
    scale = MatchScale.fit([-np.inf, np.nan, 0.1, 0.2, 0.9, 1.0], [False, False, False, True, True, True])
    assert scale.probability_at(-np.inf) == pytest.approx(scale.probability_at(-100.0))
    assert scale.probability_at(float("nan")) == pytest.approx(float(scale.probability_at(0.0)))


@pytest.mark.parametrize("seed", range(5))
def test_confident_means_at_least_the_thresholds_score_always(seed):
    """Even where the scale is flat (a block of the isotonic fit spans the threshold) a confident answer
    scores at least the threshold's score and an unconfident one strictly less; junk scores 0."""
    rng = np.random.default_rng(seed)
    confidence = np.round(rng.normal(size=300), 1)  # ties, hence flat stretches
    scale = MatchScale.fit(confidence, rng.random(300) < 0.6)
    threshold = float(rng.choice(confidence))
    at = scale.threshold_score(threshold)
    for c in np.r_[confidence, threshold, threshold - 1e-9, -np.inf]:
        confident = bool(c >= threshold)
        score = scale.score(float(c), threshold, confident)
        assert 0 <= score <= 1 and (score >= at) == confident
    assert scale.score(5.0, threshold, False, not_a_product=True) == 0.0


@pytest.fixture
def calibrated(tmp_path):
    """The clustered catalog index of test_recommend, calibrated on its held-out queries (saved with it)."""
    index, _, queries, query_labels, _ = clustered_index(tmp_path)
    calibration = calibrate(index, queries, query_labels, model_id=MODEL, target_error=0.1)
    calibration.save(index)
    return CatalogIndex.open(index.folder), queries, calibration


def test_the_recommender_gives_every_answer_a_consistent_match_score(calibrated):
    index, queries, calibration = calibrated
    recommender = SelectiveRecommender.from_index(index)
    at = recommender.match_threshold
    assert 0 < at < 1 and calibration.to_dict()["match_threshold"] == pytest.approx(at)
    blank = [k % 7 == 0 for k in range(len(queries))]  # blank pictures: never confident, score 0
    answers = recommender.recommend(queries, model_id=MODEL, blank=blank)
    assert any(a.confident for a in answers) and any(not a.confident for a in answers)
    for answer, is_blank in zip(answers, blank):
        assert 0 <= answer.match_score <= 1
        assert (answer.match_score >= at) == answer.confident
        if is_blank:
            assert answer.match_score == 0.0 and not answer.confident
    # the junk test (a high top-1 floor) refuses queries whatever their confidence: they score 0 too
    strict = SelectiveRecommender(index, recommender.score, recommender.threshold, junk=JunkRule(top1_floor=0.99),
                                  match_scale=recommender.match_scale)
    assert all(a.match_score == 0.0 and not a.confident for a in strict.recommend(queries, model_id=MODEL))


def test_a_calibration_saved_before_the_scale_gives_no_match_score(calibrated):
    index, queries, _ = calibrated
    path = index.folder / CALIBRATION_FILE
    saved = json.loads(path.read_text())
    saved["calibration"].pop("match_scale")
    saved["calibration"].pop("match_threshold")
    path.write_text(json.dumps(saved))
    recommender = SelectiveRecommender.from_index(CatalogIndex.open(index.folder))
    assert recommender.match_threshold is None and recommender.calibrated
    assert all(a.match_score is None for a in recommender.recommend(queries[:5], model_id=MODEL))
