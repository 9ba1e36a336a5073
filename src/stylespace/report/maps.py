"""2-D maps of an embedding (t-SNE, UMAP) and a measured overlap score between classes on such a map."""
from __future__ import annotations

import dataclasses
import warnings
from typing import Sequence

import numpy as np

from stylespace.utils import StylespaceError, above, at_least, one_of, validate

METHODS = ("tsne", "umap")


@dataclasses.dataclass
class MapConfig:
    """How a 2-D map is made; saved into the report so a map can be redone.

    perplexity: t-SNE's neighbourhood size (clipped to (n - 1) / 3 on tiny inputs, which t-SNE requires).
    n_neighbors: UMAP's neighbourhood size (clipped to n - 1).
    umap_epochs: UMAP optimisation epochs; None keeps umap-learn's default (200 for large, 500 for small data).
    threads: OpenMP threads for t-SNE's gradient. 1 by default: on a small shared CPU the threads' barrier
        waits cost more than they save (measured on 2 busy cores: 32 points 0.1 s with 1 thread, 43 s with
        2; 2,000 points 14 s vs 25 s).
    """

    perplexity: float = 30.0
    n_neighbors: int = 15
    umap_epochs: int | None = None
    seed: int = 0
    threads: int = 1

    def __post_init__(self) -> None:
        validate([
            above("t-SNE perplexity", self.perplexity, 0),
            at_least("UMAP n_neighbors", self.n_neighbors, 2),
            at_least("UMAP epochs", self.umap_epochs, 1, none_ok=True, note="None: umap-learn's default"),
            at_least("threads", self.threads, 1),
        ])


class Projector2D:
    """Project embeddings to 2-D with t-SNE (scikit-learn) or UMAP (umap-learn).

    ``fit_transform(vectors (N, D) float) -> (N, 2) float32``. ``used`` holds the parameters actually
    used on the last call (after clipping to the sample size), for the figure captions.
    """

    def __init__(self, method: str = "tsne", config: MapConfig | None = None):
        validate([one_of("2-D map method", method, METHODS)])
        self.method = method
        self.config = config or MapConfig()
        self.used: dict = {}

    @property
    def name(self) -> str:
        return "t-SNE" if self.method == "tsne" else "UMAP"

    def fit_transform(self, vectors: np.ndarray) -> np.ndarray:
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2:
            raise StylespaceError(f"expected embeddings of shape (N, D), got {vectors.shape}")
        n = len(vectors)
        if n < 5:
            raise StylespaceError(f"a 2-D map needs at least 5 items, got {n}")
        if self.method == "tsne":
            return self._tsne(vectors)
        return self._umap(vectors)

    def _tsne(self, vectors: np.ndarray) -> np.ndarray:
        from sklearn.manifold import TSNE
        from threadpoolctl import threadpool_limits

        n = len(vectors)
        perplexity = float(min(self.config.perplexity, max(1.0, (n - 1) / 3)))
        self.used = {"method": "t-SNE", "perplexity": round(perplexity, 2), "init": "pca", "seed": self.config.seed}
        tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", learning_rate="auto",
                    random_state=self.config.seed, n_jobs=1)
        with threadpool_limits(self.config.threads, user_api="openmp"):
            return tsne.fit_transform(vectors).astype(np.float32)

    def _umap(self, vectors: np.ndarray) -> np.ndarray:
        with warnings.catch_warnings():
            # umap-learn warns about numba/TBB and about seeding disabling parallelism; neither matters here.
            warnings.simplefilter("ignore")
            import umap

            n = len(vectors)
            n_neighbors = int(min(self.config.n_neighbors, n - 1))
            self.used = {"method": "UMAP", "n_neighbors": n_neighbors, "epochs": self.config.umap_epochs or "default",
                         "seed": self.config.seed}
            # init="random" on tiny inputs: the spectral initialisation fails on a few points.
            reducer = umap.UMAP(n_components=2, n_neighbors=n_neighbors, n_epochs=self.config.umap_epochs,
                                random_state=self.config.seed, n_jobs=1, init="spectral" if n > 50 else "random")
            return np.asarray(reducer.fit_transform(vectors), dtype=np.float32)


def knn_class_overlap(points: np.ndarray, labels: Sequence[str], classes: Sequence[str], k: int = 10) -> np.ndarray:
    """How much each class's items sit among another class's items on a map.

    ``overlap[i, j]`` is the mean, over the items of ``classes[i]``, of the fraction of their ``k`` nearest
    neighbours (on ``points``, excluding the item itself) that belong to ``classes[j]``. The diagonal is each
    class's purity; rows sum to the fraction of neighbours from the listed classes (1 when all labels are
    listed). Items whose label is not in ``classes`` still count as neighbours (of no listed class).

    Args:
        points: (N, 2) map coordinates (or any (N, D) vectors).
        labels: N labels.
        classes: the C classes to score, in the order of the result.
    Returns:
        (C, C) float64 in [0, 1]; a row of NaN for a class with no items.
    """
    from sklearn.neighbors import NearestNeighbors

    points, labels = as_labelled(points, labels, "points")
    validate([at_least("k", k, 1)])
    n = len(points)
    if n < 2:
        raise StylespaceError("class overlap needs at least 2 points")
    k = min(k, n - 1)
    _, neighbours = NearestNeighbors(n_neighbors=k + 1).fit(points).kneighbors(points)
    neighbours = neighbours[:, 1:]  # the first neighbour is the point itself
    index = {c: i for i, c in enumerate(classes)}
    codes = np.array([index.get(label, -1) for label in labels])
    overlap = np.full((len(classes), len(classes)), np.nan)
    neighbour_codes = codes[neighbours]  # (N, k)
    for i in range(len(classes)):
        rows = neighbour_codes[codes == i]
        if len(rows) == 0:
            continue
        for j in range(len(classes)):
            overlap[i, j] = float(np.mean(rows == j))
    return overlap


def as_labelled(vectors, labels: Sequence[str], what: str = "vectors") -> tuple[np.ndarray, np.ndarray]:
    """(N, D) float64 vectors and N object labels, checked to be the same length."""
    vectors = np.asarray(vectors, dtype=np.float64)
    labels = np.asarray(labels, dtype=object)
    if vectors.ndim != 2 or len(vectors) != len(labels):
        raise StylespaceError(f"expected (N, D) {what} and N labels, got {vectors.shape} and {len(labels)} labels")
    return vectors, labels


def symmetric_pair_scores(matrix: np.ndarray) -> np.ndarray:
    """(C, C) -> (C, C) symmetric ``(M[i, j] + M[j, i]) / 2`` with a zero diagonal: one score per class pair."""
    matrix = np.asarray(matrix, dtype=np.float64)
    out = (matrix + matrix.T) / 2
    np.fill_diagonal(out, 0.0)
    return out
