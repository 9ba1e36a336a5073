"""Selective recommendation: risk-coverage and AURC against a brute-force reference, thresholds for a
target error rate or coverage, each confidence score against a direct computation, calibration,
saving with the index, and the CLI."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import CLUSTERED_MODEL, clustered_index
from stylespace.index import CatalogIndex
from stylespace.recommend import (
    DensityRatio,
    LocalAccuracy,
    Margin,
    MeanSimilarity,
    NeighbourAgreement,
    NeighbourhoodOverlap,
    Reciprocity,
    SelectiveRecommender,
    TopSimilarity,
    calibrate,
    correct_recommendations,
    default_scores,
    risk_coverage,
    saved_score,
    score_by_name,
)
from stylespace.recommend.saved import load_calibration
from stylespace.recommend.combined import CombinedScore, cross_fitted
from stylespace.recommend.scores import NeighbourContext
from stylespace.utils import StylespaceError

MODEL = CLUSTERED_MODEL


# --- risk-coverage ------------------------------------------------------------------------------------------


def reference_curve(confidence: np.ndarray, correct: np.ndarray):
    """The definition, one threshold at a time: (thresholds desc, coverage, error, AURC)."""
    thresholds = np.unique(confidence)[::-1]
    coverage, error = [], []
    for t in thresholds:
        shown = confidence >= t
        coverage.append(shown.mean())
        error.append((~correct[shown]).mean())
    coverage, error = np.array(coverage), np.array(error)
    aurc = float(np.sum(error * np.diff(np.r_[0.0, coverage])))
    return thresholds, coverage, error, aurc


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_risk_coverage_matches_the_definition_with_ties(seed):
    rng = np.random.default_rng(seed)
    confidence = np.round(rng.normal(size=400), 1)  # many ties
    correct = rng.random(400) < 1 / (1 + np.exp(-2 * confidence))
    curve = risk_coverage(confidence, correct)
    thresholds, coverage, error, aurc = reference_curve(confidence, correct)
    np.testing.assert_allclose(curve.thresholds, thresholds)
    np.testing.assert_allclose(curve.coverage, coverage)
    np.testing.assert_allclose(curve.error, error)
    assert curve.aurc == pytest.approx(aurc)
    assert curve.n_errors == int((~correct).sum())


def test_aurc_without_ties_is_the_mean_risk_over_the_top_n():
    rng = np.random.default_rng(5)
    confidence = rng.permutation(200).astype(float)
    correct = rng.random(200) < 0.8
    order = np.argsort(-confidence)
    risks = [(~correct[order[:n]]).mean() for n in range(1, 201)]
    assert risk_coverage(confidence, correct).aurc == pytest.approx(np.mean(risks))


def test_aurc_of_perfect_and_worst_rankings():
    correct = np.array([True] * 90 + [False] * 10)
    perfect = risk_coverage(np.arange(100, 0, -1), correct)  # every correct one more confident
    worst = risk_coverage(np.arange(1, 101), correct)
    assert perfect.aurc < 0.01 < 0.1 < worst.aurc
    assert risk_coverage(np.ones(100), correct).aurc == pytest.approx(0.1)  # one tie group: the plain error rate
    assert perfect.for_error(0.0).coverage == pytest.approx(0.9)


def test_threshold_for_target_error_and_coverage_match_brute_force():
    rng = np.random.default_rng(7)
    confidence = rng.normal(size=1000)
    correct = rng.random(1000) < 1 / (1 + np.exp(-3 * confidence - 2))
    curve = risk_coverage(confidence, correct)
    for target in (0.02, 0.05, 0.1):
        point = curve.for_error(target)
        best = max((t for t in np.unique(confidence) if (~correct[confidence >= t]).mean() <= target),
                   key=lambda t: (confidence >= t).mean())
        assert point.threshold == pytest.approx(best) and point.reached
        shown = confidence >= point.threshold
        assert point.coverage == pytest.approx(shown.mean()) and point.error == pytest.approx((~correct[shown]).mean())
        assert point.error <= target
    for target in (0.5, 0.8, 1.0):
        point = curve.for_coverage(target)
        best = max(t for t in np.unique(confidence) if (confidence >= t).mean() >= target)
        assert point.threshold == pytest.approx(best) and point.coverage >= target
    unreachable = risk_coverage(np.arange(10.0), np.zeros(10, bool)).for_error(0.05)
    assert not unreachable.reached and unreachable.threshold is None
    with pytest.raises(StylespaceError, match="target error"):
        curve.for_error(5)
    with pytest.raises(StylespaceError, match="target coverage"):
        curve.for_coverage(0)


def test_undefined_confidences_rank_last_and_are_never_a_threshold():
    confidence = np.array([0.9, 0.8, np.nan, 0.7, np.nan])
    correct = np.array([True, True, False, False, True])
    curve = risk_coverage(confidence, correct)
    assert curve.coverage[-1] == 1.0 and np.isneginf(curve.thresholds[-1])
    point = curve.for_coverage(1.0)
    assert point.threshold == pytest.approx(0.7) and not point.reached
    assert curve.to_dict()["curve"]["threshold"][-1] is None
    json.dumps(curve.to_dict())  # strict JSON: no Infinity
    with pytest.raises(StylespaceError, match="correctness"):
        risk_coverage([0.1, 0.2], [True])


# --- confidence scores ------------------------------------------------------------------------------------------


@pytest.fixture
def catalog(tmp_path):
    """A small clustered catalog index (cosine) with labels, and held-out labelled queries."""
    return clustered_index(tmp_path)


def _brute_neighbours(references: np.ndarray, queries: np.ndarray, k: int, exclude_self: bool = False):
    similarity = queries @ references.T
    if exclude_self:
        np.fill_diagonal(similarity, -np.inf)
    order = np.argsort(-similarity, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(similarity, order, axis=1)


def test_each_score_matches_a_direct_computation(catalog):
    index, refs, queries, _, _ = catalog
    queries = queries[:20]
    neighbours = index.neighbours(queries, 20, model_id=MODEL)
    context = NeighbourContext(index, neighbours, n_items=3)
    order, sims = _brute_neighbours(refs, queries, 20)
    own_order, own_sims = _brute_neighbours(refs, refs, 10, exclude_self=True)

    np.testing.assert_allclose(TopSimilarity()(context), sims[:, 0], atol=1e-5)
    np.testing.assert_allclose(MeanSimilarity(3)(context), sims[:, :3].mean(1), atol=1e-5)
    np.testing.assert_allclose(Margin(1, 10)(context), sims[:, 0] - sims[:, 9], atol=1e-5)
    pairwise = np.einsum("qid,qjd->qij", refs[order[:, :10]], refs[order[:, :10]])
    expected = (pairwise.sum((1, 2)) - np.trace(pairwise, axis1=1, axis2=2)) / 90
    np.testing.assert_allclose(NeighbourAgreement(10)(context), expected, atol=1e-5)
    top3 = order[:, :3]
    radius = own_sims[top3, 9]  # each recommended item's similarity to its own 10th neighbour
    np.testing.assert_allclose(Reciprocity(10)(context), (sims[:, :3] - radius).mean(1), atol=1e-5)
    overlap = np.array([[len(set(order[q, :10]) & set(own_order[j])) for j in top3[q]] for q in range(len(queries))])
    np.testing.assert_allclose(NeighbourhoodOverlap(10)(context), (overlap.mean(1) + 1) / 10, atol=1e-9)
    density = -np.log((1 - sims[:, 9]) / (1 - own_sims[top3, 9]).mean(1))
    np.testing.assert_allclose(DensityRatio(10)(context), density, atol=1e-4)


def test_scores_are_named_and_found_by_name():
    for score in default_scores():
        assert score_by_name(score.name).name == score.name
    assert isinstance(score_by_name("reciprocity25"), Reciprocity) and score_by_name("reciprocity25").k == 25
    with pytest.raises(StylespaceError, match="unknown confidence score"):
        score_by_name("vibes")
    with pytest.raises(StylespaceError, match="near < far"):
        Margin(5, 2)


def test_a_query_in_the_catalog_is_not_counted_in_its_items_neighbourhoods(catalog):
    index, refs, _, _, _ = catalog
    query_keys = index.keys_of(["c0"])
    context = NeighbourContext(index, index.neighbours(refs[:1], 10, exclude_ids=[["c0"]]), 3, query_keys)
    assert query_keys[0] not in context.neighbours.keys
    assert query_keys[0] not in context.item_neighbours(10).keys


# --- calibration and the recommender -------------------------------------------------------------------------------


def test_correct_means_one_of_the_items_shares_the_class(catalog):
    index, refs, queries, query_labels, labels = catalog
    order, _ = _brute_neighbours(refs, queries, 3)
    expected = [query_labels[q] in {labels[j] for j in order[q]} for q in range(len(queries))]
    keys = index.neighbours(queries, 3).keys
    np.testing.assert_array_equal(correct_recommendations(index, keys, query_labels), expected)


def test_calibrate_keeps_the_lowest_aurc_and_its_threshold(catalog):
    index, refs, queries, query_labels, labels = catalog
    calibration = calibrate(index, queries, query_labels, model_id=MODEL, target_error=0.05)
    aurcs = {name: curve.aurc for name, curve in calibration.curves.items()}
    assert calibration.chosen == min(aurcs, key=aurcs.get)
    assert set(aurcs) == {s.name for s in default_scores()} | {"combined"}
    chosen = calibration.curves[calibration.chosen]
    assert calibration.point == chosen.for_error(0.05) and calibration.point.error <= 0.05
    keys = index.neighbours(queries, 3).keys
    assert calibration.accuracy == pytest.approx(correct_recommendations(index, keys, query_labels).mean())
    rows = calibration.table()
    assert [r["aurc"] for r in rows] == sorted(r["aurc"] for r in rows)

    by_coverage = calibrate(index, queries, query_labels, scores=["top1", "mean3"], target_coverage=0.6)
    assert set(by_coverage.curves) == {"top1", "mean3"} and by_coverage.point.coverage >= 0.6
    with pytest.raises(StylespaceError, match="not both"):
        calibrate(index, queries, query_labels, target_error=0.05, target_coverage=0.5)
    with pytest.raises(StylespaceError, match="made by model"):
        calibrate(index, queries, query_labels, model_id="model-b")
    with pytest.raises(StylespaceError, match="labels"):
        calibrate(index, queries, query_labels[:-1])


def test_catalog_queries_cannot_recommend_themselves(catalog):
    index, refs, _, _, labels = catalog
    ids = [f"c{i}" for i in range(50)]
    calibration = calibrate(index, refs[:50], labels[:50], query_ids=ids, scores=["top1"])
    # a query that found itself would have similarity 1; excluded, none does
    assert calibration.curves["top1"].thresholds.max() < 0.9999


def test_saved_calibration_drives_the_recommender(catalog, tmp_path):
    index, _, queries, query_labels, _ = catalog
    calibration = calibrate(index, queries, query_labels, model_id=MODEL, target_error=0.1)
    calibration.save(index)
    reopened = CatalogIndex.open(index.folder)
    saved = load_calibration(reopened)
    assert saved.confidence == calibration.chosen
    assert saved.threshold == pytest.approx(calibration.point.threshold)
    assert saved.calibration["n_queries"] == len(queries)
    assert not saved.outdated(reopened) and not saved.changed_items(reopened)
    recommender = SelectiveRecommender.from_index(reopened)
    assert recommender.calibrated and recommender.score_name == calibration.chosen
    recommendations = recommender.recommend(queries, model_id=MODEL)
    confidence = recommender.confidence(recommender.context(queries))
    # shown: confident enough, and not refused by the junk test (a few held-out queries lie below the
    # catalog's own 0.5th-percentile top-1 floor); the calibration says how many of the shown it refuses
    junk = np.array([r.junk for r in recommendations])
    assert [r.confident for r in recommendations] == list((confidence >= calibration.point.threshold) & ~junk)
    assert np.mean([r.confident for r in recommendations]) == pytest.approx(
        calibration.point.coverage - calibration.junk["flagged_shown"])
    assert calibration.junk["flagged"] == pytest.approx(junk.mean())
    assert all(len(r.items) == 3 for r in recommendations)
    assert len(recommender.recommend(queries[:2], k=8)[0].ids) == 8
    uncalibrated = SelectiveRecommender(reopened, "top1")
    assert all(r.confident != r.junk for r in uncalibrated.recommend(queries))  # no threshold: all but junk

    impossible = calibrate(index, queries, query_labels, scores=["margin1-10"], target_error=0.0)
    if not impossible.point.reached:
        with pytest.raises(StylespaceError, match="nothing saved"):
            impossible.save(index)


def test_combined_score_is_cross_fitted_and_restored_from_the_index(catalog):
    index, _, queries, query_labels, _ = catalog
    calibration = calibrate(index, queries, query_labels, scores=["combined"], target_coverage=0.7)
    assert calibration.chosen == "combined" and calibration.chosen_params["parts"][0] == "top1"
    assert "local10" in calibration.chosen_params["parts"]
    assert len(calibration.chosen_arrays["vectors"]) == len(queries)
    fitted = saved_score("combined", calibration.chosen_params, calibration.chosen_arrays)
    # calibration reads its own queries with each one left out of its local score
    context = NeighbourContext(index, index.neighbours(queries, 20), 3, query_vectors=queries, leave_one_out=True)
    correct = correct_recommendations(index, context.neighbours.keys[:, :3], query_labels)
    features = fitted.features(context)
    in_sample = CombinedScore(fitted.parts).fit(features, correct).decision(features)
    np.testing.assert_allclose(fitted.decision(features), in_sample)
    held_out = cross_fitted(CombinedScore(fitted.parts), features, correct)
    assert not np.allclose(held_out, in_sample)  # the curve compared by AURC is not the in-sample one
    assert calibration.curves["combined"].aurc == pytest.approx(risk_coverage(held_out, correct).aurc)
    # recommending, the local part reads every calibration query
    deployed = NeighbourContext(index, index.neighbours(queries, 20), 3, query_vectors=queries)
    expected = fitted.decision(fitted.features(deployed))
    np.testing.assert_allclose(calibration.recommender(index).score(deployed), expected, atol=1e-9)
    calibration.save(index)
    recommender = SelectiveRecommender.from_index(CatalogIndex.open(index.folder))
    assert isinstance(recommender.score, CombinedScore)
    np.testing.assert_allclose(recommender.score(recommender.context(queries)), expected, atol=1e-9)
    with pytest.raises(StylespaceError, match="not fitted"):
        CombinedScore().decision(features)


def test_local_accuracy_is_the_correct_share_of_the_nearest_calibration_queries(catalog):
    index, refs, queries, query_labels, _ = catalog
    calibration_queries, new_queries = queries[:60], queries[60:80]
    keys = index.neighbours(calibration_queries, 3).keys
    correct = correct_recommendations(index, keys, query_labels[:60])
    score = LocalAccuracy(5).fit(calibration_queries, correct)
    similarity = new_queries @ calibration_queries.T
    nearest = np.argsort(-similarity, axis=1, kind="stable")[:, :5]
    context = NeighbourContext(index, index.neighbours(new_queries, 3), 3, query_vectors=new_queries)
    np.testing.assert_allclose(score(context), correct[nearest].mean(axis=1))
    own = calibration_queries @ calibration_queries.T
    np.fill_diagonal(own, -np.inf)
    loo = correct[np.argsort(-own, axis=1, kind="stable")[:, :5]].mean(axis=1)
    context = NeighbourContext(index, index.neighbours(calibration_queries, 3), 3, query_vectors=calibration_queries,
                               leave_one_out=True)
    np.testing.assert_allclose(score(context), loo)
    with pytest.raises(StylespaceError, match="not fitted"):
        LocalAccuracy(5)(context)


def test_a_local_score_is_saved_beside_the_index_and_replaced_atomically(catalog):
    index, _, queries, query_labels, _ = catalog
    first = calibrate(index, queries, query_labels, scores=["local10"], target_coverage=0.5)
    first.save(index)
    saved = sorted(p.name for p in index.folder.glob("calibration-*.npz"))
    assert saved == [load_calibration(index).arrays_file]
    recommender = SelectiveRecommender.from_index(CatalogIndex.open(index.folder))
    assert isinstance(recommender.score, LocalAccuracy) and len(recommender.score.vectors) == len(queries)
    second = calibrate(index, queries[:50], query_labels[:50], scores=["local10"], target_coverage=0.5)
    second.save(index)
    assert sorted(p.name for p in index.folder.glob("calibration-*.npz")) == [load_calibration(index).arrays_file] != saved
    assert len(SelectiveRecommender.from_index(CatalogIndex.open(index.folder)).score.vectors) == 50
    calibrate(index, queries, query_labels, scores=["top1"], target_coverage=0.5).save(index)
    assert not list(index.folder.glob("calibration-*.npz")) and load_calibration(index).arrays_file == ""
    second.save(index)
    (index.folder / load_calibration(index).arrays_file).unlink()
    with pytest.raises(StylespaceError, match="calibration's file is missing"):
        SelectiveRecommender.from_index(CatalogIndex.open(index.folder))
    with pytest.raises(StylespaceError, match="calibration queries it learnt from"):
        saved_score("local10")


def test_plot_is_written(catalog, tmp_path):
    index, _, queries, query_labels, _ = catalog
    path = calibrate(index, queries, query_labels).plot(tmp_path / "risk.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_an_unlabelled_catalog_cannot_be_calibrated(tmp_path):
    vectors = np.random.default_rng(0).normal(size=(30, 4)).astype(np.float32)
    index = CatalogIndex.create(tmp_path / "idx", [str(i) for i in range(30)], vectors, model_id=MODEL)
    with pytest.raises(StylespaceError, match="no labels"):
        calibrate(index, vectors[:3], ["a", "b", "c"])
    # recommendations themselves need no labels
    assert len(SelectiveRecommender(index, "reciprocity10").recommend(vectors[:3])) == 3


def test_cli_calibrate_then_recommend(small_catalog, tmp_path):
    import torch
    from typer.testing import CliRunner

    from stylespace.cli import app
    from stylespace.models import ModelConfig, build_model, save_model

    torch.manual_seed(0)
    model = save_model(build_model(ModelConfig(width=8, embedding_dim=32)).eval(), tmp_path / "model")
    runner = CliRunner()

    def run(*args) -> dict:
        result = runner.invoke(app, [*map(str, args), "--json"], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    split = tmp_path / "split.csv"
    run("split", small_catalog, "-o", split, "--n-main", "4", "--n-new", "2", "--main-fractions", "0.4,0.3,0.3")
    index_dir = tmp_path / "idx"
    built = run("index", model, split, "-o", index_dir)  # scenario 4 support: the catalog
    calibrated = run("calibrate-threshold", index_dir, "--queries", split, "--target-error", "0.2",
                     "--plot", tmp_path / "risk.png", "--score", "top1", "--score", "mean3")
    from stylespace.data import SplitManifest

    support, query = SplitManifest.load(split).scenario(4)
    assert built["count"] == len(support) and calibrated["n_queries"] == len(query)
    assert calibrated["chosen"] in ("top1", "mean3") and (tmp_path / "risk.png").is_file()
    assert calibrated["saved"] == calibrated["reached"]
    recommended = run("recommend", index_dir, small_catalog / "images" / "1000.png", "--all")
    entry = recommended["queries"][0]
    assert len(entry["items"]) == 3 and recommended["score"] == calibrated["chosen"]
    if calibrated["saved"]:
        assert entry["shown"] == (entry["confidence"] >= calibrated["threshold"])
    # another score than the calibrated one does not borrow its threshold (another scale)
    other = "mean3" if calibrated["chosen"] == "top1" else "top1"
    overridden = run("recommend", index_dir, small_catalog / "images" / "1000.png", "--score", other)
    assert overridden["score"] == other and overridden["threshold"] is None and overridden["queries"][0]["shown"]
    given = run("recommend", index_dir, small_catalog / "images" / "1000.png", "--score", other, "--threshold", "2")
    assert given["threshold"] == 2 and not given["queries"][0]["shown"]
