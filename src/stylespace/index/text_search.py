"""Search an index by words: the text model's embedding ranking, fused with BM25 over the items' names where
the index holds names (hybrid), or alone where it does not (a folder of photos); never random items.

>>> search = TextSearch.open(index)                      # the text model beside the index's image model
>>> answer = search.search("navy check shirt for men", k=10)
>>> answer.method, answer.confident, [hit.id for hit in answer.hits]
('hybrid', True, ['15970', ...])

How a query is answered (``mode="auto"``, chosen per query by what the index holds):

- the text model reads the query (:meth:`stylespace.text.TextModel.read_query`); words it does not know
  are listed in the answer, and a query with no known word gets no embedding ranking;
- the embedding ranking is a search of the index with the query's vector; its best item's similarity (cosine
  in the image model's own space, before any whitening of the index) is compared with the floor the text
  model calibrated: below it, the words are taken for something the model does not know;
- where items have names, BM25 ranks the names by the query's words (``bm25s``, the same normalised words as
  the text model's), and the two rankings are fused by reciprocal rank fusion (each item scores
  sum 1 / (60 + rank)); BM25 alone answers when the text model knows none of the words but the names do;
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


class NameRanking:
    """BM25 over the names of an index's items (built from the index as it is when made)."""

    def __init__(self, index: CatalogIndex, tokenizer):
        import bm25s

        from stylespace.text import item_name

        self.tokenizer = tokenizer
        self.ids = index.ids
        rows = index.items.rows(index.keys_of(self.ids)) if self.ids else {}
        by_id = {item_id: (label, meta) for item_id, _, label, meta in rows.values()}
        self.labels = [by_id.get(i, (None, {}))[0] for i in self.ids]
        self.metas = [by_id.get(i, (None, {}))[1] for i in self.ids]
        names = [item_name(m) or "" for m in self.metas]
        self.named = sum(1 for n in names if n)
        self.bm25 = bm25s.BM25()
        if self.named:
            self.bm25.index([tokenizer.words_of(n) for n in names], show_progress=False)

    def rank(self, words: Sequence[str], limit: int, where: Mapping[str, list[str]] | None = None,
             exclude: Sequence[str] = ()) -> tuple[list[int], np.ndarray, int]:
        """(positions of the best ``limit`` items, their BM25 scores, how many items match a word at all)."""
        known = [w for w in words if w in self.bm25.vocab_dict] if self.named else []
        if not known:
            return [], np.zeros(0, np.float32), 0
        scores = np.asarray(self.bm25.get_scores(known), dtype=np.float32)
        if where or exclude:
            scores = scores.copy()
            banned = set(exclude)
            for position, (item_id, label, meta) in enumerate(zip(self.ids, self.labels, self.metas)):
                if scores[position] > 0 and (item_id in banned or not _passes(label, meta, where)):
                    scores[position] = 0.0
        matches = int((scores > 0).sum())
        if not matches:
            return [], np.zeros(0, np.float32), 0
        top = np.argpartition(-scores, min(limit, len(scores) - 1))[:limit] if len(scores) > limit else np.arange(len(scores))
        top = top[scores[top] > 0]
        top = top[np.argsort(-scores[top], kind="stable")]
        return top.tolist(), scores[top], matches


class TextSearch:
    """Search ``index`` by words with ``text_model`` (made for the index's image model; refused otherwise)."""

    def __init__(self, index: CatalogIndex, text_model):
        text_model.check_image_model(index.model_id, f"the index at {index.folder}")
        self.index = index
        self.text_model = text_model
        self._names: NameRanking | None = None
        self._names_marker = None

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
    def names(self) -> NameRanking:
        """BM25 over the names, made on first use and again when the index has changed since."""
        marker = self.index.marker
        if self._names is None or marker != self._names_marker:
            self._names, self._names_marker = NameRanking(self.index, self.text_model.tokenizer), marker
        return self._names

    @property
    def has_names(self) -> bool:
        return self.names.named > 0

    def search(self, text: str, k: int = 10, *, where: Mapping[str, Any] | None = None, mode: str = "auto",
               image_vector: np.ndarray | None = None, text_weight: float = 1.0,
               exclude_ids: Sequence[str] = ()) -> TextAnswer:
        """The ``k`` items for the words ``text`` (see the module docstring for how).

        Args:
            where: metadata filters, as :meth:`CatalogIndex.search` takes them.
            mode: ``auto`` (hybrid where the index has names, else the embedding), ``embedding`` (names
                ignored: what a catalog without names gets), ``hybrid``, or ``keywords`` (BM25 alone).
            image_vector: (D,) an image's vector under the index's model: search for the image and the words
                together (the image's vector plus ``text_weight`` times the words').
            exclude_ids: items never returned (the query item of a combined query).
        """
        validate([one_of("mode", mode, MODES), (isinstance(k, int) and k >= 1, f"k must be an integer >= 1, got {k!r}")])
        text = str(text)
        read = self.text_model.read_query(text)
        floor = self.text_model.floor
        base = dict(query=text, unknown_words=read.unknown, floor=floor)
        if image_vector is not None:
            return self._combined(read, image_vector, text_weight, k, where, exclude_ids, base)
        use_names = mode in ("hybrid", "keywords") or (mode == "auto" and self.has_names)
        named: tuple[list[int], np.ndarray, int] = ([], np.zeros(0), 0)
        if use_names and read.words:
            named = self.names.rank(read.words, max(CANDIDATES, k), self.index._allowed(where), exclude_ids)
        base["name_matches"] = named[2]
        if mode == "keywords":
            if not named[0]:
                return TextAnswer(**base, method="none", hits=[], confident=False, score_name="bm25",
                                  reason=self._no_name_reason(read))
            return TextAnswer(**base, method="keywords", hits=self._name_hits(named, k), confident=True,
                              score_name="bm25")
        embedded, similarity = self._embedding(read, max(CANDIDATES, k) if named[0] else k, where, exclude_ids)
        base["similarity"] = None if embedded is None else round(similarity, 5)
        understood = embedded is not None and similarity >= floor
        if not understood and not named[0]:
            reason = read.reason or (f"the closest item's similarity to these words, {similarity:.3f}, is below the "
                                     f"floor {floor:.3f} calibrated on the catalog's own phrases and names: the text "
                                     "model does not recognise them")
            if use_names and self.has_names:
                reason += "; and no item's name has any of these words"
            return TextAnswer(**base, method="none", hits=[], confident=False, score_name="cosine", reason=reason)
        if not named[0]:
            return TextAnswer(**base, method="embedding", hits=embedded[:k], confident=True,
                              score_name=self.index.metric)
        if not understood:  # the names know the words, the text model does not: keywords alone
            return TextAnswer(**base, method="keywords", hits=self._name_hits(named, k), confident=True,
                              score_name="bm25")
        return TextAnswer(**base, method="hybrid", hits=self._fuse(embedded, named, k), confident=True,
                          score_name="rrf")

    # --- the rankings -------------------------------------------------------------------------------------------

    def _embedding(self, read, k: int, where, exclude_ids) -> tuple[list[Hit] | None, float]:
        if read.vector is None:
            return None, float("-inf")
        neighbours = self.index.neighbours(read.vector[None, :], k, where=where,
                                           exclude_ids=list(exclude_ids) or None)
        keys = neighbours.keys[0]
        if keys[0] < 0:
            return [], float("-inf")  # every item filtered out
        similarity = float(self.index.vectors_of_keys(keys[:1])[0] @ read.vector)
        return self.index.hits(neighbours)[0], similarity

    def _name_hits(self, named, k: int) -> list[Hit]:
        positions, scores, _ = named
        ids = [self.names.ids[p] for p in positions[:k]]
        return [dataclasses.replace(hit, score=float(score)) for hit, score in zip(self._hits_of(ids), scores)]

    def _fuse(self, embedded: list[Hit], named, k: int) -> list[Hit]:
        fused: dict[str, float] = {}
        for rank, hit in enumerate(embedded, 1):
            fused[hit.id] = fused.get(hit.id, 0.0) + 1.0 / (RRF_K + rank)
        for rank, position in enumerate(named[0], 1):
            item_id = self.names.ids[position]
            fused[item_id] = fused.get(item_id, 0.0) + 1.0 / (RRF_K + rank)
        best = sorted(fused, key=lambda i: -fused[i])[:k]
        return [dataclasses.replace(hit, score=round(fused[hit.id], 6)) for hit in self._hits_of(best)]

    def _hits_of(self, ids: Sequence[str]) -> list[Hit]:
        keys = self.index.keys_of(ids)
        rows = self.index.items.rows(keys)
        return [Hit(item_id, 0.0, meta, label, source)
                for item_id, source, label, meta in (rows[int(key)] for key in keys if int(key) in rows)]

    def _combined(self, read, image_vector, text_weight: float, k: int, where, exclude_ids, base) -> TextAnswer:
        validate([(isinstance(text_weight, (int, float)) and text_weight >= 0,
                   f"text_weight must be a number >= 0, got {text_weight!r}")])
        image = np.asarray(image_vector, dtype=np.float32).reshape(-1)
        if image.shape[0] != self.index.config.dim:
            raise StylespaceError(f"the image vector has {image.shape[0]} dimensions; the index holds "
                                  f"{self.index.config.dim}")
        if read.vector is None:
            return TextAnswer(**base, method="none", hits=[], confident=False, score_name="cosine", reason=read.reason)
        query = image / max(float(np.linalg.norm(image)), 1e-12) + text_weight * read.vector
        hits = self.index.search(query[None, :], k, where=where, exclude_ids=list(exclude_ids) or None)[0]
        return TextAnswer(**base, method="image+text", hits=hits, confident=True, score_name=self.index.metric)

    def _no_name_reason(self, read) -> str:
        if not self.has_names:
            return "the index's items have no names to match words against"
        return read.reason or "no item's name has any of these words"


def _passes(label: str | None, meta: Mapping[str, str], where: Mapping[str, list[str]] | None) -> bool:
    """Whether an item passes ``where`` (column -> allowed values; ``label`` is the item's label)."""
    return not where or all(str(label if column == "label" else meta.get(column)) in values
                            for column, values in where.items())
