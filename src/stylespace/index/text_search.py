"""Search an index by words: the text model's embedding ranking, fused with BM25 over the items' names where
the index holds names (hybrid), or alone where it does not (a folder of photos); never random items.

>>> search = TextSearch.open(index)                      # the text model beside the index's image model
>>> answer = search.search("navy check shirt for men", k=10)
>>> answer.method, answer.confident, [hit.id for hit in answer.hits]
('hybrid', True, ['15970', ...])

How a query is answered (``mode="auto"``, chosen per query by what the index holds):

- the text model reads the query (:meth:`stylespace.text.TextModel.read_query`); words it does not know
  are listed in the answer, and a query with no known word gets no embedding ranking;
- the embedding ranking compares the query's vector with every item's vector as stored (cosine in the image
  model's own space: an index's whitening, fitted for image queries, is left out, as it cost text queries
  more than half their precision in a small run); its best item's similarity is compared with the floor the
  text model calibrated: below it, the words are taken for something the model does not know;
- where items have names, BM25 ranks the names by the query's words (``bm25s``, the same normalised words as
  the text model's, in the singular, stopwords left out: :func:`keyword_terms`), and the two rankings are fused by reciprocal rank fusion (each item scores
  sum w / (60 + rank); w is 1 for the embedding, and for the names the share of the query's words some
  name has); BM25 alone answers when the text model does not recognise the words but some names have them;
- with neither a known word above the floor nor a name that matches, the answer is "no confident match",
  with the reason, and no items.

An image and words together ("like this photo, but red"): the image's vector and the words' vector, both unit
length in the same space, are added (``text_weight`` scales the words) and searched as one query.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from stylespace.index.catalog_index import CatalogIndex, Hit
from stylespace.utils import StylespaceError, one_of, validate

MODES = ("auto", "embedding", "hybrid", "keywords")
RRF_K = 60  # reciprocal rank fusion's constant (Cormack et al. 2009): damps the top ranks' weight
CANDIDATES = 100  # items each ranking contributes to the fusion
TEXT_MODEL_FOLDER = "text"  # where a text model lives beside its image model: MODEL/text
# Item vectors wider than this are ranked in their top REDUCED_DIM principal directions first, and the best
# RERANK x k (at least 200) of that shortlist exactly.
REDUCED_DIM = 256
RERANK = 10
REDUCTION_SAMPLE = 2048
# Words BM25 leaves out: in a few names each, so their rarity would rank those names first for "tops for women".
STOPWORDS = frozenset({"a", "an", "and", "for", "in", "of", "on", "the", "to", "with", "s"})


def keyword_terms(words: Sequence[str]) -> list[str]:
    """The terms BM25 indexes and looks up: the text model's normalised words, in the singular ("tops" and
    "Top" meet, as do "jeans" and "jean"), stopwords left out."""
    from stylespace.text import singular

    return [singular(w) for w in words if w not in STOPWORDS]


@dataclasses.dataclass
class TextAnswer:
    """The items for one query by words.

    Attributes:
        query: the words. method: ``embedding``, ``hybrid``, ``keywords`` or ``image+text``; ``none`` when nothing
            could answer. hits: best first; ``score`` is the cosine similarity as the index reports it for
            ``embedding`` and ``image+text``, the fused reciprocal-rank score for ``hybrid``, the BM25 score for
            ``keywords`` (``score_name`` says which). confident: the hits are worth showing; when False there
            are none and ``reason`` says why. similarity: the best item's similarity to the words (image space,
            unwhitened), compared with ``floor``. unknown_words: words the text model does not know.
            name_matches: items whose names share a word with the query (0 where the index has no names).
    """

    query: str
    method: str
    hits: list[Hit]
    confident: bool
    score_name: str
    reason: str | None = None
    similarity: float | None = None
    floor: float | None = None
    unknown_words: list[str] = dataclasses.field(default_factory=list)
    name_matches: int = 0

    def to_dict(self) -> dict:
        return {"query": self.query, "method": self.method, "confident": self.confident, "reason": self.reason,
                "score_name": self.score_name, "similarity": self.similarity, "floor": self.floor,
                "unknown_words": self.unknown_words, "name_matches": self.name_matches,
                "hits": [{"rank": r, "id": h.id, "score": h.score, "label": h.label, "meta": h.meta}
                         for r, h in enumerate(self.hits, 1)]}


def default_text_model_dir(index: CatalogIndex) -> Path | None:
    """Where the text model of an index's image model is looked for: ``MODEL/text`` (None without a model folder)."""
    return None if index.model_dir is None else index.model_dir / TEXT_MODEL_FOLDER


class TextSpace:
    """What text queries are compared with, read once from one state of an index: every item's vector as
    stored (unit length, *not* whitened: the text model was trained against the image model's own vectors,
    and an index's whitening, fitted for image queries, scrambles the directions words map to), its label
    and metadata, and BM25 over the names where items have names. About 0.5 KB an item at D = 128."""

    def __init__(self, index: CatalogIndex, tokenizer):
        import bm25s

        from stylespace.text import item_name

        self.marker = index.marker
        self.ids = index.ids
        self.keys = index.keys_of(self.ids)
        rows = index.items.rows(self.keys) if self.ids else {}
        self.labels = [rows[int(k)][2] for k in self.keys]
        self.metas = [rows[int(k)][3] for k in self.keys]
        self.sources = [rows[int(k)][1] for k in self.keys]
        self.vectors = np.ascontiguousarray(index.vectors_of_keys(self.keys), dtype=np.float32).reshape(
            len(self.keys), index.config.dim)
        self.position = {item_id: p for p, item_id in enumerate(self.ids)}
        self.basis, self.reduced = _reduction(self.vectors)
        names = [item_name(m) or "" for m in self.metas]
        self.named = sum(1 for n in names if n)
        self.bm25 = bm25s.BM25()
        if self.named:
            self.bm25.index([keyword_terms(tokenizer.words_of(n)) for n in names], show_progress=False)
        self._masks: dict[str, np.ndarray] = {}

    def allowed(self, where: Mapping[str, list[str]] | None, exclude: Sequence[str] = ()) -> np.ndarray | None:
        """(N,) bool: items that pass ``where`` (checked column -> values) and are not excluded; None = all."""
        if not where and not exclude:
            return None
        mask = np.ones(len(self.ids), dtype=bool)
        if where:
            key = repr(sorted(where.items()))
            if key not in self._masks:
                if len(self._masks) > 64:  # bounded: a few filters are what a shop uses
                    self._masks.clear()
                self._masks[key] = np.array([_passes(label, meta, where) for label, meta in zip(self.labels, self.metas)],
                                            dtype=bool)
            mask &= self._masks[key]
        for item_id in exclude:
            if item_id in self.position:
                mask[self.position[item_id]] = False
        return mask

    def nearest(self, vector: np.ndarray, k: int, allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """(positions, cosine similarities) of the ``k`` items most similar to ``vector``, best first."""
        vector = np.asarray(vector, dtype=np.float32)
        if self.basis is None:
            return _top(_masked(_matvec(self.vectors, vector), allowed), k)
        # a wide model (1,536 dims): a shortlist in its top principal directions, re-ranked exactly
        shortlist, _ = _top(_masked(_matvec(self.reduced, np.einsum("ji,j->i", self.basis, vector)), allowed), max(RERANK * k, 200))
        return _top_of(shortlist, _matvec(self.vectors[shortlist], vector), k)

    def keywords(self, words: Sequence[str], k: int, allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, int]:
        """(positions, BM25 scores) of the best ``k`` names for ``words``, and how many names match a word at all."""
        known = [w for w in keyword_terms(words) if w in self.bm25.vocab_dict] if self.named else []
        if not known:
            return np.zeros(0, np.int64), np.zeros(0, np.float32), 0
        scores = np.asarray(self.bm25.get_scores(known), dtype=np.float32)
        if allowed is not None:
            scores = np.where(allowed, scores, 0.0)
        matches = int((scores > 0).sum())
        positions, best = _top(scores, min(k, matches))
        return positions, best, matches

    def hit(self, position: int, score: float) -> Hit:
        return Hit(self.ids[position], float(score), self.metas[position], self.labels[position], self.sources[position])


class TextSearch:
    """Search ``index`` by words with ``text_model`` (made for the index's image model; refused otherwise)."""

    def __init__(self, index: CatalogIndex, text_model):
        text_model.check_image_model(index.model_id, f"the index at {index.folder}")
        self.index = index
        self.text_model = text_model
        self._space: TextSpace | None = None

    @classmethod
    def open(cls, index: CatalogIndex, text_model_dir: str | os.PathLike | None = None) -> "TextSearch":
        """The index's text search with the text model in ``text_model_dir`` (default: ``MODEL/text`` beside the
        image model the index was built with)."""
        from stylespace.text import TextModel

        folder = text_model_dir or default_text_model_dir(index)
        if folder is None:
            raise StylespaceError(f"the index at {index.folder} records no model folder, so no text model is found "
                                  "beside it; pass the text model (--text-model DIR)")
        if not Path(folder).exists():
            raise StylespaceError(f"no text model at {folder}: train one for the index's image model with "
                                  f"`stylespace text-train {index.model_dir or 'MODEL'} CATALOG --split SPLIT -o {folder}`, "
                                  "or pass --text-model DIR")
        return cls(index, TextModel.load(folder, image_model_id=index.model_id))

    @property
    def space(self) -> TextSpace:
        """The index's items as text queries see them, read on first use and again when the index has changed."""
        if self._space is None or self.index.marker != self._space.marker:
            self._space = TextSpace(self.index, self.text_model.tokenizer)
        return self._space

    @property
    def has_names(self) -> bool:
        return self.space.named > 0

    def search(self, text: str, k: int = 10, *, where: Mapping[str, Any] | None = None, mode: str = "auto",
               image_vector: np.ndarray | None = None, text_weight: float = 1.0,
               exclude_ids: Sequence[str] = ()) -> TextAnswer:
        """The ``k`` items for the words ``text`` (see the module docstring for how).

        Args:
            where: metadata filters, as :meth:`CatalogIndex.search` takes them.
            mode: ``auto`` (hybrid where the index has names, else the embedding), ``embedding`` (names
                ignored: what a catalog without names gets), ``hybrid``, or ``keywords`` (BM25 alone).
            image_vector: (D,) an image's vector under the index's model (unwhitened, as the model makes it):
                search for the image and the words together (the image plus ``text_weight`` times the words).
            exclude_ids: items never returned (the query item of a combined query).
        """
        validate([one_of("mode", mode, MODES),
                  (isinstance(k, int) and not isinstance(k, bool) and k >= 1, f"k must be an integer >= 1, got {k!r}")])
        text = str(text)
        read = self.text_model.read_query(text)
        floor = self.text_model.floor
        space = self.space
        allowed = space.allowed(self.index._allowed(where), [str(i) for i in exclude_ids])
        base = dict(query=text, unknown_words=read.unknown, floor=floor)
        if image_vector is not None:
            return self._combined(read, image_vector, text_weight, k, allowed, base)
        use_names = mode in ("hybrid", "keywords") or (mode == "auto" and space.named > 0)
        named = space.keywords(read.words, max(CANDIDATES, k), allowed) if use_names else (np.zeros(0, np.int64), None, 0)
        base["name_matches"] = named[2]
        has_named = len(named[0]) > 0
        if mode == "keywords":
            if not has_named:
                return TextAnswer(**base, method="none", hits=[], confident=False, score_name="bm25",
                                  reason=self._no_name_reason(read))
            return TextAnswer(**base, method="keywords", hits=self._hits(*named[:2], k), confident=True,
                              score_name="bm25")
        embedded, similarity = None, None
        if read.vector is not None:
            embedded = space.nearest(read.vector, max(CANDIDATES, k) if has_named else k, allowed)
            similarity = round(float(embedded[1][0]), 5) if len(embedded[0]) else None
        base["similarity"] = similarity
        understood = similarity is not None and similarity >= floor
        if not understood and not has_named:
            reason = read.reason
            if reason is None and similarity is None:
                reason = "no item passes the filters"
            elif reason is None:
                reason = (f"the closest item's similarity to these words, {similarity:.3f}, is below the floor "
                          f"{floor:.3f} calibrated on the catalog's own phrases and names: the text model does not "
                          "recognise them")
            if use_names and space.named:
                reason += "; and no item's name has any of these words"
            return TextAnswer(**base, method="none", hits=[], confident=False, score_name="cosine", reason=reason)
        if not has_named:
            return TextAnswer(**base, method="embedding", hits=self._hits(*embedded, k), confident=True,
                              score_name="cosine")
        if not understood:  # the names know the words, the text model does not: keywords alone
            return TextAnswer(**base, method="keywords", hits=self._hits(*named[:2], k), confident=True,
                              score_name="bm25")
        terms = keyword_terms(read.words)
        coverage = sum(w in space.bm25.vocab_dict for w in terms) / max(1, len(terms))
        return TextAnswer(**base, method="hybrid", hits=self._fuse(embedded[0], named[0], coverage, k), confident=True,
                          score_name="rrf")

    # --- the rankings -------------------------------------------------------------------------------------------

    def _hits(self, positions: np.ndarray, scores: np.ndarray, k: int) -> list[Hit]:
        return [self.space.hit(int(p), float(s)) for p, s in zip(positions[:k], scores[:k])]

    def _fuse(self, embedded: np.ndarray, named: np.ndarray, coverage: float, k: int) -> list[Hit]:
        """Reciprocal rank fusion of two rankings (positions, best first), the names' weighted by the share of
        the query's words that some name has: BM25 ignores the rest ("yelow tshirt" is any T-shirt to it),
        while the text model reads them, misspelt or not."""
        fused: dict[int, float] = {}
        for ranking, weight in ((embedded, 1.0), (named, coverage)):
            for rank, position in enumerate(ranking.tolist(), 1):
                fused[position] = fused.get(position, 0.0) + weight / (RRF_K + rank)
        best = sorted(fused, key=lambda p: -fused[p])[:k]
        return [self.space.hit(p, round(fused[p], 6)) for p in best]

    def _combined(self, read, image_vector, text_weight: float, k: int, allowed, base) -> TextAnswer:
        validate([(isinstance(text_weight, (int, float)) and not isinstance(text_weight, bool) and text_weight >= 0,
                   f"text_weight must be a number >= 0, got {text_weight!r}")])
        image = np.asarray(image_vector, dtype=np.float32).reshape(-1)
        if image.shape[0] != self.index.config.dim:
            raise StylespaceError(f"the image vector has {image.shape[0]} dimensions; the index holds "
                                  f"{self.index.config.dim}")
        if read.vector is None:
            return TextAnswer(**base, method="none", hits=[], confident=False, score_name="cosine", reason=read.reason)
        query = image / max(float(np.linalg.norm(image)), 1e-12) + text_weight * read.vector
        query /= max(float(np.linalg.norm(query)), 1e-12)
        positions, scores = self.space.nearest(query, k, allowed)
        return TextAnswer(**base, method="image+text", hits=self._hits(positions, scores, k), confident=True,
                          score_name="cosine")

    def _no_name_reason(self, read) -> str:
        if not self.space.named:
            return "the index's items have no names to match words against"
        return read.reason or "no item's name has any of these words"


def _matvec(matrix: np.ndarray, vector: np.ndarray) -> np.ndarray:
    # einsum, not BLAS: OpenBLAS splits a matrix-vector product over its threads, and on a busy CPU their
    # hand-off cost 32 ms per query against 1 ms single-threaded (44k x 128, measured)
    return np.einsum("ij,j->i", matrix, vector)


def _masked(scores: np.ndarray, allowed: np.ndarray | None) -> np.ndarray:
    return scores if allowed is None else np.where(allowed, scores, -np.inf)


def _top_of(positions: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    order, best = _top(scores, k)
    return positions[order], best


def _reduction(vectors: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
    """For vectors wider than :data:`REDUCED_DIM`: (D, REDUCED_DIM) their top principal directions (of the
    uncentred second moment: dot products are what is kept) and the vectors projected on them; else (None, None).
    Ranking 44k x 1,536 exactly reads 270 MB a query (tens of ms); the projection reads a sixth of it."""
    n, dim = vectors.shape
    if dim <= REDUCED_DIM or n <= REDUCED_DIM:
        return None, None
    # the directions from a fixed sample: all 44k items cost 100 G multiply-adds for the same subspace
    sample = vectors[np.sort(np.random.default_rng(0).choice(n, min(n, REDUCTION_SAMPLE), replace=False))]
    _, directions = np.linalg.eigh((sample.T @ sample).astype(np.float64))
    basis = np.ascontiguousarray(directions[:, ::-1][:, :REDUCED_DIM], dtype=np.float32)
    return basis, np.ascontiguousarray(vectors @ basis)


def _top(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(positions, scores) of the ``k`` highest finite scores, best first."""
    k = min(int(k), int(np.isfinite(scores).sum()))
    if k <= 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    top = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
    top = top[np.isfinite(scores[top])]
    top = top[np.argsort(-scores[top], kind="stable")]
    return top, scores[top]


def _passes(label: str | None, meta: Mapping[str, str], where: Mapping[str, list[str]] | None) -> bool:
    """Whether an item passes ``where`` (column -> allowed values; ``label`` is the item's label)."""
    return not where or all(str(label if column == "label" else meta.get(column)) in values
                            for column, values in where.items())
