"""Build the analysis report: embed each needed item once, compute every section, write the PNGs, one
self-contained HTML file and a JSON file of the numbers.

Sections (seed 004 task 4, seed 003 figures 8 and 9, seed 000's t-SNE):
1. 2-D maps (t-SNE, UMAP) of the first main classes, train and test, and a thumbnail map.
2. Scenario 2 confusion matrix on those classes and how confusion compares with overlap on the maps.
3. The line between two class centroids (Shirts vs T-shirts by default).
4. Accuracy on coarser labels (subCategory, masterCategory) next to the article type.
5. Error rate vs coverage of recommendations, pair-verification ROC, learning curves.
6. Distance histograms of similar / dissimilar pairs before (random init) and after training.

Each section is a function of a :class:`ReportContext` (the inputs, read-only) and of what earlier sections
computed, passed explicitly (:func:`build_sections`); it returns its :class:`Section` with its figures and
numbers. A section whose inputs are missing (no such classes, no support split, no run history) says what
is missing instead of failing the report.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from stylespace.data import ImageArray, SplitManifest
from stylespace.evaluation.plan import all_class_sets, known_class_sets
from stylespace.report import analysis
from stylespace.report import figures as draw
from stylespace.report.html import ReportFigure, Section, Table, render_html
from stylespace.report.config import ReportConfig
from stylespace.report.maps import Projector2D, knn_class_overlap
from stylespace.utils import StylespaceError, atomic_write, to_jsonable

REPORT_JSON = "report.json"
Embedder = Callable[[np.ndarray], np.ndarray]  # uint8 (N, H, W, 3) pixels -> (N, D) float32 embeddings


@dataclasses.dataclass
class ReportInputs:
    """Everything the report reads.

    images: decoded pixels of the split's catalog, at the model's input size.
    embed / embed_untrained: the trained model and the same architecture at random initialisation.
    history: the training run's ``history.csv`` (None: the learning-curves figure says it is missing).
    pairs: an optional labelled pair set ``[(id_a, id_b, 0/1)]`` with its own pixels, instead of label pairs.
    describe: what the model is (shown in the report header), e.g. its folder and id.
    """

    manifest: SplitManifest
    images: ImageArray
    embed: Embedder
    embed_untrained: Embedder | None = None
    history: Path | None = None
    pairs: list[tuple[str, str, int]] | None = None
    pair_images: ImageArray | None = None
    describe: dict[str, str] = dataclasses.field(default_factory=dict)


class EmbeddedItems:
    """Vectors of items by id, each item embedded at most once (splits share items: maps, scenarios, pairs)."""

    def __init__(self, images: ImageArray, embed: Embedder):
        self.images, self.embed = images, embed
        self.rows: dict[str, np.ndarray] = {}
        self.seconds = 0.0

    def vectors(self, ids: Sequence[str]) -> np.ndarray:
        """(len(ids), D) float32 in the order of ``ids``; ids without decoded pixels raise StylespaceError."""
        todo = list(dict.fromkeys(i for i in ids if i not in self.rows))
        if todo:
            started = time.perf_counter()
            vectors = np.asarray(self.embed(self.images.take(todo)), dtype=np.float32)
            if vectors.ndim != 2 or len(vectors) != len(todo):
                raise StylespaceError(f"the model returned embeddings of shape {vectors.shape} for {len(todo)} images")
            self.rows.update(zip(todo, vectors))
            self.seconds += time.perf_counter() - started
        if not ids:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack([self.rows[i] for i in ids])


@dataclasses.dataclass
class LabelledSet:
    """Items of one split: ids, labels and their vectors."""

    name: str
    ids: list[str]
    labels: np.ndarray
    vectors: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    def where(self, keep: np.ndarray) -> "LabelledSet":
        return LabelledSet(self.name, [i for i, k in zip(self.ids, keep) if k], self.labels[keep], self.vectors[keep])


@dataclasses.dataclass
class ReportResult:
    folder: Path
    html: Path
    figures: list[Path]
    missing: list[str]
    seconds: float
    numbers: dict


class ReportContext:
    """What every section reads: the inputs, the config, the split's decoded rows, the first main classes
    and the embedded items (each embedded at most once, whichever section asks first). Sections do not
    write here: each returns its own :class:`Section` (with its figures and numbers)."""

    def __init__(self, inputs: ReportInputs, config: ReportConfig | None = None):
        self.inputs = inputs
        self.config = config or ReportConfig()
        self.manifest = inputs.manifest
        self.store = EmbeddedItems(inputs.images, inputs.embed)
        self.dropped = self._decoded_only()
        self.map_classes = self._first_classes()

    # --- sets of items -----------------------------------------------------------------------------

    def _decoded_only(self) -> int:
        """Leave out manifest rows whose image failed to decode (the cache knows which); returns how many."""
        have = set(self.inputs.images.ids)
        rows = [r for r in self.manifest.rows if r["id"] in have]
        dropped = len(self.manifest.rows) - len(rows)
        self.manifest = SplitManifest(rows, self.manifest.config)
        return dropped

    def _first_classes(self) -> list[str]:
        """The first ``map_classes`` main classes: the split's own order (most frequent first, 004's class ids)."""
        present = set(self.manifest.labels)
        ordered = [c for c in self.manifest.config.main_classes if c in present]
        if not ordered:  # a manifest without its config: rank the classes by frequency
            counts: dict[str, int] = {}
            for label in self.manifest.labels:
                counts[label] = counts.get(label, 0) + 1
            ordered = sorted(counts, key=lambda c: (-counts[c], c))
        return ordered[: self.config.map_classes]

    def labelled(self, name: str, manifest: SplitManifest, sample: int | None = None,
                 classes: Sequence[str] | None = None, store: EmbeddedItems | None = None) -> LabelledSet:
        """The (optionally class-filtered, optionally sampled) rows of ``manifest`` with their vectors."""
        rows = manifest.rows
        if classes is not None:
            wanted = set(classes)
            rows = [r for r in rows if r["label"] in wanted]
        if sample is not None and rows:
            picked = analysis.sample_indices(len(rows), sample, self.config.seed, [r["label"] for r in rows])
            rows = [rows[i] for i in picked]
        ids = [r["id"] for r in rows]
        vectors = (store or self.store).vectors(ids)
        return LabelledSet(name, ids, np.array([r["label"] for r in rows], dtype=object), vectors)

    def split(self, split: str) -> SplitManifest:
        return self.manifest.select(split=split)

    def figure(self, name: str, figure, title: str, caption: str, dpi: int | None = None) -> ReportFigure:
        """A report figure from a Matplotlib figure, or from PNG bytes another module drew (numbered in
        report order by :func:`build_sections`)."""
        png = figure if isinstance(figure, bytes) else draw.to_png(figure, dpi or self.config.dpi)
        return ReportFigure(name, title, caption, png)


# the whole report ------------------------------------------------------------------------------


def build_sections(ctx: ReportContext, progress: Callable[[str], None] | None = None
                   ) -> tuple[list[Section], dict[str, float]]:
    """Every section in report order, its figures numbered in that order, and how long each took (s).

    The data flow between sections is explicit: the maps give the confusion section its test maps, and the
    curves and distances sections read the same labelled pairs and their verification."""
    progress = progress or (lambda message: None)
    timings: dict[str, float] = {}

    def timed(name: str, step: Callable[[], object]):
        progress(f"report: {name}")
        started = time.perf_counter()
        result = step()
        timings[name] = round(time.perf_counter() - started, 2)
        return result

    maps, test_maps = timed("maps", lambda: section_maps(ctx))
    confusion = timed("confusion", lambda: section_confusion(ctx, test_maps))
    centroids = timed("centroids", lambda: section_centroids(ctx))
    hierarchy = timed("hierarchy", lambda: section_hierarchy(ctx))
    pairs = timed("pairs", lambda: verification_pairs(ctx))
    verification = timed("verification", lambda: verify(ctx, pairs))
    curves = timed("curves", lambda: section_curves(ctx, pairs, verification))
    distances = timed("distances", lambda: section_distances(ctx, pairs, verification))
    sections = [maps, confusion, centroids, hierarchy, curves, distances]
    figures = [f for section in sections for f in section.figures]
    for number, figure in enumerate(figures, 1):
        figure.name = f"{number:02d}_{figure.name}"
    return sections, timings


# 1. maps ---------------------------------------------------------------------------------------


TestMaps = dict[str, tuple[np.ndarray, np.ndarray]]  # projector name -> (points (N, 2), labels (N,)) of the test split


def section_maps(ctx: ReportContext) -> tuple[Section, TestMaps]:
    """2-D maps (t-SNE, UMAP) of the first main classes, train and test, and a thumbnail map; also returns the
    test maps, which the confusion section compares its confusions with."""
    cfg = ctx.config
    section = Section("2-D maps of the style space",
                      f"The first {len(ctx.map_classes)} main classes ({', '.join(ctx.map_classes)}) projected "
                      f"to 2-D with t-SNE (scikit-learn) and UMAP (umap-learn), for the train and the test split. "
                      f"Each map is fitted on its own split; distances between clusters on a t-SNE map are not "
                      f"meaningful, neighbourhoods are.")
    test_maps: TestMaps = {}
    for split in ("train", "test"):
        items = ctx.labelled(split, ctx.split(split), cfg.map_sample, ctx.map_classes)
        total = sum(1 for r in ctx.split(split).rows if r["label"] in set(ctx.map_classes))
        if len(items) < 5:
            section.missing.append(f"the {split} split has {len(items)} items of these classes; a map needs 5")
            continue
        for method in ("tsne", "umap"):
            projector = Projector2D(method, cfg.map_config())
            points = projector.fit_transform(items.vectors)
            if split == "test":
                test_maps[projector.name] = (points, items.labels)
            used = ", ".join(f"{k} {v}" for k, v in projector.used.items() if k != "method")
            section.figures.append(ctx.figure(
                f"map_{method}_{split}",
                draw.scatter_map(points, items.labels, ctx.map_classes,
                                 f"{projector.name} of the {split} split, first {len(ctx.map_classes)} classes",
                                 projector.name),
                f"{projector.name} map, {split} split",
                f"{projector.name} ({used}) of the embeddings of {len(items):,} {split} items "
                f"({'all' if len(items) == total else f'a random sample of {total:,}'}) of the first "
                f"{len(ctx.map_classes)} main classes; colour = article type, legend = items per class."))
    thumbs = ctx.labelled("thumbnails", ctx.manifest, cfg.thumbnail_sample)
    if len(thumbs) >= 5:
        projector = Projector2D("tsne", cfg.map_config())
        points = projector.fit_transform(thumbs.vectors)
        section.figures.append(ctx.figure(
            "thumbnail_map_tsne",
            draw.thumbnail_map(points, ctx.inputs.images.take(thumbs.ids),
                               f"t-SNE of {len(thumbs):,} items, each image at its position", "t-SNE"),
            "Thumbnail map (t-SNE)",
            f"Seed 003's figure 9: {len(thumbs):,} items drawn at random from the whole split manifest "
            f"({len(ctx.manifest):,} items, every class and split), embedded, projected with t-SNE "
            f"(perplexity {projector.used['perplexity']}), and each item's image pasted at its 2-D position. "
            f"Open the PNG for full resolution.",
            dpi=2 * cfg.dpi))  # the pasted thumbnails need the pixels
    section.numbers["maps"] = {"classes": ctx.map_classes, "thumbnails": len(thumbs)}
    return section, test_maps


# 2. confusion ----------------------------------------------------------------------------------


def section_confusion(ctx: ReportContext, test_maps: TestMaps) -> Section:
    """Scenario 2 confusion on the first classes, read against the class overlap on ``test_maps``."""
    from stylespace.evaluation.classification import classification_metrics
    from stylespace.evaluation.support_set import SupportSetClassifier

    cfg = ctx.config
    section = Section("Confusion on the first classes, and overlap on the maps",
                      "Scenario 2 of seed 004: each test item of the first classes takes the class of its "
                      f"nearest support item (1-NN, {cfg.metric} distance) among the support items of those "
                      "classes. The reading compares, per class pair, how often the two are confused with how "
                      f"much they overlap on the test maps (overlap: mean fraction of an item's {cfg.overlap_k} "
                      "nearest map neighbours that belong to the other class, averaged both ways).")
    support_manifest, query_manifest = known_class_sets(ctx.manifest)
    support = ctx.labelled("support", support_manifest, classes=ctx.map_classes)
    query = ctx.labelled("test", query_manifest, classes=ctx.map_classes)
    if len(support) == 0 or len(query) == 0:
        section.missing.append(f"scenario 2 needs main support and main test items of the first classes; this split "
                               f"has {len(support)} and {len(query)} (a protocol split from `stylespace split` has both)")
        return section
    predicted = SupportSetClassifier("knn", k=1, metric=cfg.metric).fit(support.vectors, support.labels).predict(
        query.vectors)
    classes = [c for c in ctx.map_classes if c in set(query.labels) | set(support.labels)]
    metrics = classification_metrics(query.labels, predicted, classes)
    confusion = np.array(metrics.confusion)
    section.figures.append(ctx.figure(
        "confusion_scenario2",
        draw.confusion_figure(confusion, classes, f"Scenario 2 confusion matrix, first {len(classes)} classes"),
        "Confusion matrix (scenario 2)",
        f"Support: {len(support):,} main-support items; test: {len(query):,} main-test items; first "
        f"{len(classes)} classes only. Accuracy {metrics.accuracy:.3f}, balanced accuracy "
        f"{metrics.balanced_accuracy:.3f}. Colour: share of the true class's items; numbers: counts."))
    section.numbers["confusion"] = {"classes": classes, "matrix": confusion.tolist(), "accuracy": metrics.accuracy,
                                    "balanced_accuracy": metrics.balanced_accuracy, "n_support": len(support),
                                    "n_test": len(query)}
    overlaps = {name: knn_class_overlap(points, labels, classes, cfg.overlap_k)
                for name, (points, labels) in test_maps.items()}
    if not overlaps or len(classes) < 2:
        section.missing.append("the confusion-vs-overlap reading needs the test maps and at least two classes")
        return section
    reading = analysis.read_confusion_vs_overlap(confusion, overlaps, classes, cfg.top_pairs)
    section.findings = reading.summary()  # the per-pair lines are the table below
    section.figures.append(ctx.figure(
        "confusion_vs_overlap",
        draw.confusion_overlap_figure(reading, analysis.confusion_pair_rates(confusion), overlaps,
                                      "Do confused pairs overlap on the maps?"),
        "Confusion rate vs map overlap per class pair",
        f"One point per pair of the {len(classes)} classes ({reading.n_pairs} pairs). y: scenario 2 confusion "
        f"rate of the pair (share of either class's test items taken for the other, averaged); x: overlap of the "
        f"pair on the test-split map ({cfg.overlap_k} nearest neighbours). Labelled: the most confused pairs."))
    section.tables.append(Table(
        "Most confused class pairs and their overlap on the test maps",
        ["pair", "confusion rate", "confusion rank"] + [f"{m} overlap (rank)" for m in overlaps],
        [[f"{p.class_a} / {p.class_b}", p.confusion_rate, p.confusion_rank]
         + [f"{p.overlap[m]:.3f} ({p.overlap_rank[m]}/{reading.n_pairs})" for m in overlaps]
         for p in reading.top_pairs]))
    section.numbers["confusion"]["overlap_reading"] = dataclasses.asdict(reading)
    return section


# 3. centroids ----------------------------------------------------------------------------------


def section_centroids(ctx: ReportContext) -> Section:
    cfg = ctx.config
    a, b = cfg.pair
    section = Section(f"{a} vs {b}: centroids and the line between them",
                      f"Centroid = mean embedding of a class in a split. Shown: the item nearest each centroid "
                      f"(among the items of the two classes), and the items nearest {cfg.interpolation_steps} "
                      f"evenly spaced points on the line from the {a} centroid to the {b} centroid.")
    lines, images, labels, ids, sizes = {}, {}, {}, {}, {}
    for split in ("train", "test"):
        rows = ctx.split(split)
        present = set(rows.labels)
        absent = [c for c in cfg.pair if c not in present]
        if absent:
            section.missing.append(f"the {split} split has no items of class {', '.join(map(repr, absent))} "
                                   f"(choose two classes of this split with --pair A,B)")
            continue
        per_class = [ctx.labelled(split, rows, cfg.centroid_sample if split == "train" else None, [c])
                     for c in cfg.pair]
        items = LabelledSet(split, per_class[0].ids + per_class[1].ids,
                            np.concatenate([s.labels for s in per_class]),
                            np.concatenate([s.vectors for s in per_class]))
        lines[split] = analysis.centroid_line(items.vectors, items.labels, a, b, cfg.interpolation_steps)
        images[split], labels[split], ids[split] = ctx.inputs.images.take(items.ids), list(items.labels), items.ids
        total = {c: sum(1 for label in rows.labels if label == c) for c in cfg.pair}
        sizes[split] = ", ".join(f"{len(s):,} {c}" + (f" of {total[c]:,}" if len(s) < total[c] else "")
                                 for s, c in zip(per_class, cfg.pair))
    if not lines:
        return section
    which = " and ".join(f"{s} ({sizes[s]} items)" for s in lines)
    section.figures.append(ctx.figure(
        "centroid_nearest", draw.centroid_figure(lines, images, labels, ids, f"Items nearest the {a} and {b} centroids"),
        f"Typical {a} and {b}",
        f"The item nearest each class centroid ({cfg.metric} embeddings, Euclidean distance on L2-normalised "
        f"vectors) in {which}."))
    section.figures.append(ctx.figure(
        "centroid_interpolation",
        draw.interpolation_figure(lines, images, labels, f"From {a} to {b} along the centroid line"),
        f"Interpolation {a} → {b}",
        f"For {cfg.interpolation_steps} evenly spaced points (1 - t)·c_{a} + t·c_{b}, the nearest item not "
        f"already shown (title: its class; d: its distance to the point), in {which}."))
    section.figures.append(ctx.figure(
        "centroid_positions",
        draw.line_position_figure(lines, f"Where {a} and {b} items fall along the centroid line"),
        f"{a} and {b} projected on the centroid line",
        f"Position t of every item's projection onto the line through the two centroids (0 = {a} centroid, "
        f"1 = {b} centroid), per class, in {which}. Overlapping histograms = the classes are hard to tell apart "
        f"along the direction that separates them best on average."))
    section.numbers["centroids"] = {
        split: {"centroid_distance": line.centroid_distance, "n": {a: line.n_a, b: line.n_b},
                "nearest": {a: ids[split][line.nearest_a], b: ids[split][line.nearest_b]},
                "strip": [ids[split][i] for i in line.strip],
                "misplaced": {a: float(np.mean(line.positions[np.array(line.position_labels) == a] > 0.5)),
                              b: float(np.mean(line.positions[np.array(line.position_labels) == b] < 0.5))}}
        for split, line in lines.items()}
    for split, n in section.numbers["centroids"].items():
        section.findings.append(
            f"{split}: centroids {n['centroid_distance']:.3f} apart; {100 * n['misplaced'][a]:.1f}% of {a} items "
            f"project past the midpoint towards {b}, {100 * n['misplaced'][b]:.1f}% of {b} items towards {a}.")
    return section


# 4. coarser labels -----------------------------------------------------------------------------


def section_hierarchy(ctx: ReportContext) -> Section:
    from stylespace.evaluation.hierarchy import evaluate_hierarchy
    from stylespace.evaluation.support_set import SupportSetClassifier, evaluate_support_set

    cfg = ctx.config
    section = Section("Coarser labels",
                      "Scenario 2 on all main classes, without retraining: the 1-NN classifier scored on the "
                      "article type and on the coarser subCategory and masterCategory of each item (seed 004 "
                      "task 4 step 4). With 1-NN, voting on coarse labels and mapping the fine prediction up agree.")
    support_manifest, query_manifest = known_class_sets(ctx.manifest)
    if len(support_manifest) == 0 or len(query_manifest) == 0:
        section.missing.append("scenario 2 needs main support and main test items; this split has none")
        return section
    support = ctx.labelled("support", support_manifest)
    query = ctx.labelled("test", query_manifest)
    classifier = SupportSetClassifier("knn", k=1, metric=cfg.metric)
    fine = evaluate_support_set([classifier], support.vectors, support.labels, query.vectors, query.labels)
    fine = fine[classifier.name]
    rows = [{"level": "articleType", "accuracy": fine.accuracy, "balanced_accuracy": fine.balanced_accuracy,
             "classes": len(set(support.labels) | set(query.labels))}]
    for level in ("subCategory", "masterCategory"):
        try:
            mapping = ctx.manifest.hierarchy(level)
        except StylespaceError as exc:
            section.missing.append(f"{level}: {exc}")
            continue
        result = evaluate_hierarchy([classifier], support.vectors, support.labels, query.vectors, query.labels,
                                    mapping, level)
        metrics = result.results[classifier.name]
        rows.append({"level": level, "accuracy": metrics.accuracy, "balanced_accuracy": metrics.balanced_accuracy,
                     "classes": result.n_coarse_classes,
                     "via_fine_accuracy": result.via_fine[classifier.name]["accuracy"]})
    section.figures.append(ctx.figure(
        "coarse_labels", draw.level_accuracy_figure(rows, "Scenario 2 accuracy by label level (1-NN)"),
        "Accuracy by label level",
        f"Scenario 2: {len(support):,} main-support items, {len(query):,} main-test items, all main classes; "
        f"1-NN with {cfg.metric} distance; scored on each label level."))
    section.tables.append(Table("Scenario 2, 1-NN", ["level", "classes", "accuracy", "balanced accuracy"],
                                [[r["level"], r["classes"], r["accuracy"], r["balanced_accuracy"]] for r in rows]))
    section.numbers["hierarchy"] = rows
    return section


# 5. curves -------------------------------------------------------------------------------------


@dataclasses.dataclass
class PairSet:
    """The labelled pairs behind the ROC and the distance histograms: pair p joins ``ids[first[p]]`` and
    ``ids[second[p]]`` (vectors from ``store``); ``same[p]``: both have the same class."""

    store: EmbeddedItems
    ids: list[str]
    first: np.ndarray
    second: np.ndarray
    same: np.ndarray
    description: str

    @property
    def both_kinds(self) -> bool:
        return bool(self.same.any() and not self.same.all())


@dataclasses.dataclass
class Verification:
    """The trained model's pair verification: the ROC result and the (P,) pair distances it was read from."""

    result: object  # stylespace.evaluation.pairs.PairVerification
    distances: np.ndarray


def section_curves(ctx: ReportContext, pairs: PairSet, verification: Verification | None) -> Section:
    """Error rate vs coverage of recommendations, the pair-verification ROC and the learning curves."""
    section = Section("Error rate vs coverage, pair verification and learning curves")
    _risk_coverage(ctx, section)
    _roc(ctx, section, pairs, verification)
    _learning_curves(ctx, section)
    return section


def _risk_coverage(ctx: ReportContext, section: Section) -> None:
    """Seed 004 task 3 through the recommendation module: the scenario 4 support set is the catalog
    (an exact in-memory-sized index in a temporary folder), its test set the customer queries."""
    import tempfile

    from stylespace.index.catalog_index import CatalogIndex
    from stylespace.recommend import calibrate

    cfg = ctx.config
    support_manifest, query_manifest = all_class_sets(ctx.manifest)
    if len(support_manifest) == 0 or len(query_manifest) == 0:
        section.missing.append("error rate vs coverage: scenario 4 needs support and test items (a protocol "
                               f"split); this split has {len(support_manifest)} and {len(query_manifest)}")
        return
    support = ctx.labelled("support", support_manifest)
    query = ctx.labelled("test", query_manifest)
    if len(support) < cfg.coverage_k:
        section.missing.append(f"error rate vs coverage: {len(support)} catalog items, fewer than the "
                               f"{cfg.coverage_k} recommended per query")
        return
    with tempfile.TemporaryDirectory(prefix="stylespace-report-") as folder:
        index = CatalogIndex.create(Path(folder) / "index", support.ids, support.vectors, model_id="report",
                                    metric=cfg.metric, labels=list(support.labels))
        try:
            calibration = calibrate(index, query.vectors, list(query.labels), query_ids=query.ids,
                                    n_items=cfg.coverage_k, queries="scenario 4 test (main + new)")
            png_path = calibration.plot(Path(folder) / "risk_coverage.png")
            png = png_path.read_bytes()
        finally:
            index.close()
    point = calibration.point
    section.figures.append(ctx.figure(
        "risk_coverage", png, "Error rate vs coverage of recommendations",
        f"Scenario 4: catalog = {len(support):,} support items (main + new classes), queries = {len(query):,} "
        f"test items. Each query gets its {cfg.coverage_k} nearest catalog items, correct when at least one "
        f"shares its class ({100 * calibration.accuracy:.1f}% correct when all are shown); it is shown when a "
        f"label-free confidence clears a threshold. One curve per confidence score (best AURC first); marked: "
        f"the threshold of the chosen score ({calibration.chosen}) for {point.target}."))
    section.tables.append(Table("Confidence scores compared (scenario 4)",
                                ["score", "AURC", "threshold", "coverage", "error rate", "target reached"],
                                [[r["score"], r["aurc"], "-" if r["threshold"] is None else r["threshold"],
                                  r["coverage"], r["error"], "yes" if r["reached"] else "no"]
                                 for r in calibration.table()]))
    section.numbers["risk_coverage"] = calibration.to_dict() | {"n_catalog": len(support)}


def verification_pairs(ctx: ReportContext) -> PairSet:
    """The labelled pairs behind the ROC and the histograms: those of the pairs file, else random pairs of test
    items labelled by class."""
    from stylespace.evaluation.pairs import label_pairs

    cfg = ctx.config
    if ctx.inputs.pairs:
        store = EmbeddedItems(ctx.inputs.pair_images or ctx.inputs.images, ctx.inputs.embed)
        have = set(store.images.ids)
        pairs = [p for p in ctx.inputs.pairs if p[0] in have and p[1] in have]
        if not pairs:
            raise StylespaceError("none of the given pairs has both images decoded")
        ids = list(dict.fromkeys([p[0] for p in pairs] + [p[1] for p in pairs]))
        index = {item_id: i for i, item_id in enumerate(ids)}
        first = np.array([index[p[0]] for p in pairs])
        second = np.array([index[p[1]] for p in pairs])
        same = np.array([bool(p[2]) for p in pairs])
        return PairSet(store, ids, first, second, same, f"{len(pairs):,} labelled pairs from the pairs file")
    _, query = all_class_sets(ctx.manifest)
    source = "scenario 4 test items (main + new test)"
    if len(query) == 0:
        query, source = ctx.split("test"), "test items"
    if len(query) < 2:
        query, source = ctx.manifest, "all items"
    first, second, same = label_pairs(query.labels, cfg.max_pairs, cfg.seed)
    return PairSet(ctx.store, query.ids, first, second, same,
                   f"{len(first):,} random item pairs of the {len(query):,} {source} ({int(same.sum()):,} same class)")


def pair_distances_of(store: EmbeddedItems, pairs: PairSet, metric: str) -> np.ndarray:
    """(P,) distances of ``pairs`` under the vectors of ``store``."""
    from stylespace.evaluation.search import pair_distances

    vectors = store.vectors(pairs.ids)
    return pair_distances(vectors[pairs.first], vectors[pairs.second], metric)


def verify(ctx: ReportContext, pairs: PairSet) -> Verification | None:
    """The trained model's verification of ``pairs`` (None when they are all of one kind: no ROC)."""
    from stylespace.evaluation.pairs import verify_pairs

    if not pairs.both_kinds:
        return None
    distances = pair_distances_of(pairs.store, pairs, ctx.config.metric)
    return Verification(verify_pairs(distances, pairs.same), distances)


def _roc(ctx: ReportContext, section: Section, pairs: PairSet, verification: Verification | None) -> None:
    described = pairs.description
    if verification is None:
        section.missing.append(f"ROC: {described} are all of one kind (same or different class)")
        return
    result = verification.result
    section.figures.append(ctx.figure(
        "roc_pairs",
        draw.roc_figure(np.array(result.curve_fpr), np.array(result.curve_tpr), result.auc,
                        "Pair verification ROC (same class = similar)",
                        (result.best_fpr, result.best_tpr, result.best_cutoff)),
        "Pair verification ROC",
        f"{described}; a pair is called similar when its {ctx.config.metric} distance is at most the cutoff. "
        f"Marked: the cutoff maximising TPR − FPR (seed 003's c*)."))
    section.tables.append(Table("Cutoffs at chosen false positive rates", ["FPR target", "cutoff", "TPR", "FPR"],
                                [[r.fpr_target, r.cutoff, r.tpr, r.fpr] for r in result.cutoffs]
                                + [["max TPR − FPR", result.best_cutoff, result.best_tpr, result.best_fpr]]))
    section.numbers["verification"] = dataclasses.asdict(result) | {"pairs": described}


def _learning_curves(ctx: ReportContext, section: Section) -> None:
    path = ctx.inputs.history
    if path is None or not Path(path).is_file():
        section.missing.append("learning curves: no training history (history.csv) was found beside the model; "
                               "pass the training run folder with --run")
        return
    history = read_history(Path(path))
    x_name = next((c for c in ("epoch", "step") if c in history), None)
    if x_name is None:
        history["row"] = np.arange(1, len(next(iter(history.values()))) + 1, dtype=float)
        x_name = "row"
    section.figures.append(ctx.figure(
        "learning_curves", draw.learning_curves_figure(history, x_name, "Learning curves of the training run"),
        "Learning curves", f"Every loss and metric column of {path} against {x_name} "
                           f"({len(history[x_name])} rows)."))
    section.numbers["history"] = {"path": str(path), "columns": list(history), "rows": len(history[x_name])}


# 6. distances before / after -------------------------------------------------------------------


def section_distances(ctx: ReportContext, pairs: PairSet, verification: Verification | None) -> Section:
    """Seed 003's figure 8: the distances of ``pairs`` before (random init) and after training."""
    cfg = ctx.config
    section = Section("Distances of similar and dissimilar pairs, before and after training",
                      "Seed 003's figure 8: if training worked, same-class pairs (green) end up closer than "
                      "different-class pairs (red); at random initialisation they overlap.")
    if verification is None:
        section.missing.append("no labelled pairs with both kinds (see the ROC section)")
        return section
    same, described = pairs.same, pairs.description
    panels = []
    if ctx.inputs.embed_untrained is None:
        section.missing.append("before training: no untrained model of the same architecture was given")
    else:
        untrained = EmbeddedItems(pairs.store.images, ctx.inputs.embed_untrained)
        before = pair_distances_of(untrained, pairs, cfg.metric)
        panels.append(("before training (random init)", before[same], before[~same], None))
        section.numbers["distances_before"] = _separation(before, same)
    after = verification.distances
    panels.append(("after training", after[same], after[~same], verification.result.best_cutoff))
    section.numbers["distances_after"] = _separation(after, same)
    section.figures.append(ctx.figure(
        "distance_histograms",
        draw.distance_histogram_figure(panels, "Pair distances: similar (same class) vs dissimilar",
                                       f"{cfg.metric} distance" + (" (1 − cos)" if cfg.metric == "cosine" else "")),
        "Distance histograms before and after training",
        f"{described}; densities of the model's {cfg.metric} distances. "
        + ("Before: the same architecture at random initialisation (fixed seed). " if len(panels) == 2 else "")
        + "Dashed line: the ROC section's cutoff c*. Each panel has its own distance axis, up to its 99.5th "
        "percentile (the farthest 0.5% of pairs count in the last bin)."))
    for name in ("distances_before", "distances_after"):
        if name in section.numbers:
            n = section.numbers[name]
            section.findings.append(f"{name.split('_')[1]}: mean distance similar {n['similar_mean']:.3f}, "
                                    f"dissimilar {n['dissimilar_mean']:.3f}; ROC AUC {n['auc']:.3f}.")
    return section


def _separation(distances: np.ndarray, same: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import roc_auc_score

    return {"similar_mean": float(distances[same].mean()), "dissimilar_mean": float(distances[~same].mean()),
            "auc": float(roc_auc_score(same, -distances))}


def read_history(path: Path) -> dict[str, np.ndarray]:
    """A run's ``history.csv`` as column -> float array (NaN where a cell is empty or not a number)."""
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        raise StylespaceError(f"{path}: the training history has no rows")

    def number(value: str | None) -> float:
        try:
            return float(value)
        except (TypeError, ValueError):
            return float("nan")

    columns = {name: np.array([number(r.get(name)) for r in rows]) for name in rows[0]}
    return {name: values for name, values in columns.items() if np.isfinite(values).any()}


def write_report(inputs: ReportInputs, output: str | Path, config: ReportConfig | None = None,
                 progress: Callable[[str], None] | None = None) -> ReportResult:
    """Compute the report and write ``report.html`` (self-contained), one PNG per figure and ``report.json``."""
    started = time.perf_counter()
    ctx = ReportContext(inputs, config)
    sections, timings = build_sections(ctx, progress)
    folder = Path(output)
    folder.mkdir(parents=True, exist_ok=True)
    previous = _previous_figures(folder)
    paths = []
    for section in sections:
        for figure in section.figures:
            path = folder / f"{figure.name}.png"
            _write(path, figure.png)
            paths.append(path)
    for stale in previous - {p.name for p in paths}:  # figures of an earlier report that this one does not have
        (folder / stale).unlink(missing_ok=True)
    seconds = time.perf_counter() - started
    meta = list(inputs.describe.items()) + [
        ("split manifest", f"{len(ctx.manifest):,} items ({ctx.dropped} left out: image failed to decode), "
                           f"sha256 {inputs.manifest.sha256[:12]}"),
        ("embedded", f"{len(ctx.store.rows):,} items in {ctx.store.seconds:.1f} s"),
        ("built in", f"{seconds:.1f} s (" + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()) + ")"),
    ]
    html_path = folder / "report.html"
    _write(html_path, render_html("Style space report", meta, sections).encode("utf-8"))
    missing = [f"{s.title}: {m}" for s in sections for m in s.missing]
    numbers = {"config": dataclasses.asdict(ctx.config), "describe": inputs.describe, "timings": timings,
               "seconds": round(seconds, 2), "embedded_items": len(ctx.store.rows),
               "figures": [{"file": p.name, "title": f.title, "caption": f.caption}
                           for p, f in zip(paths, (f for s in sections for f in s.figures))],
               "missing": missing, "findings": {s.title: s.findings for s in sections if s.findings},
               "results": {k: v for section in sections for k, v in section.numbers.items()}}
    _write(folder / REPORT_JSON, json.dumps(to_jsonable(numbers), indent=2).encode("utf-8"))
    return ReportResult(folder, html_path, paths, missing, seconds, numbers)


def _write(path: Path, data: bytes) -> None:
    """Atomically, readable by others (a report is meant to be opened and shared; temp files are 0600)."""
    with atomic_write(path) as handle:
        handle.write(data)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def _previous_figures(folder: Path) -> set[str]:
    """PNG names listed by a report already in ``folder`` (only those are ever removed)."""
    try:
        listed = json.loads((folder / REPORT_JSON).read_text()).get("figures", [])
        return {f["file"] for f in listed if isinstance(f, dict) and str(f.get("file", "")).endswith(".png")
                and "/" not in f["file"]}
    except (OSError, ValueError, AttributeError, KeyError, TypeError):
        return set()
