"""Choosing between models on a split's validation items, never its test items: which of the shipped model as
it is and the one fine-tuned from it serves a catalog better.

The measure is 1-NN accuracy (cosine) from the split's training rows to its validation rows: what search
does, on items neither model trained on. A split without val rows (004's protocol) uses main support as the
queries. With held-out classes, their support items are queries too, each answered by the other support items
(leave-one-out): a model fine-tuned on the known classes must not lose the new ones. Ties go to the earlier
candidate (the simpler one: the shipped model).
"""
from __future__ import annotations

import dataclasses
import os
from typing import Sequence

import numpy as np

from stylespace.data import Catalog, SplitManifest
from stylespace.evaluation.support_set import SupportSetClassifier
from stylespace.evaluation.vectors import VectorTable
from stylespace.utils import StylespaceError


@dataclasses.dataclass
class Candidate:
    """One model's validation figure."""

    name: str
    folder: str
    model_id: str
    accuracy: float
    n_support: int
    n_queries: int


@dataclasses.dataclass
class ModelChoice:
    """The chosen model, every candidate's figure, and why, in words."""

    chosen: Candidate
    candidates: list[Candidate]
    queries: str  # which rows were the queries

    @property
    def reason(self) -> str:
        figures = ", ".join(f"{c.name} {100 * c.accuracy:.1f} %" for c in self.candidates)
        return (f"{self.chosen.name} measures best on the validation items (1-NN {self.queries}: {figures}; "
                f"{self.chosen.n_queries} queries, ties to the first)")


def validation_parts(manifest: SplitManifest) -> tuple[SplitManifest, SplitManifest, str]:
    """(support rows, query rows, their description) of the validation measure."""
    for group in ("all", "main"):
        train = manifest.select(group=group, split="train")
        if len(train):
            val = manifest.select(group=group, split="val")
            if len(val):
                return train, val, f"{group} train -> {group} val"
            support = manifest.select(group=group, split="support")
            if len(support):
                return train, support, f"{group} train -> {group} support"
    raise StylespaceError("the split has no training rows with val or support rows beside them to choose a model "
                          "on; make it with a val part, e.g. `stylespace split CATALOG --stratified "
                          "train=0.7,val=0.1,test=0.2`")


def choose_model(candidates: Sequence[tuple[str, str | os.PathLike]], catalog: Catalog, manifest: SplitManifest,
                 progress: bool = False) -> ModelChoice:
    """Embed ``catalog`` with each (name, model folder) and keep the one with the best validation 1-NN."""
    from stylespace.embeddings import embed_catalog
    from stylespace.models import load_model, resolve_model_dir

    support, queries, description = validation_parts(manifest)
    new_support = manifest.select(group="new", split="support")
    scored = []
    for name, folder in candidates:
        embeddings = embed_catalog(load_model(folder), catalog, progress=progress)
        table = VectorTable(embeddings.ids, embeddings.vectors)
        X_s, y_s, _ = table.take(support.ids, support.labels)
        X_q, y_q, _ = table.take(queries.ids, queries.labels)
        if len(X_s) == 0 or len(X_q) == 0:
            raise StylespaceError(f"{folder}: none of the split's {description} items has a vector; was the split "
                                  "made from this catalog?")
        correct = SupportSetClassifier("knn", k=1).fit(X_s, y_s).predict(X_q) == y_q
        X_n, y_n, _ = table.take(new_support.ids, new_support.labels)
        if len(X_n) > 1:
            correct = np.concatenate([correct, SupportSetClassifier("knn", k=1).fit(X_n, y_n).leave_one_out()[0] == y_n])
        scored.append(Candidate(name, str(resolve_model_dir(folder)), embeddings.model_id, float(np.mean(correct)),
                                len(X_s), len(correct)))
    best = max(scored, key=lambda c: c.accuracy)  # max keeps the first of equals
    return ModelChoice(best, scored, description + (" and new support, leave-one-out" if len(new_support) > 1 else ""))
