"""Remembered item neighbours (index/neighbour_memo.py) equal a fresh search, and are forgotten on a write."""
from __future__ import annotations

import numpy as np

from stylespace.index import CatalogIndex


def fresh(index, keys, k, exclude=None):
    """neighbours_of_keys without the memo."""
    memo = index._neighbour_memo
    memo.extra, saved = -1, memo.extra  # no row has room to spare: every question goes to the index
    try:
        return index.neighbours_of_keys(keys, k, exclude)
    finally:
        memo.extra = saved


def test_remembered_neighbours_equal_a_fresh_search_and_are_forgotten_on_a_write(tmp_path):
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(300, 16)).astype(np.float32)
    ids = [f"i{n}" for n in range(300)]
    index = CatalogIndex.create(tmp_path / "index", ids, vectors, model_id="m")
    keys = np.append(index.keys_of(ids[:40]), -1).astype(np.int64)
    for k, exclude in ((5, None), (10, None), (3, np.repeat(keys[:1], len(keys))[:, None])):
        first = index.neighbours_of_keys(keys, k, exclude)
        again = index.neighbours_of_keys(keys, k, exclude)  # from the memo
        expected = fresh(index, keys, k, exclude)
        for got in (first, again):
            assert np.array_equal(got.keys, expected.keys)
            assert np.allclose(got.similarities, expected.similarities, equal_nan=True)
    assert index._neighbour_memo.hits > 0
    index.remove(ids[1:3])  # a write: the memo must not answer with removed items
    kept = np.delete(keys, [1, 2])
    after = index.neighbours_of_keys(kept, 10)
    assert np.array_equal(after.keys, fresh(index, kept, 10).keys)
    assert not set(keys[1:3].tolist()) & set(after.keys.ravel().tolist())
