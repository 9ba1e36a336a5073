"""Labelled item pairs for compatibility: a store's own pairs CSV, or a metadata proxy built from a catalog.

Seed 003 learns "do these go well together?" from Amazon co-purchase pairs. The shared Kaggle catalog has
no co-purchase data, so :func:`build_proxy_pairs` makes a documented stand-in from item metadata:

- positive: two items whose subCategories a shop would show together (:data:`COMPLEMENTARY_SUBCATEGORIES`,
  e.g. Topwear with Bottomwear or Shoes) that share gender, usage and season;
- negative: two items whose gender (neither Unisex) or usage clash, drawn with the same subCategory
  combinations as the positives (cross-category too, and in the same proportions, as in Veit et al.'s
  heterogeneous dyads), so "which categories are these?" cannot answer "do they match?";
- pairs that are neither (same gender and usage, different season; a Unisex item) are left out;
- about 6 % positives, like 003's data.

Items are split 60/20/20 by a hash of their id (:func:`item_split`) and every pair is drawn inside one split,
so no item is in two splits and :func:`split_pairs` with the same ``split_seed`` keeps every proxy pair.
"""
from __future__ import annotations

import collections
import csv
import dataclasses
import hashlib
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from stylespace.data import Catalog
from stylespace.utils import Check, StylespaceError, at_least, atomic_write, each, in_range, validate

# Unordered subCategory pairs a shop shows together; each key lists its complements (made symmetric below).
COMPLEMENTARY_SUBCATEGORIES: dict[str, tuple[str, ...]] = {
    "Topwear": ("Bottomwear", "Shoes", "Sandal", "Flip Flops", "Watches", "Bags", "Belts", "Eyewear",
                "Headwear", "Jewellery", "Ties", "Scarves", "Wallets"),
    "Bottomwear": ("Shoes", "Sandal", "Flip Flops", "Belts", "Watches", "Bags", "Socks"),
    "Dress": ("Shoes", "Sandal", "Bags", "Jewellery", "Watches", "Eyewear", "Scarves"),
    "Saree": ("Sandal", "Jewellery", "Bags"),
    "Shoes": ("Socks", "Belts", "Bags", "Watches"),
    "Watches": ("Wallets", "Belts", "Eyewear"),
}
SPLITS = ("train", "val", "test")
DEFAULT_FRACTIONS = (0.6, 0.2, 0.2)
UNKNOWN = {"", "NA", "nan", "None"}
REQUIRED_META = ("gender", "subCategory", "usage", "season")


def complement_table(table: dict[str, Sequence[str]] | None = None) -> dict[str, frozenset[str]]:
    """subCategory -> the set of subCategories it goes with, symmetric (A goes with B iff B with A)."""
    out: dict[str, set[str]] = collections.defaultdict(set)
    for sub, others in (table or COMPLEMENTARY_SUBCATEGORIES).items():
        for other in others:
            if other == sub:
                raise StylespaceError(f"complement table: {sub!r} lists itself; pairs must be cross-category")
            out[sub].add(other)
            out[other].add(sub)
    return {sub: frozenset(others) for sub, others in out.items()}


@dataclasses.dataclass
class PairSet:
    """Labelled pairs of catalog ids. ``label`` 1 = go well together, 0 = do not."""

    id_a: list[str]
    id_b: list[str]
    label: np.ndarray  # (N,) int64 in {0, 1}

    def __post_init__(self) -> None:
        self.label = np.asarray(self.label, dtype=np.int64).reshape(-1)
        if not (len(self.id_a) == len(self.id_b) == len(self.label)):
            raise StylespaceError(f"pair set: {len(self.id_a)} / {len(self.id_b)} / {len(self.label)} "
                                  "ids and labels; expected the same number of each")
        if len(self.label) and not np.isin(self.label, (0, 1)).all():
            raise StylespaceError("pair set: labels must be 0 or 1")

    def __len__(self) -> int:
        return len(self.label)

    @classmethod
    def from_catalog(cls, catalog: Catalog) -> "PairSet":
        """The pairs of a pairs catalog (``load_catalog(pairs.csv, base=catalog)``)."""
        if not catalog.pairs:
            raise StylespaceError(f"{catalog.source_path}: no pairs in this catalog; expected a pairs CSV "
                                  "with columns image_a,image_b,label")
        a, b, y = zip(*catalog.pairs)
        return cls(list(a), list(b), np.array(y))

    @property
    def ids(self) -> list[str]:
        """Every distinct id in the pairs, in first-seen order."""
        return list(dict.fromkeys([*self.id_a, *self.id_b]))

    @property
    def positive_fraction(self) -> float:
        return float(self.label.mean()) if len(self) else 0.0

    def take(self, index: Sequence[int] | np.ndarray) -> "PairSet":
        index = np.asarray(index, dtype=np.int64)
        return PairSet([self.id_a[i] for i in index], [self.id_b[i] for i in index], self.label[index])

    def drop_ids(self, ids: set[str]) -> "PairSet":
        """The pairs with neither end in ``ids`` (e.g. items whose image failed to decode)."""
        keep = [i for i, (a, b) in enumerate(zip(self.id_a, self.id_b)) if a not in ids and b not in ids]
        return self.take(keep)

    def summary(self) -> dict:
        return {"pairs": len(self), "positives": int(self.label.sum()),
                "positive_fraction": round(self.positive_fraction, 4), "items": len(self.ids)}

    def save_csv(self, path: str | os.PathLike) -> Path:
        """Write ``image_a,image_b,label`` rows (catalog ids), atomically; read back with ``load_catalog(path, base=...)``."""
        path = Path(path)
        with atomic_write(path, "w") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(["image_a", "image_b", "label"])
            writer.writerows(zip(self.id_a, self.id_b, self.label.tolist()))
        return path


# --- splitting -----------------------------------------------------------------------------------


def item_split(item_id: str, split_seed: int = 0, fractions: Sequence[float] = DEFAULT_FRACTIONS) -> str:
    """``train``/``val``/``test`` for one item, from a hash of (seed, id): the same for any set of items."""
    validate([_fractions(fractions)])
    digest = hashlib.sha256(f"compat-split:{split_seed}:{item_id}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2.0**64
    return SPLITS[int(np.searchsorted(np.cumsum(fractions), u, side="right").clip(0, 2))]


def split_pairs(pairs: PairSet, by: str = "item", fractions: Sequence[float] = DEFAULT_FRACTIONS,
                split_seed: int = 0) -> tuple[dict[str, PairSet], dict]:
    """Split pairs 60/20/20 into train/val/test.

    Args:
        by: ``item`` (default): each item goes to one split (:func:`item_split`) and a pair is kept when
            both its items fall in the same split, so no image is seen in two splits. Pairs straddling two
            splits are dropped (about 56 % of a random pair list; none of a proxy set built with the same
            ``split_seed``). ``pair``: a label-stratified split of the pairs themselves (scikit-learn),
            keeping every pair; an item may then appear in several splits, as in 003.

    Returns:
        (split name -> PairSet, a report with counts and how many pairs were dropped).
    """
    validate([_fractions(fractions)])
    if len(pairs) == 0:
        raise StylespaceError("no pairs to split")
    if by == "item":
        where = {i: item_split(i, split_seed, fractions) for i in pairs.ids}
        index: dict[str, list[int]] = {s: [] for s in SPLITS}
        dropped = 0
        for k, (a, b) in enumerate(zip(pairs.id_a, pairs.id_b)):
            if where[a] == where[b]:
                index[where[a]].append(k)
            else:
                dropped += 1
        out = {s: pairs.take(index[s]) for s in SPLITS}
    elif by == "pair":
        from sklearn.model_selection import train_test_split

        everything = np.arange(len(pairs))
        stratify = pairs.label if min(np.bincount(pairs.label, minlength=2)) >= 3 else None
        train, rest = train_test_split(everything, train_size=fractions[0], random_state=split_seed,
                                       stratify=stratify)
        val_share = fractions[1] / (fractions[1] + fractions[2])
        val, test = train_test_split(rest, train_size=val_share, random_state=split_seed,
                                     stratify=pairs.label[rest] if stratify is not None else None)
        out = {"train": pairs.take(np.sort(train)), "val": pairs.take(np.sort(val)), "test": pairs.take(np.sort(test))}
        dropped = 0
    else:
        raise StylespaceError(f"split by {by!r}: expected 'item' (no item in two splits) or 'pair'")
    for name, part in out.items():
        if len(part) == 0 or part.label.sum() == 0 or part.label.sum() == len(part):
            raise StylespaceError(
                f"the {name} split has {len(part)} pairs with {int(part.label.sum())} positives; each split needs "
                "positives and negatives (give more pairs, or split with by='pair')")
    report = {"by": by, "fractions": list(fractions), "split_seed": split_seed, "dropped_pairs": dropped,
              **{name: part.summary() for name, part in out.items()}}
    return out, report


def _fractions(fractions: Sequence[float]) -> Check:
    ok, message = each("split fractions", fractions, 0, interval="()", count=3, integer=False,
                       note="train, val, test; summing to 1")
    return ok and abs(sum(fractions) - 1.0) <= 1e-6, message


# --- the metadata proxy --------------------------------------------------------------------------


@dataclasses.dataclass
class ProxyPairConfig:
    """How a metadata-proxy pair set is drawn; saved beside the pairs CSV as ``<pairs>.json``."""

    n_pairs: int = 40_000
    positive_fraction: float = 0.06
    seed: int = 0  # which pairs are drawn
    split_seed: int = 0  # which split each item falls in (train/val/test by a hash of the id)
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS
    complements: dict[str, list[str]] = dataclasses.field(
        default_factory=lambda: {k: list(v) for k, v in COMPLEMENTARY_SUBCATEGORIES.items()})

    def __post_init__(self) -> None:
        validate([
            at_least("n_pairs", self.n_pairs, 10),
            in_range("positive_fraction", self.positive_fraction, 0, 1, "()"),
            _fractions(self.fractions),
        ], "proxy pairs")


@dataclasses.dataclass(frozen=True)
class _Meta:
    sub: str
    gender: str
    usage: str
    season: str


def _known(value: str) -> bool:
    return value.strip() not in UNKNOWN


def is_proxy_positive(a: _Meta, b: _Meta, complements: dict[str, frozenset[str]]) -> bool:
    """Complementary subCategories, same gender, usage and season (all known)."""
    return (b.sub in complements.get(a.sub, ()) and a.gender == b.gender and a.usage == b.usage
            and a.season == b.season and all(map(_known, (a.gender, a.usage, a.season))))


def is_proxy_negative(a: _Meta, b: _Meta, complements: dict[str, frozenset[str]]) -> bool:
    """Complementary subCategories whose genders clash (neither Unisex) or whose known usages differ."""
    if b.sub not in complements.get(a.sub, ()):
        return False
    gender_clash = (a.gender != b.gender and _known(a.gender) and _known(b.gender)
                    and "Unisex" not in (a.gender, b.gender))
    usage_clash = a.usage != b.usage and _known(a.usage) and _known(b.usage)
    return gender_clash or usage_clash


def build_proxy_pairs(catalog: Catalog, config: ProxyPairConfig | None = None,
                      exclude: set[str] | None = None) -> tuple[PairSet, dict]:
    """Draw a metadata-proxy pair set from a catalog with Kaggle metadata (see the module docstring).

    Each split gets ``fractions[s] * n_pairs`` pairs, ``positive_fraction`` of them positive, drawn from
    items of that split only. Positive anchors are drawn uniformly over eligible items (so pairs spread
    over the catalog rather than piling onto the biggest groups), partners uniformly among the anchor's
    valid partners. Each negative takes the subCategory combination of a random positive and two random
    items of those subCategories that clash. Deterministic for a given catalog and config.

    Args:
        exclude: ids never to use (e.g. items whose image fails to decode).

    Returns:
        (the pairs, a report: counts per split, per category combination, and the config).
    """
    config = config or ProxyPairConfig()
    complements = complement_table(config.complements)
    missing = [c for c in REQUIRED_META if c not in catalog.metadata_columns]
    if missing:
        raise StylespaceError(
            f"{catalog.source_path}: the metadata proxy needs item columns {list(REQUIRED_META)}, missing {missing}; "
            "give a Kaggle-style catalog, or bring your own pairs CSV (image_a,image_b,label)")
    exclude = exclude or set()
    meta = {item.id: _Meta(*(item.meta.get(c, "").strip() for c in ("subCategory", "gender", "usage", "season")))
            for item in catalog.items if item.id not in exclude and item.meta.get("subCategory", "") in complements}
    rng = np.random.default_rng(config.seed)
    pairs_a: list[str] = []
    pairs_b: list[str] = []
    labels: list[int] = []
    report: dict = {"config": dataclasses.asdict(config), "splits": {}}
    for split, fraction in zip(SPLITS, config.fractions):
        ids = sorted((i for i in meta if item_split(i, config.split_seed, config.fractions) == split), key=_id_order)
        n_split = int(round(config.n_pairs * fraction))
        n_pos = int(round(n_split * config.positive_fraction))
        positives = _draw_positives(ids, meta, complements, n_pos, rng, split)
        negatives = _draw_negatives(ids, meta, complements, n_split - n_pos, rng, split, positives)
        drawn = [(a, b, 1) for a, b in positives] + [(a, b, 0) for a, b in negatives]
        for k in rng.permutation(len(drawn)):
            a, b, y = drawn[k]
            pairs_a.append(a)
            pairs_b.append(b)
            labels.append(y)
        report["splits"][split] = {"eligible_items": len(ids), "pairs": len(drawn), "positives": len(positives)}
    pairs = PairSet(pairs_a, pairs_b, np.array(labels))
    combos = collections.Counter()
    for a, b, y in zip(pairs.id_a, pairs.id_b, pairs.label):
        combos[(" + ".join(sorted((meta[a].sub, meta[b].sub))), int(y))] += 1
    report["category_pairs"] = {f"{combo} ({'pos' if y else 'neg'})": n
                                for (combo, y), n in sorted(combos.items(), key=lambda kv: -kv[1])}
    report.update(pairs.summary())
    return pairs, report


def _id_order(item_id: str):
    return (0, int(item_id), "") if item_id.isdigit() else (1, 0, item_id)


def _draw_positives(ids: list[str], meta: dict[str, _Meta], complements: dict[str, frozenset[str]], n: int,
                    rng: np.random.Generator, split: str) -> list[tuple[str, str]]:
    """``n`` distinct unordered positive pairs inside ``ids``."""
    groups: dict[tuple, list[str]] = collections.defaultdict(list)
    for i in ids:
        m = meta[i]
        groups[(m.sub, m.gender, m.usage, m.season)].append(i)

    def partners(i: str) -> list[str]:
        m = meta[i]
        if not all(map(_known, (m.gender, m.usage, m.season))):
            return []
        return [p for other in sorted(complements[m.sub]) for p in groups.get((other, m.gender, m.usage, m.season), ())]

    partner_lists = {i: partners(i) for i in ids}
    anchors = [i for i in ids if partner_lists[i]]
    possible = sum(len(v) for v in partner_lists.values()) // 2
    if possible < n:
        raise StylespaceError(f"the {split} split has only {possible} possible positive pairs, {n} asked for; "
                              "lower n_pairs or positive_fraction")
    return _draw(n, anchors, lambda a: partner_lists[a][rng.integers(len(partner_lists[a]))], rng, set(), split,
                 "positive")


def _draw_negatives(ids: list[str], meta: dict[str, _Meta], complements: dict[str, frozenset[str]], n: int,
                    rng: np.random.Generator, split: str, positives: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """``n`` distinct negative pairs inside ``ids`` with the category combinations of ``positives``.

    Each negative copies the (subCategory, subCategory) of a random positive, so that the category
    combination alone says nothing about the label (Veit et al.'s heterogeneous dyads).
    """
    if not positives:
        raise StylespaceError(f"the {split} split has no positive pairs to match negatives to")
    by_sub: dict[str, list[str]] = collections.defaultdict(list)
    for i in ids:
        by_sub[meta[i].sub].append(i)
    combos = [(meta[a].sub, meta[b].sub) for a, b in positives]
    anchors = list(range(len(combos)))  # _draw picks a positive; its combination fixes both subCategories
    chosen: dict[int, str] = {}

    def partner(k: int) -> str | None:
        sub_a, sub_b = combos[k]
        for _ in range(50):  # rejection: many items of the two subCategories clash in gender or usage
            a = by_sub[sub_a][rng.integers(len(by_sub[sub_a]))]
            b = by_sub[sub_b][rng.integers(len(by_sub[sub_b]))]
            if is_proxy_negative(meta[a], meta[b], complements):
                chosen[k] = a
                return b
        return None

    return _draw(n, anchors, partner, rng, set(positives), split, "negative", anchor_id=lambda k: chosen[k])


def _draw(n: int, anchors: list, partner, rng: np.random.Generator, taken: set, split: str,
          kind: str, anchor_id=lambda a: a) -> list[tuple[str, str]]:
    """Draw ``n`` distinct unordered pairs: a random anchor, then ``partner(anchor)`` (None = try again)."""
    if n == 0:
        return []
    if not anchors:
        raise StylespaceError(f"the {split} split has no items that can form a {kind} pair; "
                              "the catalog is too small or lacks complementary subCategories")
    out: list[tuple[str, str]] = []
    seen = set(taken)
    tries = 0
    while len(out) < n:
        tries += 1
        if tries > 50 * n + 1000:
            raise StylespaceError(f"the {split} split yielded only {len(out)} of {n} {kind} pairs; "
                                  "lower n_pairs or use a larger catalog")
        a = anchors[rng.integers(len(anchors))]
        b = partner(a)
        if b is None:
            continue
        a = anchor_id(a)
        key = (a, b) if _id_order(a) <= _id_order(b) else (b, a)
        if key in seen:
            continue
        seen.add(key)
        out.append(key)
    return out
