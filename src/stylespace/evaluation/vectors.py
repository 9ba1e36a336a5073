"""Looking up vectors by item id, so evaluation can take any subset of a split from one embeddings table."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from stylespace.evaluation.search import as_vectors
from stylespace.utils import StylespaceError


class VectorTable:
    """(N, D) vectors addressed by item id.

    Args:
        ids: N distinct item ids (strings).
        vectors: (N, D) array, row i belongs to ``ids[i]``.
    """

    def __init__(self, ids: Sequence[str], vectors):
        self.ids = [str(i) for i in ids]
        self.vectors = as_vectors(vectors, "embedding vectors")
        if len(self.ids) != len(self.vectors):
            raise StylespaceError(f"{len(self.ids)} ids but {len(self.vectors)} vectors; expected one id per row")
        self.row = {item_id: row for row, item_id in enumerate(self.ids)}
        if len(self.row) != len(self.ids):
            raise StylespaceError("embedding ids are not unique; every item must appear once")

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, item_id: str) -> bool:
        return item_id in self.row

    @property
    def dim(self) -> int:
        return self.vectors.shape[1]

    def rows(self, ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(row index of each found id, bool mask over ``ids`` of those found)."""
        found = np.array([i in self.row for i in ids], dtype=bool)
        rows = np.array([self.row[i] for i, ok in zip(ids, found) if ok], dtype=np.int64)
        return rows, found

    def take(self, ids: Sequence[str], labels: Sequence[str]) -> tuple[np.ndarray, np.ndarray, int]:
        """(vectors (M, D), their labels (M,), how many of ``ids`` had no vector) for the ids that have one."""
        rows, found = self.rows(ids)
        labels = np.asarray(list(labels), dtype=object)
        if len(labels) != len(found):
            raise StylespaceError(f"{len(found)} ids but {len(labels)} labels")
        return self.vectors[rows], labels[found], int((~found).sum())
