"""A catalog's vectors under a model are kept in the cache: the next command that embeds it reads them."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from stylespace import embeddings
from stylespace.models import ModelConfig, build_model


@pytest.fixture
def small_cache_threshold(monkeypatch):
    monkeypatch.setattr(embeddings, "VECTOR_CACHE_MIN", 8)


def tiny(seed: int):
    torch.manual_seed(seed)
    return build_model(ModelConfig(backbone="compact", width=8, embedding_dim=16)).eval()


def test_catalog_vectors_are_kept_and_read_back(small_catalog, cache_dir, small_cache_threshold, monkeypatch):
    from stylespace.data import load_catalog
    from stylespace.index.build import embed_items

    catalog = load_catalog(small_catalog)
    model = tiny(0)
    first = embeddings.embed_catalog(model, catalog, progress=False)
    kept = list((cache_dir / "vectors").glob("*.npy"))
    assert len(kept) == 1 and kept[0].name.startswith(first.model_id)
    calls = []
    real = embeddings.embed_images
    monkeypatch.setattr(embeddings, "embed_images", lambda *a, **k: calls.append(1) or real(*a, **k))
    again = embeddings.embed_catalog(model, catalog, progress=False)
    assert calls == [] and np.array_equal(again.vectors, first.vectors) and again.ids == first.ids
    # the index's embedding reads the same vectors, for the whole catalog and for a subset
    indexed, _ = embed_items(model, catalog, progress=False)
    assert calls == [] and np.allclose(indexed.vectors, first.vectors[[first.ids.index(i) for i in indexed.ids]])
    some = first.ids[::5]
    subset, _ = embed_items(model, catalog, ids=some, progress=False)
    assert calls == [] and subset.ids == some
    assert np.allclose(subset.vectors, first.vectors[::5])
    # another model (other weights) never reads them
    other = embeddings.embed_catalog(tiny(1), catalog, progress=False)
    assert len(calls) == 1 and not np.allclose(other.vectors, first.vectors)
    assert len(list((cache_dir / "vectors").glob("*.npy"))) == 2


def test_a_damaged_vector_file_is_made_again(small_catalog, cache_dir, small_cache_threshold):
    from stylespace.data import load_catalog

    catalog = load_catalog(small_catalog)
    model = tiny(0)
    first = embeddings.embed_catalog(model, catalog, progress=False)
    path = next((cache_dir / "vectors").glob("*.npy"))
    path.write_bytes(b"not an array")
    again = embeddings.embed_catalog(model, catalog, progress=False)
    assert np.allclose(again.vectors, first.vectors)
    assert np.load(path).shape == first.vectors.shape
