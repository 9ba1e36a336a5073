"""Selective top-3 recommendation on scenario 4 of seed 004 (catalog = main + new support, queries =
main + new test): every confidence score's AURC and its coverage at <= 5 % error.

    .venv/bin/python benchmarks/bench_recommend.py --model runs/default --plot risk_coverage.png
    .venv/bin/python benchmarks/bench_recommend.py --model runs/default --split split.csv

Targets (issue 5): coverage >= 80 % at <= 5 % error (a plain CNN with top-1 similarity: about 52 %),
AURC <= 0.02. Prints Markdown tables.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CATALOG = ROOT.parent / "shared" / "datasets" / "fashion-product-images-small.zip"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="trained model folder (model.safetensors + model.json)")
    parser.add_argument("--untrained", action="store_true", help="no model at hand: run the pipeline with an "
                                                                 "untrained compact model (figures meaningless)")
    parser.add_argument("--catalog", type=Path, default=DEFAULT_CATALOG)
    parser.add_argument("--split", type=Path, help="split manifest (default: 004's protocol split, seed 0)")
    parser.add_argument("--target-error", type=float, default=0.05)
    parser.add_argument("--plot", type=Path, help="write the error rate (%%) vs coverage (%%) plot here")
    parser.add_argument("--save-index", type=Path, help="keep the calibrated scenario-4 index in this folder")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--search-dims", type=int, default=0,
                        help="search the top N whitened dimensions of the support index (0 = all, the default)")
    args = parser.parse_args()
    if args.model is None and not args.untrained:
        parser.error("give --model MODEL_DIR (a trained model), or --untrained to exercise the pipeline")

    import torch

    from stylespace.data import SplitManifest, load_catalog, protocol_split
    from stylespace.index.build import build_index, embed_items
    from stylespace.models import ModelConfig, build_model, load_model
    from stylespace.recommend import calibrate, correct_recommendations

    if args.model is not None:
        model, model_name = load_model(args.model).eval(), str(args.model)
    else:
        torch.manual_seed(0)
        model, model_name = build_model(ModelConfig()).eval(), "untrained compact model"
    if args.split:
        manifest = SplitManifest.load(args.split)
        catalog = load_catalog(manifest.config.catalog or args.catalog)
    else:
        catalog = load_catalog(args.catalog)
        manifest = protocol_split(catalog)
    support, query = manifest.scenario(4)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.save_index or Path(tmp) / "scenario4"
        index, _ = build_index(model, catalog, folder, ids=support.ids, labels=dict(zip(support.ids, support.labels)),
                               model_path=args.model or "", overwrite=True, batch_size=args.batch_size,
                               search_dims=args.search_dims)
        embeddings, failed = embed_items(model, catalog, query.ids, batch_size=args.batch_size)
        labels = dict(zip(query.ids, query.labels))
        group = dict(zip(query.ids, query.column("group")))
        query_labels = [labels[i] for i in embeddings.ids]
        calibration = calibrate(index, embeddings, query_labels, target_error=args.target_error,
                                queries=f"scenario 4 queries ({len(embeddings):,})")
        seconds = time.perf_counter() - started
        chosen = calibration.curves[calibration.chosen]
        if args.save_index and calibration.point.reached:
            calibration.save(index)
        if args.plot:
            calibration.plot(args.plot)
        # held out: calibrate on one half of the queries, recommend to the other half with what was saved
        rng = np.random.default_rng(0)
        halves = np.array_split(rng.permutation(len(embeddings)), 2)
        held_out = []
        for fit_rows, test_rows in (halves, halves[::-1]):
            fit_ids = [embeddings.ids[i] for i in fit_rows]
            test_ids = [embeddings.ids[i] for i in test_rows]
            half = calibrate(index, embeddings.subset(fit_ids), [labels[i] for i in fit_ids],
                             target_error=args.target_error)
            recommender = half.recommender(index)
            test = embeddings.subset(test_ids)
            context = recommender.context(test)
            correct = correct_recommendations(index, context.neighbours.keys[:, :3], [labels[i] for i in test_ids])
            threshold = half.point.threshold if half.point.threshold is not None else np.inf
            shown = recommender.confidence(context) >= threshold
            held_out.append((half.chosen, correct, shown, np.array([group[i] for i in test_ids])))

    target = args.target_error
    print(f"## Selective top-3 recommendation, scenario 4\n\nmodel: {model_name}; catalog: {len(support):,} items "
          f"(main + new support); queries: {len(embeddings):,} (main + new test); {seconds:.0f} s; "
          f"load average {os.getloadavg()[0]:.1f}\n")
    print(f"top-3 correct when every recommendation is shown: {100 * calibration.accuracy:.1f} %\n")
    print(f"| score | AURC | coverage at <= {100 * target:g} % error | threshold |")
    print("| --- | ---: | ---: | ---: |")
    for row in calibration.table():
        mark = " (chosen)" if row["score"] == calibration.chosen else ""
        threshold = "-" if row["threshold"] is None else f"{row['threshold']:.4f}"
        print(f"| {row['score']}{mark} | {row['aurc']:.4f} | {100 * row['coverage']:.1f} % | {threshold} |")
    print()
    print(f"Held out: the queries split in two halves at random; each half calibrated (score and threshold for "
          f"<= {100 * target:g} % error) and the other half recommended to with what it saved "
          f"(chosen: {', '.join(h[0] for h in held_out)}).\n")
    print("| queries | shown | error among shown |")
    print("| --- | ---: | ---: |")
    correct = np.concatenate([h[1] for h in held_out])
    shown = np.concatenate([h[2] for h in held_out])
    groups = np.concatenate([h[3] for h in held_out])
    for name in ("main", "new", None):
        rows = np.ones(len(groups), bool) if name is None else groups == name
        if rows.any():
            picked = rows & shown
            error = f"{100 * (~correct[picked]).mean():.1f} %" if picked.any() else "-"
            print(f"| {name + ' test' if name else 'all'} | {100 * picked.sum() / rows.sum():.1f} % | {error} |")
    print()
    coverage, aurc = calibration.point.coverage, chosen.aurc
    print(f"- coverage at <= {100 * target:g} % error: {100 * coverage:.1f} % (target >= 80 %: "
          f"{'met' if coverage >= 0.8 else 'not met'}); top-1 similarity alone: "
          f"{100 * calibration.curves['top1'].coverage_at_error(target):.1f} %")
    print(f"- AURC of the chosen score ({calibration.chosen}): {aurc:.4f} (target <= 0.02: "
          f"{'met' if aurc <= 0.02 else 'not met'})")
    if failed:
        print(f"- {len(failed)} query images could not be decoded and were left out")
    if args.plot:
        print(f"- plot: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
