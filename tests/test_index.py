"""CatalogIndex: search against brute force, add/remove/rebuild with stable ids, model mismatch, filters,
atomic writes and crashes mid-write, approximate kinds, the CLI, and self-retrieval on the real catalog."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from stylespace.index import CatalogIndex, recall_at_k
from stylespace.index import catalog_index as catalog_index_module
from stylespace.index import structures
from stylespace.utils import StylespaceError

MODEL = "model-a"


def clustered(n: int = 600, dim: int = 16, classes: int = 6, seed: int = 0, spread: float = 0.6):
    """Vectors around ``classes`` centres, with ids, labels and Kaggle-like metadata."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dim))
    labels = rng.integers(0, classes, n)
    vectors = (centres[labels] + spread * rng.normal(size=(n, dim))).astype(np.float32)
    ids = [f"item{i}" for i in range(n)]
    metas = [{"gender": ["Men", "Women", "Unisex"][i % 3] if i % 50 else "Girls", "season": ["Summer", "Winter"][i % 2]}
             for i in range(n)]
    return ids, vectors, [f"class{c}" for c in labels], metas


def brute_force(references: np.ndarray, queries: np.ndarray, k: int, metric: str = "cosine"):
    """(indices (Q, k), similarity (Q, k)) by numpy, larger-is-closer, ties broken by row order."""
    if metric == "cosine":
        r = references / np.linalg.norm(references, axis=1, keepdims=True)
        q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
        similarity = q @ r.T
    else:
        similarity = -np.linalg.norm(queries[:, None, :] - references[None, :, :], axis=2)
    order = np.argsort(-similarity, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(similarity, order, axis=1)


@pytest.fixture
def data():
    return clustered()


@pytest.fixture
def index(tmp_path, data):
    ids, vectors, labels, metas = data
    return CatalogIndex.create(tmp_path / "idx", ids, vectors, model_id=MODEL, labels=labels, metas=metas)


# --- search ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_exact_search_matches_brute_force(tmp_path, data, metric):
    ids, vectors, labels, metas = data
    index = CatalogIndex.create(tmp_path / "idx", ids, vectors, model_id=MODEL, metric=metric, metas=metas)
    queries = np.random.default_rng(1).normal(size=(20, vectors.shape[1])).astype(np.float32)
    hits = index.search(queries, k=7, model_id=MODEL)
    order, similarity = brute_force(vectors, queries, 7, metric)
    for row, found in enumerate(hits):
        assert [h.id for h in found] == [ids[i] for i in order[row]]
        expected = similarity[row] if metric == "cosine" else -similarity[row]  # euclidean reports distances
        np.testing.assert_allclose([h.score for h in found], expected, rtol=1e-4, atol=1e-5)
        assert found[0].meta == metas[order[row][0]]


@pytest.mark.parametrize("kind", ["exact", "ivf", "hnsw"])
def test_search_works_after_pytorch_metric_learning_patched_faiss(tmp_path, kind):
    # pytorch-metric-learning imports faiss.contrib.torch_utils, which swaps Index.search for a wrapper
    # without ``params``; a fresh process makes the import order the one the CLI and the report see.
    script = textwrap.dedent(f"""
        import numpy as np
        import pytorch_metric_learning.utils.inference  # noqa: F401 - patches faiss
        from stylespace.index import CatalogIndex
        rng = np.random.default_rng(0)
        vectors = rng.normal(size=(300, 8)).astype(np.float32)
        index = CatalogIndex.create(r"{tmp_path / 'idx'}", [str(i) for i in range(300)], vectors,
                                    model_id="m", kind="{kind}")
        hits = index.search(vectors[:3], k=2, model_id="m")
        print([hit[0].id for hit in hits])
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['0', '1', '2']"


def test_cosine_index_reports_euclidean_distances_between_unit_vectors(index, data):
    _, vectors, _, _ = data
    cosine = index.search(vectors[:3], k=4)
    euclid = index.search(vectors[:3], k=4, metric="euclidean")
    for a, b in zip(cosine, euclid):
        assert [h.id for h in a] == [h.id for h in b]
        np.testing.assert_allclose([h.score for h in b], np.sqrt(np.maximum(0, 2 - 2 * np.array([h.score for h in a]))),
                                   atol=1e-6)


def test_search_by_id_excludes_the_item_itself(index, data):
    ids, vectors, _, _ = data
    with_self = index.search(vectors[:1], k=3)[0]
    assert with_self[0].id == ids[0]
    without = index.search_ids([ids[0]], k=3)[0]
    assert ids[0] not in [h.id for h in without]
    assert [h.id for h in without] == [h.id for h in with_self[1:]] + [without[-1].id]


def test_where_filter_returns_k_matching_items_even_for_a_rare_value(index, data):
    ids, vectors, _, metas = data
    rare = [i for i, m in zip(ids, metas) if m["gender"] == "Girls"]  # 12 of 600
    hits = index.search(vectors[:5], k=10, where={"gender": "Girls"})
    for found in hits:
        assert len(found) == 10
        assert all(h.meta["gender"] == "Girls" for h in found)
    # and they are the nearest ones among the allowed items (brute force over the allowed rows)
    allowed_rows = [ids.index(i) for i in rare]
    order, _ = brute_force(vectors[allowed_rows], vectors[:5], 10)
    assert [h.id for h in hits[0]] == [rare[i] for i in order[0]]
    both = index.search(vectors[:2], k=5, where={"gender": ["Men", "Women"], "season": "Summer"})
    assert all(h.meta["gender"] in ("Men", "Women") and h.meta["season"] == "Summer" for r in both for h in r)
    few = index.search(vectors[:1], k=50, where={"gender": "Girls"})[0]
    assert len(few) == len(rare)  # fewer than k qualify: all of them, no padding
    with pytest.raises(StylespaceError, match="metadata columns"):
        index.search(vectors[:1], k=3, where={"colour": "Red"})
    assert index.search(vectors[:1], k=3, where={"gender": "Nobody"}) == [[]]


def test_exclusions_shared_and_per_query_still_return_k(index, data):
    ids, vectors, _, _ = data
    first = index.search(vectors[:2], k=5)
    banned = [h.id for h in first[0]]
    shared = index.search(vectors[:2], k=5, exclude_ids=banned)
    assert all(len(r) == 5 and not set(banned) & {h.id for h in r} for r in shared)
    per_query = index.search(vectors[:2], k=5, exclude_ids=[[first[0][0].id], [h.id for h in first[1][:4]]])
    assert [h.id for h in per_query[0]] == [h.id for h in first[0][1:]] + [per_query[0][-1].id]
    assert not {h.id for h in first[1][:4]} & {h.id for h in per_query[1]}
    assert len(per_query[1]) == 5
    with pytest.raises(StylespaceError, match="one per query"):
        index.search(vectors[:2], k=5, exclude_ids=[["a"], ["b"], ["c"]])


# --- the model that made it --------------------------------------------------------------------------------


def test_queries_from_another_model_are_refused(index, data):
    _, vectors, _, _ = data
    with pytest.raises(StylespaceError, match=f"made by model {MODEL}"):
        index.search(vectors[:1], k=3, model_id="model-b")

    from stylespace.embeddings import Embeddings

    with pytest.raises(StylespaceError, match="model-b"):
        index.search(Embeddings(["q"], vectors[:1], None, "model-b"), k=3)
    assert len(index.search(Embeddings(["q"], vectors[:1], None, MODEL), k=3)[0]) == 3
    with pytest.raises(StylespaceError, match=f"made by model {MODEL}"):
        index.add(["new"], vectors[:1], model_id="model-b")
    with pytest.raises(StylespaceError, match="model_id"):
        index.add(["new"], vectors[:1])
    with pytest.raises(StylespaceError, match="dimensions"):
        index.search(vectors[:1, :8], k=3)
    reopened = CatalogIndex.open(index.folder)
    assert reopened.model_id == MODEL
    with pytest.raises(StylespaceError, match=f"made by model {MODEL}"):
        reopened.search(vectors[:1], k=3, model_id="model-b")


# --- add / remove / rebuild -------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["exact", "ivf", "hnsw"])
def test_add_remove_rebuild_keep_ids_stable(tmp_path, data, kind):
    ids, vectors, labels, metas = data
    index = CatalogIndex.create(tmp_path / kind, ids[:500], vectors[:500], model_id=MODEL, kind=kind,
                                labels=labels[:500], metas=metas[:500], nprobe=64)
    keys_before = index.keys_of(ids[:500])
    new_keys = index.add(ids[500:], vectors[500:], model_id=MODEL, labels=labels[500:], metas=metas[500:])
    assert len(index) == 600 and new_keys.min() > keys_before.max()
    assert index.search(vectors[550:551], k=1)[0][0].id == ids[550]  # found without a rebuild

    removed = ids[:10]
    assert index.remove(removed) == 10
    assert len(index) == 590
    for found in index.search(vectors[:10], k=5):
        assert not set(removed) & {h.id for h in found} and len(found) == 5
    assert index.config.stale == (10 if kind == "hnsw" else 0)

    again = index.add(["item3"], vectors[3:4], model_id=MODEL)  # a removed id comes back with a new key
    assert again[0] > new_keys.max()

    index.rebuild()
    assert index.config.stale == 0 and index.structure.ntotal == 591
    kept = ids[10:500]
    np.testing.assert_array_equal(index.keys_of(kept), keys_before[10:])
    np.testing.assert_array_equal(index.keys_of(ids[500:]), new_keys)
    reopened = CatalogIndex.open(index.folder)
    np.testing.assert_array_equal(reopened.keys_of(kept), keys_before[10:])
    assert reopened.search(vectors[20:21], k=1)[0][0].id == ids[20]


def test_add_refuses_existing_ids_unless_replace(index, data):
    ids, vectors, _, _ = data
    with pytest.raises(StylespaceError, match="already in the index"):
        index.add([ids[0]], vectors[5:6], model_id=MODEL)
    with pytest.raises(StylespaceError, match="unique"):
        index.add(["x", "x"], vectors[:2], model_id=MODEL)
    index.add([ids[0]], vectors[5:6], model_id=MODEL, replace=True)
    assert len(index) == 600
    np.testing.assert_allclose(index.vectors([ids[0]]), index.vectors([ids[5]]), atol=1e-6)
    with pytest.raises(StylespaceError, match="not in the index"):
        index.remove(["nope"])
    assert index.remove(["nope"], missing_ok=True) == 0


def test_rebuild_changes_kind_and_metric_from_the_stored_vectors(index, data):
    ids, vectors, _, _ = data
    exact = [h.id for h in index.search(vectors[:1], k=10)[0]]
    index.rebuild(kind="hnsw")
    assert index.config.kind == "hnsw" and index.config.recall_at_10 > 0.9
    assert [h.id for h in index.search(vectors[:1], k=10)[0]][:5] == exact[:5]
    index.rebuild(kind="exact", metric="euclidean")
    order, _ = brute_force(vectors, vectors[:1], 10, "euclidean")
    assert [h.id for h in index.search(vectors[:1], k=10)[0]] == [ids[i] for i in order[0]]


def test_existing_index_is_not_overwritten_by_accident(index, data):
    ids, vectors, _, _ = data
    with pytest.raises(StylespaceError, match="already holds an index"):
        CatalogIndex.create(index.folder, ids, vectors, model_id=MODEL)
    replaced = CatalogIndex.create(index.folder, ids[:5], vectors[:5], model_id="model-b", overwrite=True)
    assert len(CatalogIndex.open(index.folder)) == 5 and replaced.model_id == "model-b"


# --- crash safety ---------------------------------------------------------------------------------------------


def _folder_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith(".") and p.name != "index.json")


def _check_consistent(folder: Path, ids: list[str], vectors: np.ndarray, expected: set[str]) -> CatalogIndex:
    """The index in ``folder`` opens, holds exactly ``expected``, each with its own vector, and finds them."""
    reopened = CatalogIndex.open(folder)
    assert set(reopened.ids) == expected and len(reopened) == len(expected)
    assert len(reopened.ids) == len(set(reopened.ids))
    sample = sorted(expected)[:5]
    rows = [ids.index(i) for i in sample]
    np.testing.assert_allclose(reopened.vectors(sample), vectors[rows] / np.linalg.norm(vectors[rows], axis=1,
                                                                                          keepdims=True), atol=1e-6)
    assert [hits[0].id for hits in reopened.search(vectors[rows], k=1)] == sample
    return reopened


@pytest.mark.parametrize("where", ["vectors", "store", "structure"])
def test_a_failure_mid_write_leaves_the_previous_index_usable(tmp_path, data, monkeypatch, where):
    from stylespace.index import embedded, items

    ids, vectors, labels, metas = data
    index = CatalogIndex.create(tmp_path / "idx", ids[:500], vectors[:500], model_id=MODEL, metas=metas[:500])
    before = [h.id for h in index.search(vectors[:1], k=5)[0]]
    config_before = (index.folder / "index.json").read_text()

    def crash(*args, **kwargs):
        raise OSError("disk full (simulated)")

    def half_then_crash(self, start, keys, new_vectors):
        with open(self.vectors_path, "ab") as handle:
            handle.write(b"\0" * 100)  # a torn write past the committed rows
        crash()

    with monkeypatch.context() as patch:
        if where == "vectors":
            patch.setattr(embedded.VectorFile, "append", half_then_crash)
        elif where == "store":
            patch.setattr(items.ItemStore, "mark_removed", crash)
            patch.setattr(items.ItemStore, "insert", crash)
        else:
            patch.setattr(structures, "write_file", crash)
        if where != "structure":
            with pytest.raises(OSError, match="simulated"):
                index.add(["fresh"], vectors[500:501], model_id=MODEL)
        if where != "vectors":
            with pytest.raises(OSError, match="simulated"):
                index.remove(ids[:3]) if where == "store" else index.rebuild(kind="hnsw")

    assert (index.folder / "index.json").read_text() == config_before
    expected = set(ids[:500])
    assert set(index.ids) == expected and [h.id for h in index.search(vectors[:1], k=5)[0]] == before
    reopened = _check_consistent(index.folder, ids + ["fresh"], np.concatenate([vectors, vectors[500:501]]), expected)
    reopened.remove(ids[:3])  # and the next writes work
    reopened.add(["fresh2"], vectors[501:502], model_id=MODEL)
    reopened.rebuild()
    _check_consistent(index.folder, ids + ["fresh2"], np.concatenate([vectors, vectors[501:502]]),
                      expected - set(ids[:3]) | {"fresh2"})
    assert not [f for f in os.listdir(index.folder) if f.endswith(".tmp")]


# Where a child process dies (os._exit: no handler, no cleanup runs), what it was doing, and which state the
# index must open to afterwards: the one before the change ("old") or the one after ("new").
CRASH_POINTS = {
    "add: vectors written, not committed": ("items.ItemStore.set_state", "add", "old"),
    "add: committed, FAISS not updated": ("embedded.EmbeddedBackend._after_change", "add", "new"),
    "remove: marked, not committed": ("items.ItemStore.mark_removed", "remove", "old"),
    "remove: committed, FAISS not updated": ("embedded.EmbeddedBackend._after_change", "remove", "new"),
    "rebuild: new generation written, not committed": ("embedded.write_json", "rebuild", "old"),
    "rebuild: committed, old rows not purged": ("items.ItemStore.purge", "rebuild", "new"),
    "hnsw checkpoint: structure being written": ("structures.write_file", "add", "new"),
}


@pytest.mark.parametrize("point", list(CRASH_POINTS))
def test_a_process_killed_mid_change_leaves_the_old_or_the_new_state(tmp_path, data, point):
    target, operation, state = CRASH_POINTS[point]
    ids, vectors, labels, metas = data
    kind = "hnsw" if point.startswith("hnsw") else "exact"
    index = CatalogIndex.create(tmp_path / "idx", ids[:500], vectors[:500], model_id=MODEL, kind=kind, metas=metas[:500])
    index.remove(ids[:5])  # something for the rebuild to purge
    old = set(ids[5:500])
    change = {"add": (f"index.add({ids[500:520]!r}, np.load({str(tmp_path / 'v.npy')!r}), model_id={MODEL!r})",
                      old | set(ids[500:520])),
              "remove": (f"index.remove({ids[5:15]!r})", old - set(ids[5:15])),
              "rebuild": ("index.rebuild(kind='hnsw')", old)}[operation]
    np.save(tmp_path / "v.npy", vectors[500:520])
    module, _, name = target.rpartition(".")
    owner = module.replace("items.", "items_module.").replace("embedded.", "embedded_module.")
    owner = {"items": "items_module", "embedded": "embedded_module"}.get(owner, owner)
    script = textwrap.dedent(f"""
        import os, numpy as np
        from stylespace.index import CatalogIndex, structures
        from stylespace.index import embedded as embedded_module, items as items_module
        embedded_module.CHECKPOINT_MIN_CHANGES = 0  # every change checkpoints an approximate index
        original = getattr({owner}, {name!r})
        def die(*args, **kwargs):
            if {name!r} == "mark_removed":
                original(*args, **kwargs)  # the rows are marked inside the transaction, then the process dies
            if {name!r} != "set_state" or args[1].startswith("rows-"):
                os._exit(9)
            return original(*args, **kwargs)
        setattr({owner}, {name!r}, die)
        index = CatalogIndex.open({str(index.folder)!r})
        {change[0]}
    """)
    child = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert child.returncode == 9, child.stderr
    expected = change[1] if state == "new" else old
    reopened = _check_consistent(index.folder, ids, vectors, expected)
    assert reopened.config.kind == ("hnsw" if operation == "rebuild" and state == "new" else kind)
    index.refresh()  # a reader that was open all along sees the same state
    assert set(index.ids) == expected
    reopened.add(["after"], vectors[599:600], model_id=MODEL)  # and the next write works
    reopened.rebuild()
    assert set(CatalogIndex.open(index.folder).ids) == expected | {"after"}
    assert not [f for f in os.listdir(index.folder) if f.endswith(".tmp")]


def test_a_process_killed_at_random_moments_never_leaves_a_half_applied_change(tmp_path):
    """A child adds, replaces, removes and rebuilds in a loop and is SIGKILLed at random moments; every time
    the index opens, each item it holds has its own vector, and changes are whole (ten ids at a time)."""
    import signal
    import time

    dim = 16
    folder = tmp_path / "idx"

    def vector_of(item_id: str) -> np.ndarray:
        return np.random.default_rng(int(item_id.split("-")[1])).normal(size=dim).astype(np.float32)

    first = [f"b-{i}" for i in range(200)]
    CatalogIndex.create(folder, first, np.stack([vector_of(i) for i in first]), model_id=MODEL, kind="ivf", nlist=4)
    script = textwrap.dedent(f"""
        import numpy as np
        from stylespace.index import CatalogIndex
        from stylespace.index import embedded
        embedded.CHECKPOINT_MIN_CHANGES = 50
        index = CatalogIndex.open({str(folder)!r})
        print("started", flush=True)
        def vector_of(item_id):
            return np.random.default_rng(int(item_id.split("-")[1])).normal(size={dim}).astype(np.float32)
        step = max(int(i.split("-")[1]) for i in index.ids) + 1
        while True:
            batch = [f"b-{{step + i}}" for i in range(10)]
            index.add(batch, np.stack([vector_of(i) for i in batch]), model_id={MODEL!r})
            index.remove(sorted(index.ids)[:10])
            if step % 70 == 0:
                index.rebuild()
            step += 10
    """)
    rng = np.random.default_rng(0)
    for _ in range(3):
        child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert child.stdout.readline() == b"started\n", child.stderr.read().decode()  # imports take a while
        time.sleep(float(rng.uniform(0.5, 2.0)))
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        assert child.returncode == -signal.SIGKILL, child.stderr.read().decode()
        index = CatalogIndex.open(folder)
        held = index.ids
        assert len(held) == len(set(held)) == len(index) and len(held) % 10 == 0 and len(held) >= 190
        np.testing.assert_allclose(index.vectors(held), structures.prepare_vectors(
            np.stack([vector_of(i) for i in held]), "cosine"), atol=1e-6)
        sample = held[::max(1, len(held) // 5)]
        assert [hits[0].id for hits in index.search(index.vectors(sample), k=1)] == sample
        index.close()
    assert set(held) != set(first)  # the child got to work before it was killed


def test_a_reader_sees_writes_of_another_handle_after_refresh(index, data):
    ids, vectors, _, _ = data
    writer = CatalogIndex.open(index.folder)
    writer.remove(ids[:2])
    assert len(index) == 600  # the reader's snapshot is unchanged until it refreshes
    assert index.refresh() and len(index) == 598
    assert not index.refresh()
    index.remove(ids[2:3])  # a write from a stale handle applies on top of the newest generation
    assert len(CatalogIndex.open(index.folder)) == 597


# --- approximate kinds ------------------------------------------------------------------------------------------


def whitened_by_hand(references: np.ndarray, queries: np.ndarray, dims: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Cosine PCA whitening by numpy, as the index should do it: centre on the normalised references,
    rotate to the principal axes (the ``dims`` largest only, when given), divide by sqrt(eigenvalue + 1 % of
    the mean of all eigenvalues), normalise."""
    r = references / np.linalg.norm(references, axis=1, keepdims=True)
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    mean = r.mean(axis=0)
    eigenvalues, axes = np.linalg.eigh(np.cov(r - mean, rowvar=False, bias=True))  # ascending
    kept = slice(-dims if dims else 0, None)
    project = axes[:, kept] / np.sqrt(eigenvalues[kept] + structures.WHITEN_EPSILON * eigenvalues.mean())
    out = [(x - mean) @ project for x in (r, q)]
    return tuple(x / np.linalg.norm(x, axis=1, keepdims=True) for x in out)


def test_a_whitened_index_searches_in_the_whitened_space(tmp_path):
    ids, vectors, labels, _ = clustered(n=800, dim=16, spread=1.5)
    vectors[:, 0] *= 6  # one dominant direction that whitening must tame
    queries = clustered(n=40, dim=16, seed=1, spread=1.5)[1]
    queries[:, 0] *= 6
    index = CatalogIndex.create(tmp_path / "w", ids, vectors, model_id=MODEL, labels=labels, whiten=True)
    assert index.config.whitened_items == 800
    ref, q = whitened_by_hand(vectors, queries)
    rows = np.argsort(-(q @ ref.T), axis=1, kind="stable")[:, :5]
    expected = index.keys_of([ids[i] for i in rows.ravel()]).reshape(rows.shape)
    found = index.neighbours(queries, k=5)
    assert (found.keys == expected).mean() > 0.97  # float32 vs float64 can swap near-ties
    np.testing.assert_allclose(found.similarities[:, 0], np.take_along_axis(q @ ref.T, rows[:, :1], 1)[:, 0],
                               atol=1e-4)
    plain = CatalogIndex.create(tmp_path / "p", ids, vectors, model_id=MODEL)
    assert (plain.neighbours(queries, k=5).keys != found.keys).any()
    # the whitening travels with the index: reopened, added to, removed from
    reopened = CatalogIndex.open(tmp_path / "w")
    np.testing.assert_array_equal(reopened.neighbours(queries, k=5).keys, found.keys)
    reopened.add(["new"], queries[:1], model_id=MODEL)
    assert reopened.search(queries[:1], k=1)[0][0].id == "new"
    assert reopened.search_ids(["item3"], k=1)[0][0].id != "item3"
    reopened.remove(["new"])
    np.testing.assert_array_equal(reopened.neighbours(queries, k=5).keys, found.keys)
    assert reopened.config.whitened_items == 800  # fitted once; adding does not refit


def test_whitening_needs_enough_items_and_rebuild_can_switch_it(tmp_path, data):
    ids, vectors, labels, _ = data
    small = CatalogIndex.create(tmp_path / "s", ids[:40], vectors[:40], model_id=MODEL, whiten=True)
    assert small.config.whiten and small.config.whitened_items == 0  # 40 items < 4 per dimension x 16
    small.add(ids[40:], vectors[40:], model_id=MODEL)
    small.rebuild()  # now 600 items: the rebuild fits the whitening
    assert small.config.whitened_items == 600
    small.rebuild(whiten=False)
    assert small.config.whitened_items == 0 and not structures.is_whitened(small.structure)
    order, _ = brute_force(vectors, vectors[:5], 5)
    expected = small.keys_of([ids[i] for i in order.ravel()]).reshape(5, 5)
    np.testing.assert_array_equal(small.neighbours(vectors[:5], k=5).keys, expected)
    ivf = CatalogIndex.create(tmp_path / "ivf", ids, vectors, model_id=MODEL, kind="ivf", nlist=4, nprobe=4, whiten=True)
    assert ivf.config.whitened_items == 600 and ivf.config.recall_at_10 == pytest.approx(1.0)


def test_an_index_written_before_whitening_opens_unwhitened(index):
    config = json.loads((index.folder / "index.json").read_text())
    del config["whiten"], config["whitened_items"]
    (index.folder / "index.json").write_text(json.dumps(config))
    reopened = CatalogIndex.open(index.folder)
    assert not reopened.config.whiten and reopened.config.whitened_items == 0
    reopened.rebuild()
    assert not structures.is_whitened(reopened.structure)


# --- searching fewer dimensions (search_dims) ---------------------------------------------------------------


def low_rank_clusters(n: int = 800, dim: int = 32, rank: int = 6, classes: int = 10, seed: int = 0):
    """Well-separated clusters in a ``rank``-dimensional subspace of ``dim`` dimensions, plus a little noise in
    every dimension: what the top ``rank`` whitened components hold."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.normal(size=(dim, rank)))[0]
    centres = 2.0 * rng.normal(size=(classes, rank))
    labels = rng.integers(0, classes, n)
    points = centres[labels] + 0.3 * rng.normal(size=(n, rank))
    vectors = (points @ basis.T + 0.001 * rng.normal(size=(n, dim))).astype(np.float32)
    return [f"item{i}" for i in range(n)], vectors, [f"class{c}" for c in labels]


def test_a_reduced_index_finds_what_the_full_whitened_one_finds(tmp_path):
    ids, vectors, labels = low_rank_clusters()
    references, queries = vectors[:700], vectors[700:]
    full = CatalogIndex.create(tmp_path / "full", ids[:700], references, model_id=MODEL, labels=labels[:700],
                               whiten=True)
    reduced = CatalogIndex.create(tmp_path / "reduced", ids[:700], references, model_id=MODEL, labels=labels[:700],
                                  whiten=True, search_dims=6)
    # the FAISS side holds 6-dimensional whitened vectors; the item store the 32 given
    assert reduced.search_space(queries).shape == (100, 6) and full.search_space(queries).shape == (100, 32)
    assert reduced.vectors(ids[:2]).shape == (2, 32) and reduced.config.whitened_items == 700
    found, expected = reduced.neighbours(queries, k=1), full.neighbours(queries, k=1)
    assert (found.keys == expected.keys).mean() >= 0.9  # the same top-1 item
    truth = np.array(labels[700:])
    assert (reduced.labels_of_keys(found.keys[:, 0]) == truth).all()
    # similarities are those of the top 6 whitened components (not the last 6, nor all 32)
    ref, q = whitened_by_hand(references, queries, dims=6)
    np.testing.assert_allclose(found.similarities[:, 0], (q @ ref.T).max(axis=1), atol=1e-4)
    distances = reduced.centre_distances(queries)
    assert distances.shape == (100,) and np.isfinite(distances).all()


@pytest.mark.parametrize("kind", ["exact", "ivf", "hnsw"])
def test_a_reduced_index_is_recorded_reopened_added_to_and_rebuilt(tmp_path, kind):
    ids, vectors, labels = low_rank_clusters(n=600)
    index = CatalogIndex.create(tmp_path / "idx", ids[:500], vectors[:500], model_id=MODEL, labels=labels[:500],
                                kind=kind, nlist=4, nprobe=4, whiten=True, search_dims=6)
    assert json.loads((index.folder / "index.json").read_text())["search_dims"] == 6
    before = index.neighbours(vectors[500:520], k=5).keys
    reopened = CatalogIndex.open(index.folder)
    assert reopened.config.search_dims == 6 and reopened.search_space(vectors[:3]).shape == (3, 6)
    np.testing.assert_array_equal(reopened.neighbours(vectors[500:520], k=5).keys, before)
    # items added later go through the same PCA: each finds itself
    reopened.add(ids[500:], vectors[500:], model_id=MODEL, labels=labels[500:])
    assert [h[0].id for h in reopened.search(vectors[500:510], k=1)] == ids[500:510]
    assert reopened.config.whitened_items == 500  # added, not refitted
    reopened.remove(ids[:10])
    reopened.rebuild()  # refitted on the 590 items held now, still over 6 dimensions
    assert reopened.config.whitened_items == 590 and reopened.config.search_dims == 6
    assert reopened.search_space(vectors[:3]).shape == (3, 6)
    assert [h[0].id for h in reopened.search(vectors[500:510], k=1)] == ids[500:510]
    assert CatalogIndex.open(index.folder).config.search_dims == 6
    reopened.rebuild(search_dims=0)  # back to every dimension
    assert reopened.search_space(vectors[:3]).shape == (3, 32)
    assert json.loads((index.folder / "index.json").read_text())["search_dims"] == 0


def test_a_reduced_compressed_index_reranks_in_the_reduced_space(tmp_path):
    ids, vectors, _ = low_rank_clusters(n=1200, dim=16)
    exact = CatalogIndex.create(tmp_path / "exact", ids, vectors, model_id=MODEL, whiten=True, search_dims=6)
    compressed = CatalogIndex.create(tmp_path / "sq8", ids, vectors, model_id=MODEL, kind="hnsw-sq8", whiten=True,
                                     search_dims=6)
    assert compressed.config.recall_at_10 > 0.9
    hits, truth = compressed.search(vectors[:5], k=3), exact.search(vectors[:5], k=3)
    assert [h[0].id for h in hits] == [h[0].id for h in truth]
    np.testing.assert_allclose([[x.score for x in h] for h in hits], [[x.score for x in h] for h in truth], atol=1e-5)


def test_bad_search_dims_are_refused_naming_the_setting(tmp_path, data):
    ids, vectors, _, _ = data  # 600 items of 16 dimensions
    with pytest.raises(StylespaceError, match=r"search_dims must be an integer in \[0, 16\].*at most the 16 dim"):
        CatalogIndex.create(tmp_path / "a", ids, vectors, model_id=MODEL, whiten=True, search_dims=17)
    with pytest.raises(StylespaceError, match="search_dims must be an integer >= 0"):
        CatalogIndex.create(tmp_path / "b", ids, vectors, model_id=MODEL, whiten=True, search_dims=-1)
    with pytest.raises(StylespaceError, match="search_dims 8 needs whitening on"):
        CatalogIndex.create(tmp_path / "c", ids, vectors, model_id=MODEL, search_dims=8)  # whiten off
    # 4 per searched dimension (32 for 8), and no fewer than the model's 16 dimensions
    with pytest.raises(StylespaceError, match=r"search_dims 8 needs the whitening's PCA.*at least 32 items.*got 30"):
        CatalogIndex.create(tmp_path / "d", ids[:30], vectors[:30], model_id=MODEL, whiten=True, search_dims=8)
    with pytest.raises(StylespaceError, match=r"search_dims 2 needs the whitening's PCA.*at least 16 items.*got 12"):
        CatalogIndex.create(tmp_path / "d", ids[:12], vectors[:12], model_id=MODEL, whiten=True, search_dims=2)
    reduced = CatalogIndex.create(tmp_path / "f", ids[:32], vectors[:32], model_id=MODEL, whiten=True, search_dims=8)
    assert reduced.config.whitened_items == 32  # fewer than the 64 a whitening of all 16 dimensions needs
    reduced.close()
    assert not (tmp_path / "d" / "index.json").exists()
    index = CatalogIndex.create(tmp_path / "e", ids, vectors, model_id=MODEL, whiten=True, search_dims=8)
    with pytest.raises(StylespaceError, match="search_dims must be an integer in"):
        index.rebuild(search_dims=99)
    with pytest.raises(StylespaceError, match="search_dims 8 needs whitening on"):
        index.rebuild(whiten=False)
    assert CatalogIndex.open(index.folder).config.search_dims == 8  # the refused rebuilds changed nothing


def test_an_index_json_without_search_dims_searches_every_dimension(tmp_path, data):
    ids, vectors, _, _ = data
    index = CatalogIndex.create(tmp_path / "w", ids, vectors, model_id=MODEL, whiten=True)
    config = json.loads((index.folder / "index.json").read_text())
    assert config["search_dims"] == 0
    del config["search_dims"]
    (index.folder / "index.json").write_text(json.dumps(config))
    reopened = CatalogIndex.open(index.folder)
    assert reopened.config.search_dims == 0 and reopened.search_space(vectors[:2]).shape == (2, 16)
    reopened.rebuild()
    assert reopened.config.search_dims == 0 and reopened.search_space(vectors[:2]).shape == (2, 16)


def test_recall_at_k():
    assert recall_at_k(np.array([[1, 2, 3], [4, 5, 6]]), np.array([[3, 2, 1], [4, 7, 8]])) == pytest.approx(4 / 6)
    with pytest.raises(StylespaceError):
        recall_at_k(np.zeros((2, 3)), np.zeros((2, 4)))


@pytest.mark.parametrize("kind", ["ivf", "hnsw", "ivf-pq", "hnsw-sq8"])
def test_approximate_kinds_measure_their_recall(tmp_path, kind):
    ids, vectors, _, _ = clustered(n=3000, dim=24, classes=20, seed=3)
    index = CatalogIndex.create(tmp_path / kind, ids, vectors, model_id=MODEL, kind=kind, nprobe=8)
    assert 0.8 < index.config.recall_at_10 <= 1.0
    exact = CatalogIndex.create(tmp_path / "exact", ids, vectors, model_id=MODEL)
    measured = recall_at_k(index.neighbours(vectors[:200], 10).keys, exact.neighbours(vectors[:200], 10).keys)
    assert abs(measured - index.config.recall_at_10) < 0.1
    if kind == "ivf":
        assert structures.cells(index.structure) == index.config.auto_nlist(3000)
        with pytest.raises(StylespaceError, match="at least 39"):
            CatalogIndex.create(tmp_path / "tiny", ids[:10], vectors[:10], model_id=MODEL, kind="ivf")
    if index.config.compressed:  # the shortlist is re-ranked exactly: scores are the exact similarities
        hits = index.search(vectors[:5], k=3)
        assert [h[0].id for h in hits] == ids[:5]
        np.testing.assert_allclose([h[1].score for h in hits], [h[1].score for h in exact.search(vectors[:5], k=3)],
                                   atol=1e-5)
        with pytest.raises(StylespaceError, match="at least 1,000"):
            CatalogIndex.create(tmp_path / "small", ids[:500], vectors[:500], model_id=MODEL, kind=kind)


def test_bad_settings_are_refused(tmp_path, data):
    ids, vectors, _, _ = data
    with pytest.raises(StylespaceError, match="kind"):
        CatalogIndex.create(tmp_path / "a", ids, vectors, model_id=MODEL, kind="annoy")
    with pytest.raises(StylespaceError, match="metric"):
        CatalogIndex.create(tmp_path / "b", ids, vectors, model_id=MODEL, metric="manhattan")
    with pytest.raises(StylespaceError, match="one id per vector"):
        CatalogIndex.create(tmp_path / "c", ids[:3], vectors, model_id=MODEL)
    with pytest.raises(StylespaceError, match="NaN"):
        CatalogIndex.create(tmp_path / "d", ["a"], np.full((1, 4), np.nan), model_id=MODEL)
    with pytest.raises(StylespaceError, match="not an index folder"):
        CatalogIndex.open(tmp_path / "nowhere")
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "index.json").write_text("{not json")
    with pytest.raises(StylespaceError, match="not valid JSON"):
        CatalogIndex.open(tmp_path / "e")


# --- with a model: the library path and the CLI -----------------------------------------------------------------


@pytest.fixture
def tiny_model(tmp_path):
    import torch

    from stylespace.models import ModelConfig, build_model, save_model

    torch.manual_seed(0)
    return save_model(build_model(ModelConfig(width=8, embedding_dim=32)).eval(), tmp_path / "model")


def test_cli_index_search_add_remove_rebuild(small_catalog, tiny_model, tmp_path):
    from typer.testing import CliRunner

    from stylespace.cli import app

    runner = CliRunner()

    def run(*args: str) -> dict:
        result = runner.invoke(app, [*map(str, args), "--json"], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    index_dir = tmp_path / "idx"
    built = run("index", tiny_model, small_catalog, "-o", index_dir)
    assert built["count"] == 72 and built["model_path"] == str(tiny_model.resolve())
    # a large query photo of a catalog item, in another format and size, goes through load_rgb
    from PIL import Image

    photo = tmp_path / "1003.jpg"
    Image.open(small_catalog / "images" / "1003.png").resize((1800, 2400)).save(photo, quality=95)
    found = run("search", index_dir, small_catalog / "images" / "1003.png", photo, "-k", "3")
    # The catalog image finds itself; the photo finds it among the first 3: trimmed to the product (the
    # canonical view), the generated shapes of one class differ only by a shade, so a same-shaped
    # neighbour may edge ahead of a JPEG-recompressed copy under this untrained model.
    assert found["queries"][0]["hits"][0]["id"] == "1003"
    assert "1003" in [h["id"] for h in found["queries"][1]["hits"]]
    assert found["queries"][0]["hits"][0]["score"] == pytest.approx(1.0, abs=1e-4)
    excluded = run("search", index_dir, photo, "-k", "3", "--exclude-self", "--where", "gender=Men")
    assert all(h["id"] != "1003" and h["meta"]["gender"] == "Men" for h in excluded["queries"][0]["hits"])
    by_id = run("search", index_dir, "1003", "1004", "--id", "--exclude-self", "-k", "2")
    assert [len(q["hits"]) for q in by_id["queries"]] == [2, 2]
    assert run("index", "remove", index_dir, "1003", "1004")["count"] == 70
    assert run("index", "add", index_dir, small_catalog)["added"] == 2
    rebuilt = run("index", "rebuild", index_dir, "--kind", "hnsw")
    assert rebuilt["kind"] == "hnsw" and rebuilt["count"] == 72
    assert run("search", index_dir, "1003", "--id", "-k", "1")["queries"][0]["hits"][0]["id"] == "1003"

    other = tmp_path / "other-model"
    import torch

    from stylespace.models import ModelConfig, build_model, save_model

    torch.manual_seed(1)
    save_model(build_model(ModelConfig(width=8, embedding_dim=32)).eval(), other)
    refused = runner.invoke(app, ["search", str(index_dir), str(photo), "--model", str(other)])
    assert refused.exit_code != 0 and "was made by model" in str(refused.exception)


@pytest.mark.integration
@pytest.mark.slow
def test_real_catalog_items_find_themselves(shared_zip, tmp_path):
    """Index the whole real catalog and query 50 sampled items by their image, decoded the query way."""
    import torch

    from stylespace.data import load_catalog
    from stylespace.index.build import build_index, embed_query_images
    from stylespace.models import ModelConfig, build_model, load_model

    default = Path(os.environ.get("STYLESPACE_MODEL", Path(__file__).resolve().parents[1] / "runs" / "default"))
    if (default / "model.json").is_file():
        model = load_model(default)
    else:  # an untrained model embeds identical pixels identically, which is all self-retrieval needs
        torch.manual_seed(0)
        model = build_model(ModelConfig(width=16)).eval()  # half the default width: 4x cheaper to embed 44k images
    catalog = load_catalog(shared_zip)
    index, failed = build_index(model, catalog, tmp_path / "idx", progress=False)
    assert len(index) > 44_000
    rng = np.random.default_rng(0)
    sample = [index.ids[i] for i in rng.choice(len(index), 50, replace=False)]
    vectors = embed_query_images(model, [catalog.read_bytes(catalog[i]) for i in sample])
    hits = index.search(vectors, k=5)
    for item_id, found in zip(sample, hits):
        top = found[0]
        # an exact duplicate image in the catalog ties with the item itself: accept a tie at the top score
        tied = [h.id for h in found if h.score >= top.score - 1e-5]
        assert item_id in tied, f"{item_id} not its own top-1: {[(h.id, round(h.score, 5)) for h in found]}"


def test_cli_rebuild_of_a_calibrated_whitened_index_says_the_threshold_is_outdated(tmp_path, data):
    from typer.testing import CliRunner

    from stylespace.cli import app

    ids, vectors, labels, _ = data
    index = CatalogIndex.create(tmp_path / "w", ids, vectors, model_id=MODEL, labels=labels, whiten=True)
    plain = CatalogIndex.create(tmp_path / "p", ids, vectors, model_id=MODEL, labels=labels)
    from stylespace.recommend import load_calibration, save_calibration

    for folder in (index.folder, plain.folder):
        save_calibration(CatalogIndex.open(folder), "top1", 0.5, {"note": "test"})
    runner = CliRunner()
    whitened = json.loads(runner.invoke(app, ["index", "rebuild", str(index.folder), "--json"]).stdout)
    assert whitened["calibration_outdated"] is True and whitened["whitened_items"] == 600
    reopened = CatalogIndex.open(index.folder)
    assert load_calibration(reopened).outdated(reopened)  # the Python API says so too
    unchanged = json.loads(runner.invoke(app, ["index", "rebuild", str(plain.folder), "--json"]).stdout)
    assert unchanged["calibration_outdated"] is False
    switched = runner.invoke(app, ["index", "rebuild", str(plain.folder), "--whiten"])
    assert switched.exit_code == 0 and "calibrate-threshold" in switched.output


def test_an_index_of_the_format_before_is_converted_once_keeping_keys_and_calibration(tmp_path, data):
    """Format 1 kept every vector in SQLite (one copied file per change) and the calibration in index.json."""
    import sqlite3

    import faiss

    from stylespace.recommend import load_calibration

    ids, vectors, labels, metas = data
    folder = tmp_path / "v1"
    folder.mkdir()
    db = sqlite3.connect(folder / "items-000003.sqlite")
    db.executescript("CREATE TABLE items (key INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, source TEXT "
                     "NOT NULL DEFAULT '', label TEXT, meta TEXT NOT NULL DEFAULT '{}', vector BLOB NOT NULL);"
                     "CREATE TABLE stale (key INTEGER PRIMARY KEY);")
    keys = np.arange(1, 601) * 2  # keys with gaps, as removes leave them
    db.executemany("INSERT INTO items (key, id, source, label, meta, vector) VALUES (?, ?, '', ?, ?, ?)",
                   [(int(k), i, label, json.dumps(meta), v.tobytes()) for k, i, label, meta, v in
                    zip(keys, ids, labels, metas, vectors)])
    db.commit()
    db.close()
    flat = faiss.IndexIDMap2(faiss.IndexFlatIP(16))
    flat.add_with_ids(structures.prepare_vectors(vectors, "cosine"), keys)
    faiss.write_index(flat, str(folder / "vectors-000003.faiss"))
    (folder / "index.json").write_text(json.dumps({
        "model_id": MODEL, "dim": 16, "metadata_columns": ["gender", "season"], "count": 600, "confidence": "top1",
        "threshold": 0.7, "calibration": {"n_queries": 10}, "generation": 3, "items_file": "items-000003.sqlite",
        "faiss_file": "vectors-000003.faiss", "version": 1}))
    index = CatalogIndex.open(folder)
    assert index.config.version == 2 and len(index) == 600
    np.testing.assert_array_equal(index.keys_of(ids), keys)
    assert index.search(vectors[7:8], k=1)[0][0].id == ids[7]
    saved = load_calibration(index)
    assert saved.confidence == "top1" and saved.threshold == 0.7 and not saved.outdated(index)
    assert "vectors-000003.faiss" not in os.listdir(folder) and "items-000003.sqlite" not in os.listdir(folder)
    assert index.add(["new"], vectors[:1], model_id=MODEL)[0] == keys[-1] + 1


def test_cli_search_dims_reaches_build_and_rebuild(small_catalog, tiny_model, tmp_path, data):
    from typer.testing import CliRunner

    from stylespace.cli import app

    runner = CliRunner()
    # 72 items embedded in 32 dimensions are too few for a PCA keeping 30: the option got through to the build
    refused = runner.invoke(app, ["index", str(tiny_model), str(small_catalog), "-o", str(tmp_path / "built"),
                                  "--search-dims", "30"])
    assert refused.exit_code != 0
    assert "search_dims 30 needs the whitening's PCA" in refused.output + str(refused.exception)
    ids, vectors, _, _ = data
    index = CatalogIndex.create(tmp_path / "w", ids, vectors, model_id=MODEL, whiten=True)
    reduced = runner.invoke(app, ["index", "rebuild", str(index.folder), "--search-dims", "8"])
    assert reduced.exit_code == 0 and "searching 8 of 16 dimensions" in reduced.output
    assert CatalogIndex.open(index.folder).search_space(vectors[:1]).shape == (1, 8)
    info = json.loads(runner.invoke(app, ["index", "info", str(index.folder), "--json"]).stdout)
    assert info["search_dims"] == 8 and info["dim"] == 16
    too_many = runner.invoke(app, ["index", "rebuild", str(index.folder), "--search-dims", "17"])
    assert too_many.exit_code != 0 and "search_dims must be an integer in [0, 16]" in str(too_many.exception)
