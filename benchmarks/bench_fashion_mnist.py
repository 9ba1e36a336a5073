"""Fashion-MNIST on its official split (60,000 train / 10,000 test), against the public benchmark table.

    flock /tmp/stylespace-heavy.lock nice -n 5 env OMP_WAIT_POLICY=PASSIVE .venv/bin/python \\
        benchmarks/bench_fashion_mnist.py --out runs/fashion_mnist [--ce-epochs 30] [--metric-epochs 15] [--skip triplet,...]

(OMP_WAIT_POLICY=PASSIVE: on a shared 2-core machine, torch's spinning OpenMP threads otherwise burn most of their
CPU waiting for each other.)

One run, side by side, every figure on the official test set (never seen by training or model choice):

- ``ce``: the ``small`` preset (a compact ResNet with a stride-1 stem for 28 x 28 images) trained with
  cross-entropy: the classifier's test accuracy, and 1-NN on its embeddings (cosine; the 60,000 official
  training images as references);
- ``contrastive`` (seed 000: contrastive loss, margin 1, 1:20 similar:dissimilar pairs) and ``triplet``
  (seed 002: triplet hinge loss, gap 0.2, semi-hard triplets), the same network with no classifier: 1-NN on
  the embeddings the loss trained;
- hand-made descriptors: HOG (grey, 4 x 4 px cells) with 1-NN, and with a logistic regression;
- scikit-learn baselines from the public table (Xiao et al. 2017): logistic regression and 1-NN on the pixels.

The split is ``stylespace split DIR --by subset --val-fraction 0.05`` (the validation part, 3,000 of the training
images, picks the best epoch). Training times are wall seconds on this machine's CPU. A t-SNE map of the
test set's embeddings (the ``ce`` model) is written as ``tsne_test.png``; the table as ``results.md`` and
everything as ``results.json`` in ``--out``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np

DATA = Path("/usr/share/datasets/fashion-mnist")
# Xiao, Rasul and Vollgraf 2017, "Fashion-MNIST: a Novel Image Dataset for Benchmarking Machine Learning
# Algorithms" (scikit-learn benchmark on the official split, best setting of each classifier).
PUBLIC = {"LogisticRegression (pixels)": 0.842, "KNeighborsClassifier (pixels)": 0.860, "SVC (pixels)": 0.897}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def nn1_accuracy(references: np.ndarray, ref_labels: np.ndarray, queries: np.ndarray, query_labels: np.ndarray,
                 metric: str = "cosine") -> float:
    """Share of queries whose nearest reference (exact search) has their label."""
    from stylespace.evaluation import ExactSearch

    _, indices = ExactSearch(references, metric).search(queries, 1)
    return float((ref_labels[indices[:, 0]] == query_labels).mean())


def train_model(name: str, catalog_path: Path, split_path: Path, model_config, train_config, out: Path,
                reuse: bool = False) -> tuple:
    from stylespace.models import load_model
    from stylespace.training import train_run

    run_dir = out / name
    if reuse and (run_dir / "run.json").is_file():
        log(f"reusing {run_dir} (its training time is the one its run.json recorded)")
        return load_model(run_dir), json.loads((run_dir / "run.json").read_text())
    log(f"training {name}: {train_config.objective}, {train_config.epochs} epochs -> {run_dir}")
    model, result, record = train_run(catalog_path, split_path, model_config, train_config, run_dir, progress=False,
                                      log=lambda line: log(f"  {name}: {line}"))
    return model, record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--out", type=Path, default=Path("runs/fashion_mnist"))
    parser.add_argument("--ce-epochs", type=int, default=None, help="default: the small preset's")
    parser.add_argument("--ce-stem-stride", type=int, default=None, help="ce: compact stem stride (small preset: 1)")
    parser.add_argument("--ce-erase", type=float, default=None, help="ce: random-erasing probability (small preset: 0)")
    parser.add_argument("--metric-epochs", type=int, default=None, help="contrastive / triplet epochs (default: as ce)")
    parser.add_argument("--skip", default="", help="comma-separated parts to leave out: ce, contrastive, triplet, "
                                                   "hog, pixels, tsne")
    parser.add_argument("--reuse", action="store_true", help="score models already trained in --out (run.json "
                                                              "present) instead of training them again")
    parser.add_argument("--map-items", type=int, default=10_000, help="test items on the t-SNE map")
    args = parser.parse_args()
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}

    from stylespace.data import column_split, load_catalog, load_image_array
    from stylespace.embeddings import embed_images
    from stylespace.training import preset
    from stylespace.utils import override

    import torch
    from threadpoolctl import threadpool_limits

    args.out.mkdir(parents=True, exist_ok=True)
    catalog = load_catalog(args.data)
    manifest = column_split(catalog, "subset", val_fraction=0.05, seed=0)
    split_path = manifest.save(args.out / "split.csv")
    log(f"split {split_path}: {manifest.totals()} (sha256 {manifest.sha256[:12]})")
    array = load_image_array(catalog, size=(28, 28), progress=False)
    train_ids = [i.id for i in catalog.items if i.meta["subset"] == "train"]
    test_ids = [i.id for i in catalog.items if i.meta["subset"] == "test"]
    classes = sorted(set(catalog.labels))
    code = {c: k for k, c in enumerate(classes)}
    y_train = np.array([code[catalog[i].label] for i in train_ids])
    y_test = np.array([code[catalog[i].label] for i in test_ids])
    x_train, x_test = array.take(train_ids), array.take(test_ids)
    rows, results = [], {"split_sha256": manifest.sha256, "torch_threads": torch.get_num_threads(), "methods": {}}

    def record(name: str, classifier: float | None, nn1: float | None, seconds: float, note: str = "") -> None:
        results["methods"][name] = {"classifier_accuracy": classifier, "nn1_accuracy": nn1, "train_seconds": seconds,
                                    "note": note}
        pct = lambda v: "" if v is None else f"{100 * v:.2f} %"
        rows.append(f"| {name} | {pct(classifier)} | {pct(nn1)} | {seconds:,.0f} s | {note} |")
        log(f"{name}: classifier {pct(classifier) or '-'}, 1-NN {pct(nn1) or '-'}, {seconds:.0f} s")
        write_tables()

    def write_tables() -> None:
        header = "| method | test accuracy (classifier) | test accuracy (1-NN, cosine) | training time | note |\n" \
                 "| --- | ---: | ---: | ---: | --- |\n"
        (args.out / "results.md").write_text(header + "\n".join(rows) + "\n")
        (args.out / "results.json").write_text(json.dumps(results, indent=2))

    base_model, base_train = preset("small")
    ce_train = override(base_train, epochs=args.ce_epochs,
                        augmentation=override(base_train.augmentation, erase=args.ce_erase))
    ce_model = override(base_model, stem_stride=args.ce_stem_stride)
    metric_epochs = args.metric_epochs or ce_train.epochs
    metric_model = override(base_model, embed_layer="head")
    runs = {
        "ce": (ce_model, ce_train),
        # seed 000: contrastive loss on all positive pairs of a batch + 20 x as many negatives, margin 1
        "contrastive": (metric_model, override(base_train, objective="contrastive", epochs=metric_epochs,
                                               sampler="m_per_class", m_per_class=16,
                                               objective_config=override(base_train.objective_config, margin=1.0, pair_ratio=20.0))),
        # seed 002: triplet hinge loss with gap g, semi-hard triplets
        "triplet": (metric_model, override(base_train, objective="triplet", epochs=metric_epochs,
                                           sampler="m_per_class", m_per_class=16,
                                           objective_config=override(base_train.objective_config, gap=0.2, miner="semihard"))),
    }

    def evaluate_run(name: str) -> np.ndarray:
        """Train ``name``, score it on the test set, record its rows; returns its test embeddings."""
        model_config, train_config = runs[name]
        model, run_record = train_model(name, args.data, split_path, model_config, train_config, args.out, args.reuse)
        started = time.perf_counter()
        refs = embed_images(model, x_train, batch_size=1024, device="cpu")
        queries = embed_images(model, x_test, batch_size=1024, device="cpu")
        nn1 = nn1_accuracy(refs, y_train, queries, y_test)
        classifier = None
        if model.classifier is not None:
            predicted = []
            with torch.no_grad():
                for start in range(0, len(x_test), 1024):
                    batch = torch.from_numpy(x_test[start:start + 1024]).permute(0, 3, 1, 2).contiguous()
                    predicted.append(model.predict(batch).numpy())
            order = [code[c] for c in model.classes]  # model classes are the split's, sorted: the same codes
            classifier = float((np.array(order)[np.concatenate(predicted)] == y_test).mean())
        note = (f"best epoch {run_record['best_epoch']}/{run_record['epochs_run']}, val {100 * run_record['best_val_metric']:.2f} %, "
                f"embed + search {time.perf_counter() - started:.0f} s")
        record(f"{name} ({model_config.backbone} w{model_config.width}, stem {model_config.stem_stride}, "
               f"{model_config.embed_layer})", classifier, nn1, run_record["train_seconds"], note)
        if name == "ce":
            # the same weights searched on the 128-d head the cosine classifier reads (embed_layer "head")
            model.config = dataclasses.replace(model.config, embed_layer="head")
            head_nn1 = nn1_accuracy(embed_images(model, x_train, batch_size=1024, device="cpu"), y_train,
                                    embed_images(model, x_test, batch_size=1024, device="cpu"), y_test)
            record(f"ce, same weights, 1-NN on the {model.config.embedding_dim}-d head", None, head_nn1,
                   run_record["train_seconds"], "")
        return queries

    # the cheap baselines and the map come before the metric trainings, so a run cut short still has them
    ce_vectors = evaluate_run("ce") if "ce" not in skip else None

    if "hog" not in skip:
        from sklearn.linear_model import LogisticRegression

        from stylespace.descriptors.hog import HogConfig, HogDescriptor

        started = time.perf_counter()
        hog = HogDescriptor(HogConfig(pixels_per_cell=(4, 4), cells_per_block=(2, 2), colour=False), image_size=(28, 28))
        h_train, h_test = hog.describe(x_train), hog.describe(x_test)
        describe_seconds = time.perf_counter() - started
        record(f"HOG ({hog.dim}-d, 4 x 4 px cells) + 1-NN", None, nn1_accuracy(h_train, y_train, h_test, y_test),
               describe_seconds, f"seconds: describing {len(h_train) + len(h_test):,} images")
        started = time.perf_counter()
        with threadpool_limits(1):  # BLAS threads spin against each other on a shared 2-core machine
            clf = LogisticRegression(C=1.0, max_iter=300).fit(h_train, y_train)
        record("HOG + logistic regression (scikit-learn)", float((clf.predict(h_test) == y_test).mean()), None,
               describe_seconds + time.perf_counter() - started, "C = 1, lbfgs")

    if "pixels" not in skip:
        from sklearn.linear_model import LogisticRegression

        p_train = x_train[..., 0].reshape(len(x_train), -1).astype(np.float32) / 255.0
        p_test = x_test[..., 0].reshape(len(x_test), -1).astype(np.float32) / 255.0
        started = time.perf_counter()
        with threadpool_limits(1):
            clf = LogisticRegression(C=1.0, max_iter=300).fit(p_train, y_train)
        record("LogisticRegression on pixels (scikit-learn)", float((clf.predict(p_test) == y_test).mean()), None,
               time.perf_counter() - started, f"public table: {100 * PUBLIC['LogisticRegression (pixels)']:.1f} %")
        started = time.perf_counter()
        record("1-NN on pixels (euclidean)", None, nn1_accuracy(p_train, y_train, p_test, y_test, metric="euclidean"),
               time.perf_counter() - started,
               f"public table, KNeighborsClassifier best: about {100 * PUBLIC['KNeighborsClassifier (pixels)']:.0f} %")

    if "tsne" not in skip and ce_vectors is not None:
        from stylespace.report.analysis import sample_indices
        from stylespace.report.figures import scatter_map, to_png
        from stylespace.report.maps import MapConfig, Projector2D, knn_class_overlap

        started = time.perf_counter()
        names = np.array(classes, dtype=object)[y_test]
        pick = sample_indices(len(y_test), args.map_items, seed=0, labels=list(names))
        projector = Projector2D("tsne", MapConfig(seed=0))
        points = projector.fit_transform(ce_vectors[pick])
        overlap = knn_class_overlap(points, list(names[pick]), classes)
        figure = scatter_map(points, list(names[pick]), classes,
                             f"Fashion-MNIST test set ({len(pick):,} items): t-SNE of the ce model's embeddings",
                             "t-SNE")
        (args.out / "tsne_test.png").write_bytes(to_png(figure, dpi=90))
        results["tsne"] = {"items": int(len(pick)), "seconds": round(time.perf_counter() - started, 1),
                           "used": projector.used, "knn_class_overlap": np.asarray(overlap).round(4).tolist()}
        log(f"t-SNE of {len(pick):,} test items in {time.perf_counter() - started:.0f} s -> {args.out / 'tsne_test.png'}")
        write_tables()
    for name in ("contrastive", "triplet"):
        if name not in skip:
            evaluate_run(name)
    print((args.out / "results.md").read_text())


if __name__ == "__main__":
    main()
