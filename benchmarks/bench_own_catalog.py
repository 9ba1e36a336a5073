"""Your own catalog: a 1,000-photo folder tree of 55 article types, and 1-NN train -> test of three models on it.

    flock /tmp/stylespace-heavy.lock nice -n 5 .venv/bin/python benchmarks/bench_own_catalog.py \
        [--tree runs/own_catalog/tree] [--work runs/own_catalog] [--skip-scratch]

The tree is what a shop would bring: one folder per article type, square 224 x 224 JPEG photos (each of the
shared catalog's 60 x 80 packshots padded on white to a square, then resized), class sizes with a long tail
(proportional to the square root of the class's size in the shared catalog, 6 at least). The 55 classes are
the shared catalog's 55 most frequent article types: 39 the shipped model was trained on and 16 it never saw.
The photos are never ones the shipped model trained on: for its 39 classes only the items of the protocol
split's main support and main test parts (the split the model's run.json names by sha256) are used.

The table, in one run, on one stratified split of the tree (train 0.7 / val 0.1 / test 0.2, seed 0):
- from scratch: `stylespace train TREE --split SPLIT --preset cpu` (a new network, the 5-minute recipe);
- shipped as is: models/default, not trained on the tree;
- fine-tuned: `stylespace train TREE --split SPLIT --init default` (the preset that picks: finetune-frozen for
  the shipped EfficientNet-Lite0 model, finetune for a compact one).
Each model's figure is `stylespace evaluate`'s scenario 1 (train -> test) kNN k=1 accuracy; training wall
time is the run's own train_seconds.
"""
from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CATALOG = ROOT.parent / "shared" / "datasets" / "fashion-product-images-small.zip"
TOTAL, CLASSES, MIN_SIZE, PHOTO = 1000, 55, 6, 224


def class_sizes(available: dict[str, int], frequency: dict[str, int], total: int) -> dict[str, int]:
    """~``total`` photos over the classes, proportional to sqrt(catalog frequency), at least MIN_SIZE each,
    never more than a class has available."""
    weights = {c: np.sqrt(frequency[c]) for c in available}
    scale = total / sum(weights.values())
    for _ in range(50):  # rescale until the clipped sizes add up
        sizes = {c: int(min(available[c], max(MIN_SIZE, round(scale * w)))) for c, w in weights.items()}
        gap = total - sum(sizes.values())
        if gap == 0:
            break
        scale *= 1 + gap / total
    return sizes


def build_tree(catalog_path: Path, tree: Path, seed: int = 0) -> dict:
    """Write the folder tree (skipped when it is there already); returns its description."""
    from stylespace.data import load_catalog, protocol_split

    done = tree / "tree.json"
    if done.is_file():
        return json.loads(done.read_text())
    catalog = load_catalog(catalog_path)
    split = protocol_split(catalog)
    shipped_split = json.loads((ROOT / "models" / "default" / "run.json").read_text())["split_sha256"]
    if split.sha256 != shipped_split:
        raise SystemExit("the protocol split does not match the one models/default was trained on; "
                         "cannot tell its training items apart")
    trained_on = set(split.select(group="main", split="train").ids)
    frequency = collections.Counter(label for label in catalog.labels if label)
    classes = [c for c, _ in sorted(frequency.items(), key=lambda kv: (-kv[1], kv[0]))[:CLASSES]]
    pool = {c: [i for i, label in zip(catalog.ids, catalog.labels) if label == c and i not in trained_on]
            for c in classes}
    sizes = class_sizes({c: len(v) for c, v in pool.items()}, frequency, TOTAL)
    rng = np.random.default_rng(seed)
    from PIL import Image

    for c in classes:
        folder = tree / c.replace("/", "-")
        folder.mkdir(parents=True, exist_ok=True)
        for item_id in rng.choice(pool[c], size=sizes[c], replace=False):
            image = catalog.read_image(catalog[item_id])
            side = max(image.size)
            square = Image.new("RGB", (side, side), (255, 255, 255))
            square.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
            square.resize((PHOTO, PHOTO), Image.LANCZOS).save(folder / f"{item_id}.jpg", quality=90)
    info = {"photos": sum(sizes.values()), "classes": len(classes), "seen_by_shipped_model": classes[:39],
            "new_to_shipped_model": classes[39:], "sizes": sizes, "photo": f"{PHOTO}x{PHOTO} JPEG q90",
            "source": str(catalog_path)}
    done.write_text(json.dumps(info, indent=1))
    return info


def one_nn(model_dir: Path, tree: Path, split: Path) -> dict:
    """`stylespace evaluate`'s scenario 1 (train -> test) kNN k=1 figures for one model."""
    from stylespace.data import SplitManifest, load_catalog
    from stylespace.embeddings import embed_catalog
    from stylespace.evaluation import EvaluationConfig, VectorTable, evaluate
    from stylespace.models import load_model

    embeddings = embed_catalog(load_model(model_dir), load_catalog(tree), progress=False)
    report = evaluate(VectorTable(embeddings.ids, embeddings.vectors), SplitManifest.load(split),
                      EvaluationConfig(knn_k=(1,), prototypes=False, retrieval_sets=(), hierarchy_levels=(),
                                       open_set_coverage=0.0), model_id=embeddings.model_id)
    known = next(s for s in report.scenarios if s.number == 1)
    metrics = known.results["kNN k=1"]
    return {"model_id": report.model_id, "accuracy": metrics.accuracy, "balanced_accuracy": metrics.balanced_accuracy,
            "queries": known.n_query, "support": known.n_support}


def train(tree: Path, split: Path, out: Path, **options) -> dict:
    """Run `stylespace train` (the library call behind it) into ``out``; returns run.json."""
    from stylespace.training import preset, train_run
    from stylespace.utils import override

    if (out / "run.json").is_file():
        cpu = json.loads((out / "cpu_seconds.json").read_text()) if (out / "cpu_seconds.json").is_file() else {}
        return {**json.loads((out / "run.json").read_text()), "cpu_seconds": cpu.get("cpu_seconds")}
    init = options.pop("init", "")
    model_config, train_config = preset(options.pop("preset"))
    train_config = override(train_config, init=init, **options).validate()
    cpu = time.process_time()
    train_run(tree, split, None if init else model_config, train_config, out, progress=False,
              log=lambda line: print("   ", line, flush=True))
    record = json.loads((out / "run.json").read_text())
    # the VM is shared: CPU seconds over the run's threads tell the uncontended wall time too
    record["cpu_seconds"] = round(time.process_time() - cpu, 1)
    (out / "cpu_seconds.json").write_text(json.dumps({"cpu_seconds": record["cpu_seconds"],
                                                      "threads": record["cpu_threads"]}))
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--catalog", type=Path, default=DEFAULT_CATALOG)
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "own_catalog")
    parser.add_argument("--tree", type=Path, default=None, help="default: WORK/tree")
    parser.add_argument("--skip-scratch", action="store_true")
    parser.add_argument("--finetune", default="{}", help="JSON of TrainConfig overrides for the fine-tuned run")
    parser.add_argument("--name", default="finetuned", help="run folder name of the fine-tuned run")
    args = parser.parse_args()

    from stylespace.data import load_catalog, stratified_split

    tree = args.tree or args.work / "tree"
    began = time.perf_counter()
    info = build_tree(args.catalog, tree)
    print(f"tree {tree}: {info['photos']} photos, {info['classes']} classes ({time.perf_counter() - began:.0f} s)")
    split = args.work / "split.csv"
    if not split.is_file():
        stratified_split(load_catalog(tree), {"train": 0.7, "val": 0.1, "test": 0.2}, seed=0).save(split)
    rows = []
    if not args.skip_scratch:
        run = train(tree, split, args.work / "scratch", preset="cpu")
        rows.append(("from scratch (`--preset cpu`)", args.work / "scratch", run["train_seconds"], run["cpu_seconds"]))
    rows.append(("shipped as is (models/default)", ROOT / "models" / "default", None, None))
    from stylespace.training.presets import finetune_preset

    # the preset `stylespace train --init default` picks (finetune-frozen for a model on a pre-trained backbone)
    run = train(tree, split, args.work / args.name, preset=finetune_preset("default"), init="default",
                **json.loads(args.finetune))
    rows.append((f"fine-tuned (`--init default`{', ' + args.finetune if args.finetune != '{}' else ''})",
                 args.work / args.name, run["train_seconds"], run["cpu_seconds"]))
    table = []
    print("| model | 1-NN train -> test | balanced | training wall | training CPU | model id |")
    for name, folder, seconds, cpu in rows:
        figures = one_nn(folder, tree, split)
        table.append({"model": name, "folder": str(folder), "train_seconds": seconds, "cpu_seconds": cpu, **figures})
        print(f"| {name} | {100 * figures['accuracy']:.1f} % | {100 * figures['balanced_accuracy']:.1f} % | "
              f"{'-' if seconds is None else f'{seconds:.0f} s'} | {'-' if cpu is None else f'{cpu:.0f} s'} | "
              f"{figures['model_id']} |", flush=True)
    (args.work / f"table-{args.name}.json").write_text(json.dumps(table, indent=1))


if __name__ == "__main__":
    main()
