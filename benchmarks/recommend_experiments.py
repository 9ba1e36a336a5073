"""The experiments behind docs/benchmarks.md's "tried and left out" lines for selective recommendation, on
scenario 4 of 004's protocol split (seed 0): what the errors are, the model's own classifier as confidence, a
flipped second view, a gradient-boosted combiner, CSLS hubness correction, and whitening on 44k retrieval.

    .venv/bin/python benchmarks/recommend_experiments.py --model models/default

Everything here is numpy/FAISS over the model's pooled features (what the shipped model embeds with); the
product's own code paths are measured by bench_recommend.py and bench_search.py. Prints Markdown.
"""
from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CATALOG = ROOT.parent / "shared" / "datasets" / "fashion-product-images-small.zip"


def features(model, pixels: np.ndarray, flip: bool = False):
    """(features (N, F), logits (N, C)) of uint8 images (N, H, W, 3)."""
    import torch

    feats, logits = [], []
    with torch.no_grad():
        for start in range(0, len(pixels), 512):
            x = torch.from_numpy(np.ascontiguousarray(pixels[start:start + 512])).permute(0, 3, 1, 2)
            x = x.flip(-1) if flip else x
            f = model.features(x)
            feats.append(f.numpy())
            logits.append(model.classify(model.head(f)).numpy())
    return np.concatenate(feats), np.concatenate(logits)


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def whiten(fit: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """The index's whitening (stylespace.index.structures), fitted on ``fit`` and applied to every array."""
    from stylespace.index import structures
    from stylespace.index.config import IndexConfig

    config = IndexConfig(model_id="experiment", dim=fit.shape[1], whiten=True)
    structure = structures.new_structure(config, fit)
    return [structures.search_space(structure, a) for a in (fit, *others)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--catalog", type=Path, default=DEFAULT_CATALOG)
    args = parser.parse_args()

    import torch
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from stylespace.data import load_catalog, load_image_array, protocol_split
    from stylespace.models import load_model
    from stylespace.recommend import risk_coverage

    torch.set_num_threads(2)
    model = load_model(args.model).eval()
    catalog = load_catalog(args.catalog)
    support, query = protocol_split(catalog).scenario(4)
    array = load_image_array(catalog, size=tuple(model.config.input_size), progress=False)
    s_px, q_px = array.take(support.ids), array.take(query.ids)
    s_feat, s_logit = features(model, s_px)
    q_feat, q_logit = features(model, q_px)
    sl, ql = np.array(support.labels), np.array(query.labels)

    def top3(S, Q):
        sim = Q @ S.T
        order = np.argsort(-sim, axis=1)[:, :10]
        return order, np.take_along_axis(sim, order, axis=1), (sl[order[:, :3]] == ql[:, None]).any(axis=1)

    def row(name, confidence, correct):
        curve = risk_coverage(confidence, correct)
        print(f"| {name} | {100 * correct.mean():.1f} % | {curve.aurc:.4f} | {100 * curve.coverage_at_error(0.05):.1f} % |")

    print(f"## Recommendation experiments, scenario 4 ({len(support):,} catalog items, {len(query):,} queries)\n")
    print("| confidence / variant | top-3 correct | AURC | coverage at <= 5 % error |")
    print("| --- | ---: | ---: | ---: |")
    plain_s, plain_q = unit(s_feat), unit(q_feat)
    order, top, correct = top3(plain_s, plain_q)
    row("plain index, top-1 similarity", top[:, 0], correct)
    probs_q = np.exp(q_logit - q_logit.max(1, keepdims=True))
    probs_q /= probs_q.sum(1, keepdims=True)
    row("plain index, classifier max softmax", probs_q.max(1), correct)
    predicted_s, predicted_q = s_logit.argmax(1), q_logit.argmax(1)
    row("plain index, predicted-class agreement of the 10 items", (predicted_s[order] == predicted_q[:, None]).mean(1),
        correct)
    parts = np.column_stack([top[:, 0], top[:, :3].mean(1), top.mean(1), top[:, 0] - top[:, 9]])
    folds = StratifiedKFold(5, shuffle=True, random_state=0)
    logistic = cross_val_predict(make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)), parts, correct,
                                 cv=folds, method="decision_function")
    row("plain index, logistic regression over similarities (cross-fitted)", logistic, correct)
    boosted = cross_val_predict(HistGradientBoostingClassifier(max_iter=200, learning_rate=0.05), parts, correct,
                                cv=folds, method="predict_proba")[:, 1]
    row("plain index, gradient boosting over similarities (cross-fitted)", boosted, correct)
    s_flip, _ = features(model, s_px, flip=True)
    q_flip, _ = features(model, q_px, flip=True)
    _, top_f, correct_f = top3(unit(unit(s_feat) + unit(s_flip)), unit(unit(q_feat) + unit(q_flip)))
    row("plain index, image + its mirror image averaged", top_f[:, 0], correct_f)
    white_s, white_q = whiten(plain_s, plain_q)
    order_w, top_w, correct_w = top3(white_s, white_q)
    row("whitened index, top-1 similarity", top_w[:, 0], correct_w)
    own = white_s @ white_s.T
    np.fill_diagonal(own, -np.inf)
    for k in (5, 10, 20):
        radius = np.sort(own, axis=1)[:, -k:].mean(1)  # CSLS: an item's mean similarity to its k nearest items
        sim = white_q @ white_s.T - radius[None, :] / 2
        order_c = np.argsort(-sim, axis=1)[:, :3]
        correct_c = (sl[order_c] == ql[:, None]).any(axis=1)
        row(f"whitened index + CSLS (k={k}), top-1 similarity", np.take_along_axis(white_q @ white_s.T, order_c[:, :1], 1)[:, 0],
            correct_c)

    print("\n### Where the whitened index's top-3 is wrong (most frequent query classes)\n")
    totals = collections.Counter(ql)
    wrong = collections.Counter(ql[~correct_w])
    groups = dict(zip(query.labels, query.column("group")))
    print("| query class | wrong / queries | group |")
    print("| --- | ---: | --- |")
    for label, n in wrong.most_common(8):
        print(f"| {label} | {n} / {totals[label]} | {groups[label]} |")
    pairs = collections.Counter(zip(ql[~correct_w], sl[order_w[~correct_w, 0]]))
    print("\nmost frequent (query class, nearest item's class) among the errors: "
          + ", ".join(f"{a} -> {b} ({n})" for (a, b), n in pairs.most_common(6)))

    print("\n### Whitening on retrieval over the whole catalog\n")
    all_feat, _ = features(model, np.asarray(array.pixels))
    labels = np.array([catalog[i].label for i in array.ids], dtype=object)
    test_ids = set(protocol_split(catalog).select(split="test").ids)
    rows = np.array([i for i, item in enumerate(array.ids) if item in test_ids])
    rows = np.random.default_rng(0).choice(rows, min(3000, len(rows)), replace=False)
    plain = unit(all_feat)
    (white,) = whiten(plain)
    for name, vectors in (("plain", plain), ("whitened", white)):
        sim = vectors[rows] @ vectors.T
        sim[np.arange(len(rows)), rows] = -np.inf
        nearest = sim.argmax(axis=1)
        print(f"- {name}: P@1 {100 * (labels[nearest] == labels[rows]).mean():.1f} % "
              f"({len(rows):,} test items against all {len(vectors):,} others)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
