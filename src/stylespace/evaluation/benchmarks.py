"""Published protocols run exactly, our figure beside the published ones: what `stylespace bench NAME` runs.

- ``fashion-mnist``: the official 60,000 / 10,000 split; trains the ``small`` preset (or scores a given
  model): its classifier's test accuracy and 1-NN on its embedding (the training images as references).
- ``year-split``: Fashion Product Images, the 20 most frequent article types, even years train, odd years
  test, top-1 and top-5: a logistic regression on the model's embeddings of the even-year items (its strength
  chosen on their validation part), and with ``train`` a model trained on the even years only (its own
  classifier too).
- ``episodes``: 5-way 1-shot, 5-way 5-shot and 15-way 5-shot episodes over the 004 split's new article types
  (which the model never trained on), prototypes by cosine, mean and 95 % interval.

Nothing is chosen on a test part: epochs and the probe's strength are chosen on validation parts of the
training data, and test vectors are made after every choice. Each run writes its split, its trained model
(if any) and ``result.json`` into its folder.

>>> result = run_benchmark(BenchConfig("episodes", model="default"))
>>> print(result.to_markdown())
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from stylespace.data import (YEAR_PARITY_MAP, Catalog, ImageArray, SplitManifest, column_split, load_catalog,
                             load_image_array, protocol_split, top_classes, year_split)
from stylespace.data.splits import map_column_value
from stylespace.embeddings import class_scores, embed_images
from stylespace.evaluation.episodes import EpisodeConfig, evaluate_episodes
from stylespace.evaluation.probe import LinearProbe, top_k_accuracy
from stylespace.evaluation.published import BENCHMARKS, BenchResult, BenchRow, benchmark
from stylespace.evaluation.search import ExactSearch
from stylespace.utils import StylespaceError, at_least, in_range, one_of, validate, write_json

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
SHARED_CATALOG = Path("../shared/datasets/fashion-product-images-small.zip")
RESULT_FILE = "result.json"
CONFIG_FILE = "bench.json"
EPISODE_SETTINGS = {"5w1s": (5, 1), "5w5s": (5, 5), "15w5s": (15, 5)}  # metric key -> (ways, shots)
EMBED_CHUNK = 4096  # images taken from the cache at once: memory stays bounded whatever the catalog
MAX_EPISODES, MAX_QUERIES = 100_000, 100  # bounds on what one run may be asked to compute


@dataclasses.dataclass
class BenchConfig:
    """Settings of one benchmark run (saved as ``bench.json`` in its folder).

    Attributes:
        name: ``fashion-mnist``, ``year-split`` or ``episodes``.
        data: the catalog (default: Debian's Fashion-MNIST folder, or the shared Fashion Product Images zip).
        model: a model folder or shipped name to measure. Default: ``fashion-mnist`` trains the ``small``
            preset; ``year-split`` and ``episodes`` measure the shipped ``default`` model.
        train: ``year-split``: train a model on the even years only (``preset``) instead of taking ``model``.
        preset: the training preset (``fashion-mnist``: ``small``; ``year-split --train``: ``default``).
        epochs: the preset's epochs changed (a deviation from the preset, recorded beside the result).
        out: the run folder (split, trained model, ``result.json``); default ``runs/bench/NAME``.
        split: ``episodes``: the 004 split manifest whose ``new`` article types the episodes use (default:
            made from the catalog as `stylespace split` makes it).
        classes: ``year-split``: how many of the most frequent article types (published: 20).
        episodes / queries: ``episodes``: episodes per setting and queries per class (published: 1,000 and 1).
        seed: the seed of the split's validation part and of the episodes.
    """

    name: str
    data: str | None = None
    model: str | None = None
    train: bool = False
    preset: str | None = None
    epochs: int | None = None
    out: str | None = None
    split: str | None = None
    classes: int = 20
    episodes: int = 1000
    queries: int = 1
    seed: int = 0
    batch_size: int = 256
    device: str = "auto"

    def __post_init__(self) -> None:
        validate([
            one_of("benchmark", self.name, BENCHMARKS),
            at_least("epochs", self.epochs, 1, none_ok=True),
            at_least("classes", self.classes, 2),
            in_range("episodes", self.episodes, 1, MAX_EPISODES, integer=True),
            in_range("queries", self.queries, 1, MAX_QUERIES, integer=True),
            at_least("seed", self.seed, 0),
            at_least("batch_size", self.batch_size, 1),
            (not (self.train and self.model), "train and model are two ways to get the model: give one"),
            (not self.train or self.name == "year-split",
             "train belongs to year-split (fashion-mnist trains unless a model is given; episodes measure a "
             "model trained elsewhere)"),
            (self.split is None or self.name == "episodes", "split belongs to episodes"),
            (self.preset is None and self.epochs is None or self.name == "fashion-mnist" and not self.model
             or self.train, "preset and epochs are for a model trained here: fashion-mnist without a model, "
                            "or year-split with train"),
        ], owner="bench")

    @property
    def folder(self) -> Path:
        return Path(self.out) if self.out else Path("runs") / "bench" / self.name


def run_benchmark(config: BenchConfig, progress: bool = False,
                  log: Callable[[str], None] = lambda message: None) -> BenchResult:
    """Run ``config.name``'s protocol; writes ``bench.json`` and ``result.json`` into ``config.folder``."""
    started = time.perf_counter()
    folder = config.folder
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / CONFIG_FILE, dataclasses.asdict(config))
    runner = {"fashion-mnist": _fashion_mnist, "year-split": _year_split, "episodes": _episodes}[config.name]
    result = runner(config, folder, progress, log)
    result.seconds = time.perf_counter() - started
    write_json(folder / RESULT_FILE, result.to_dict())
    return result


# --- fashion-mnist --------------------------------------------------------------------------------------


def _fashion_mnist(config: BenchConfig, folder: Path, progress: bool, log) -> BenchResult:
    data, catalog = _catalog(config.data, FASHION_MNIST_DIR, "Fashion-MNIST's IDX files (`apt-get install -y "
                             "dataset-fashion-mnist` puts them in /usr/share/datasets/fashion-mnist)", "subset",
                             "not a Fashion-MNIST folder (no train / test subset column); expected the IDX files "
                             "train-images-idx3-ubyte[.gz] ... t10k-labels-idx1-ubyte[.gz]")
    manifest = column_split(catalog, "subset", val_fraction=0.05, seed=config.seed)
    split_path = manifest.save(folder / "split.csv")
    model, about = (_given_model(config.model) if config.model else
                    _trained_model(config, "small", data, split_path, folder, progress, log))
    array = _image_array(catalog, model, progress)
    train_ids = [i.id for i in catalog.items if i.meta["subset"] == "train" and i.id not in array.failed]
    test_ids = [i.id for i in catalog.items if i.meta["subset"] == "test" and i.id not in array.failed]
    train_labels, test_labels = _labels(catalog, train_ids), _labels(catalog, test_ids)
    log(f"embedding {len(train_ids):,} training and {len(test_ids):,} test images")
    references = _embed(model, array, train_ids, config)
    queries = _embed(model, array, test_ids, config)
    _, nearest = ExactSearch(references, "cosine").search(queries, 1)
    nn1 = float((train_labels[nearest[:, 0]] == test_labels).mean())
    classifier, caveats = None, []
    if _classifies(model, set(test_labels)):
        classifier = top_k_accuracy(_scores(model, array, test_ids, config), model.classes, test_labels, k=1)
    else:
        caveats.append("the model's classifier is not for Fashion-MNIST's classes: 1-NN only")
    name = about["name"]
    ours = [BenchRow(f"{name}: its classifier", {"accuracy": classifier}, note=about["note"])] if classifier is not None else []
    ours.append(BenchRow(f"{name}: 1-NN on its embedding (cosine, {len(train_ids):,} training images)",
                         {"accuracy": nn1}))
    official = (len(train_ids), len(test_ids)) == (60_000, 10_000)
    if not official:
        caveats.append(f"{len(train_ids):,} training and {len(test_ids):,} test images: not the official "
                       "60,000 / 10,000, so not comparable with the published figures")
    details = {"train_images": len(train_ids), "test_images": len(test_ids), "official_split": official,
               "split": str(split_path), "split_sha256": manifest.sha256, "classifier_accuracy": classifier,
               "nn1_accuracy": nn1, "nn1_minus_classifier": None if classifier is None else nn1 - classifier}
    return BenchResult.with_published(benchmark("fashion-mnist"), ours, model=about, details=details, caveats=caveats)


# --- year-split -----------------------------------------------------------------------------------------


def _year_split(config: BenchConfig, folder: Path, progress: bool, log) -> BenchResult:
    data, catalog = _catalog(config.data, SHARED_CATALOG, "the Fashion Product Images catalog (a Kaggle folder "
                             "or zip)", "year", "no year column; the year split needs Fashion Product Images' "
                             "styles.csv (columns ..., year, ...)")
    given = None if config.train else _given_model(config.model or "default")
    size = given[0].config.input_size if given else _preset_configs(config, "default")[0].input_size
    catalog = catalog.without(load_image_array(catalog, size=tuple(size), progress=progress).failed)
    manifest = year_split(catalog, config.classes, val_fraction=0.2, seed=config.seed)
    split_path = manifest.save(folder / "split.csv")
    protocol_classes = top_classes(catalog, config.classes)
    learnt = sorted(set(manifest.labels))
    # odd-year items of a protocol class with no even-year item: in the published test set, never learnable
    unlearnable = [item.id for item in catalog.items if item.label in set(protocol_classes) - set(learnt)
                   and map_column_value(item.meta.get("year", "").strip(), YEAR_PARITY_MAP) == "test"]
    if config.train:
        log(f"training on the even years only: {len(manifest.select(split='train')):,} items, "
            f"{len(manifest.select(split='val')):,} for validation")
    model, about = given or _trained_model(config, "default", data, split_path, folder, progress, log)
    array = _image_array(catalog, model, progress)
    parts = {part: manifest.select(split=part) for part in ("train", "val", "test")}
    test_ids = parts["test"].ids + unlearnable
    test_labels = np.array(parts["test"].labels + _labels(catalog, unlearnable).tolist(), dtype=object)
    log(f"fitting the probe on {len(parts['train']):,} + {len(parts['val']):,} even-year items")
    probe = LinearProbe().fit(_embed(model, array, parts["train"].ids, config), parts["train"].labels,
                              _embed(model, array, parts["val"].ids, config), parts["val"].labels)
    log(f"probe strength C = {probe.chosen} (validation top-1 {probe.validation[probe.chosen]:.4f}); scoring "
        f"{len(test_ids):,} odd-year items")
    probe_scores = probe.scores(_embed(model, array, test_ids, config))
    name = about["name"]
    ours = [BenchRow(f"{name}: logistic regression on its embedding",
                     _top_k(probe_scores, probe.classes, test_labels), note=f"C = {probe.chosen} chosen on validation")]
    if about["trained_here"] and _classifies(model, set(learnt)):
        ours.insert(0, BenchRow(f"{name}: its classifier", _top_k(_scores(model, array, test_ids, config),
                                                                  model.classes, test_labels), note=about["note"]))
    caveats = []
    if not about["trained_here"] and set(model.classes) & set(protocol_classes):
        caveats.append("the model was trained elsewhere on these article types: if its training saw odd-year "
                       "items (the shipped models trained on 004's split, which mixes years), the test items are "
                       "not unseen by the embedding; `--train` gives the clean protocol")
    if config.classes != 20:
        caveats.append(f"{config.classes} article types instead of the published 20")
    details = {"classes": protocol_classes, "learnt_classes": len(learnt),
               "unlearnable_test_items": {label: int(n) for label, n in
                                          zip(*np.unique(_labels(catalog, unlearnable), return_counts=True))},
               "train_items": len(parts["train"]), "val_items": len(parts["val"]), "test_items": len(test_ids),
               "split": str(split_path), "split_sha256": manifest.sha256,
               "probe": {"chosen_C": probe.chosen, "validation_top1": probe.validation}}
    return BenchResult.with_published(benchmark("year-split"), ours, model=about, details=details, caveats=caveats)


def _top_k(scores: np.ndarray, classes: Sequence, truth: Sequence) -> dict[str, float]:
    return {"top1": top_k_accuracy(scores, classes, truth, 1), "top5": top_k_accuracy(scores, classes, truth, 5)}


# --- episodes -------------------------------------------------------------------------------------------


def _episodes(config: BenchConfig, folder: Path, progress: bool, log) -> BenchResult:
    data, catalog = _catalog(config.data, SHARED_CATALOG, "the Fashion Product Images catalog")
    model, about = _given_model(config.model or "default")
    array = _image_array(catalog, model, progress)
    catalog = catalog.without(array.failed)
    if config.split:
        manifest = SplitManifest.load(config.split)
        split_note = str(config.split)
    else:
        manifest = protocol_split(catalog)
        split_note = "004's protocol made from the catalog (`stylespace split CATALOG`)"
    new = sorted(set(manifest.select(group="new").labels))
    if not new:
        raise StylespaceError(f"{split_note}: no 'new' article types; episodes need the 004 split's new group "
                              "(`stylespace split CATALOG`)")
    seen = sorted(set(new) & set(model.classes))
    classes = [c for c in new if c not in set(seen)]
    ids = [item.id for item in catalog.items if item.label in set(classes)]
    log(f"embedding {len(ids):,} items of {len(classes)} article types the model never trained on")
    vectors = _embed(model, array, ids, config)
    labels = _labels(catalog, ids)
    values, intervals, settings = {}, {}, []
    for key, (ways, shots) in EPISODE_SETTINGS.items():
        result = evaluate_episodes(vectors, labels, EpisodeConfig(ways, shots, config.queries, config.episodes,
                                                                  config.seed))
        values[key], intervals[key] = result.mean, result.interval
        settings.append(result.to_dict())
    name = about["name"]
    ours = [BenchRow(f"{name}: prototypes on its embedding", values, interval=intervals,
                     note=f"{len(classes)} article types, {len(ids):,} items")]
    caveats = []
    if seen:
        caveats.append(f"the model's classifier knows {len(seen)} of the new article types ({', '.join(seen[:5])}"
                       f"{', ...' if len(seen) > 5 else ''}): they are left out")
    if config.queries != 1 or config.episodes != 1000:
        caveats.append(f"{config.queries} quer{'y' if config.queries == 1 else 'ies'} per class and "
                       f"{config.episodes:,} episodes instead of the published 1 and 1,000")
    details = {"split": split_note, "classes": classes, "left_out_known_classes": seen, "items": len(ids),
               "settings": settings}
    return BenchResult.with_published(benchmark("episodes"), ours, model=about, details=details, caveats=caveats)


# --- shared steps ---------------------------------------------------------------------------------------


def _catalog(given: str | None, default: Path, what: str, column: str | None = None,
             without_column: str = "") -> tuple[Path, Catalog]:
    """(path, catalog) of the run's data: ``given`` or ``default``, which must exist (and have ``column``)."""
    path = Path(given) if given else default
    if not path.exists():
        raise StylespaceError(f"{path}: not found; give {what} with --data")
    catalog = load_catalog(path)
    if column is not None and column not in catalog.metadata_columns:
        raise StylespaceError(f"{path}: {without_column}")
    return path, catalog


def _given_model(spec: str):
    """(model, what it is) for a model folder or shipped name."""
    from stylespace.models import load_model, model_id, resolve_model_dir

    model = load_model(spec)
    return model, {"name": f"model {spec}", "path": str(resolve_model_dir(spec)), "model_id": model_id(model),
                   "trained_here": False, "note": ""}


def _preset_configs(config: BenchConfig, default_preset: str):
    """(ModelConfig, TrainConfig) of the run's preset, its epochs changed where asked."""
    from stylespace.training import preset
    from stylespace.training.presets import override

    model_config, train_config = preset(config.preset or default_preset)
    return model_config, override(train_config, epochs=config.epochs, device=config.device)


def _trained_model(config: BenchConfig, default_preset: str, data: Path, split_path: Path, folder: Path,
                   progress: bool, log):
    """(model, what it is): the preset trained on the split's training part, its best epoch chosen on the
    split's validation part."""
    from stylespace.training import train_run

    preset_name = config.preset or default_preset
    model_config, train_config = _preset_configs(config, default_preset)
    run_dir = folder / "model"
    log(f"training the {preset_name} preset ({train_config.epochs} epochs) -> {run_dir}")
    model, _, record = train_run(data, split_path, model_config, train_config, run_dir, progress=progress, log=log)
    deviation = "" if config.epochs is None else f", epochs changed to {config.epochs}"
    note = (f"{model_config.backbone} w{model_config.width} stem {model_config.stem_stride}, "
            f"{record['epochs_run']} epochs (kept {record['best_epoch']}, validation "
            f"{100 * record['best_val_metric']:.2f} %), trained in {record['train_seconds']:,.0f} s{deviation}")
    return model, {"name": f"{preset_name} preset, trained here", "path": str(run_dir), "model_id": record["model_id"],
                   "trained_here": True, "preset": preset_name, "epochs": train_config.epochs,
                   "train_seconds": record["train_seconds"], "best_epoch": record["best_epoch"],
                   "best_val_metric": record["best_val_metric"], "device": record["device"], "note": note}


def _image_array(catalog: Catalog, model, progress: bool) -> ImageArray:
    return load_image_array(catalog, size=tuple(model.config.input_size), progress=progress)


def _labels(catalog: Catalog, ids: Sequence[str]) -> np.ndarray:
    return np.array([catalog[i].label for i in ids], dtype=object)


def _embed(model, array: ImageArray, ids: Sequence[str], config: BenchConfig) -> np.ndarray:
    """Unit vectors of ``ids``."""
    run = lambda pixels: embed_images(model, pixels, batch_size=config.batch_size, device=config.device)
    return _by_chunks(run, array, ids, (0, model.output_dim))


def _scores(model, array: ImageArray, ids: Sequence[str], config: BenchConfig) -> np.ndarray:
    """The classifier head's scores of ``ids``."""
    run = lambda pixels: class_scores(model, pixels, config.batch_size, config.device)
    return _by_chunks(run, array, ids, (0, len(model.classes)))


def _by_chunks(run: Callable[[np.ndarray], np.ndarray], array: ImageArray, ids: Sequence[str],
               empty: tuple[int, int]) -> np.ndarray:
    """``run`` over the pixels of ``ids``, taken from the image cache a chunk at a time (bounded memory)."""
    chunks = [run(array.take(ids[start:start + EMBED_CHUNK])) for start in range(0, len(ids), EMBED_CHUNK)]
    return np.concatenate(chunks) if chunks else np.zeros(empty, dtype=np.float32)


def _classifies(model, labels: set) -> bool:
    """Whether the model's classifier head is for these labels (it knows every one of them)."""
    return model.classifier is not None and labels <= set(model.classes)
