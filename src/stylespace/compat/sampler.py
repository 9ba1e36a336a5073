"""Batches of heterogeneous pairs (Veit et al. 2015): the two items of every pair come from different
high-level categories, and each batch's negatives copy its positives' category combinations.

Metric-learning samplers (pytorch-metric-learning's MPerClassSampler and friends) sample *items* by class;
compatibility trains on given *pairs*, where what matters is that "top + shoes" negatives sit beside
"top + shoes" positives, so that the head learns style rather than "which categories are these?".
"""
from __future__ import annotations

import collections
from typing import Iterator, Mapping, Sequence

import numpy as np
import torch

from stylespace.compat.pairs import PairSet
from stylespace.utils import StylespaceError, at_least, in_range, validate


class CrossCategoryPairSampler(torch.utils.data.Sampler):
    """Yields batches (lists of indices into the pair list) of cross-category pairs.

    Pairs whose two items share a category (or have none) are never yielded; ``excluded`` counts them.
    Every batch holds ``round(batch_size * positive_fraction)`` positives drawn from a shuffled stream of
    the positives; each negative slot takes the category combination of one of the batch's positives (in
    turn) and draws a negative of that combination, or any negative when that combination has none.
    An epoch is ``ceil(eligible pairs / batch_size)`` batches; positives and negatives restart their
    streams when used up. Deterministic for a given ``seed`` and :meth:`set_epoch`.

    Args:
        categories_a, categories_b: (N,) the category of each pair's first and second item.
        labels: (N,) 1 = compatible, 0 = not.
        batch_size: pairs per batch (003: 128).
        positive_fraction: positives per batch; None keeps the data's own ratio (003 trained on ~6 %).
        match_categories: draw negatives with the batch's positives' category combinations (Veit);
            False draws negatives uniformly.
    """

    def __init__(self, categories_a: Sequence[str | None], categories_b: Sequence[str | None],
                 labels: Sequence[int] | np.ndarray, batch_size: int = 128, positive_fraction: float | None = None,
                 match_categories: bool = True, seed: int = 0):
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        if not (len(categories_a) == len(categories_b) == len(labels)):
            raise StylespaceError(f"sampler: {len(categories_a)} / {len(categories_b)} / {len(labels)} categories "
                                  "and labels; expected one of each per pair")
        validate([at_least("batch_size", batch_size, 2),
                  in_range("positive_fraction", positive_fraction, 0, 1, "()", none_ok=True)])
        eligible = np.array([bool(a) and bool(b) and a != b for a, b in zip(categories_a, categories_b)], dtype=bool)
        self.excluded = int((~eligible).sum())
        self.positives = np.flatnonzero(eligible & (labels == 1))
        self.negatives = np.flatnonzero(eligible & (labels == 0))
        if len(self.positives) == 0 or len(self.negatives) == 0:
            raise StylespaceError(f"sampler: {len(self.positives)} positive and {len(self.negatives)} negative "
                                  "cross-category pairs; training needs both")
        self.combo = [_combo(a, b) for a, b in zip(categories_a, categories_b)]
        by_combo: dict[tuple, list[int]] = collections.defaultdict(list)
        for k in self.negatives:
            by_combo[self.combo[k]].append(int(k))
        self.negatives_by_combo = {c: np.array(v) for c, v in by_combo.items()}
        n_eligible = len(self.positives) + len(self.negatives)
        batch_size = min(batch_size, n_eligible)
        fraction = positive_fraction if positive_fraction is not None else len(self.positives) / n_eligible
        self.n_positive = int(np.clip(round(batch_size * fraction), 1, batch_size - 1))
        self.batch_size = batch_size
        self.match_categories = match_categories
        self.n_batches = -(-n_eligible // batch_size)
        self.seed = seed
        self.epoch = 0

    @classmethod
    def from_pairs(cls, pairs: PairSet, category_of: Mapping[str, str], **kwargs) -> "CrossCategoryPairSampler":
        """Build from a :class:`PairSet` and an item id -> category map (e.g. subCategory)."""
        return cls([category_of.get(a) for a in pairs.id_a], [category_of.get(b) for b in pairs.id_b],
                   pairs.label, **kwargs)

    def set_epoch(self, epoch: int) -> None:
        """Use a different (still deterministic) shuffle for each epoch."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n_batches

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        positives = _Stream(self.positives, rng)
        any_negative = _Stream(self.negatives, rng)
        by_combo = {c: _Stream(v, rng) for c, v in self.negatives_by_combo.items()}
        n_negative = self.batch_size - self.n_positive
        for _ in range(self.n_batches):
            batch = [positives.next() for _ in range(self.n_positive)]
            for slot in range(n_negative):
                stream = any_negative
                if self.match_categories:
                    stream = by_combo.get(self.combo[batch[slot % self.n_positive]], any_negative)
                batch.append(stream.next())
            yield [int(k) for k in rng.permutation(batch)]


class _Stream:
    """An endless shuffled walk through ``values``: a fresh permutation each time it is used up."""

    def __init__(self, values: np.ndarray, rng: np.random.Generator):
        self.values, self.rng = values, rng
        self.order = rng.permutation(values)
        self.position = 0

    def next(self) -> int:
        if self.position == len(self.order):
            self.order = self.rng.permutation(self.values)
            self.position = 0
        self.position += 1
        return int(self.order[self.position - 1])


def _combo(a: str | None, b: str | None) -> tuple:
    """The unordered category combination of a pair: (top, shoes) == (shoes, top)."""
    return tuple(sorted((a or "", b or "")))
