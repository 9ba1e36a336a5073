"""Label-free confidence scores for a top-n recommendation: each reads the query's neighbourhood in the
catalog (never the catalog's labels) and returns one number per query, larger = more confident.

Each score is a small class with one job. They all read a :class:`NeighbourContext`, built once per
batch of queries, so comparing every score on a calibration set costs one search (plus one search of
the recommended items' own neighbourhoods for the scores that need it).

Similarities are larger-is-closer (cosine, or minus the Euclidean distance); distances are
``1 - cosine`` or the Euclidean distance.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from stylespace.index.catalog_index import CatalogIndex, Neighbours
from stylespace.utils import StylespaceError, at_least, validate


def to_distance(similarities: np.ndarray, metric: str) -> np.ndarray:
    """Similarities (larger is closer) -> distances (smaller is closer): 1 - cos, or the Euclidean distance."""
    return 1.0 - similarities if metric == "cosine" else -similarities


@dataclasses.dataclass
class NeighbourContext:
    """The neighbourhood facts scores read, computed lazily and at most once per batch of queries.

    Attributes:
        index: the catalog index searched.
        neighbours: (Q, K) the query's nearest catalog items (K >= what any score needs).
        n_items: how many of them make the recommendation (3 in seed 004).
        query_keys: (Q,) the query's own key when the query is a catalog item (-1 otherwise), so that an
            item's neighbourhood never counts the query itself.
        query_vectors: (Q, D) the query vectors as the index stores vectors (normalised for cosine; the
            index's ``search_space`` whitens them), for the scores that read the query itself and the junk
            test; None only in a context made without them.
        leave_one_out: the queries are the calibration queries a fitted score learnt from: such a score
            leaves each query out of what it reads for that query.
    """

    index: CatalogIndex
    neighbours: Neighbours
    n_items: int = 3
    query_keys: np.ndarray | None = None
    query_vectors: np.ndarray | None = None
    leave_one_out: bool = False
    _vectors: dict = dataclasses.field(default_factory=dict, repr=False)
    _item_neighbours: dict = dataclasses.field(default_factory=dict, repr=False)

    @property
    def metric(self) -> str:
        return self.neighbours.metric

    def similarities(self, k: int) -> np.ndarray:
        """(Q, k) the query's similarity to its k nearest items."""
        self._need(k)
        return self.neighbours.similarities[:, :k]

    def searched_query_vectors(self) -> np.ndarray:
        """(Q, D') the query vectors as the index compares them (whitened, for a whitened index), once per batch."""
        if self.query_vectors is None:
            raise StylespaceError("this confidence score needs the query vectors in its context")
        if "queries" not in self._vectors:
            self._vectors["queries"] = np.ascontiguousarray(self.index.search_space(self.query_vectors), dtype=np.float32)
        return self._vectors["queries"]

    def neighbour_vectors(self, k: int) -> np.ndarray:
        """(Q, k, D') vectors of the query's k nearest items, in the space the index searches (NaN where missing)."""
        self._need(k)
        if self._vectors.get("k", 0) < k:
            stored = self.index.vectors_of_keys(self.neighbours.keys[:, :k])
            flat = stored.reshape(-1, stored.shape[-1])
            valid = ~np.isnan(flat).any(axis=1)
            # compared as the search compared them (whitened, for a whitened index: D' = search_dims when set)
            searched = np.full((len(flat), self.index.config.searched_dim), np.nan, dtype=np.float32)
            if valid.any():
                searched[valid] = self.index.search_space(flat[valid])
            self._vectors.update(k=k, vectors=searched.reshape(*stored.shape[:-1], searched.shape[1]))
        return self._vectors["vectors"][:, :k]

    def item_neighbours(self, k: int) -> Neighbours:
        """The k nearest other catalog items of each recommended item: keys and similarities (Q, n_items, k)."""
        cached = self._item_neighbours.get("found")
        if cached is None or cached.keys.shape[2] < k:
            items = self.neighbours.keys[:, :self.n_items]
            exclude = None
            if self.query_keys is not None:
                exclude = np.repeat(np.asarray(self.query_keys, dtype=np.int64), self.n_items)[:, None]
            found = self.index.neighbours_of_keys(items.ravel(), k, exclude)
            shape = (*items.shape, k)
            cached = Neighbours(found.keys.reshape(shape), found.similarities.reshape(shape), found.metric)
            self._item_neighbours["found"] = cached
        return Neighbours(cached.keys[..., :k], cached.similarities[..., :k], cached.metric)

    def _need(self, k: int) -> None:
        if k > self.neighbours.k:
            raise StylespaceError(f"a confidence score needs {k} neighbours but only {self.neighbours.k} were searched")


class ConfidenceScore:
    """Base class: ``score(context) -> (Q,)`` float64, larger = more confident; NaN where undefined.

    Attributes:
        family: the first part of the score's name; name: how the score is named in reports, index.json and
            ``--score``: the family followed by its integer parameters (``mean3``, ``margin1-10``), which is
            also how :func:`score_by_name` makes it again.
        params: the integer arguments of the constructor, in order.
        neighbours_needed: how many query neighbours it reads.
    """

    family: str = ""
    params: tuple[int, ...] = ()
    neighbours_needed: int = 3
    reads_queries: bool = False  # needs ``NeighbourContext.query_vectors``

    @property
    def name(self) -> str:
        return self.family + "-".join(str(p) for p in self.params)

    def __call__(self, context: NeighbourContext) -> np.ndarray:
        return np.asarray(self.score(context), dtype=np.float64)

    def score(self, context: NeighbourContext) -> np.ndarray:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class TopSimilarity(ConfidenceScore):
    """Similarity of the nearest item: the plain baseline (about 52 % coverage at 5 % error in 004)."""

    family = "top1"
    neighbours_needed = 1

    def score(self, context):
        return context.similarities(1)[:, 0]


class MeanSimilarity(ConfidenceScore):
    """Mean similarity of the ``k`` nearest items (k = 3: how close the whole recommendation is)."""

    family = "mean"

    def __init__(self, k: int = 3):
        self.k = _positive(k, "k")
        self.params = (self.k,)
        self.neighbours_needed = k

    def score(self, context):
        return context.similarities(self.k).mean(axis=1)


class Margin(ConfidenceScore):
    """Similarity of the ``near``-th neighbour minus that of the ``far``-th (1-based ranks): a sharp drop
    says the query has a few clear matches rather than sitting in a uniform crowd."""

    family = "margin"

    def __init__(self, near: int = 1, far: int = 10):
        if not 1 <= near < far:
            raise StylespaceError(f"margin needs 1 <= near < far, got near={near}, far={far}")
        self.near, self.far = near, far
        self.params = (self.near, self.far)
        self.neighbours_needed = far

    def score(self, context):
        sims = context.similarities(self.far)
        return sims[:, self.near - 1] - sims[:, self.far - 1]


class NeighbourAgreement(ConfidenceScore):
    """Mean pairwise similarity among the ``k`` nearest items: they agree (look alike) when the query
    sits in one tight group, and disagree when it falls between groups."""

    family = "agreement"

    def __init__(self, k: int = 10):
        validate([at_least("k", k, 2)], "neighbour agreement")
        self.k = k
        self.params = (self.k,)
        self.neighbours_needed = k

    def score(self, context):
        vectors = context.neighbour_vectors(self.k).astype(np.float64)
        if context.metric == "cosine":
            pairwise = np.einsum("qid,qjd->qij", vectors, vectors)
        else:
            diff = vectors[:, :, None, :] - vectors[:, None, :, :]
            pairwise = -np.sqrt((diff ** 2).sum(axis=-1))
        off_diagonal = ~np.eye(self.k, dtype=bool)
        return pairwise[:, off_diagonal].mean(axis=1)


class Reciprocity(ConfidenceScore):
    """How far inside the recommended items' own neighbourhoods the query lies: the mean over the
    ``n_items`` recommended items j of sim(query, j) - sim(j, j's k-th nearest catalog item). Positive
    when the query would be among each item's k nearest neighbours (a reciprocal match)."""

    family = "reciprocity"

    def __init__(self, k: int = 10):
        self.k = _positive(k, "k")
        self.params = (self.k,)
        self.neighbours_needed = 3

    def score(self, context):
        to_items = context.similarities(context.n_items)
        own_radius = context.item_neighbours(self.k).similarities[:, :, self.k - 1]
        return (to_items - own_radius).mean(axis=1)


class NeighbourhoodOverlap(ConfidenceScore):
    """Agreement between neighbourhoods: the mean over the recommended items j of
    |k-NN(query) ∩ k-NN(j)| / k. Items of one coherent group share their neighbours."""

    family = "overlap"

    def __init__(self, k: int = 10):
        self.k = _positive(k, "k")
        self.params = (self.k,)
        self.neighbours_needed = k

    def score(self, context):
        mine = context.neighbours.keys[:, :self.k]
        theirs = context.item_neighbours(self.k).keys
        shared = np.zeros(theirs.shape[:2])
        for j in range(theirs.shape[1]):
            match = (theirs[:, j, :, None] == mine[:, None, :]) & (mine[:, None, :] >= 0)
            shared[:, j] = match.any(axis=2).sum(axis=1)
        # the query's list holds j itself, j's list does not: count j as shared
        return (shared.mean(axis=1) + 1.0) / self.k


class DensityRatio(ConfidenceScore):
    """Trust-score-style density ratio: the distance from the query to its k-th nearest item, relative to
    the same distance measured from the recommended items (the catalog's local density there), as
    -log(ratio). Near 0 or positive when the query is as well surrounded as catalog items are; very
    negative for a query out in a sparse region (an unfamiliar kind of item)."""

    family = "density"

    def __init__(self, k: int = 10):
        self.k = _positive(k, "k")
        self.params = (self.k,)
        self.neighbours_needed = k

    def score(self, context):
        mine = to_distance(context.similarities(self.k)[:, self.k - 1], context.metric)
        theirs = to_distance(context.item_neighbours(self.k).similarities[:, :, self.k - 1], context.metric)
        tiny = 1e-6
        return -np.log(np.maximum(mine, tiny) / np.maximum(theirs.mean(axis=1), tiny))


class LocalAccuracy(ConfidenceScore):
    """How often the recommendation was right for the ``k`` labelled calibration queries nearest this query
    (compared as the index compares vectors): a local estimate of the error rate, in the spirit of the
    trust score, that knows which regions of the space mislead (tops among t-shirts, gift sets among
    watches). It reads the calibration queries' vectors and whether their recommendation was correct,
    never the catalog's labels; calibration fits it (:meth:`fit`) and saves what it learnt with the index.

    Args:
        k: calibration queries consulted.
        vectors: (R, D) the calibration queries as the index stores vectors (the index's current
            whitening is applied when scoring, so a rebuild does not leave them behind); correct: (R,) bool.
    """

    family = "local"

    neighbours_needed = 1
    reads_queries = True

    def __init__(self, k: int = 10, vectors=None, correct=None):
        self.k = _positive(k, "k")
        self.params = (self.k,)
        self.vectors = None if vectors is None else np.ascontiguousarray(vectors, dtype=np.float32)
        self.correct = None if correct is None else np.asarray(correct, dtype=bool)
        self._reference = None  # (index generation, FAISS flat index of the vectors as that generation compares them)
        if (self.vectors is None) != (self.correct is None) or (
                self.vectors is not None and (self.vectors.ndim != 2 or len(self.vectors) != len(self.correct))):
            raise StylespaceError("a local accuracy score needs (R, D) calibration vectors and R correctness flags")

    def fit(self, vectors: np.ndarray, correct: np.ndarray) -> "LocalAccuracy":
        """Learn from calibration queries: their (R, D) vectors (as stored) and whether each was correct.
        Returns self, fitted (what it learnt before is replaced)."""
        if len(vectors) < 2:
            raise StylespaceError("a local accuracy score needs at least 2 calibration queries")
        fitted = LocalAccuracy(self.k, vectors, correct)  # the constructor checks the shapes
        self.vectors, self.correct, self._reference = fitted.vectors, fitted.correct, None
        return self

    def score(self, context):
        if self.vectors is None:
            raise StylespaceError(f"the {self.name} score is not fitted; calibrate it on labelled queries first")
        import faiss

        k = min(self.k, len(self.vectors) - int(context.leave_one_out))
        index = context.index
        # one generation of an index has one whitening: transform the calibration queries once per generation
        key = (str(index.folder), index.config.generation, index.config.whitened_items)
        if self._reference is None or self._reference[0] != key:
            vectors = np.ascontiguousarray(index.search_space(self.vectors), dtype=np.float32)
            flat = faiss.IndexFlatIP(vectors.shape[1]) if context.metric == "cosine" else faiss.IndexFlatL2(vectors.shape[1])
            flat.add(vectors)
            self._reference = (key, flat)
        reference = self._reference[1]
        search = getattr(reference, "search_numpy", reference.search)
        _, rows = search(context.searched_query_vectors(), k + int(context.leave_one_out))
        if context.leave_one_out:
            # each calibration query is its own nearest: drop it (or, on exact ties, whichever copy is listed)
            own = rows == np.arange(len(rows))[:, None]
            own[~own.any(axis=1), -1] = True
            rows = rows[~own].reshape(len(rows), k)
        return self.correct[rows].mean(axis=1)

    def arrays(self) -> dict[str, np.ndarray]:
        """What it learnt, saved beside the index (see ``stylespace.recommend.saved``)."""
        if self.vectors is None:
            raise StylespaceError(f"the {self.name} score is not fitted")
        return {"vectors": self.vectors, "correct": self.correct}


def default_scores() -> list[ConfidenceScore]:
    """The scores compared by calibration (the best by AURC is kept)."""
    return [TopSimilarity(), MeanSimilarity(3), MeanSimilarity(10), Margin(1, 10), Margin(3, 20),
            NeighbourAgreement(3), NeighbourAgreement(10), Reciprocity(10), NeighbourhoodOverlap(10),
            DensityRatio(10), LocalAccuracy(10)]


# The score families :func:`score_by_name` knows; a score's name is its family and its integer parameters.
SCORE_FAMILIES: tuple[type[ConfidenceScore], ...] = (
    TopSimilarity, MeanSimilarity, Margin, NeighbourAgreement, Reciprocity, NeighbourhoodOverlap, DensityRatio,
    LocalAccuracy)


def score_by_name(name: str) -> ConfidenceScore:
    """The score called ``name`` (as in index.json), e.g. ``top1``, ``mean3``, ``margin1-10``, ``reciprocity10``:
    the family of :data:`SCORE_FAMILIES` the name starts with, made with the integers that follow."""
    import re

    for family in SCORE_FAMILIES:
        match = re.fullmatch(re.escape(family.family) + r"(\d+(?:-\d+)*)?", name)
        if match:
            params = [int(v) for v in match.group(1).split("-")] if match.group(1) else []
            try:
                score = family(*params)
            except TypeError:  # as many integers as the family takes, or none for its defaults
                continue
            if score.name == name:
                return score
    known = ", ".join(s.name for s in default_scores())
    raise StylespaceError(f"unknown confidence score {name!r}; expected one of {known} (or another k)")


def _positive(k: int, name: str) -> int:
    validate([at_least(name, k, 1)])
    return k
