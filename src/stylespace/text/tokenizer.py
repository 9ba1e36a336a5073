"""``TextTokenizer``: a text -> the ids of its features (word pieces, character n-grams, word pairs).

The word pieces come from a WordPiece model trained with Hugging Face's ``tokenizers`` library on the
catalog's names and attribute values, which also normalises the text (accents and case folded, hyphens and
apostrophes inside words dropped: "T-Shirt", "tshirt" and "men's" -> "tshirt", "mens") and splits it into
words. On top of them, every word gives its character n-grams (``<shirt>`` -> ``<sh``, ``shi`` ... ``rt>``)
and every two neighbouring words a pair ("navy blue"), kept when seen ``min_count`` times: "tshrit" shares
most of its n-grams with "tshirt", so a misspelling moves a query a little instead of throwing it away.

A word is *known* when it was seen in training or at least 40 % of its n-grams were (on the catalog's words,
13 of 14 misspellings pass and 87 % of random letter strings do not); a query none of whose
words is known gets "no confident match" instead of results (see :mod:`stylespace.text.model`).
"""
from __future__ import annotations

import collections
import dataclasses
import os
from pathlib import Path
from typing import Iterable, Sequence

from stylespace.utils import StylespaceError, atomic_write, read_json, write_json

TOKENIZER_FILE = "tokenizer.json"
VOCABULARY_FILE = "vocabulary.json"
UNKNOWN = "[UNK]"
# Hostile input: a query is cut to this many characters and words before anything else reads it.
MAX_CHARS = 512
MAX_WORDS = 48
KNOWN_NGRAM_SHARE = 0.4


@dataclasses.dataclass
class Features:
    """One text's features: ``ids`` (every feature, for the bag), ``pieces`` (word-piece ids in order, for a
    transformer), ``words`` and, per word, whether the model knows it."""

    ids: list[int]
    pieces: list[int]
    words: list[str]
    known: list[bool]


class TextTokenizer:
    """Word pieces + character n-grams + word pairs (see the module docstring). Make one with :meth:`train`,
    read one with :meth:`load`. Feature ids: word pieces ``[0, V)``, n-grams ``[V, V + G)``, pairs after."""

    def __init__(self, tokenizer, ngrams: Sequence[str], pairs: Sequence[str], words: Iterable[str],
                 ngram_range: tuple[int, int]):
        self.tokenizer = tokenizer
        self.ngram_range = (int(ngram_range[0]), int(ngram_range[1]))
        self.pieces = tokenizer.get_vocab_size()
        self.ngram_ids = {g: self.pieces + i for i, g in enumerate(ngrams)}
        self.pair_ids = {p: self.pieces + len(self.ngram_ids) + i for i, p in enumerate(pairs)}
        self.words = frozenset(words)
        self._word_cache: dict[str, tuple[list[int], list[int], bool]] = {}

    @property
    def size(self) -> int:
        """How many feature ids there are (the encoder's embedding table)."""
        return self.pieces + len(self.ngram_ids) + len(self.pair_ids)

    # --- making one --------------------------------------------------------------------------------------

    @classmethod
    def train(cls, vocabulary: Sequence[str], texts: Iterable[str], vocab_size: int = 8000,
              ngram_range: tuple[int, int] = (3, 5), min_count: int = 2, max_ngrams: int = 60000) -> "TextTokenizer":
        """Learn the word pieces from ``vocabulary`` (names and attribute values) and keep the n-grams and
        word pairs seen ``min_count`` times in ``texts`` (the training texts, with their repetitions)."""
        from tokenizers import Tokenizer, models, trainers

        tokenizer = Tokenizer(models.WordPiece(unk_token=UNKNOWN, max_input_chars_per_word=40))
        _set_normalisation(tokenizer)
        tokenizer.train_from_iterator(list(vocabulary), trainers.WordPieceTrainer(
            vocab_size=vocab_size, min_frequency=1, special_tokens=[UNKNOWN], show_progress=False))
        word_counts: collections.Counter = collections.Counter()
        pair_counts: collections.Counter = collections.Counter()
        for text in texts:
            words = _split(tokenizer, text)
            word_counts.update(words)
            pair_counts.update(f"{a} {b}" for a, b in zip(words, words[1:]))
        ngram_counts: collections.Counter = collections.Counter()
        for word, count in word_counts.items():
            for gram in _ngrams(word, ngram_range):
                ngram_counts[gram] += count
        ngrams = [g for g, c in ngram_counts.most_common(max_ngrams or None) if c >= min_count]
        pairs = [p for p, c in pair_counts.most_common(max_ngrams or None) if c >= min_count]
        return cls(tokenizer, sorted(ngrams), sorted(pairs), word_counts, ngram_range)

    # --- using it ------------------------------------------------------------------------------------------

    def words_of(self, text: str) -> list[str]:
        """The normalised words of ``text`` (cut to :data:`MAX_CHARS` characters, :data:`MAX_WORDS` words)."""
        return _split(self.tokenizer, str(text)[:MAX_CHARS])[:MAX_WORDS]

    def features(self, text: str) -> Features:
        words = self.words_of(text)
        ids: list[int] = []
        pieces: list[int] = []
        known = []
        for word in words:
            word_pieces, grams, is_known = self._word(word)
            ids.extend(word_pieces)
            ids.extend(grams)
            pieces.extend(word_pieces)
            known.append(is_known)
        ids.extend(self.pair_ids[p] for p in (f"{a} {b}" for a, b in zip(words, words[1:])) if p in self.pair_ids)
        return Features(ids, pieces, words, known)

    def _word(self, word: str) -> tuple[list[int], list[int], bool]:
        cached = self._word_cache.get(word)
        if cached is None:
            pieces = [t.id for t in self.tokenizer.model.tokenize(word)]
            grams = _ngrams(word, self.ngram_range)
            found = [self.ngram_ids[g] for g in grams if g in self.ngram_ids]
            known = word in self.words or (bool(grams) and len(found) >= KNOWN_NGRAM_SHARE * len(grams))
            cached = (pieces, found, known)
            if len(self._word_cache) < 200_000:  # bounded: hostile queries cannot grow it without end
                self._word_cache[word] = cached
        return cached

    # --- files -----------------------------------------------------------------------------------------------

    def save(self, folder: str | os.PathLike) -> None:
        folder = Path(folder)
        with atomic_write(folder / TOKENIZER_FILE, "w") as handle:
            handle.write(self.tokenizer.to_str())
        by_id = lambda table: [k for k, _ in sorted(table.items(), key=lambda kv: kv[1])]  # noqa: E731
        write_json(folder / VOCABULARY_FILE, {"ngram_range": list(self.ngram_range), "ngrams": by_id(self.ngram_ids),
                                              "pairs": by_id(self.pair_ids), "words": sorted(self.words)})

    @classmethod
    def load(cls, folder: str | os.PathLike) -> "TextTokenizer":
        from tokenizers import Tokenizer

        folder = Path(folder)
        path = folder / TOKENIZER_FILE
        try:
            tokenizer = Tokenizer.from_file(str(path))
        except Exception as exc:  # the library raises its own exception types for a missing or broken file
            raise StylespaceError(f"{path}: cannot read the text model's tokenizer ({exc}); train the text model "
                                  "again with `stylespace text-train`") from None
        data = read_json(folder / VOCABULARY_FILE, "text model vocabulary")
        try:
            return cls(tokenizer, data["ngrams"], data["pairs"], data["words"], tuple(data["ngram_range"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise StylespaceError(f"{folder / VOCABULARY_FILE}: not a text model vocabulary ({exc!r}); train the "
                                  "text model again with `stylespace text-train`") from None


def _set_normalisation(tokenizer) -> None:
    from tokenizers import normalizers, pre_tokenizers

    tokenizer.normalizer = normalizers.Sequence([
        normalizers.NFD(), normalizers.StripAccents(), normalizers.Lowercase(),
        normalizers.Replace("-", ""), normalizers.Replace("'", ""), normalizers.Replace("\u2019", ""),
    ])
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()


def _split(tokenizer, text: str) -> list[str]:
    """Normalised words (letters and digits only; punctuation dropped)."""
    normalised = tokenizer.normalizer.normalize_str(text)
    return [w for w, _ in tokenizer.pre_tokenizer.pre_tokenize_str(normalised) if w[0].isalnum()]


def _ngrams(word: str, ngram_range: tuple[int, int]) -> list[str]:
    marked = f"<{word}>"
    low, high = ngram_range
    return [marked[i:i + n] for n in range(low, high + 1) for i in range(len(marked) - n + 1)]
