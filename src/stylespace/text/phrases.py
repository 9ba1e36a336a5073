"""The texts a text model learns from: product names, and attribute phrases ("women red tops") made from an
item's metadata, each with the facts it states (what counts as a match for it in a batch).

A phrase names some of an item's (gender, baseColour, articleType, usage, season) in one of a few word
orders, lower-cased, sometimes with the article type in the singular or the gender as "men's": the ways a
shopper writes the same request. No synonym table: other words for the same thing ("tee", "trainer") are
learned from the product names, where the catalog uses them.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Mapping, Sequence

import numpy as np

# The metadata columns phrases are made of, and the name columns (the first one an item has is its name).
ATTRIBUTES = ("gender", "baseColour", "articleType", "usage", "season")
NAME_COLUMNS = ("productDisplayName", "name", "title")

# Phrase templates: the attributes they name, in order ("{a} {b}" joined by spaces, "for" before a gender
# placed last). Weighted towards what shoppers type: colour and article type, with or without a gender.
TEMPLATES: tuple[tuple[tuple[str, ...], float], ...] = (
    (("gender", "baseColour", "articleType"), 3.0),
    (("baseColour", "articleType", "gender"), 2.0),
    (("baseColour", "articleType"), 2.0),
    (("gender", "articleType"), 1.5),
    (("articleType",), 1.0),
    (("articleType", "gender"), 1.0),
    (("usage", "baseColour", "articleType"), 0.7),
    (("gender", "usage", "articleType"), 0.7),
    (("season", "articleType"), 0.5),
    (("baseColour", "articleType", "season"), 0.5),
    (("gender", "baseColour"), 0.3),
    (("baseColour",), 0.3),
)
_GENDER_FORMS = {"men": ("men", "mens", "men's", "man"), "women": ("women", "womens", "women's", "woman"),
                 "boys": ("boys", "boy"), "girls": ("girls", "girl"), "unisex": ("unisex",)}


@dataclasses.dataclass(frozen=True)
class Text:
    """One training text and what it states: ``facts`` is ((column, value), ...) an item must have to match
    it (the attributes a phrase names, or the name itself)."""

    text: str
    facts: tuple[tuple[str, str], ...]


def item_name(meta: Mapping[str, str]) -> str | None:
    """The item's product name (the first name column it has, non-empty), or None."""
    return next((str(meta[c]).strip() for c in NAME_COLUMNS if str(meta.get(c) or "").strip()), None)


def singular(word_group: str) -> str:
    """'Casual Shoes' -> 'Casual Shoe', 'Dresses' -> 'Dress', 'Tshirts' -> 'Tshirt' (the last word only)."""
    head, _, last = word_group.rpartition(" ")
    lowered = last.lower()
    if re.search(r"(ss|sh|ch|x)es$", lowered):
        last = last[:-2]
    elif lowered.endswith("s") and not lowered.endswith("ss") and len(lowered) > 3:
        last = last[:-1]
    return f"{head} {last}".strip()


def phrase(meta: Mapping[str, str], columns: Sequence[str], rng: np.random.Generator | None = None) -> str | None:
    """The phrase naming ``columns`` of ``meta`` in that order (None when the item lacks one of them);
    with ``rng``, the article type is sometimes singular and the gender sometimes another form."""
    words = []
    for position, column in enumerate(columns):
        value = str(meta.get(column) or "").strip()
        if not value or value.upper() == "NA":
            return None
        value = value.lower()
        if column == "articleType" and rng is not None and rng.random() < 0.4:
            value = singular(value)
        if column == "gender":
            forms = _GENDER_FORMS.get(value, (value,))
            value = forms[int(rng.integers(len(forms)))] if rng is not None and rng.random() < 0.3 else forms[0]
            if position == len(columns) - 1 and position > 0:
                value = f"for {value}"
        words.append(value)
    return " ".join(words)


def attribute_texts(meta: Mapping[str, str], rng: np.random.Generator, count: int) -> list[Text]:
    """``count`` attribute phrases for one item, templates drawn by weight (those it lacks a value for skipped)."""
    weights = np.array([w for _, w in TEMPLATES])
    out = []
    for index in rng.choice(len(TEMPLATES), size=count * 2, p=weights / weights.sum()):
        columns = TEMPLATES[int(index)][0]
        text = phrase(meta, columns, rng)
        if text is not None:
            out.append(Text(text, tuple((c, str(meta[c])) for c in columns)))
        if len(out) == count:
            break
    return out


def item_texts(meta: Mapping[str, str], rng: np.random.Generator, phrases: int = 6) -> tuple[Text | None, list[Text]]:
    """(the item's name as a :class:`Text`, or None; ``phrases`` attribute phrases)."""
    name = item_name(meta)
    return (Text(name, (("name", name),)) if name else None), attribute_texts(meta, rng, phrases)


def vocabulary_texts(metas: Sequence[Mapping[str, str]]) -> list[str]:
    """What the tokenizer is trained on: every name and every attribute value (each distinct text once)."""
    seen = dict.fromkeys(item_name(m) for m in metas)
    for meta in metas:
        for column in ATTRIBUTES:
            value = str(meta.get(column) or "").strip()
            if value:
                seen.setdefault(value)
                seen.setdefault(singular(value))
    for forms in _GENDER_FORMS.values():
        seen.update(dict.fromkeys(forms))
    seen.pop(None, None)
    return [t for t in seen if t]
