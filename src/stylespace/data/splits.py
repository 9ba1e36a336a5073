"""Splits: the 39 main / 30 new article-type protocol of seed 004, plain stratified splits, splits by a
column the catalog already has (Fashion-MNIST's official train / test ``subset``, a store's ``year``), class
merging and the article type -> subCategory / masterCategory map.

A split is written once as a manifest (CSV + a JSON config beside it) that every later command
takes, so training, evaluation, indexing and reports all see the same items.
"""
from __future__ import annotations

import collections
import csv
import dataclasses
import hashlib
import io
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from stylespace.data.catalog import Catalog
from stylespace.utils import StylespaceError, atomic_write, load_dataclass, write_json

COLUMNS = ["id", "label", "group", "split", "subCategory", "masterCategory"]
SCENARIOS = {
    1: ("main train -> main test", [("main", "train")], [("main", "test")]),
    2: ("main support -> main test", [("main", "support")], [("main", "test")]),
    3: ("new support -> new test", [("new", "support")], [("new", "test")]),
    4: ("main + new support -> main + new test", [("main", "support"), ("new", "support")],
        [("main", "test"), ("new", "test")]),
}


@dataclasses.dataclass
class SplitConfig:
    """How a split was made; saved as ``<manifest>.json`` beside the manifest."""

    method: str = "protocol"  # "protocol" (004), "stratified" or "column" (train / test from a catalog column)
    catalog: str = ""
    catalog_fingerprint: str = ""
    label_column: str = "articleType"
    seed: int = 0
    n_main: int = 39
    n_new: int = 30
    main_fractions: tuple[float, float, float] = (0.90, 0.05, 0.05)  # train / support / test
    new_fractions: tuple[float, float] = (0.50, 0.50)  # support / test
    fractions: dict[str, float] = dataclasses.field(default_factory=dict)  # stratified: split -> fraction
    merge: dict[str, str] = dataclasses.field(default_factory=dict)
    main_classes: list[str] = dataclasses.field(default_factory=list)
    new_classes: list[str] = dataclasses.field(default_factory=list)
    # method "column": the column, how its values were mapped to parts, and the share of each class's
    # training items carved off as the validation part (stratified, fixed by ``seed``)
    column: str = ""
    column_map: dict[str, str] = dataclasses.field(default_factory=dict)
    val_fraction: float = 0.0


@dataclasses.dataclass
class SplitManifest:
    """Rows ``id, label, group, split, subCategory, masterCategory`` plus the config that made them."""

    rows: list[dict[str, str]]
    config: SplitConfig

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def ids(self) -> list[str]:
        return [r["id"] for r in self.rows]

    @property
    def labels(self) -> list[str]:
        return [r["label"] for r in self.rows]

    def column(self, name: str) -> list[str]:
        if self.rows and name not in self.rows[0]:
            raise StylespaceError(f"split manifest has no column {name!r}; columns: {list(self.rows[0])}")
        return [r[name] for r in self.rows]

    def select(self, group: str | None = None, split: str | None = None) -> "SplitManifest":
        """Rows of one group (``main``/``new``/``all``) and/or split (``train``/``val``/``support``/``test``)."""
        rows = [r for r in self.rows if (group is None or r["group"] == group) and (split is None or r["split"] == split)]
        return SplitManifest(rows, self.config)

    def scenario(self, number: int) -> tuple["SplitManifest", "SplitManifest"]:
        """(support, query) for scenario 1-4 of seed 004."""
        if number not in SCENARIOS:
            raise StylespaceError(f"scenario must be 1, 2, 3 or 4, got {number}")
        _, support, query = SCENARIOS[number]
        pick = lambda pairs: SplitManifest([r for r in self.rows if (r["group"], r["split"]) in pairs], self.config)
        return pick(set(support)), pick(set(query))

    def hierarchy(self, level: str) -> dict[str, str]:
        """label -> coarser label at ``level`` (``subCategory`` or ``masterCategory``)."""
        if level not in ("subCategory", "masterCategory"):
            raise StylespaceError(f"hierarchy level must be subCategory or masterCategory, got {level!r}")
        mapping = {r["label"]: r[level] for r in self.rows if r.get(level)}
        if not mapping:
            raise StylespaceError(f"this split has no {level} column values (not a Kaggle catalog?)")
        return mapping

    def counts(self) -> dict[str, dict[str, int]]:
        """label -> {"group/split": count} for the per-class table."""
        table: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
        for r in self.rows:
            table[r["label"]][f"{r['group']}/{r['split']}"] += 1
        return {label: dict(c) for label, c in table.items()}

    def totals(self) -> dict[str, int]:
        return dict(collections.Counter(f"{r['group']}/{r['split']}" for r in self.rows))

    def to_csv(self) -> str:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: r.get(k, "") for k in COLUMNS} for r in self.rows)
        return buffer.getvalue()

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.to_csv().encode()).hexdigest()

    def save(self, path: str | os.PathLike) -> Path:
        """Write the manifest CSV and ``<path>.json`` (the SplitConfig), atomically."""
        path = Path(path)
        with atomic_write(path, "w") as handle:
            handle.write(self.to_csv())
        write_json(config_path(path), dataclasses.asdict(self.config))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "SplitManifest":
        path = Path(path)
        if not path.is_file():
            raise StylespaceError(f"{path}: split manifest not found; create one with `stylespace split CATALOG -o {path}`")
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in ("id", "label", "group", "split") if c not in (reader.fieldnames or [])]
            if missing:
                raise StylespaceError(f"{path}: not a split manifest (missing columns {missing}); "
                                      f"expected {','.join(COLUMNS)} as written by `stylespace split`")
            rows = [dict(r) for r in reader]
        cfg_file = config_path(path)
        config = SplitConfig()
        if cfg_file.is_file():
            config = load_dataclass(SplitConfig, cfg_file)
        return cls(rows, config)


def config_path(path: Path) -> Path:
    return path.with_name(path.name + ".json")


# --- making splits -----------------------------------------------------------------------------


def protocol_split(catalog: Catalog, n_main: int = 39, n_new: int = 30,
                   main_fractions: Sequence[float] = (0.90, 0.05, 0.05), new_fractions: Sequence[float] = (0.50, 0.50),
                   seed: int = 0, merge: dict[str, str] | None = None) -> SplitManifest:
    """Seed 004's protocol: the ``n_main`` most frequent classes are "main" (train / support / test),
    the next ``n_new`` are "new" (support / test); rarer classes are left out. Stratified per class.
    """
    _check_fractions(main_fractions, 3, "main_fractions (train, support, test)")
    _check_fractions(new_fractions, 2, "new_fractions (support, test)")
    if n_main < 1 or n_new < 0:
        raise StylespaceError(f"n_main must be >= 1 and n_new >= 0, got {n_main} and {n_new}")
    merge = dict(merge or {})
    labels = _labels(catalog, merge)
    counts = collections.Counter(l for l in labels if l is not None)
    ranked = [c for c, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]
    if len(ranked) < n_main + n_new:
        raise StylespaceError(
            f"{catalog.source_path}: {len(ranked)} classes, but the protocol needs {n_main} main + {n_new} new; "
            "lower --n-main/--n-new or use `stylespace split --stratified`"
        )
    main, new = ranked[:n_main], ranked[n_main:n_main + n_new]
    rng = np.random.default_rng(seed)
    assignment = {}
    for classes, group, names, fractions in ((main, "main", ("train", "support", "test"), main_fractions),
                                             (new, "new", ("support", "test"), new_fractions)):
        for cls in classes:
            members = [i for i, l in enumerate(labels) if l == cls]
            for i, split in zip(members, _allocate(len(members), names, fractions, rng)):
                assignment[i] = (group, split)
    config = SplitConfig("protocol", str(catalog.source_path), catalog.fingerprint(), catalog.label_column or "",
                         seed, n_main, n_new, tuple(main_fractions), tuple(new_fractions), {}, merge, main, new)
    return _manifest(catalog, labels, assignment, config)


def stratified_split(catalog: Catalog, fractions: dict[str, float], seed: int = 0,
                     merge: dict[str, str] | None = None, min_count: int = 1) -> SplitManifest:
    """A plain stratified split, e.g. ``{"train": .8, "val": .1, "test": .1}`` (000) or 80/20 (001).

    Classes with fewer than ``min_count`` items are left out.
    """
    if not fractions:
        raise StylespaceError("fractions must name at least one split, e.g. train=0.8,test=0.2")
    _check_fractions(list(fractions.values()), len(fractions), "fractions")
    merge = dict(merge or {})
    labels = _labels(catalog, merge)
    counts = collections.Counter(l for l in labels if l is not None)
    classes = sorted(c for c, n in counts.items() if n >= min_count)
    rng = np.random.default_rng(seed)
    assignment = {}
    for cls in classes:
        members = [i for i, l in enumerate(labels) if l == cls]
        for i, split in zip(members, _allocate(len(members), tuple(fractions), tuple(fractions.values()), rng)):
            assignment[i] = ("all", split)
    config = SplitConfig("stratified", str(catalog.source_path), catalog.fingerprint(), catalog.label_column or "",
                         seed, fractions=dict(fractions), merge=merge, main_classes=classes)
    return _manifest(catalog, labels, assignment, config)


COLUMN_PARTS = ("train", "val", "test")
SKIP = "skip"  # a column value mapped to this is left out of the split


def column_split(catalog: Catalog, column: str, val_fraction: float = 0.1, seed: int = 0,
                 mapping: dict[str, str] | None = None, merge: dict[str, str] | None = None,
                 drop_unshared: bool = False) -> SplitManifest:
    """Train / test from a column the catalog already has (Fashion-MNIST's ``subset``: its official
    60,000 / 10,000, which every published figure uses), with a stratified validation part carved from train.

    Args:
        column: a metadata column of the catalog (``catalog.metadata_columns``).
        val_fraction: share of each class's training items moved to ``val`` (``round(f * n)``, never a
            class's last training item); 0 = no validation part. Ignored when the column already has ``val``.
        mapping: column value -> ``train``, ``val``, ``test`` or ``skip`` (left out); ``"even"`` / ``"odd"``
            map every whole number of that parity not named itself, ``"*"`` every value not matched otherwise
            (e.g. ``{"2017": "test", "*": "train"}`` for a store's year, or ``{"even": "train", "odd": "test",
            "*": "skip"}``: the published year split of Fashion Product Images). Without it the values must
            already be train / test (/ val).
        merge: class merge map, as in the other splits.
        drop_unshared: leave out classes found on only one side (train or test) instead of raising.

    Raises StylespaceError for a missing column, values that name no part, or a class on one side only.
    """
    if column not in catalog.metadata_columns:
        raise StylespaceError(f"{catalog.source_path}: no column {column!r} to split by; the catalog's columns are "
                              f"{', '.join(catalog.metadata_columns) or '(none)'}")
    if not 0.0 <= val_fraction < 1.0:
        raise StylespaceError(f"val_fraction must be in [0, 1), got {val_fraction}")
    mapping = dict(mapping or {})
    bad_targets = {v: t for v, t in mapping.items() if t not in COLUMN_PARTS + (SKIP,)}
    if bad_targets:
        raise StylespaceError(f"column map {bad_targets}: each value must map to one of "
                              f"{', '.join(COLUMN_PARTS + (SKIP,))}")
    merge = dict(merge or {})
    labels = _labels(catalog, merge)
    values = [item.meta.get(column, "").strip() for item in catalog.items]
    part_of = lambda value: map_column_value(value, mapping)
    found = collections.Counter(v for v, l in zip(values, labels) if l is not None)
    unknown = {v: n for v, n in found.items() if part_of(v) not in COLUMN_PARTS + (SKIP,)}
    if unknown:
        shown = ", ".join(f"{v or '(empty)'!r}: {n:,}" for v, n in sorted(unknown.items(), key=lambda kv: -kv[1])[:12])
        raise StylespaceError(
            f"{catalog.source_path}: column {column!r} has values that name no part of a split ({shown}"
            f"{', ...' if len(unknown) > 12 else ''}); expected train / test (or val), or map them, e.g. "
            f"--map {sorted(unknown)[-1] or 'VALUE'}=test,*=train (a value mapped to {SKIP} is left out)")
    parts = [part_of(v) if l is not None else SKIP for v, l in zip(values, labels)]
    by_class: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for part, label in zip(parts, labels):
        if part != SKIP:
            by_class[label]["test" if part == "test" else "train"] += 1
    for side in ("train", "test"):
        if not any(c[side] for c in by_class.values()):
            raise StylespaceError(f"{catalog.source_path}: no item of column {column!r} falls in {side} "
                                  f"(values found: {', '.join(sorted(found)) or '(none)'}); map some with --map")
    unshared = {label: dict(c) for label, c in by_class.items() if not (c["train"] and c["test"])}
    if unshared and not drop_unshared:
        shown = ", ".join(f"{label} ({'train' if c.get('train') else 'test'} only: {sum(c.values()):,})"
                          for label, c in sorted(unshared.items())[:10])
        raise StylespaceError(
            f"{catalog.source_path}: {len(unshared)} class(es) are on one side of column {column!r} only: {shown}"
            f"{', ...' if len(unshared) > 10 else ''}; a model cannot be tested on a class it never trained on, "
            "nor trained on one it is never tested on: merge them (--merge OLD=NEW) or leave them out (--drop-unshared)")
    classes = sorted(label for label in by_class if label not in unshared)
    keep = set(classes)
    assignment = {i: ("all", part) for i, (part, label) in enumerate(zip(parts, labels)) if part != SKIP and label in keep}
    has_val = any(part == "val" for _, part in assignment.values())
    if val_fraction > 0 and not has_val:
        rng = np.random.default_rng(seed)
        train_members: dict[str, list[int]] = collections.defaultdict(list)
        for i, (_, part) in sorted(assignment.items()):
            if part == "train":
                train_members[labels[i]].append(i)
        for cls in classes:
            members = train_members[cls]
            for i, part in zip(members, _allocate(len(members), ("train", "val"), (1 - val_fraction, val_fraction), rng)):
                assignment[i] = ("all", part)
    config = SplitConfig("column", str(catalog.source_path), catalog.fingerprint(), catalog.label_column or "", seed,
                         merge=merge, main_classes=classes, column=column, column_map=mapping,
                         val_fraction=0.0 if has_val else val_fraction)
    return _manifest(catalog, labels, assignment, config)


PARITY_KEYS = ("even", "odd")
# The published year split of Fashion Product Images: even years train, odd years test, no year left out.
YEAR_PARITY_MAP = {"even": "train", "odd": "test", "*": SKIP}


def map_column_value(value: str, mapping: dict[str, str]) -> str:
    """The part a column ``value`` goes to under ``mapping``: the value itself named, else its parity
    (``even`` / ``odd``, for a whole number such as a year; ``2012.0`` counts as 2012), else ``*``, else the
    value unchanged (a column that already says train / test)."""
    if value in mapping:
        return mapping[value]
    parity = _parity(value)
    if parity is not None and parity in mapping:
        return mapping[parity]
    return mapping.get("*", value)


def _parity(value: str) -> str | None:
    try:
        number = float(value)
    except ValueError:
        return None
    if not number.is_integer():
        return None
    return PARITY_KEYS[int(number) % 2]


def top_classes(catalog: Catalog, n: int) -> list[str]:
    """The ``n`` most frequent labels of ``catalog``, most frequent first (ties by name)."""
    counts = catalog.class_counts()
    return [c for c, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))][:n]


def year_split(catalog: Catalog, n_classes: int = 20, val_fraction: float = 0.2, seed: int = 0,
               column: str = "year") -> SplitManifest:
    """The year split published for Fashion Product Images (uditarora/fashion-product-classification): the
    ``n_classes`` most frequent article types, items of even years train, of odd years test; items without
    a year are left out. A class with no even-year item (``Perfume and Body Mist`` in the shared catalog)
    cannot be learnt: it is left out of the manifest, and a benchmark counts its test items as errors, as the
    published figures do. ``val_fraction`` of each class's even-year items (stratified, fixed by ``seed``) is
    the validation part every choice is made on; the odd years are never looked at before the test."""
    classes = top_classes(catalog, n_classes)
    chosen = set(classes)
    subset = catalog.subset([item.id for item in catalog.items if item.label in chosen])
    return column_split(subset, column, val_fraction=val_fraction, seed=seed, mapping=YEAR_PARITY_MAP,
                        drop_unshared=True)


def parse_column_map(spec: str | None) -> dict[str, str]:
    """``"2017=test,2018=test,*=train"`` -> {"2017": "test", "2018": "test", "*": "train"}; ``even`` and ``odd``
    name every whole number of that parity (``even=train,odd=test``: the published year split)."""
    if not spec:
        return {}
    out = {}
    for part in spec.split(","):
        value, sep, target = part.partition("=")
        if not sep:
            raise StylespaceError(f"--map entry {part!r}: expected VALUE=PART (PART one of "
                                  f"{', '.join(COLUMN_PARTS + (SKIP,))}; even / odd for whole numbers of that "
                                  "parity, * for every other value)")
        out[value.strip()] = target.strip().lower()
    return out


def parse_merge(spec: str | None) -> dict[str, str]:
    """``"Tshirts=Tops,Shirts=Tops"`` -> {"Tshirts": "Tops", "Shirts": "Tops"}; a CSV file of old,new also works."""
    if not spec:
        return {}
    if os.path.isfile(spec):
        with open(spec, newline="", encoding="utf-8") as handle:
            rows = [r for r in csv.reader(handle) if r]
        if rows and [c.lower() for c in rows[0][:2]] in (["from", "to"], ["old", "new"]):
            rows = rows[1:]
        bad = [r for r in rows if len(r) < 2]
        if bad:
            raise StylespaceError(f"{spec}: merge file rows must be old,new; bad row {bad[0]}")
        return {r[0].strip(): r[1].strip() for r in rows}
    out = {}
    for part in spec.split(","):
        if "=" not in part:
            raise StylespaceError(f"merge map entry {part!r}: expected OLD=NEW (comma-separated) or a CSV file path")
        old, new = part.split("=", 1)
        out[old.strip()] = new.strip()
    return out


def _labels(catalog: Catalog, merge: dict[str, str]) -> list[str | None]:
    return [merge.get(item.label, item.label) if item.label is not None else None for item in catalog.items]


def _allocate(n: int, names: Sequence[str], fractions: Sequence[float], rng: np.random.Generator) -> list[str]:
    """Shuffle ``n`` members and cut them by ``fractions``; every later split gets round(n * f) and the
    first takes the rest, so small splits (support, test) are exact and every class has training data."""
    sizes = [int(np.floor(n * f + 0.5)) for f in fractions[1:]]  # half up, not to even
    while sum(sizes) > n - 1 and n > 1 and any(sizes):
        sizes[int(np.argmax(sizes))] -= 1
    first = n - sum(sizes)
    labels = [names[0]] * first
    for name, size in zip(names[1:], sizes):
        labels += [name] * size
    order = rng.permutation(n)
    out = [""] * n
    for position, slot in zip(order, labels):
        out[position] = slot
    return out


def _check_fractions(values: Sequence[float], expected_len: int, name: str) -> None:
    values = list(values)
    if len(values) != expected_len or any(v < 0 for v in values) or abs(sum(values) - 1.0) > 1e-6:
        raise StylespaceError(f"{name} must be {expected_len} non-negative numbers summing to 1, got {values}")


def _manifest(catalog: Catalog, labels: list[str | None], assignment: dict[int, tuple[str, str]],
              config: SplitConfig) -> SplitManifest:
    coarse = coarse_label_map(catalog, labels)
    rows = []
    for i, item in enumerate(catalog.items):
        if i not in assignment:
            continue
        group, split = assignment[i]
        sub, master = coarse.get(labels[i], ("", ""))
        rows.append({"id": item.id, "label": labels[i], "group": group, "split": split,
                     "subCategory": sub, "masterCategory": master})
    return SplitManifest(rows, config)


def coarse_label_map(catalog: Catalog, labels: list[str | None] | None = None) -> dict[str, tuple[str, str]]:
    """label -> (subCategory, masterCategory) by majority vote over the label's items (Kaggle metadata)."""
    labels = labels if labels is not None else catalog.labels
    votes: dict[str, dict[str, collections.Counter]] = collections.defaultdict(
        lambda: {"subCategory": collections.Counter(), "masterCategory": collections.Counter()})
    for item, label in zip(catalog.items, labels):
        if label is None:
            continue
        for level in ("subCategory", "masterCategory"):
            value = item.meta.get(level, "")
            if value:
                votes[label][level][value] += 1
    out = {}
    for label, levels in votes.items():
        pick = lambda c: sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))[0][0] if c else ""
        out[label] = (pick(levels["subCategory"]), pick(levels["masterCategory"]))
    return out
