"""What `stylespace evaluate` scores: model folders and embeddings files, made into vectors once per split.

The rest of :mod:`stylespace.evaluation` works on plain arrays; this module is where a model folder is
embedded (and its classifier head asked for task 1) and an embeddings file read, so that several sources
can be compared on one split with the catalog and the pair set read once.

>>> evaluator = SplitEvaluator(SplitManifest.load("split.csv"), "split.csv", EvaluationConfig())
>>> report = evaluator.evaluate("models/default")
"""
from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Callable, Protocol

from stylespace.data import Catalog, SplitManifest, load_catalog, load_image_array
from stylespace.embeddings import Embeddings, embed_catalog, predict_classes
from stylespace.evaluation.plan import plan_for
from stylespace.evaluation.protocol import evaluate
from stylespace.evaluation.report import EvaluationConfig, EvaluationReport
from stylespace.evaluation.vectors import VectorTable
from stylespace.progress import console
from stylespace.utils import StylespaceError


class CopyFinder(Protocol):
    """Finds the groups of copies an evaluation is also measured without (``--dedupe``).

    Called with the split's catalog, the first source's name and its embeddings; returns (groups of ids that
    are copies of each other, a description of how they were found). :class:`stylespace.audit.EvaluationCopies`
    is the implementation (pixel-identical and near copies, or those of a saved audit).
    """

    def __call__(self, catalog: Catalog, source_name: str, embeddings: Embeddings) -> tuple[list[list[str]], str]: ...


@dataclasses.dataclass
class SplitEvaluator:
    """Scores sources on one split, sharing what they have in common: the catalog (read once, when a source
    needs images or pairs), the pair set, the copy groups (found once) and the config.

    Args:
        manifest / split_path: the split and where it was read from (for the record).
        config: what to measure.
        catalog_path: the split's catalog (default: the one its config names).
        pairs_path: a pairs CSV of catalog ids (default: same vs different article-type pairs of test items).
        copies: with ``--dedupe``, what finds the copies every figure is also measured without.
    """

    manifest: SplitManifest
    split_path: str | os.PathLike
    config: EvaluationConfig
    catalog_path: str | os.PathLike | None = None
    pairs_path: str | os.PathLike | None = None
    copies: CopyFinder | None = None
    batch_size: int = 256
    device: str = "auto"
    progress: bool = True

    def __post_init__(self) -> None:
        plan_for(self.manifest, str(self.split_path))  # a split with nothing to score fails here, before embedding
        self._catalog: Catalog | None = None
        self._copy_groups: tuple[list[list[str]], str] | None = None
        self._pairs = None
        if self.pairs_path is not None:
            pairs = load_catalog(self.pairs_path, kind="pairs", base=self.catalog()).pairs
            if not pairs:
                raise StylespaceError(f"{self.pairs_path}: no usable pairs (are its ids from "
                                      f"{self.catalog().source_path}?)")
            ids_a, ids_b, labels = zip(*pairs)
            self._pairs = (list(ids_a), list(ids_b), list(labels))

    def catalog(self) -> Catalog:
        """The split's catalog, read once: ``catalog_path``, else the path recorded in the split's config."""
        if self._catalog is None:
            recorded = self.manifest.config.catalog
            path = Path(self.catalog_path) if self.catalog_path else (Path(recorded) if recorded else None)
            if path is None or not path.exists():
                raise StylespaceError(f"{self.split_path}: the catalog it was made from is not known or not found "
                                      f"({path}); pass --catalog PATH")
            self._catalog = load_catalog(path, label_column=self.manifest.config.label_column or None)
        return self._catalog

    def evaluate(self, source: str | os.PathLike) -> EvaluationReport:
        """Every figure of the config for one model folder or embeddings ``.npz``."""
        source = Path(source)
        began = time.perf_counter()
        embeddings, head, head_ids = self.vectors(source)
        seconds = {"load or embed": round(time.perf_counter() - began, 3)}
        groups, groups_source = None, ""
        if self.copies is not None:
            began = time.perf_counter()
            if self._copy_groups is None:  # found once, with the first source's vectors
                self._copy_groups = self.copies(self.catalog(), source.name, embeddings)
            groups, groups_source = self._copy_groups
            seconds["copies"] = round(time.perf_counter() - began, 3)
        log: Callable[[str], None] | None = (
            (lambda message: console.print(f"[dim]{source.name}: {message}[/dim]")) if self.progress else None)
        report = evaluate(
            VectorTable(embeddings.ids, embeddings.vectors), self.manifest, self.config, name=source.name or str(source),
            source=str(source), model_id=embeddings.model_id, split_path=str(self.split_path), pairs=self._pairs,
            pairs_source=str(self.pairs_path) if self.pairs_path else "", head=head, head_ids=head_ids,
            copies=groups, copies_source=groups_source, log=log)
        report.seconds = {**seconds, **report.seconds}
        if embeddings.meta.get("head_note"):
            report.notes.append(embeddings.meta["head_note"])
        failed = embeddings.meta.get("failed") or {}
        if failed:
            report.notes.append(f"{len(failed)} images failed to decode and have no vector")
        return report

    def vectors(self, source: Path) -> tuple[Embeddings, tuple[list[str], list[str]] | None, list[str] | None]:
        """(embeddings, the classifier head's (true, predicted) labels on main test or None, their ids or None)
        of a model folder or an embeddings file."""
        from stylespace.models import resolve_model_dir

        if resolve_model_dir(source).is_dir():  # a folder, or a shipped model's name (default)
            return self._embed_with_model(source)
        if source.suffix == ".npz":
            return Embeddings.load(source), None, None
        raise StylespaceError(f"{source}: expected a model folder (model.safetensors + model.json) or an embeddings "
                              ".npz written by `stylespace embed`")

    def _head_applies(self, classes: list[str]) -> bool:
        """Task 1 scores a classifier head trained on this split's classes; the head of a model trained on
        other classes (the shipped model on your own catalog) would be scored on labels it cannot give."""
        group, split = plan_for(self.manifest).head_part
        trained = set(self.manifest.select(group=group, split="train").labels)
        return bool(trained) and trained <= set(classes)

    def _embed_with_model(self, folder: Path):
        from stylespace.models import load_model

        model = load_model(folder)
        catalog = self.catalog()
        embeddings = embed_catalog(model, catalog, batch_size=self.batch_size, device=self.device,
                                   progress=self.progress)
        if model.classifier is None:
            return embeddings, None, None
        if not self._head_applies(model.classes):
            embeddings.meta["head_note"] = (f"task 1 not measured: {folder.name}'s classifier knows {len(model.classes)} "
                                            "other classes, not this split's training classes")
            return embeddings, None, None
        main_test = self.manifest.select(*plan_for(self.manifest).head_part)
        array = load_image_array(catalog, size=tuple(model.config.input_size), progress=self.progress)
        ids = [i for i in main_test.ids if i not in array.failed]
        truth = dict(zip(main_test.ids, main_test.labels))
        predicted = predict_classes(model, array.take(ids), self.batch_size, self.device)
        return embeddings, ([truth[i] for i in ids], [model.classes[p] for p in predicted]), ids
