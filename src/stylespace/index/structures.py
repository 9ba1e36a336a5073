"""The FAISS side of an index: making the structure of each kind, searching it, measuring its recall.

Every kind stores the item's int64 key as the FAISS id:

- ``exact``: ``IndexIDMap2(IndexFlatIP)`` (cosine, on L2-normalised vectors) or ``IndexIDMap2(IndexFlatL2)``.
- ``ivf``: ``IndexIVFFlat`` (ids native), k-means cells trained on the catalog; ``nprobe`` cells per query.
- ``hnsw``: ``IndexIDMap2(IndexHNSWFlat)``; HNSW cannot delete, so removed items stay as stale vectors
  that searches skip until ``rebuild``.
- ``ivf-pq``: ``IndexIVFPQ`` (``pq_m`` bytes per vector), ``hnsw-sq8``: ``IndexIDMap2(IndexHNSWSQ)`` (one byte
  per dimension): compressed, for catalogs whose vectors do not fit in memory. They return a shortlist that
  the index re-ranks with the exact vectors (kept once, in the item store), see :func:`rerank`.

With ``whiten`` (and enough items) the structure is wrapped in ``IndexPreTransform``: a ``PCAMatrix``
with eigenvalue power -1/2, fitted on the catalog's own vectors when the structure is made (then
``NormalizationTransform`` for cosine). Whitening needs no labels; it spreads the directions in which the
catalog barely varies and shrinks the few dominant ones, which on the Fashion Product Images catalog
raised scenario 4's top-3 correct rate from 87.6 % to 89.3 % and the selective coverage at 5 % error from
49 % to 62 % with the same top-1 score (docs/benchmarks.md). Items added later are transformed with the fitted whitening; ``rebuild``
fits it again on what the index then holds.

With ``search_dims`` N > 0 the ``PCAMatrix`` keeps only its top N components (``PCAMatrix(D, N, -0.5)``): the
whitening also reduces, and the structure inside (flat, IVF cells, HNSW graph, PQ / SQ codes) is made over N
dimensions (:attr:`IndexConfig.searched_dim`). Everything that reads "the search space" (:func:`search_space`,
:func:`rerank`, :func:`centre_distances`, recall and typicality) then works in N dimensions; the item store
keeps the full D. A reduced index that cannot be whitened (too few items) is refused, never made unreduced.
"""
from __future__ import annotations

import os

import numpy as np

from stylespace.index.config import IndexConfig
from stylespace.utils import StylespaceError

# Below this many queries a search runs on one OpenMP thread: splitting a handful of queries across
# threads costs more in synchronisation than it saves, and on a busy CPU (a web service, other jobs) the
# spinning threads slow everything down (measured: one query over 44k items 2 ms on one thread, 49 ms on
# two while the 2-core machine was loaded).
SMALL_BATCH = 64


def search_threads(n_queries: int) -> int:
    """OpenMP threads for a FAISS search of ``n_queries``: 1 for small batches, else $STYLESPACE_SEARCH_THREADS
    or half the cores (the other half is left to the model and the rest of the process: with every core
    FAISS's threads wait on each other; 1,000 queries over 44k items ran at 500 queries/s on both cores of
    a busy 2-core machine and 2,600 on one)."""
    if n_queries < SMALL_BATCH:
        return 1
    configured = os.environ.get("STYLESPACE_SEARCH_THREADS", "")
    if configured.isdigit() and int(configured) > 0:
        return int(configured)
    return max(1, (os.cpu_count() or 1) // 2)


# Whitening fitted on fewer items per dimension amplifies noise more than it helps: below this the index
# is left unwhitened (and says so in index.json).
WHITEN_MIN_ITEMS_PER_DIM = 4
# Added to every eigenvalue before the power -1/2, as a share of their mean: a floor for the directions
# in which the catalog does not vary at all (0.01 lost nothing against 0 on scenario 4).
WHITEN_EPSILON = 0.01

# Vectors used to train IVF cells: FAISS wants at least 39 per cell; more than 256 per cell adds time, not quality.
_IVF_TRAIN_PER_CELL = 256
# Vectors used to train PQ codebooks (256 centroids per sub-quantiser: FAISS wants 39 x 256) and the SQ8 ranges.
_PQ_TRAIN = 65_536
_SQ_TRAIN = 100_000
# The fewest items a compressed kind trains on (its codebooks need a few thousand).
COMPRESSED_MIN_ITEMS = 1000


def _faiss():
    import faiss

    return faiss


def faiss_metric(metric: str) -> int:
    faiss = _faiss()
    return faiss.METRIC_INNER_PRODUCT if metric == "cosine" else faiss.METRIC_L2


def prepare_vectors(vectors, metric: str, dim: int | None = None, what: str = "vectors") -> np.ndarray:
    """(N, D) float32 C-contiguous, finite, as searched under ``metric`` (a normalised copy for cosine)."""
    array = np.array(vectors, dtype=np.float32, order="C", copy=True)
    if array.ndim == 1 and dim is not None and array.shape[0] == dim:
        array = array[None, :]
    if array.ndim != 2:
        raise StylespaceError(f"{what}: expected a 2-D (N, D) array, got shape {array.shape}")
    if dim is not None and array.shape[1] != dim:
        raise StylespaceError(f"{what} have {array.shape[1]} dimensions, the index holds {dim}-dimensional vectors")
    if not np.isfinite(array).all():
        raise StylespaceError(f"{what}: contain NaN or infinite values; re-run the embedding step")
    if metric == "cosine" and len(array):
        _faiss().normalize_L2(array)  # zero vectors stay zero: similarity 0 to everything
    return array


def new_structure(config: IndexConfig, training: np.ndarray | None = None):
    """An empty FAISS index for ``config``, with its whitening fitted and its IVF cells trained on
    ``training`` (prepared vectors); see :func:`is_whitened` for whether whitening was applied."""
    faiss = _faiss()
    # training and bulk adds use the threads a large search does (half the cores: see search_threads)
    faiss.omp_set_num_threads(search_threads(SMALL_BATCH))
    n = 0 if training is None else len(training)
    whitening = None
    if whitens(config, n):
        whitening = _fit_whitening(config, training)
    elif config.search_dims:
        raise StylespaceError(
            f"search_dims {config.search_dims} needs the whitening's PCA, which needs at least "
            f"{whitening_min_items(config):,} items ({WHITEN_MIN_ITEMS_PER_DIM} per searched dimension, and no fewer "
            f"than the {config.dim} the model gives), got {n:,}; search fewer dimensions, or every one "
            "(search_dims 0, --search-dims 0)")
    inner = _bare_structure(config, n)
    if whitening is None:
        structure = inner
    else:
        structure = faiss.IndexPreTransform(whitening[-1], inner)
        for transform in reversed(whitening[:-1]):
            structure.prepend_transform(transform)
    if config.kind in ("ivf", "ivf-pq", "hnsw-sq8"):
        if config.kind == "hnsw-sq8":
            wanted = _SQ_TRAIN
        else:
            wanted = max(faiss.extract_index_ivf(structure).nlist * _IVF_TRAIN_PER_CELL,
                         _PQ_TRAIN if config.kind == "ivf-pq" else 0)
        sample = training
        if n > wanted:
            rows = np.random.default_rng(0).choice(n, wanted, replace=False)
            sample = training[np.sort(rows)]
        # the whitening is trained already: this trains the cells / codebooks, in whitened space
        structure.train(np.ascontiguousarray(sample, dtype=np.float32))
    return structure


def whitens(config: IndexConfig, n: int) -> bool:
    """Whether a structure of ``config`` made from ``n`` items is whitened: ``whiten`` on and at least
    :func:`whitening_min_items` items."""
    return bool(config.whiten) and n >= whitening_min_items(config)


def whitening_min_items(config: IndexConfig) -> int:
    """Items needed to fit the whitening: :data:`WHITEN_MIN_ITEMS_PER_DIM` per whitened dimension, that is per
    model dimension, or per searched dimension when ``search_dims`` reduces, and then never fewer than the
    model's dimensions (the covariance of full rank). A whitening over every dimension divides by the square root
    of its smallest eigenvalues, which too few items estimate badly; a reduced one keeps only the top components,
    which a few items per kept dimension estimate well (scenario 4's support set, 3,669 items, can be searched
    over 256 of the default model's 1,536 dimensions, never whitened over all of them)."""
    if config.search_dims:
        return max(WHITEN_MIN_ITEMS_PER_DIM * config.searched_dim, config.dim)
    return WHITEN_MIN_ITEMS_PER_DIM * config.dim


def _bare_structure(config: IndexConfig, n: int):
    """The structure of ``config.kind`` without whitening (IVF cells not trained yet), over the searched
    dimensions (``search_dims``, or every one)."""
    faiss = _faiss()
    metric = faiss_metric(config.metric)
    dim = config.searched_dim
    if config.kind == "exact":
        flat = faiss.IndexFlatIP(dim) if config.metric == "cosine" else faiss.IndexFlatL2(dim)
        return faiss.IndexIDMap2(flat)
    if config.kind == "hnsw":
        graph = faiss.IndexHNSWFlat(dim, config.hnsw_m, metric)
        graph.hnsw.efConstruction = config.ef_construction
        return faiss.IndexIDMap2(graph)
    if config.kind in ("ivf-pq", "hnsw-sq8") and n < COMPRESSED_MIN_ITEMS:
        raise StylespaceError(f"a {config.kind} index needs at least {COMPRESSED_MIN_ITEMS:,} items to train its "
                              f"codes, got {n}; use --kind exact for small catalogs")
    if config.kind == "hnsw-sq8":
        graph = faiss.IndexHNSWSQ(dim, faiss.ScalarQuantizer.QT_8bit, config.hnsw_m, metric)
        graph.hnsw.efConstruction = config.ef_construction
        return faiss.IndexIDMap2(graph)
    if n < 39:
        raise StylespaceError(f"an IVF index needs at least 39 items to train its cells, got {n}; "
                              "use --kind exact for small catalogs")
    quantizer = faiss.IndexFlatIP(dim) if config.metric == "cosine" else faiss.IndexFlatL2(dim)
    if config.kind == "ivf-pq":
        return faiss.IndexIVFPQ(quantizer, dim, config.auto_nlist(n), config.auto_pq_m(), 8, metric)
    return faiss.IndexIVFFlat(quantizer, dim, config.auto_nlist(n), metric)  # the wrapper keeps the quantizer alive


def _fit_whitening(config: IndexConfig, training: np.ndarray) -> list:
    """[PCAMatrix whitening (+ NormalizationTransform for cosine)] fitted on ``training`` (N, D), keeping the
    top ``search_dims`` components (all D when 0)."""
    faiss = _faiss()
    dim = config.searched_dim
    pca = faiss.PCAMatrix(config.dim, dim, -0.5)
    pca.train(np.ascontiguousarray(training, dtype=np.float32))
    # the floor is a share of the mean of all D eigenvalues, kept or not: the same whichever N is searched
    eigenvalues = faiss.vector_to_array(pca.eigenvalues)
    pca.epsilon = float(WHITEN_EPSILON * max(eigenvalues.mean(), 1e-12))
    pca.prepare_Ab()  # re-derive the projection with the epsilon floor
    if config.metric == "cosine":
        return [pca, faiss.NormalizationTransform(dim, 2.0)]
    return [pca]


def is_whitened(structure) -> bool:
    """Whether ``structure`` whitens what it holds and what it is asked."""
    return isinstance(_faiss().downcast_index(structure), _faiss().IndexPreTransform)


def search_space(structure, vectors: np.ndarray) -> np.ndarray:
    """Prepared vectors (N, D) -> as ``structure`` compares them (N, D'): whitened (reduced to ``search_dims``
    D' when set) and normalised, or unchanged."""
    faiss = _faiss()
    structure = faiss.downcast_index(structure)
    if not isinstance(structure, faiss.IndexPreTransform):
        return vectors
    out = np.ascontiguousarray(vectors, dtype=np.float32)
    for i in range(structure.chain.size()):
        out = faiss.downcast_VectorTransform(structure.chain.at(i)).apply(out)
    return out


def write_file(structure, path) -> None:
    """Write ``structure`` to ``path`` atomically: FAISS writes a temporary file beside it (no copy of a
    large structure in memory), which is fsynced and then renamed into place."""
    from pathlib import Path

    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        _faiss().write_index(structure, str(temporary))
        descriptor = os.open(temporary, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        os.replace(temporary, path)
    except BaseException:
        if temporary.exists():
            temporary.unlink()
        raise


def read_file(path):
    """The structure in ``path``; a clear error when it is missing or not FAISS."""
    from pathlib import Path

    path = Path(path)
    if not path.is_file():
        raise StylespaceError(f"{path}: the index's FAISS file is missing; the index folder is damaged "
                              "(rebuild it with `stylespace index build ... --overwrite`)")
    try:
        return _faiss().read_index(str(path))
    except RuntimeError as exc:
        raise StylespaceError(f"{path}: not a readable FAISS index ({str(exc).splitlines()[0]})") from None


def similarities(searched_queries: np.ndarray, searched_vectors: np.ndarray, metric: str) -> np.ndarray:
    """Larger-is-closer similarity of (Q, D) queries to (Q, C, D) candidates, both in the search space:
    the inner product (cosine) or minus the Euclidean distance -> (Q, C) float32."""
    if metric == "cosine":
        return np.einsum("qd,qcd->qc", searched_queries, searched_vectors).astype(np.float32)
    return -np.linalg.norm(searched_vectors - searched_queries[:, None, :], axis=2).astype(np.float32)


def rerank(structure, config: IndexConfig, queries: np.ndarray, candidates: np.ndarray, exact: np.ndarray,
           fetch: int) -> tuple[np.ndarray, np.ndarray]:
    """The best ``fetch`` of each query's shortlist scored again on the exact vectors: prepared ``queries``
    (Q, D), ``candidates`` (Q, C) keys (-1 = none) and their prepared ``exact`` vectors (Q, C, D) ->
    (similarities, keys) (Q, fetch), nearest first, in the space ``structure`` searches (D' dimensions:
    ``search_dims`` when set; the exact vectors are the full D ones, reduced here as the queries are)."""
    valid = candidates >= 0
    exact = np.where(valid[..., None], exact, 0.0).astype(np.float32)
    flat = np.asarray(search_space(structure, exact.reshape(-1, config.dim)))
    searched = flat.reshape(*exact.shape[:2], flat.shape[1])
    sims = similarities(np.asarray(search_space(structure, queries)), searched, config.metric)
    sims[~valid] = -np.inf
    order = np.argsort(-sims, axis=1, kind="stable")[:, :fetch]
    keys = np.take_along_axis(candidates, order, axis=1)
    sims = np.take_along_axis(sims, order, axis=1)
    sims[keys < 0] = np.nan
    return sims, keys


def exact_neighbours(chunks, searched_queries: np.ndarray, k: int, metric: str) -> np.ndarray:
    """(Q, k) keys of the exact k nearest of ``searched_queries`` among ``chunks`` of (keys (B,), vectors
    (B, D) in the search space), one chunk in memory at a time (what recall is measured against)."""
    faiss = _faiss()
    best_sims = np.full((len(searched_queries), 0), -np.inf, dtype=np.float32)
    best_keys = np.empty((len(searched_queries), 0), dtype=np.int64)
    for keys, vectors in chunks:
        flat = faiss.IndexFlatIP(vectors.shape[1]) if metric == "cosine" else faiss.IndexFlatL2(vectors.shape[1])
        flat.add(np.ascontiguousarray(vectors, dtype=np.float32))
        sims, rows = getattr(flat, "search_numpy", flat.search)(searched_queries, min(k, len(keys)))
        if metric != "cosine":
            sims = -sims
        best_sims = np.concatenate([best_sims, sims], axis=1)
        best_keys = np.concatenate([best_keys, np.asarray(keys)[rows]], axis=1)
        order = np.argsort(-best_sims, axis=1, kind="stable")[:, :k]
        best_sims = np.take_along_axis(best_sims, order, axis=1)
        best_keys = np.take_along_axis(best_keys, order, axis=1)
    return best_keys


def cells(structure) -> int:
    """IVF cells of a structure (0 for the other kinds)."""
    faiss = _faiss()
    try:
        return int(faiss.extract_index_ivf(structure).nlist)
    except RuntimeError:
        return 0


def search_structure(structure, config: IndexConfig, queries: np.ndarray, fetch: int) -> tuple[np.ndarray, np.ndarray]:
    """(similarities (Q, fetch) float32, keys (Q, fetch) int64) from FAISS, nearest first, -1 keys past the end.

    Similarity is the cosine for ``cosine`` and minus the Euclidean distance for ``euclidean``, so that
    larger is closer for both metrics.
    """
    faiss = _faiss()
    params = None
    if config.kind in ("hnsw", "hnsw-sq8"):
        params = faiss.SearchParametersHNSW(efSearch=max(config.ef_search, fetch))
    elif config.kind in ("ivf", "ivf-pq"):
        params = faiss.SearchParametersIVF(nprobe=min(config.nprobe, max(cells(structure), 1)))
    faiss.omp_set_num_threads(search_threads(len(queries)))
    # pytorch-metric-learning imports faiss.contrib.torch_utils, which replaces Index.search with a wrapper
    # that has no ``params``; the original numpy entry point stays available as ``search_numpy``.
    search = getattr(structure, "search_numpy", structure.search)
    scores, keys = search(queries, fetch, params=params)
    if config.metric == "euclidean":
        scores = -np.sqrt(np.maximum(scores, 0.0))
    scores[keys < 0] = np.nan
    return scores.astype(np.float32, copy=False), keys


def recall_at_k(approximate: np.ndarray, exact: np.ndarray) -> float:
    """Mean over queries of |approximate top-k ∩ exact top-k| / k; both (Q, k) int64 key arrays."""
    approximate, exact = np.asarray(approximate), np.asarray(exact)
    if approximate.shape != exact.shape or approximate.ndim != 2:
        raise StylespaceError(f"recall needs two (Q, k) arrays of the same shape, got {approximate.shape} and {exact.shape}")
    k = exact.shape[1]
    hits = [len(np.intersect1d(a[a >= 0], e[e >= 0])) for a, e in zip(approximate, exact)]
    return float(np.mean(hits) / k) if len(hits) else float("nan")


def measure_recall(structure, config: IndexConfig, keys: np.ndarray, vectors: np.ndarray, k: int = 10,
                   n_queries: int = 1000, seed: int = 0) -> float:
    """Recall@k of ``structure`` against exact search, with ``n_queries`` of its own items as queries.

    ``vectors`` are the prepared vectors with their ``keys`` (what the structure holds).
    """
    n = len(keys)
    k = min(k, n)
    rows = np.sort(np.random.default_rng(seed).choice(n, min(n_queries, n), replace=False))
    searched = search_space(structure, vectors)  # exact search in the space the structure searches
    truth = exact_neighbours([(keys, searched)], np.ascontiguousarray(searched[rows]), k, config.metric)
    _, found = search_structure(structure, config, vectors[rows], k)
    return recall_at_k(found, truth)


# The catalog's own spread, measured on its items when the structure is made or rebuilt (no labels): the
# floors of the junk test (stylespace.recommend.junk) are percentiles of these, so they are how-it-was-made
# data of the index. At most this many sampled items are measured (percentiles settle well before).
TYPICALITY_SAMPLE = 10_000
TOP1_PERCENTILES = (0.1, 0.5, 1.0, 5.0, 50.0)
CENTRE_PERCENTILES = (50.0, 95.0, 99.0, 99.5, 99.9)


def centre_distances(structure, vectors: np.ndarray) -> np.ndarray | None:
    """(N,) distance of prepared vectors from the catalog's centre under the fitted whitening (the
    Mahalanobis distance, on the catalog's own covariance; over the top ``search_dims`` components for a
    reduced index); None for an unwhitened structure."""
    faiss = _faiss()
    structure = faiss.downcast_index(structure)
    if not isinstance(structure, faiss.IndexPreTransform):
        return None
    whitening = faiss.downcast_VectorTransform(structure.chain.at(0))  # the PCAMatrix (then the normalisation)
    whitened = whitening.apply(np.ascontiguousarray(vectors, dtype=np.float32))
    return np.linalg.norm(whitened, axis=1).astype(np.float64)


def typicality(structure, config: IndexConfig, keys: np.ndarray, vectors: np.ndarray,
               sample: int = TYPICALITY_SAMPLE, seed: int = 0, searcher=None) -> dict:
    """How the catalog's own items sit in it: percentiles of each sampled item's similarity to its nearest
    *other* item (``top1``, in the space searches compare; ``items`` sampled of ``of``) and, for a whitened
    structure, of every item's distance from the catalog's centre (``centre_distance``). ``vectors`` are the
    prepared vectors of ``keys``; ``searcher(queries, k) -> (similarities, keys)`` searches as the index does
    (default: the bare structure)."""
    keys = np.asarray(keys, dtype=np.int64)
    n = len(keys)
    if n < 2:
        return {}
    rows = np.sort(np.random.default_rng(seed).choice(n, min(sample, n), replace=False))
    queries = np.ascontiguousarray(vectors[rows])
    similarities, found = (searcher(queries, 2) if searcher is not None
                           else search_structure(structure, config, queries, 2))
    # the item itself is usually first; an exact duplicate may come first instead, so drop it by key
    other = np.where(found[:, 0] == keys[rows], similarities[:, 1], similarities[:, 0]).astype(np.float64)
    other = other[np.isfinite(other)]
    result = {"items": int(len(rows)), "of": int(n)}
    if len(other):
        result["top1"] = {str(p): float(np.percentile(other, p)) for p in TOP1_PERCENTILES}
    if is_whitened(structure):  # every item: cheap (one matrix product), and the tail percentiles need them
        distances = np.concatenate([centre_distances(structure, vectors[i:i + 65536]) for i in range(0, n, 65536)])
        result["centre_distance"] = {str(p): float(np.percentile(distances, p)) for p in CENTRE_PERCENTILES}
    return result
