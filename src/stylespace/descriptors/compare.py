"""Every extractor through the same evaluation: one table of hand-made descriptors, pre-trained CNNs,
trained models and ensembles.

Each extractor embeds the split's images once (timed: seconds per 1,000 images on this machine);
ensembles are fitted on the main training items only (their weights chosen on the split's ``val``
items, or on a hold-out of main train when it has none), so no test or new-class label is seen by
anything that is fitted; then :func:`stylespace.evaluation.evaluate` scores every set of vectors on
the same split with the same configuration.
"""
from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from stylespace.descriptors.base import FeatureExtractor, timed_embed
from stylespace.descriptors.ensemble import EnsembleConfig, FeatureEnsemble, weighted_concat
from stylespace.utils import StylespaceError, to_jsonable

KINDS = ("hand-made", "pre-trained", "trained", "ensemble")


@dataclasses.dataclass
class Candidate:
    """One extractor to compare, the images it reads (row i is item ``ids[i]``) and what it is."""

    extractor: FeatureExtractor
    kind: str
    pixels: np.ndarray
    detail: str = ""  # e.g. the training objective, or the weights file


@dataclasses.dataclass
class ExtractorResult:
    """One row of the comparison: the extractor, its cost and its evaluation report."""

    name: str
    kind: str
    detail: str
    dim: int
    n_images: int
    seconds: float  # embedding all ``n_images`` (an ensemble: its members' time plus fusing)
    report: object  # stylespace.evaluation.EvaluationReport
    config: dict = dataclasses.field(default_factory=dict)
    ensemble: FeatureEnsemble | None = None  # the fitted ensemble, for ensemble rows
    model_id: str = ""  # a trained model's weight hash

    @property
    def seconds_per_1000(self) -> float:
        return 1000.0 * self.seconds / max(self.n_images, 1)


@dataclasses.dataclass
class Comparison:
    """All rows, and how they were measured."""

    results: list[ExtractorResult]
    ids: list[str]
    split: str
    split_sha256: str
    evaluation: dict
    machine: dict
    notes: list[str]

    def to_dict(self) -> dict:
        return to_jsonable({
            "split": self.split, "split_sha256": self.split_sha256, "n_images": len(self.ids),
            "evaluation": self.evaluation, "machine": self.machine, "notes": self.notes,
            "extractors": [{
                "name": r.name, "kind": r.kind, "detail": r.detail, "dim": r.dim, "n_images": r.n_images,
                "seconds": round(r.seconds, 3), "seconds_per_1000": round(r.seconds_per_1000, 3),
                "config": r.config, "headline": r.report.headline(), "report": r.report.to_dict(),
            } for r in self.results],
        })


def compare_extractors(candidates: Sequence[Candidate], ids: Sequence[str], manifest,
                       concatenations: Sequence[Sequence[str]] = (), ensembles: Sequence[Sequence[str]] = (),
                       ensemble_config: EnsembleConfig | None = None,
                       evaluation_config=None, split_path: str = "", progress: bool = False,
                       log: Callable[[str], None] | None = None,
                       on_vectors: Callable[[ExtractorResult, np.ndarray], None] | None = None) -> Comparison:
    """Embed with every candidate, fit every ensemble, evaluate all of them on ``manifest``.

    Args:
        candidates: the extractors; their ``pixels`` rows are the items ``ids``.
        manifest: the split (``SplitManifest``); its main/train items fit the ensembles.
        concatenations: each a list of candidate names joined with equal weights (the vectors
            :class:`Concatenation` would give, made from the members' vectors instead of embedding again).
        ensembles: each a list of candidate names to fuse (:class:`FeatureEnsemble`).
        evaluation_config: ``EvaluationConfig`` (default :func:`comparison_evaluation_config`).
        on_vectors: called with each result and its (N, D) vectors (e.g. to save them).
    """
    from stylespace.evaluation import VectorTable, evaluate

    log = log or (lambda message: None)
    evaluation_config = evaluation_config or comparison_evaluation_config()
    ids = [str(i) for i in ids]
    names = [c.extractor.name for c in candidates]
    if len(set(names)) != len(names):
        raise StylespaceError(f"extractor names must be unique to tell the rows apart, got {names}")
    for c in candidates:
        if c.kind not in KINDS:
            raise StylespaceError(f"{c.extractor.name}: kind must be one of {', '.join(KINDS)}, got {c.kind!r}")
        if len(c.pixels) != len(ids):
            raise StylespaceError(f"{c.extractor.name}: {len(c.pixels)} images for {len(ids)} ids; expected one per id")
    # Checked before any embedding: a typo should not cost minutes of descriptors.
    for members in concatenations:
        _check_members(members, names, "concatenation")
    for members in ensembles:
        _check_members(members, names + ["+".join(m) for m in concatenations], "ensemble")

    results, vectors = [], {}
    for c in candidates:
        v, seconds = timed_embed(c.extractor, c.pixels, progress)
        vectors[c.extractor.name] = v
        log(f"{c.extractor.name}: {len(ids):,} images in {seconds:.1f} s ({1000 * seconds / max(len(ids), 1):.2f} s per 1,000)")
        config = dataclasses.asdict(c.extractor.config) if dataclasses.is_dataclass(getattr(c.extractor, "config", None)) else {}
        results.append(ExtractorResult(c.extractor.name, c.kind, c.detail, int(v.shape[1]), len(ids), seconds,
                                       None, config, model_id=getattr(c.extractor, "model_id", "")))

    for members in concatenations:
        result, joined = _concatenate(list(members), results, vectors, len(ids))
        results.append(result)
        vectors[result.name] = joined
    for members in ensembles:
        result, fused = _fit_ensemble(list(members), results, vectors, ids, manifest, ensemble_config, log)
        results.append(result)
        vectors[result.name] = fused

    notes = []
    for result in results:
        table = VectorTable(ids, vectors[result.name])
        result.report = evaluate(table, manifest, evaluation_config, name=result.name, source=result.kind,
                                 model_id=result.model_id,
                                 split_path=split_path)
        if on_vectors is not None:
            on_vectors(result, vectors[result.name])
        headline = result.report.headline()
        log(f"{result.name}: " + ", ".join(f"S{n} {headline.get(f'scenario {n} / kNN k=1 / accuracy', float('nan')):.3f}"
                                             for n in evaluation_config.scenarios))
        notes.extend(f"{result.name}: {note}" for note in result.report.notes)
    return Comparison(results, ids, split_path, manifest.sha256, to_jsonable(dataclasses.asdict(evaluation_config)),
                      machine_description(), sorted(set(notes)))


def _concatenate(members: list[str], results: list[ExtractorResult], vectors: dict[str, np.ndarray],
                 n: int) -> tuple[ExtractorResult, np.ndarray]:
    by_name = {r.name: r for r in results}
    started = time.perf_counter()
    joined = weighted_concat([vectors[m] for m in members], [1.0] * len(members))
    seconds = sum(by_name[m].seconds for m in members) + time.perf_counter() - started
    kind = "hand-made" if all(by_name[m].kind == "hand-made" for m in members) else "ensemble"
    return ExtractorResult("+".join(members), kind, "equal-weight concatenation", joined.shape[1], n, seconds, None,
                           {"members": members}), joined


def _check_members(members: Sequence[str], available: Sequence[str], what: str) -> None:
    unknown = [m for m in members if m not in available]
    if len(members) < 2 or unknown or len(set(members)) != len(members):
        raise StylespaceError(f"{what} {'+'.join(members)}: needs two or more distinct extractors among those "
                              f"compared ({', '.join(available)}); unknown: {unknown}")


def _fit_ensemble(members: list[str], results: list[ExtractorResult], vectors: dict[str, np.ndarray],
                  ids: list[str], manifest, config: EnsembleConfig | None, log) -> tuple[ExtractorResult, np.ndarray]:
    """Fit one ensemble on main train (weights on ``val`` or a hold-out of main train); (its row, all items fused)."""
    row = {item_id: i for i, item_id in enumerate(ids)}

    def rows_of(part) -> tuple[np.ndarray, np.ndarray]:
        pairs = [(row[i], label) for i, label in zip(part.ids, part.labels) if i in row]
        if not pairs:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=object)
        rows, labels = zip(*pairs)
        return np.asarray(rows), np.asarray(labels, dtype=object)

    train_rows, train_labels = rows_of(manifest.select(group="main", split="train"))
    val_rows, val_labels = rows_of(manifest.select(group="main", split="val"))
    if len(train_rows) == 0:
        raise StylespaceError("the split has no main/train items with images; the ensembles are fitted on them")
    config = dataclasses.replace(config or EnsembleConfig(), names=tuple(members))
    ensemble = FeatureEnsemble(config)
    started = time.perf_counter()
    validation = ([vectors[m][val_rows] for m in members], val_labels) if len(val_rows) else None
    ensemble.fit([vectors[m][train_rows] for m in members], train_labels, validation)
    fit_seconds = time.perf_counter() - started
    started = time.perf_counter()
    fused = ensemble.transform([vectors[m] for m in members])
    fuse_seconds = time.perf_counter() - started
    by_name = {r.name: r for r in results}
    name = "ensemble(" + "+".join(members) + ")"
    summary = ensemble.summary()
    summary.pop("selected")  # thousands of indices: kept in the saved ensemble, not in the table's JSON
    log(f"{name}: weights {ensemble.weights_}, {ensemble.dim} features, validation 1-NN accuracy "
        f"{ensemble.trials_[0].accuracy:.3f} ({ensemble.n_validation_:,} items), fitted in {fit_seconds:.1f} s")
    detail = ", ".join(f"{m} x{w:g}" + (f" ({by_name[m].dim}->{k})" if k != by_name[m].dim else "")
                       for m, w, k in zip(members, ensemble.weights_, _kept_widths(ensemble)))
    result = ExtractorResult(name, "ensemble", detail, ensemble.dim, len(ids),
                             sum(by_name[m].seconds for m in members) + fuse_seconds, None,
                             {**summary, "fit_seconds": round(fit_seconds, 3)}, ensemble)
    return result, fused


def _kept_widths(ensemble: FeatureEnsemble) -> list[int]:
    return [d if keep is None else len(keep) for d, keep in zip(ensemble.dims_, ensemble.selected_)]


def comparison_evaluation_config(knn_k: Sequence[int] = (1,), prototypes: bool = False):
    """The evaluation every row gets: the four scenarios (1-NN), retrieval on main + new test, pair AUC.

    Open set and coarse labels are left out (the table compares representations, and those two add
    little here); retrieval over every split item is left out for time (it is O(N^2 D) per extractor).
    """
    from stylespace.evaluation import EvaluationConfig

    return EvaluationConfig(knn_k=tuple(knn_k), prototypes=prototypes, retrieval_sets=("test",),
                            hierarchy_levels=(), open_set_coverage=0.0, max_pairs=500_000)


def machine_description() -> dict:
    """Where the timings were taken: CPU cores, torch threads, GPU if any."""
    import platform

    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu_cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "gpu": gpu,
            "processor": platform.processor() or platform.machine(), "python": platform.python_version(),
            "torch": torch.__version__}


# --- the table -------------------------------------------------------------------------------------


def comparison_markdown(comparison: Comparison, command: str = "", catalog: str = "") -> str:
    """The comparison as a Markdown document: how it was measured, one table, the ensembles' choices."""
    from stylespace.evaluation.report import markdown_table
    results = comparison.results
    scenarios = [int(n) for n in comparison.evaluation["scenarios"]]
    classifier = f"kNN k={comparison.evaluation['knn_k'][0]}"
    header = (["extractor", "kind", "dim", "s / 1,000 img"]
              + [f"S{n} {m}" for n in scenarios for m in ("acc", "bal acc")]
              + ["P@1", "R@5", "MAP@R", "pair AUC"])
    rows = []
    for r in results:
        h = r.report.headline()
        rows.append([f"`{r.name}`", r.kind + (f" ({r.detail})" if r.detail and r.kind != "ensemble" else ""),
                     f"{r.dim:,}", f"{r.seconds_per_1000:.2f}"]
                    + [_pct(h.get(f"scenario {n} / {classifier} / {m}")) for n in scenarios
                       for m in ("accuracy", "balanced accuracy")]
                    + [_pct(h.get("retrieval test / precision@1")), _pct(h.get("retrieval test / recall@5")),
                       _pct(h.get("retrieval test / MAP@R")),
                       "-" if h.get("pairs / AUC") is None else f"{h['pairs / AUC']:.3f}"])
    machine = comparison.machine
    where = (f"{machine['gpu']}" if machine.get("gpu") else
             f"CPU only, {machine['cpu_cores']} cores, {machine['torch_threads']} torch threads")
    lines = [
        "# Feature extractors compared",
        "",
        f"Hand-made descriptors, pre-trained CNNs, trained models and ensembles, all scored by the same "
        f"evaluation on the same split: {len(comparison.ids):,} images"
        + (f" of `{catalog}`" if catalog else "") + f", split `{Path(comparison.split).name}` "
        f"(sha256 `{comparison.split_sha256[:12]}`).",
        "",
        f"- S1-S4: seed 004's support-set scenarios (1 main train -> main test, 2 main support -> main test, "
        f"3 new support -> new test, 4 main + new support -> main + new test), {classifier}, cosine distance; "
        "accuracy and balanced accuracy.",
        "- P@1, R@5, MAP@R: retrieval among the main + new test items (each query against the others); pair AUC: "
        "same vs different article type pairs of those items.",
        f"- s / 1,000 img: wall-clock seconds to embed 1,000 images of 80 x 60 px ({where}); an ensemble's is its "
        "members' plus the fusing. Other work on the machine while measuring inflates it.",
        "- Ensembles are fitted on main train only (SelectKBest on its labels, weights by 1-NN accuracy on a held-out "
        "part of it); nothing fitted sees a test or new-class label.",
        "",
        markdown_table(header, rows),
    ]
    # fitted ensembles; an equal-weight concatenation with a CNN among its members is kind "ensemble" too
    ensembles = [r for r in results if r.kind == "ensemble" and "trials" in r.config]
    if ensembles:
        lines += ["", "Ensembles (weight x member, features kept by SelectKBest):", ""]
        for r in ensembles:
            best = r.config["trials"][0]
            lines.append(f"- `{r.name}`: {r.detail}; validation 1-NN accuracy {best['accuracy']:.3f} on "
                         f"{r.config['n_validation']:,} held-out main-train items; {len(r.config['trials'])} weight "
                         f"combinations tried, fitted in {r.config['fit_seconds']:.0f} s.")
    if comparison.notes:
        lines += [""] + [f"- note: {note}" for note in comparison.notes]
    if command:
        lines += ["", "Reproduce with:", "", "```", command, "```"]
    lines += ["", f"Machine: {machine['processor']}, Python {machine['python']}, torch {machine['torch']}."]
    return "\n".join(lines) + "\n"


def _pct(value: float | None) -> str:
    return "-" if value is None or value != value else f"{100 * value:.1f}"
