"""stylespace.evaluation: numbers against scikit-learn and brute-force references on small random data,
open set, pair cutoffs, hierarchy, the whole protocol on a generated split, and a 200k-vector memory test."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix, precision_score, recall_score
from sklearn.metrics import roc_auc_score

from stylespace.data.splits import SplitConfig, SplitManifest
from stylespace.evaluation import (
    EvaluationConfig,
    ExactSearch,
    SupportSetClassifier,
    VectorTable,
    choose_reject_distance,
    classification_metrics,
    coarsen,
    compare_markdown,
    evaluate,
    evaluate_hierarchy,
    indexed_pair_distances,
    label_pairs,
    load_headlines,
    open_set_metrics,
    pair_distances,
    retrieval_metrics,
    verify_pairs,
)
from stylespace.utils import StylespaceError


def clustered(n_classes: int, per_class: int, dim: int = 16, spread: float = 0.6, seed: int = 0,
              names: list[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian blobs around random class centres: (N, dim) float32 and N string labels."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_classes, dim))
    names = names or [f"c{i:02d}" for i in range(n_classes)]
    labels = np.repeat(np.arange(n_classes), per_class)
    X = centres[labels] + spread * rng.standard_normal((len(labels), dim))
    return X.astype(np.float32), np.array([names[i] for i in labels], dtype=object)


def brute_distances(Q: np.ndarray, R: np.ndarray, metric: str) -> np.ndarray:
    Q, R = Q.astype(np.float64), R.astype(np.float64)
    if metric == "cosine":
        Q = Q / np.linalg.norm(Q, axis=1, keepdims=True)
        R = R / np.linalg.norm(R, axis=1, keepdims=True)
        return 1.0 - Q @ R.T
    return np.sqrt(((Q[:, None, :] - R[None, :, :]) ** 2).sum(-1))


# --- classification --------------------------------------------------------------------------------


def test_classification_metrics_match_sklearn():
    rng = np.random.default_rng(1)
    classes = ["a", "b", "c", "d", "e"]
    y_true = rng.choice(classes, size=300, p=[0.5, 0.2, 0.15, 0.1, 0.05])
    y_pred = np.where(rng.random(300) < 0.6, y_true, rng.choice(classes[:4], size=300))
    y_pred[y_pred == "e"] = "a"  # "e" is never predicted
    m = classification_metrics(y_true, y_pred)
    assert m.classes == classes
    assert m.accuracy == pytest.approx(accuracy_score(y_true, y_pred))
    assert m.balanced_accuracy == pytest.approx(balanced_accuracy_score(y_true, y_pred))
    assert m.confusion == confusion_matrix(y_true, y_pred, labels=classes).tolist()
    assert m.precision == pytest.approx(precision_score(y_true, y_pred, labels=classes, average=None, zero_division=0))
    assert m.recall == pytest.approx(recall_score(y_true, y_pred, labels=classes, average=None, zero_division=0))
    assert m.support == [int((y_true == c).sum()) for c in classes]
    assert m.precision[4] == 0.0  # never predicted: 0, not NaN


def test_balanced_accuracy_is_004s_mean_over_true_classes():
    # A class that is only predicted (never true) must not count as a class with recall 0.
    y_true = ["a", "a", "b", "b"]
    y_pred = ["a", "x", "b", "b"]
    m = classification_metrics(y_true, y_pred)
    assert m.balanced_accuracy == pytest.approx((0.5 + 1.0) / 2)
    assert m.accuracy == pytest.approx(0.75)


def test_classification_metrics_reject_bad_input():
    with pytest.raises(StylespaceError, match="2 true labels but 3"):
        classification_metrics(["a", "b"], ["a", "b", "c"])
    with pytest.raises(StylespaceError, match="open_set_metrics"):
        classification_metrics(["a", "b"], ["a", None])


# --- support-set classifier --------------------------------------------------------------------------


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_knn_matches_sklearn_nearest_neighbour(metric):
    from sklearn.neighbors import KNeighborsClassifier

    X, y = clustered(6, 30, spread=1.2, seed=2)
    Q, yq = clustered(6, 20, spread=1.2, seed=3)
    ours = SupportSetClassifier("knn", k=1, metric=metric).fit(X, y).predict(Q)
    theirs = KNeighborsClassifier(1, metric=metric, algorithm="brute").fit(X, y).predict(Q)
    assert (ours == theirs).all()
    distances, indices = SupportSetClassifier("knn", k=4, metric=metric).fit(X, y).kneighbors(Q)
    reference = brute_distances(Q, X, metric)
    assert np.allclose(distances, np.sort(reference, axis=1)[:, :4], atol=1e-4)
    assert np.allclose(np.take_along_axis(reference, indices, 1), distances, atol=1e-4)


def test_knn_vote_majority_and_nearest_tie_break():
    X, y = clustered(5, 25, spread=1.5, seed=4)
    Q, _ = clustered(5, 25, spread=1.5, seed=5)
    k = 4
    classifier = SupportSetClassifier("knn", k=k, metric="euclidean").fit(X, y)
    predicted = classifier.predict(Q)
    order = np.argsort(brute_distances(Q, X, "euclidean"), axis=1)[:, :k]
    for row, neighbours in enumerate(order):
        votes = list(y[neighbours])
        best = max(votes.count(c) for c in set(votes))
        tied = {c for c in set(votes) if votes.count(c) == best}
        expected = next(c for c in votes if c in tied)  # the nearest member of a tied class
        assert predicted[row] == expected
    assert any(len(set(y[n])) > 1 for n in order)  # the test exercises real votes


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_prototypes_are_class_means(metric):
    X, y = clustered(4, 20, spread=1.5, seed=6)
    Q, _ = clustered(4, 10, spread=1.5, seed=7)
    classifier = SupportSetClassifier("prototype", metric=metric).fit(X, y)
    classes = sorted(set(y))
    base = X / np.linalg.norm(X, axis=1, keepdims=True) if metric == "cosine" else X.astype(np.float64)
    means = np.stack([base[y == c].mean(0) for c in classes])
    expected = np.array(classes, dtype=object)[np.argmin(brute_distances(Q, means, metric), axis=1)]
    assert (classifier.predict(Q) == expected).all()
    if metric == "euclidean":
        from sklearn.neighbors import NearestCentroid

        assert (classifier.predict(Q) == NearestCentroid().fit(X, y).predict(Q)).all()


@pytest.mark.parametrize("method", ["knn", "prototype"])
def test_leave_one_out_matches_refitting_without_the_item(method):
    X, y = clustered(4, 6, spread=1.4, seed=8)
    classifier = SupportSetClassifier(method, metric="cosine").fit(X, y)
    labels, distances = classifier.leave_one_out()
    for i in range(len(X)):
        rest = np.arange(len(X)) != i
        label, distance = SupportSetClassifier(method, metric="cosine").fit(X[rest], y[rest]).predict_with_distance(X[i:i + 1])
        assert labels[i] == label[0]
        assert distances[i] == pytest.approx(distance[0], abs=1e-5)


def test_classifier_validates_its_parameters():
    with pytest.raises(StylespaceError, match="method must be"):
        SupportSetClassifier("svm")
    with pytest.raises(StylespaceError, match="k must be an integer >= 1"):
        SupportSetClassifier("knn", k=0)
    with pytest.raises(StylespaceError, match="applies to method=.knn. only"):
        SupportSetClassifier("prototype", k=3)
    with pytest.raises(StylespaceError, match="metric must be"):
        SupportSetClassifier(metric="manhattan")
    with pytest.raises(StylespaceError, match="not fitted"):
        SupportSetClassifier().predict(np.zeros((2, 3)))
    with pytest.raises(StylespaceError, match="3 support vectors but 2 support labels"):
        SupportSetClassifier().fit(np.zeros((3, 2)), ["a", "b"])
    with pytest.raises(StylespaceError, match="NaN"):
        SupportSetClassifier().fit(np.full((2, 2), np.nan), ["a", "b"])


# --- open set ----------------------------------------------------------------------------------------


def test_open_set_refuses_far_items_and_scores_them():
    X, y = clustered(6, 40, spread=0.3, seed=9)
    known = y < "c03"  # classes c00-c02 are in the support set, c03-c05 are "new"
    Q, yq = clustered(6, 10, spread=0.3, seed=9)  # same centres, fresh noise
    Q = Q + 0.05
    closed = SupportSetClassifier("knn", k=1, metric="euclidean").fit(X[known], y[known])
    labels, nearest = closed.predict_with_distance(Q)
    assert set(labels) <= {"c00", "c01", "c02"}  # closed set: every new item gets a wrong known answer
    cut = float(np.sort(nearest[np.isin(yq, ["c00", "c01", "c02"])])[-1]) + 1e-6
    open_classifier = closed.with_reject_distance(cut)
    predicted = open_classifier.predict(Q)
    assert all(p is None for p in predicted[nearest > cut])
    m = open_set_metrics(yq, predicted, known_classes=["c00", "c01", "c02"])
    is_known = np.isin(yq, ["c00", "c01", "c02"])
    accepted = np.array([p is not None for p in predicted])
    assert m.coverage == pytest.approx(accepted.mean())
    assert m.rejection_rate == pytest.approx(1 - accepted.mean())
    assert m.accepted_accuracy == pytest.approx(np.mean(predicted[accepted] == yq[accepted]))
    assert m.known_rejection_rate == 0.0  # the cut keeps every known item
    assert m.unknown_rejection_rate == pytest.approx(np.mean(~accepted[~is_known]))
    assert m.unknown_rejection_rate > 0.9  # blobs are far apart, so new classes are refused
    right = (predicted == yq) & accepted
    assert m.open_set_accuracy == pytest.approx((right.sum() + (~accepted & ~is_known).sum()) / len(yq))


def test_choose_reject_distance_targets():
    distances = np.array([0.1, 0.2, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9])
    correct = np.array([1, 1, 1, 1, 1, 0, 1, 0, 0, 0], dtype=bool)
    by_coverage = choose_reject_distance(distances, correct, target_coverage=0.5)
    assert by_coverage.distance == 0.4 and by_coverage.validation_coverage == 0.5
    tie = choose_reject_distance(distances, correct, target_coverage=0.2)  # the 2nd and 3rd tie at 0.2
    assert tie.distance == 0.2 and tie.validation_coverage == pytest.approx(0.3)
    by_accuracy = choose_reject_distance(distances, correct, target_accuracy=6 / 7)
    assert by_accuracy.distance == 0.6 and by_accuracy.validation_accepted_accuracy == pytest.approx(6 / 7)
    assert choose_reject_distance(distances, correct, target_accuracy=1.0).distance == 0.4
    with pytest.raises(StylespaceError, match="exactly one"):
        choose_reject_distance(distances, correct)
    with pytest.raises(StylespaceError, match="no distance reaches"):
        choose_reject_distance(distances, ~correct, target_accuracy=0.9)


# --- retrieval ---------------------------------------------------------------------------------------


def brute_retrieval(Q, yq, R, yr, metric, ks, max_r=None, same_set=False):
    """Reference figures: the full distance matrix, sorted, and the definitions read literally."""
    distances = brute_distances(Q, R, metric)
    if same_set:
        np.fill_diagonal(distances, np.inf)
    p1, ap, rp, recall = [], [], [], {k: [] for k in ks}
    for i in range(len(Q)):
        order = np.argsort(distances[i], kind="stable")
        if same_set:
            order = order[order != i]
        rel = yr[order] == yq[i]
        r = int(rel.sum())
        if max_r:
            r = min(r, max_r)
        if r == 0:
            continue
        p1.append(rel[0])
        for k in ks:
            recall[k].append(rel[:k].any())
        rp.append(rel[:r].sum() / r)
        ap.append(sum(rel[:j + 1].sum() / (j + 1) for j in range(r) if rel[j]) / r)
    return np.mean(p1), {k: np.mean(v) for k, v in recall.items()}, np.mean(rp), np.mean(ap), len(p1)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("same_set", [True, False])
@pytest.mark.parametrize("dense", [False, True])
def test_retrieval_matches_brute_force(metric, same_set, dense, monkeypatch):
    if dense:  # every search scores whole rows instead of asking FAISS (the path for deep searches)
        monkeypatch.setattr("stylespace.evaluation.search.DENSE_MIN_K", 1)
    Q, yq = clustered(7, 12, dim=8, spread=1.3, seed=10)
    yq[:3] = "lonely"  # a class with few items; with same_set its R is 2
    R, yr = clustered(7, 9, dim=8, spread=1.3, seed=11)
    if same_set:
        R, yr = Q, yq
    ks = (1, 3, 10)
    for max_r, budget in ((None, 256.0), (4, 256.0), (None, 0.001)):  # the tiny budget forces one query per chunk
        m = retrieval_metrics(Q, yq, None if same_set else R, None if same_set else yr, ks=ks, metric=metric,
                              max_r=max_r, memory_budget_mb=budget)
        p1, recall, rp, ap, n = brute_retrieval(Q, yq, R, yr, metric, ks, max_r, same_set)
        assert m.n_scored == n
        assert m.precision_at_1 == pytest.approx(p1)
        assert m.recall_at_k == pytest.approx(recall)
        assert m.r_precision == pytest.approx(rp)
        assert m.map_at_r == pytest.approx(ap)
    if not same_set:
        assert m.n_without_match == 3  # "lonely" has no reference


def test_retrieval_matches_pytorch_metric_learning():
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

    X, y = clustered(6, 25, dim=12, spread=1.5, seed=12)
    codes = np.unique(y, return_inverse=True)[1]
    calculator = AccuracyCalculator(include=("precision_at_1", "r_precision", "mean_average_precision_at_r"),
                                    device=__import__("torch").device("cpu"))
    normalised = X / np.linalg.norm(X, axis=1, keepdims=True)
    theirs = calculator.get_accuracy(normalised, codes)  # queries = references, self excluded
    ours = retrieval_metrics(X, y, metric="cosine")
    assert ours.precision_at_1 == pytest.approx(theirs["precision_at_1"], abs=1e-6)
    assert ours.r_precision == pytest.approx(theirs["r_precision"], abs=1e-6)
    assert ours.map_at_r == pytest.approx(theirs["mean_average_precision_at_r"], abs=1e-6)


def test_retrieval_validates_input():
    X, y = clustered(2, 3, dim=4)
    with pytest.raises(StylespaceError, match="recall@10 needs at least 10 references"):
        retrieval_metrics(X, y, ks=(1, 10))
    with pytest.raises(StylespaceError, match="both reference_vectors and reference_labels"):
        retrieval_metrics(X, y, reference_vectors=X)
    with pytest.raises(StylespaceError, match="6 query vectors but 5 query labels"):
        retrieval_metrics(X, y[:5], ks=(1,))


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_dense_search_matches_faiss(metric, monkeypatch):
    X, _ = clustered(5, 40, dim=8, spread=1.0, seed=17)
    Q = X[:30] + 0.01
    exclude = np.r_[np.arange(15), np.full(15, -1)]
    search = ExactSearch(X, metric)
    expected = search.search(Q, 25, exclude=exclude), search.search(Q, 25)
    monkeypatch.setattr("stylespace.evaluation.search.DENSE_MIN_K", 1)
    monkeypatch.setattr("stylespace.evaluation.search.DENSE_BLOCK_BYTES", 7 * len(X) * 16)  # 7 rows per block
    for (distances, indices), (want_distances, want_indices) in zip(
            (search.search(Q, 25, exclude=exclude), search.search(Q, 25)), expected):
        assert (indices == want_indices).all()
        assert np.allclose(distances, want_distances, atol=1e-4)
    assert all(i not in row for i, row in zip(range(15), expected[0][1]))


def test_search_excludes_each_query_itself_even_among_duplicates():
    X = np.array([[1, 0], [1, 0], [0, 1], [0.9, 0.1]], dtype=np.float32)
    search = ExactSearch(X, "cosine")
    distances, indices = search.search(X, 2, exclude=np.arange(4))
    assert all(i not in row for i, row in enumerate(indices))
    assert set(indices[0]) == {1, 3} and set(indices[1]) == {0, 3}
    assert np.allclose(distances[0][0], 0.0, atol=1e-6)


# --- pairs -------------------------------------------------------------------------------------------


def test_pair_verification_matches_sklearn_and_cutoffs_are_right():
    rng = np.random.default_rng(13)
    positive = rng.random(2000) < 0.15
    distances = np.where(positive, rng.normal(0.6, 0.25, 2000), rng.normal(1.0, 0.25, 2000))
    v = verify_pairs(distances, positive)
    assert v.auc == pytest.approx(roc_auc_score(positive, -distances))
    assert v.n_pairs == 2000 and v.n_positive == int(positive.sum())

    def rates(cutoff):
        called = distances <= cutoff
        return called[positive].mean(), called[~positive].mean()

    candidates = np.r_[np.unique(distances), -np.inf]
    all_rates = np.array([rates(c) for c in candidates])
    tpr, fpr = rates(v.best_cutoff)
    assert (tpr, fpr) == pytest.approx((v.best_tpr, v.best_fpr))
    assert tpr - fpr == pytest.approx(np.max(all_rates[:, 0] - all_rates[:, 1]))
    assert [row.fpr_target for row in v.cutoffs] == [0.05, 0.10, 0.20]
    for row in v.cutoffs:
        tpr, fpr = rates(row.cutoff)
        assert (tpr, fpr) == pytest.approx((row.tpr, row.fpr))
        assert fpr <= row.fpr_target
        assert tpr == pytest.approx(all_rates[all_rates[:, 1] <= row.fpr_target, 0].max())  # no better cutoff
    assert v.curve_fpr[0] == 0.0 and v.curve_fpr[-1] == 1.0 and v.curve_tpr[-1] == 1.0
    assert np.all(np.diff(v.curve_tpr) >= 0)
    assert v.positive_mean_distance < v.negative_mean_distance


def test_pair_verification_rejects_one_sided_sets():
    with pytest.raises(StylespaceError, match="both positive and negative"):
        verify_pairs([0.1, 0.2], [1, 1])
    with pytest.raises(StylespaceError, match="FPR targets"):
        verify_pairs([0.1, 0.2], [1, 0], fpr_targets=(1.5,))


def test_label_pairs_all_or_uniform_sample():
    labels = ["a", "a", "b", "c", "c", "c"]
    first, second, same = label_pairs(labels, max_pairs=100)
    assert len(first) == 15 and (first < second).all()
    assert same.sum() == 1 + 3  # one a-a pair, three c-c pairs
    first, second, same = label_pairs(labels * 100, max_pairs=5000, seed=1)
    assert len(first) == 5000 and (first != second).all()
    assert same.mean() == pytest.approx((200 * 199 + 100 * 99 + 300 * 299) / (600 * 599), abs=0.02)
    assert np.allclose(pair_distances([[1, 0]], [[0, 2]], "euclidean"), [np.sqrt(5)])
    assert np.allclose(pair_distances([[1, 0]], [[0, 2]], "cosine"), [1.0])
    X, _ = clustered(3, 10, dim=5, seed=18)
    first, second, _ = label_pairs(np.arange(30).astype(str), max_pairs=200, seed=2)
    for metric in ("cosine", "euclidean"):
        assert np.allclose(indexed_pair_distances(X, first, second, metric, chunk=7),
                           pair_distances(X[first], X[second], metric))


# --- hierarchy ---------------------------------------------------------------------------------------


def test_hierarchy_scores_coarse_labels_without_refitting_the_space():
    fine = ["shirt", "tshirt", "jeans", "shorts", "watch", "ring"]
    mapping = {"shirt": "Topwear", "tshirt": "Topwear", "jeans": "Bottomwear", "shorts": "Bottomwear",
               "watch": "Accessories", "ring": "Accessories"}
    X, y = clustered(6, 20, spread=1.2, seed=14, names=fine)
    Q, yq = clustered(6, 10, spread=1.2, seed=15, names=fine)
    classifiers = [SupportSetClassifier("knn", k=3, metric="cosine"), SupportSetClassifier("prototype", metric="cosine")]
    result = evaluate_hierarchy(classifiers, X, y, Q, yq, mapping, "subCategory")
    assert result.n_fine_classes == 6 and result.n_coarse_classes == 3
    coarse_q = coarsen(yq, mapping)
    for classifier in classifiers:
        direct = SupportSetClassifier(**{**classifier.get_params()}).fit(X, coarsen(y, mapping)).predict(Q)
        assert result.results[classifier.name].accuracy == pytest.approx(np.mean(direct == coarse_q))
        via = coarsen(SupportSetClassifier(**classifier.get_params()).fit(X, y).predict(Q), mapping)
        assert result.via_fine[classifier.name]["accuracy"] == pytest.approx(np.mean(via == coarse_q))
        fine_accuracy = np.mean(SupportSetClassifier(**classifier.get_params()).fit(X, y).predict(Q) == yq)
        assert result.via_fine[classifier.name]["accuracy"] >= fine_accuracy  # coarser is never harder this way
    with pytest.raises(StylespaceError, match="no subCategory for label"):
        coarsen(["shirt", "hat"], mapping, "subCategory")


# --- the whole protocol on a generated split ---------------------------------------------------------


def synthetic_split(per_class: int = 16, seed: int = 16) -> tuple[SplitManifest, VectorTable]:
    """A 004-shaped manifest (6 main + 4 new classes) and vectors that cluster by class."""
    main = [f"main{i}" for i in range(6)]
    new = [f"new{i}" for i in range(4)]
    sub = {c: ("Topwear" if i % 2 else "Shoes") for i, c in enumerate(main + new)}
    master = {c: ("Apparel" if i % 2 else "Footwear") for i, c in enumerate(main + new)}
    X, y = clustered(10, per_class, spread=0.9, seed=seed, names=main + new)
    rows, ids = [], []
    for index, label in enumerate(y):
        position = index % per_class
        if label in main:
            group, split = "main", ("train" if position < per_class // 2 else "support" if position < 3 * per_class // 4 else "test")
        else:
            group, split = "new", ("support" if position < per_class // 2 else "test")
        ids.append(f"id{index}")
        rows.append({"id": ids[-1], "label": label, "group": group, "split": split,
                     "subCategory": sub[label], "masterCategory": master[label]})
    return SplitManifest(rows, SplitConfig(main_classes=main, new_classes=new)), VectorTable(ids, X)


def test_evaluate_runs_every_part_and_writes_json_and_markdown(tmp_path):
    manifest, table = synthetic_split()
    missing = VectorTable(table.ids[1:], table.vectors[1:])  # one item without a vector
    test_ids = manifest.select(split="test").ids
    pairs = ([test_ids[0], test_ids[1], "unknown-id"], [test_ids[2], test_ids[20], test_ids[3]], [1, 0, 1])
    main_test = manifest.select(group="main", split="test")
    report = evaluate(missing, manifest, EvaluationConfig(knn_k=(1, 3)), name="synthetic", model_id="abc123",
                      split_path="split.csv", pairs=pairs, pairs_source="pairs.csv",
                      head=(main_test.labels, main_test.labels[::-1]))
    assert [s.number for s in report.scenarios] == [1, 2, 3, 4]
    assert list(report.scenarios[0].results) == ["kNN k=1", "kNN k=3", "prototype"]
    assert report.scenarios[0].n_missing == 1  # id0 is a main train item
    # Scenario 2 by hand: kNN k=1 fitted on main support, scored on main test.
    support, query = manifest.scenario(2)
    X_s, y_s, _ = table.take(support.ids, support.labels)
    X_q, y_q, _ = table.take(query.ids, query.labels)
    by_hand = SupportSetClassifier("knn", 1, "cosine").fit(X_s, y_s).predict(X_q)
    assert report.scenarios[1].results["kNN k=1"].accuracy == pytest.approx(np.mean(by_hand == y_q))
    assert report.scenarios[2].n_query == 4 * 8 and report.scenarios[3].n_support == 6 * 4 + 4 * 8
    assert report.head.accuracy == pytest.approx(np.mean(np.array(main_test.labels) == main_test.labels[::-1]))
    assert set(report.retrieval) == {"test", "all"} and report.retrieval["all"].n_queries == len(table) - 1
    assert [h.level for h in report.hierarchy] == ["subCategory", "masterCategory"]
    assert report.pairs.n_pairs == 2 and "1 of 3 pairs left out" in " ".join(report.notes)
    assert len(report.open_set) == 3
    open_knn = report.open_set[0]
    assert open_knn.metrics.n_unknown == 4 * 8 and open_knn.threshold.validation_coverage >= 0.95
    assert open_knn.metrics.unknown_rejection_rate > 0.5  # the new blobs are far from every main support item

    path = report.save(tmp_path / "result.json")
    data = json.loads(path.read_text())
    assert data["model_id"] == "abc123" and data["split_sha256"] == manifest.sha256
    assert data["scenarios"][1]["results"]["kNN k=1"]["confusion"]
    [(name, headline)] = load_headlines(path)
    assert name == "synthetic" and headline["scenario 2 / kNN k=1 / accuracy"] == pytest.approx(
        report.scenarios[1].results["kNN k=1"].accuracy)
    markdown = report.to_markdown()
    for needle in ("| 1: main train -> main test |", "| test |", "| subCategory |", "AUC", "Task 1", "Open set"):
        assert needle in markdown
    table_md = compare_markdown([("a", headline), ("b", {**headline, "extra": 0.5})])
    assert table_md.splitlines()[0] == "| figure | a | b |" and "| extra | - | 50.0% |" in table_md


def test_evaluate_default_pairs_are_test_label_pairs():
    manifest, table = synthetic_split()
    report = evaluate(table, manifest, EvaluationConfig(knn_k=(1,), prototypes=False, retrieval_sets=("test",),
                                                        hierarchy_levels=(), open_set_coverage=0.0))
    n_test = len(manifest.scenario(4)[1])
    assert report.pairs.n_pairs == n_test * (n_test - 1) // 2 and "all pairs" in report.pairs_source
    assert report.pairs.auc > 0.9 and report.open_set == [] and report.hierarchy == []
    with pytest.raises(StylespaceError, match="retrieval_sets .*unknown 'everything'"):
        evaluate(table, manifest, EvaluationConfig(retrieval_sets=("everything",)))


# --- memory at catalog scale -------------------------------------------------------------------------

MEMORY_SCRIPT = textwrap.dedent("""
    import json, resource, time
    import numpy as np
    from stylespace.evaluation import retrieval_metrics
    rng = np.random.default_rng(0)
    n, dim, n_classes = 200_000, 128, 1_000
    vectors = rng.standard_normal((n, dim), dtype=np.float32)
    labels = np.repeat(np.arange(n_classes), n // n_classes).astype(str)
    started = time.perf_counter()
    m = retrieval_metrics(vectors, labels, ks=(1, 5, 10), metric="cosine")
    print(json.dumps({"seconds": time.perf_counter() - started, "n_scored": m.n_scored, "largest_r": m.largest_r,
                      "recall_at_10": m.recall_at_k[10], "map_at_r": m.map_at_r,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
""")


@pytest.mark.slow
def test_retrieval_on_200k_vectors_stays_under_2gb():
    done = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT], capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    print(figures)
    assert figures["n_scored"] == 200_000 and figures["largest_r"] == 199
    assert figures["recall_at_10"] == pytest.approx(10 * 199 / 199_999, rel=0.15)  # chance level on random data
    assert figures["peak_rss_mb"] < 2048


# --- the command ---------------------------------------------------------------------------------------


def run_cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stylespace", *map(str, args)], capture_output=True, text=True,
                          timeout=300)


@pytest.fixture
def model_split(tmp_path, cache_dir):
    """A synthetic Kaggle catalog, a 4 main / 2 new protocol split of it and an untrained compact model
    with a classifier head over the main classes."""
    from conftest import write_kaggle_catalog

    from stylespace.data import load_catalog, protocol_split
    from stylespace.models import ModelConfig, build_model, save_model

    catalog_dir = write_kaggle_catalog(tmp_path / "catalog", per_class=20)
    manifest = protocol_split(load_catalog(catalog_dir), n_main=4, n_new=2, main_fractions=(0.5, 0.25, 0.25))
    split = manifest.save(tmp_path / "split.csv")
    model = build_model(ModelConfig(backbone="compact", embedding_dim=16, width=8, classes=manifest.config.main_classes))
    return catalog_dir, split, save_model(model, tmp_path / "model"), manifest


def test_cli_evaluates_a_model_and_compares_with_embeddings(model_split, tmp_path):
    from stylespace.embeddings import Embeddings

    catalog_dir, split, model_dir, manifest = model_split
    result = tmp_path / "result.json"
    done = run_cli("evaluate", model_dir, "--split", split, "--knn", "1,3", "-o", result, "--json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert json.loads(result.read_text()) == doc
    assert doc["split_sha256"] == manifest.sha256 and len(doc["model_id"]) == 12
    assert [s["number"] for s in doc["scenarios"]] == [1, 2, 3, 4]
    assert doc["head"]["n"] == 4 * 5 and doc["pairs"]["n_pairs"] == 40 * 39 // 2
    assert set(doc["retrieval"]) == {"test", "all"} and doc["seconds"]["total"] > 0 and doc["peak_rss_mb"] > 0

    # The same vectors as an embeddings file, and the saved result, side by side with the model.
    model_vectors = run_cli("embed", model_dir, catalog_dir, "-o", tmp_path / "emb.npz", "--json")
    assert model_vectors.returncode == 0, model_vectors.stderr
    shuffled = Embeddings.load(tmp_path / "emb.npz")
    rng = np.random.default_rng(0)
    shuffled.vectors = rng.standard_normal(shuffled.vectors.shape).astype(np.float32)
    shuffled.save(tmp_path / "random.npz")
    done = run_cli("evaluate", tmp_path / "emb.npz", "--split", split, "--knn", "1", "--compare", tmp_path / "random.npz",
                   "--compare", result)
    assert done.returncode == 0, done.stderr
    assert "| figure | emb.npz | random.npz | model |" in done.stdout
    assert "| 2: main support -> main test |" in done.stdout and "Pair verification" in done.stdout
    row = next(line for line in done.stdout.splitlines() if line.startswith("| scenario 2 / kNN k=1 / accuracy |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == cells[3]  # the model and its own embeddings file score the same


def test_cli_reports_bad_input_in_one_line(tmp_path):
    manifest, _ = synthetic_split()
    split = manifest.save(tmp_path / "split.csv")
    done = run_cli("evaluate", tmp_path / "missing.npz", "--split", split, "--knn", "1,x")
    assert done.returncode == 2 and "--knn expects comma-separated integers" in done.stderr
    assert "Traceback" not in done.stderr
    done = run_cli("evaluate", tmp_path / "missing.npz", "--split", split)
    assert done.returncode == 2 and "embeddings file not found" in done.stderr and "Traceback" not in done.stderr
