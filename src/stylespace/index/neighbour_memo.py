"""The nearest other items of catalog items, remembered: they do not change until the index does.

A recommendation's confidence reads the neighbours of its top items (are they a tight cluster?), which
costs one more index search per recommended item, several times the search for the query itself. A
catalog item's neighbours depend only on the index generation, and shoppers' queries land on the same
popular items again and again, so they are searched once and remembered (per index state: any add, remove or
rebuild forgets them all). Each row keeps ``extra`` neighbours more than asked for, so that a query can
leave out a few items of its own (the query item itself) and still get exactly what a fresh search gives.
"""
from __future__ import annotations

import numpy as np

EXTRA = 8
MAX_ITEMS = 200_000  # rows of (k + EXTRA) keys and similarities: ~20 MB at k = 10


class NeighbourMemo:
    """Remembered neighbour rows of one :class:`~stylespace.index.CatalogIndex`, keyed by item key."""

    def __init__(self, extra: int = EXTRA, max_items: int = MAX_ITEMS):
        self.extra = extra
        self.max_items = max_items
        self._rows: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._state = None
        self._width = 0
        self.hits = self.misses = 0

    def neighbours_of_keys(self, index, keys: np.ndarray, k: int, exclude_keys: np.ndarray | None):
        """As :meth:`CatalogIndex.neighbours_of_keys` (its keys and similarities arrays), from remembered rows
        where there are some; None when the question cannot be answered from them (more items to leave out
        than rows keep spare)."""
        keys = np.asarray(keys, dtype=np.int64).ravel()
        exclude = (np.empty((len(keys), 0), np.int64) if exclude_keys is None
                   else np.asarray(exclude_keys, dtype=np.int64).reshape(len(keys), -1))
        if exclude.shape[1] > self.extra:
            return None
        state = index.marker  # any add, remove or rebuild moves it
        if state != self._state or k + self.extra > self._width or len(self._rows) > self.max_items:
            self._rows.clear()
            self._state, self._width = state, max(self._width, k + self.extra)
        missing = np.array(sorted({int(key) for key in keys if key >= 0 and int(key) not in self._rows}), np.int64)
        self.misses += len(missing)
        self.hits += int((keys >= 0).sum()) - len(missing)
        if len(missing):
            vectors = index.vectors_of_keys(missing)
            found = index._search(np.ascontiguousarray(vectors), self._width, None, np.empty(0, np.int64),
                                  missing[:, None])
            for key, row_keys, row_sims in zip(missing, found.keys, found.similarities):
                self._rows[int(key)] = (row_keys, row_sims)
        out_keys = np.full((len(keys), k), -1, dtype=np.int64)
        out_sims = np.full((len(keys), k), np.nan, dtype=np.float32)
        for row, key in enumerate(keys):
            if key < 0:
                continue
            row_keys, row_sims = self._rows[int(key)]
            banned = exclude[row][exclude[row] >= 0]
            if len(banned):
                keep = ~np.isin(row_keys, banned)
                row_keys, row_sims = row_keys[keep], row_sims[keep]
            take = min(k, len(row_keys))
            out_keys[row, :take], out_sims[row, :take] = row_keys[:take], row_sims[:take]
        return out_keys, out_sims
