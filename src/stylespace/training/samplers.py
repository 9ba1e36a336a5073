"""Which training items make up each batch, epoch by epoch (deterministic given the seed and epoch).

- ``shuffle``: every item once per epoch, in random order.
- ``m_per_class``: pytorch-metric-learning's ``MPerClassSampler``: each batch holds ``m`` items of each of
  batch_size / m classes, so every anchor has positives (triplet, contrastive, multi-similarity) and
  rare classes are seen as often as common ones.
- ``rare_augment``: seed 000's class balancing: rare classes are drawn more often and, since they
  repeat, augmented more strongly (scale / translation / colour), so their repeats differ.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import numpy as np
from pytorch_metric_learning.samplers import MPerClassSampler
from pytorch_metric_learning.utils import common_functions as pml_common

from stylespace.utils import StylespaceError, at_least, in_range, validate

Batch = tuple[np.ndarray, np.ndarray | None]  # (item indices, per-item augmentation strength or None)


class ShuffleSampler:
    """Every item once per epoch in a random order; a last batch smaller than 2 is dropped (batch norm)."""

    def __init__(self, labels: np.ndarray, batch_size: int, seed: int = 0):
        self.n, self.batch_size, self.seed = len(labels), batch_size, seed

    def __len__(self) -> int:
        full, rest = divmod(self.n, self.batch_size)
        return full + (rest >= 2)

    def batches(self, epoch: int) -> Iterator[Batch]:
        order = np.random.default_rng([self.seed, epoch]).permutation(self.n)
        for start in range(0, self.n, self.batch_size):
            chunk = order[start:start + self.batch_size]
            if len(chunk) >= 2:
                yield chunk, None


@contextlib.contextmanager
def _pml_random(seed: list[int]):
    """PML's samplers draw from a module-level numpy RandomState; give it a seeded one for the epoch."""
    saved = pml_common.NUMPY_RANDOM
    pml_common.NUMPY_RANDOM = np.random.RandomState(np.random.SeedSequence(seed).generate_state(1)[0])
    try:
        yield
    finally:
        pml_common.NUMPY_RANDOM = saved


class MPerClassBatches:
    """Batches of ``m`` items from each of ``batch_size // m`` classes (PML ``MPerClassSampler``).

    An epoch has as many batches as a plain pass over the data would.
    """

    def __init__(self, labels: np.ndarray, batch_size: int, m: int, seed: int = 0):
        n_classes = len(np.unique(labels))
        validate([at_least("m_per_class", m, 2, note="so that every batch holds positives")])
        if batch_size % m:
            raise StylespaceError(f"batch_size ({batch_size}) must be a multiple of m_per_class ({m})")
        if m * n_classes < batch_size:
            raise StylespaceError(f"m_per_class x classes = {m} x {n_classes} < batch_size {batch_size}: "
                                  "lower the batch size or raise m_per_class")
        self.batch_size, self.seed = batch_size, seed
        self.n_batches = max(1, len(labels) // batch_size)
        self.sampler = MPerClassSampler(labels, m, batch_size=batch_size,
                                        length_before_new_iter=self.n_batches * batch_size)
        self.class_order = list(self.sampler.labels)

    def __len__(self) -> int:
        return self.n_batches

    def batches(self, epoch: int) -> Iterator[Batch]:
        # The PML sampler shuffles its class list in place: start every epoch from the same order.
        self.sampler.labels = list(self.class_order)
        with _pml_random([self.seed, epoch]):
            order = np.fromiter(iter(self.sampler), dtype=np.int64)
        for start in range(0, len(order), self.batch_size):
            yield order[start:start + self.batch_size], None


class RareClassAugmentSampler:
    """Seed 000's balancing: item weights ``count(class) ** -power`` (power 1 = fully balanced classes),
    drawn with replacement; an item's augmentation strength grows with how often it is expected to be
    drawn per epoch (1 for the most common class, up to ``max_strength``)."""

    def __init__(self, labels: np.ndarray, batch_size: int, power: float = 0.5, max_strength: float = 2.5,
                 seed: int = 0):
        validate([in_range("balance_power", power, 0, 1)])
        counts = np.bincount(labels)
        weights = counts[labels].astype(np.float64) ** -power
        self.p = weights / weights.sum()
        expected_draws = len(labels) * self.p  # per item and epoch
        self.strength = np.clip(expected_draws / expected_draws.min(), 1.0, max_strength).astype(np.float32)
        self.n, self.batch_size, self.seed = len(labels), batch_size, seed

    def __len__(self) -> int:
        return max(1, self.n // self.batch_size)

    def batches(self, epoch: int) -> Iterator[Batch]:
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.choice(self.n, size=len(self) * self.batch_size, replace=True, p=self.p)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start:start + self.batch_size]
            yield chunk, self.strength[chunk]


class RankShard:
    """One process's part of another sampler's batches in data-parallel training (``training.distributed``):
    items ``rank``, ``rank + N``, ``rank + 2N`` ... of every batch, with their augmentation strengths.

    Every rank draws the same batches (same seed and epoch), so the N parts together are the one-process
    batch: m-per-class and rare-class batches keep their make-up over the global batch, and an m-per-class
    batch gives each rank about m / N items of every class in it (batch-norm statistics over all of its
    classes). A batch too small to give every rank 2 items (a shuffled epoch's last) is skipped.
    """

    def __init__(self, sampler, rank: int, world_size: int):
        self.sampler, self.rank, self.world_size = sampler, rank, world_size
        # Batch sizes do not depend on the epoch: count the usable batches once.
        self.n_batches = sum(len(indices) >= 2 * world_size for indices, _ in sampler.batches(0))

    def __len__(self) -> int:
        return self.n_batches

    def batches(self, epoch: int) -> Iterator[Batch]:
        for indices, strength in self.sampler.batches(epoch):
            if len(indices) >= 2 * self.world_size:
                part = slice(self.rank, None, self.world_size)
                yield indices[part], None if strength is None else strength[part]


SAMPLERS = ("shuffle", "m_per_class", "rare_augment")


def build_sampler(kind: str, labels: np.ndarray, batch_size: int, seed: int, m_per_class: int = 4,
                  balance_power: float = 0.5):
    """The batch sampler named ``kind`` (one of ``SAMPLERS``) over integer ``labels`` (N,)."""
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) < 2:
        raise StylespaceError(f"need at least 2 training items, got {len(labels)}")
    if kind == "shuffle":
        return ShuffleSampler(labels, batch_size, seed)
    if kind == "m_per_class":
        return MPerClassBatches(labels, batch_size, m_per_class, seed)
    if kind == "rare_augment":
        return RareClassAugmentSampler(labels, batch_size, balance_power, seed=seed)
    raise StylespaceError(f"sampler {kind!r} is unknown; expected one of {', '.join(SAMPLERS)}")
