"""Splits for a catalog of your own: held-out classes when it has enough classes, else a plain stratified split.

A held-out-classes split is 004's idea at any size: most classes are "main" (train / val / test, stratified per
class), a few are "new" to the model (support / test only, never trained on), so one split measures both the
classes a model learnt and those it must handle from a few labelled examples. :func:`split_for_catalog`
picks the split `stylespace demo` uses for a catalog: 004's protocol when the catalog has its 69 classes,
held-out classes when it has enough classes with enough items, else stratified.
"""
from __future__ import annotations

import collections
import dataclasses
from typing import Sequence

import numpy as np

from stylespace.data.catalog import Catalog
from stylespace.data.splits import (SplitConfig, SplitManifest, _allocate, _check_fractions, _labels, _manifest,
                                    protocol_split, stratified_split)
from stylespace.utils import StylespaceError

FRACTIONS = {"train": 0.7, "val": 0.1, "test": 0.2}
NEW_FRACTIONS = (0.5, 0.5)  # support / test
MIN_NEW_ITEMS = 4  # a held-out class needs 2 support and 2 test items at least
MIN_MAIN_CLASSES = 4
NEW_SHARE = 0.25  # of the classes that could be held out


def held_out_split(catalog: Catalog, n_new: int, fractions: dict[str, float] | None = None,
                   new_fractions: Sequence[float] = NEW_FRACTIONS, seed: int = 0,
                   merge: dict[str, str] | None = None, min_new_items: int = MIN_NEW_ITEMS) -> SplitManifest:
    """``n_new`` classes held out as "new" (support / test by ``new_fractions``), chosen at random (``seed``)
    among those with at least ``min_new_items`` items; every other class is "main", stratified by
    ``fractions`` (default train 0.7 / val 0.1 / test 0.2)."""
    fractions = dict(fractions or FRACTIONS)
    _check_fractions(list(fractions.values()), len(fractions), "fractions")
    _check_fractions(new_fractions, 2, "new_fractions (support, test)")
    merge = dict(merge or {})
    labels = _labels(catalog, merge)
    counts = collections.Counter(label for label in labels if label is not None)
    eligible = sorted(c for c, n in counts.items() if n >= min_new_items)
    if n_new < 1 or n_new > len(eligible) or len(counts) - n_new < 1:
        raise StylespaceError(f"{catalog.source_path}: cannot hold out {n_new} classes: {len(eligible)} of its "
                              f"{len(counts)} classes have {min_new_items}+ items, and one class at least must stay "
                              "for training; hold out fewer, or use a stratified split")
    rng = np.random.default_rng(seed)
    new = sorted(rng.choice(eligible, size=n_new, replace=False).tolist())
    main = sorted(set(counts) - set(new))
    assignment = {}
    for classes, group, names, parts in ((main, "main", tuple(fractions), tuple(fractions.values())),
                                         (new, "new", ("support", "test"), tuple(new_fractions))):
        for cls in classes:
            members = [i for i, label in enumerate(labels) if label == cls]
            for i, split in zip(members, _allocate(len(members), names, parts, rng)):
                assignment[i] = (group, split)
    config = SplitConfig("held_out", str(catalog.source_path), catalog.fingerprint(), catalog.label_column or "",
                         seed, len(main), len(new), new_fractions=tuple(new_fractions), fractions=fractions,
                         merge=merge, main_classes=main, new_classes=new)
    return _manifest(catalog, labels, assignment, config)


@dataclasses.dataclass(frozen=True)
class SplitChoice:
    """Which split a catalog gets: ``method`` (``protocol``, ``held_out`` or ``stratified``), the classes held
    out (``n_new``, held_out only), the fractions of the trained classes, and why, in words."""

    method: str
    reason: str
    n_new: int = 0
    fractions: tuple[tuple[str, float], ...] = tuple(FRACTIONS.items())

    def make(self, catalog: Catalog, seed: int = 0) -> SplitManifest:
        if self.method == "protocol":
            return protocol_split(catalog, seed=seed)
        if self.method == "held_out":
            return held_out_split(catalog, self.n_new, dict(self.fractions), seed=seed)
        return stratified_split(catalog, dict(self.fractions), seed=seed, min_count=2)


def split_for_catalog(catalog: Catalog) -> SplitChoice:
    """The split for a labelled catalog: 004's protocol when the catalog has its 39 + 30 classes, else held-out
    classes when a quarter of its classes (2 at least) can be held out with ``MIN_NEW_ITEMS`` items each and
    ``MIN_MAIN_CLASSES`` stay to train on, else stratified."""
    counts = collections.Counter(label for label in catalog.labels if label is not None)
    if not counts:
        raise StylespaceError(f"{catalog.source_path}: no labelled items, so no split to train or evaluate on")
    if len(counts) >= 69:
        return SplitChoice("protocol", f"{len(counts)} classes: seed 004's protocol (the 39 most frequent to train "
                                       "on, the next 30 held out as new)")
    eligible = sum(1 for n in counts.values() if n >= MIN_NEW_ITEMS)
    n_new = max(2, int(round(NEW_SHARE * eligible)))
    if eligible >= n_new and len(counts) - n_new >= MIN_MAIN_CLASSES:
        return SplitChoice("held_out", f"{len(counts)} classes, fewer than the protocol's 69: {n_new} of the "
                                       f"{eligible} classes with {MIN_NEW_ITEMS}+ items held out as new (support / "
                                       f"test), the other {len(counts) - n_new} split train 0.7 / val 0.1 / test 0.2",
                           n_new)
    return SplitChoice("stratified", f"{len(counts)} classes ({eligible} with {MIN_NEW_ITEMS}+ items): too few to "
                                     "hold some out as new, so a stratified split, train 0.7 / val 0.1 / test 0.2")
