"""One contract for every index backend: the embedded FAISS + SQLite default and Milvus (a Milvus Lite file,
the same client code as a server). Each test runs against both; keep them few and small (Milvus Lite
starts a server per file)."""
from __future__ import annotations

import builtins
import json

import numpy as np
import pytest

from stylespace.index import CatalogIndex
from stylespace.utils import StylespaceError

MODEL = "model-a"
BACKENDS = ["faiss", pytest.param("milvus", marks=pytest.mark.milvus)]


def catalog(n: int = 400, dim: int = 16, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(5, dim))
    classes = rng.integers(0, 5, n)
    vectors = (centres[classes] + 0.7 * rng.normal(size=(n, dim))).astype(np.float32)
    ids = [f"item{i}" for i in range(n)]
    metas = [{"gender": ["Men", "Women", "Unisex"][i % 3] if i % 40 else "Girls", "season": ["Summer", "Winter"][i % 2]}
             for i in range(n)]
    return ids, vectors, [f"class{c}" for c in classes], metas


def build(tmp_path, backend: str, ids, vectors, labels=None, metas=None, **settings) -> CatalogIndex:
    if backend == "milvus":
        pytest.importorskip("pymilvus")
        pytest.importorskip("milvus_lite")
        settings.setdefault("uri", str(tmp_path / "milvus.db"))
    return CatalogIndex.create(tmp_path / "idx", ids, vectors, model_id=MODEL, labels=labels, metas=metas,
                               backend=backend, **settings)


def brute_force(vectors: np.ndarray, queries: np.ndarray, allowed: np.ndarray, k: int) -> np.ndarray:
    r = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    similarity = np.where(allowed[None, :], q @ r.T, -np.inf)
    return np.argsort(-similarity, axis=1, kind="stable")[:, :k]


@pytest.mark.parametrize("backend", BACKENDS)
def test_search_filters_and_exclusions(tmp_path, backend):
    ids, vectors, labels, metas = catalog()
    index = build(tmp_path, backend, ids, vectors, labels, metas)
    assert json.loads((tmp_path / "idx" / "index.json").read_text())["backend"] == backend
    queries = vectors[:6] + 0.05
    everything = np.ones(len(ids), bool)
    order = brute_force(vectors, queries, everything, 5)
    assert [[h.id for h in hits] for hits in index.search(queries, k=5)] == [[ids[i] for i in row] for row in order]
    girls = np.array([m["gender"] == "Girls" for m in metas])
    summer_girls = index.search(queries, k=4, where={"gender": "Girls", "season": ["Summer"]})
    allowed = girls & np.array([m["season"] == "Summer" for m in metas])
    assert [[h.id for h in hits] for hits in summer_girls] == [
        [ids[i] for i in row] for row in brute_force(vectors, queries, allowed, 4)]
    assert all(h.meta["gender"] == "Girls" for hits in summer_girls for h in hits)
    assert index.search(queries[:1], k=3, where={"label": "class2"})[0][0].label == "class2"
    shared = index.search(queries, k=5, exclude_ids=[ids[order[0][0]]])
    assert ids[order[0][0]] not in {h.id for hits in shared for h in hits} and all(len(h) == 5 for h in shared)
    own = index.search_ids(ids[:3], k=2)
    assert all(ids[i] not in [h.id for h in own[i]] and len(own[i]) == 2 for i in range(3))
    with pytest.raises(StylespaceError, match="metadata columns"):
        index.search(queries, k=3, where={"colour": "Red"})
    np.testing.assert_allclose(index.vectors(ids[:2]), vectors[:2] / np.linalg.norm(vectors[:2], axis=1, keepdims=True),
                               atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_changes_keep_keys_and_are_seen_by_other_handles(tmp_path, backend):
    ids, vectors, labels, metas = catalog()
    index = build(tmp_path, backend, ids[:300], vectors[:300], labels[:300], metas[:300])
    reader = CatalogIndex.open(index.folder)
    before = index.marker
    keys = index.keys_of(ids[:300])
    new = index.add(ids[300:], vectors[300:], model_id=MODEL, labels=labels[300:], metas=metas[300:])
    assert new.min() > keys.max() and len(index) == 400 and index.marker.revision > before.revision
    assert index.search(vectors[350:351], k=1)[0][0].id == ids[350]
    index.remove(ids[:10])
    index.add([ids[20]], vectors[21:22], model_id=MODEL, replace=True, metas=[{"gender": "Men", "colour": "Red"}])
    assert len(index) == 390 and index.keys_of([ids[20]])[0] > new.max()
    assert index.search(vectors[21:22], k=2, where={"colour": "Red"})[0][0].id == ids[20]  # a column added later
    assert not {h.id for hits in index.search(vectors[:10], k=5) for h in hits} & set(ids[:10])
    assert CatalogIndex.current_marker(index.folder) == index.marker != reader.marker
    assert reader.refresh() and len(reader) == 390 and reader.marker == index.marker
    np.testing.assert_array_equal(reader.keys_of(ids[30:300]), keys[30:])
    index.rebuild(kind="hnsw")
    assert index.config.kind == "hnsw" and index.config.recall_at_10 > 0.9 and len(index) == 390
    np.testing.assert_array_equal(index.keys_of(ids[30:300]), keys[30:])
    assert reader.refresh() and reader.config.kind == "hnsw"
    assert reader.search(vectors[40:41], k=1)[0][0].id == ids[40]
    assert index.items.labelled_count() == 389  # the replaced item came back without a label


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_calibration_is_saved_beside_the_index_and_knows_when_it_is_outdated(tmp_path, backend):
    from stylespace.recommend import SelectiveRecommender, calibrate, load_calibration

    ids, vectors, labels, metas = catalog(n=500, dim=8)
    index = build(tmp_path, backend, ids[:400], vectors[:400], labels[:400], metas[:400], whiten=True)
    assert index.config.whitened_items == 400
    calibration = calibrate(index, vectors[400:], labels[400:], scores=["top1", "local10"], target_coverage=0.6)
    calibration.save(index)
    reopened = CatalogIndex.open(index.folder)
    saved = load_calibration(reopened)
    assert (saved.confidence, saved.threshold) == (calibration.chosen, calibration.point.threshold)
    assert not saved.outdated(reopened) and not saved.changed_items(reopened)
    recommender = SelectiveRecommender.from_index(reopened)
    assert recommender.calibrated and recommender.score_name == calibration.chosen
    assert len(recommender.recommend(vectors[400:403], model_id=MODEL)[0].items) == 3
    reopened.remove(ids[:2])
    assert saved.changed_items(reopened) and not saved.outdated(reopened)  # new stock: still holds
    reopened.rebuild()  # the whitening is fitted again: similarities move
    assert saved.outdated(reopened)


def test_milvus_without_its_extra_names_the_extra(tmp_path, monkeypatch):
    real_import = builtins.__import__

    def no_pymilvus(name, *args, **kwargs):
        if name == "pymilvus" or name.startswith("pymilvus."):
            raise ImportError("No module named 'pymilvus'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pymilvus)
    ids, vectors, _, _ = catalog(n=10)
    with pytest.raises(StylespaceError, match=r"pip install 'stylespace\[milvus\]'"):
        CatalogIndex.create(tmp_path / "idx", ids, vectors, model_id=MODEL, backend="milvus", uri=str(tmp_path / "m.db"))
    assert not (tmp_path / "idx" / "index.json").exists()


@pytest.mark.milvus
def test_cli_builds_a_milvus_index_that_search_and_recommend_use_unchanged(small_catalog, tmp_path, cli_json):
    pytest.importorskip("milvus_lite")
    import torch

    from stylespace.models import ModelConfig, build_model, save_model

    torch.manual_seed(0)
    model = save_model(build_model(ModelConfig(width=8, embedding_dim=32)).eval(), tmp_path / "model")
    run = cli_json
    index_dir = tmp_path / "idx"
    built = run("index", "build", model, small_catalog, "-o", index_dir, "--backend", "milvus", "--uri",
                tmp_path / "catalog.db")
    assert built["backend"] == "milvus" and built["count"] == 72 and built["uri"] == str(tmp_path / "catalog.db")
    found = run("search", index_dir, small_catalog / "images" / "1003.png", "-k", "3", "--where", "gender=Men")
    assert all(h["meta"]["gender"] == "Men" for h in found["queries"][0]["hits"])
    assert run("search", index_dir, "1003", "--id", "-k", "1")["queries"][0]["hits"][0]["id"] == "1003"
    assert run("index", "remove", index_dir, "1003")["count"] == 71
    recommended = run("recommend", index_dir, "1004", "--id")
    assert len(recommended["queries"][0]["items"]) == 3
    assert run("index", "info", index_dir)["backend"] == "milvus"


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_reduced_index_searches_and_scores_in_its_searched_dimensions(tmp_path, backend):
    from stylespace.recommend import calibrate

    ids, vectors, labels, metas = catalog(n=500, dim=16)
    index = build(tmp_path, backend, ids[:400], vectors[:400], labels[:400], metas[:400], whiten=True, search_dims=6)
    assert index.config.search_dims == 6 and index.search_space(vectors[:2]).shape == (2, 6)
    assert [hits[0].id for hits in index.search(vectors[:5], k=1)] == ids[:5]
    index.add(ids[400:410], vectors[400:410], model_id=MODEL, labels=labels[400:410], metas=metas[400:410])
    assert [hits[0].id for hits in index.search(vectors[400:405], k=1)] == ids[400:405]
    # the scores that read vectors compare them as the search does: 6 whitened dimensions
    calibration = calibrate(index, vectors[410:], labels[410:], scores=["top1", "local10", "agreement10"],
                            target_coverage=0.6)
    assert calibration.chosen in ("top1", "local10", "agreement10")
    index.rebuild()
    reopened = CatalogIndex.open(index.folder)
    assert reopened.config.search_dims == 6 and reopened.config.whitened_items == 410
    assert [hits[0].id for hits in reopened.search(vectors[400:405], k=1)] == ids[400:405]
