"""Does search survive real photos? Distorted catalog photos searched against the whole index.

For a seeded sample of catalog items, every distortion of :mod:`stylespace.data.distortions` turns the
item's packshot into the file a customer would upload; the file goes through the query path the
service uses (decode, EXIF, canonical view, embed) and is searched against the index (its whitening
included). Per distortion:

- ``r1`` / ``r10``: share of queries whose product is the first hit / among the first 10. The product is
  the item itself or a pixel-identical copy of it under another id (the shared catalog lists 780 such
  extra copies: a search cannot tell them apart, and a shop's customer gets the same photo);
- ``r1_id``: the same at rank 1, counting only the item's own id;
- ``type_p1``: share of queries whose first hit that is *not the product* has the item's label (the
  right article type even when the product is not the first hit).

With ``RobustnessConfig.query_views`` each upload is searched as its views too (mirrored, un-stretched:
:mod:`stylespace.data.query_views`), each item keeping its best score, as ``stylespace search --query-views``
does; ``views_per_query`` says what that cost.

:func:`measure_photos` measures a shop's own photos of known products the same way (the same query path and
figures, one row for all of them): each photo file is read (at most the service's upload limit in bytes) and
decoded within the service's pixel budget for an upload; a photo that cannot be read or decoded is counted as
``failed`` with its reason, one of an item the index does not hold is left out (``unknown_items``).
"""
from __future__ import annotations

import csv
import dataclasses
import io
import os
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from stylespace.data.distortions import DISTORTIONS
from stylespace.data.images import UPLOAD_BYTES, UPLOAD_PIXELS, ImageDecodeError, PixelBudget, probe_image
from stylespace.data.query_views import QueryViews, load_query_views
from stylespace.utils import StylespaceError, at_least, some_of, validate

# The pixels a photo may decode at: what the service accepts of an upload by default (a JPEG decodes at up to
# 1/8 scale, so a phone's photo passes; a photo the service would refuse is counted as failed, with the reason).
UPLOAD_BUDGET = PixelBudget(decoded=UPLOAD_PIXELS)
# The most photos of each kind (missed, failed, unknown items) listed in a report's dict; the counts are whole.
LISTED = 50


@dataclasses.dataclass
class RobustnessConfig:
    """What to measure.

    Attributes:
        items: catalog items sampled (labelled items of the index), at most the index's size.
        seed: fixes the sample, the second items and every random choice of the distortions.
        distortions: names from ``stylespace.data.distortions.DISTORTIONS`` (default: all of them).
        k: depth of the recall measure (``r10`` with the default).
        query_views: the views each query is searched as besides its canonical view (:class:`QueryViews`, or
            its text: ``mirror,unstretch``, ``all``, ``none``), each item's best score kept, as a search with
            query views does.
    """

    items: int = 1000
    seed: int = 0
    distortions: tuple[str, ...] = tuple(DISTORTIONS)
    k: int = 10
    query_views: QueryViews = dataclasses.field(default_factory=QueryViews)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> "RobustnessConfig":
        validate([
            at_least("items", self.items, 1),
            at_least("k", self.k, 1),
            some_of("distortions", self.distortions, tuple(DISTORTIONS)),
        ])
        self.distortions = tuple(self.distortions)
        self.query_views = QueryViews.of(self.query_views)
        return self


@dataclasses.dataclass
class DistortionResult:
    """One distortion's figures (shares in [0, 1]); ``target`` is the R@1 promised (None: no target);
    ``views_per_query``: the mean number of views each query was searched as (1.0 without query views)."""

    name: str
    description: str
    queries: int
    r1: float
    r10: float
    r1_id: float
    type_p1: float
    target: float | None
    views_per_query: float = 1.0

    @property
    def meets_target(self) -> bool | None:
        return None if self.target is None else self.r1 >= self.target


@dataclasses.dataclass
class RobustnessReport:
    """The figures of every distortion for one model and index."""

    config: RobustnessConfig
    model_id: str
    index_items: int
    rows: list[DistortionResult]
    seconds: float

    def row(self, name: str) -> DistortionResult:
        for row in self.rows:
            if row.name == name:
                return row
        raise StylespaceError(f"distortion {name!r} was not measured")

    def to_dict(self) -> dict:
        return {"config": dataclasses.asdict(self.config), "model_id": self.model_id, "index_items": self.index_items,
                "seconds": self.seconds,
                "rows": [{**dataclasses.asdict(r), "meets_target": r.meets_target} for r in self.rows]}


def sample_items(index, n: int, seed: int) -> list[str]:
    """``n`` labelled item ids of ``index`` drawn without replacement (seeded), in draw order."""
    ids = index.ids
    labels = index.labels_of_keys(index.keys_of(ids))
    labelled = [i for i, label in zip(ids, labels) if label is not None]
    if not labelled:
        raise StylespaceError(f"the index at {index.folder} has no labelled items to measure with")
    rng = np.random.default_rng([seed, 13])
    pick = rng.choice(len(labelled), size=min(n, len(labelled)), replace=False)
    return [labelled[i] for i in pick]


def pixel_copies(catalog, index, size: tuple[int, int]) -> np.ndarray:
    """(max key + 1,) int64: a group number per index key, equal for items whose canonical views (the image
    cache at ``size``) are pixel-identical; -1 for keys without a decoded image."""
    from stylespace.data import load_image_array
    from stylespace.data.cache import pixel_hashes

    array = load_image_array(catalog, size=size, progress=False)
    digest_of = dict(zip(array.ids, pixel_hashes(array.pixels)))
    ids = [i for i in index.ids if i in digest_of]
    groups = np.full(int(index.keys_of(index.ids).max(initial=-1)) + 1, -1, dtype=np.int64)
    seen: dict[bytes, int] = {}
    for key, item_id in zip(index.keys_of(ids), ids):
        groups[key] = seen.setdefault(digest_of[item_id], len(seen))
    return groups


@dataclasses.dataclass
class ProductHits:
    """What searching query photos of known products found (one row per query; shares in [0, 1]).

    Attributes:
        found: (Q, k + 1) keys of the hits, best first (-1 past the index's end).
        own: (Q, k + 1) the hit is the query's own item.
        same: (Q, k + 1) the hit is the product: its own item or a pixel-identical copy of it.
        type_hit: (Q,) the first hit that is not the product has the item's label (False for an unlabelled item).
        labelled: (Q,) the query's item has a label.
        k: the depth of ``r10``.
        views_per_query: the mean number of views each query was searched as.
    """

    found: np.ndarray
    own: np.ndarray
    same: np.ndarray
    type_hit: np.ndarray
    labelled: np.ndarray
    k: int
    views_per_query: float

    @property
    def r1(self) -> float:
        return float(self.same[:, 0].mean())

    @property
    def r1_id(self) -> float:
        return float(self.own[:, 0].mean())

    @property
    def r10(self) -> float:
        return float(self.same[:, :self.k].any(axis=1).mean())

    @property
    def type_p1(self) -> float | None:
        """Over the queries whose item has a label (None without one)."""
        return float(self.type_hit[self.labelled].mean()) if self.labelled.any() else None

    @property
    def missed(self) -> np.ndarray:
        """(Q,) the product is not among the first ``k`` hits."""
        return ~self.same[:, :self.k].any(axis=1)


def search_products(model, index, sets: Sequence, keys: np.ndarray, copies: np.ndarray,
                    config: RobustnessConfig, model_id: str) -> ProductHits:
    """The query path of the robustness measures: query images decoded into their views (``sets``, ViewSets of
    ``config.query_views``) embedded and searched against ``index``, each item keeping its best score; ``keys``
    (Q,) are the index keys of the products they show, ``copies`` the pixel-copy groups of :func:`pixel_copies`."""
    from stylespace.index.build import embed_view_sets
    from stylespace.index.query_views import neighbours_of_views

    views = embed_view_sets(model, sets, config.query_views)
    found = neighbours_of_views(index, views.vectors, views.query_of, k=config.k + 1, model_id=model_id,
                                n_queries=views.n_queries).keys
    groups = copies[keys]
    own = found == keys[:, None]
    same = own | ((copies[np.clip(found, 0, None)] == groups[:, None]) & (found >= 0) & (groups >= 0)[:, None])
    # the first hit that is not the product
    other_first = found[np.arange(len(keys)), np.argmax(~same, axis=1)]
    labels = index.labels_of_keys(keys)
    labelled = np.array([label is not None for label in labels], dtype=bool)
    type_hit = (index.labels_of_keys(other_first) == labels) & labelled
    return ProductHits(found, own, same, type_hit, labelled, config.k, views.views_per_query)


def measure_robustness(model, catalog, index, config: RobustnessConfig | None = None,
                       log=lambda message: None) -> RobustnessReport:
    """Search distorted photos of sampled catalog items against ``index`` (built from ``catalog`` by ``model``).

    Returns a :class:`RobustnessReport`; ``log`` receives one line per distortion.
    """
    from stylespace.models import model_id as model_id_of

    config = (config or RobustnessConfig()).validate()
    started = time.perf_counter()
    mid = model_id_of(model)
    index.check_model(mid, "the robustness queries")
    ids = sample_items(index, config.items, config.seed)
    missing = [i for i in ids if i not in catalog]
    if missing:
        raise StylespaceError(f"{len(missing)} sampled items of the index are not in {catalog.source_path} "
                              f"(e.g. {missing[:3]}); pass the catalog the index was built from")
    packshots = [catalog.read_image(i) for i in ids]
    size = tuple(model.config.input_size)
    copies = pixel_copies(catalog, index, size)
    order = np.random.default_rng([config.seed, 17]).permutation(len(ids))
    others = [packshots[j] if j != k else packshots[(j + 1) % len(ids)] for k, j in enumerate(order)]
    keys = index.keys_of(ids)
    rows = []
    for number, name in enumerate(config.distortions):
        distortion = DISTORTIONS[name]
        rng = np.random.default_rng([config.seed, 100 + number])
        uploads = [distortion.apply(image, rng, other) for image, other in zip(packshots, others)]
        sets = [load_query_views(upload, size, config.query_views) for upload in uploads]
        hits = search_products(model, index, sets, keys, copies, config, mid)
        rows.append(DistortionResult(name, distortion.description, len(ids), hits.r1, hits.r10, hits.r1_id,
                                     hits.type_p1, distortion.target, hits.views_per_query))
        log(f"{name:18s} R@1 {100 * hits.r1:5.1f} %  R@{config.k} {100 * hits.r10:5.1f} %  "
            f"type P@1 {100 * hits.type_p1:5.1f} %")
    return RobustnessReport(config, mid, len(index), rows, round(time.perf_counter() - started, 2))


@dataclasses.dataclass
class PhotoMiss:
    """A photo whose product was not among the first ``k`` hits: ``found`` is the id of the first hit."""

    path: str
    item_id: str
    found: str | None


@dataclasses.dataclass
class PhotoFailure:
    """A photo that could not be measured: its file is missing, over the size limit or not a usable image."""

    path: str
    item_id: str
    reason: str


@dataclasses.dataclass
class PhotosReport:
    """A shop's own photos of known products searched against the index: one row of the robustness figures.

    Attributes:
        photos: photos given; ``measured`` of them were searched (the rest failed or show unknown items).
        r1, r10, r1_id, type_p1: as in :class:`DistortionResult`, over the measured photos (``r10`` at depth
            ``config.k``; ``type_p1`` over the ``typed`` ones, whose item has a label, None without one).
        misses: the measured photos whose product was not among the first ``k`` hits.
        failed: the photos that could not be read or decoded, with the reason.
        unknown: (path, item id) of the photos whose item id is not in the index (left out of the figures).
    """

    config: RobustnessConfig
    model_id: str
    index_items: int
    photos: int
    measured: int
    r1: float
    r10: float
    r1_id: float
    type_p1: float | None
    typed: int
    views_per_query: float
    misses: list[PhotoMiss]
    failed: list[PhotoFailure]
    unknown: list[tuple[str, str]]
    seconds: float

    @property
    def unknown_items(self) -> list[str]:
        """The item ids not in the index, each once, in the order first met."""
        return list(dict.fromkeys(item for _, item in self.unknown))

    def to_dict(self, listed: int = LISTED) -> dict:
        """The figures, with the counts whole and each list cut at ``listed`` entries."""
        return {"config": {"k": self.config.k, "query_views": dataclasses.asdict(self.config.query_views)},
                "model_id": self.model_id, "index_items": self.index_items, "seconds": self.seconds,
                "photos": self.photos, "measured": self.measured, "r1": self.r1, "r10": self.r10,
                "r1_id": self.r1_id, "type_p1": self.type_p1, "typed": self.typed,
                "views_per_query": self.views_per_query,
                "missed": len(self.misses), "misses": [dataclasses.asdict(m) for m in self.misses[:listed]],
                "failed": len(self.failed), "failures": [dataclasses.asdict(f) for f in self.failed[:listed]],
                "unknown_photos": len(self.unknown), "unknown_items": self.unknown_items[:listed],
                "listed_at_most": listed}


class PhotoUnreadable(StylespaceError):
    """A photo file that cannot be used: missing, not a file, unreadable, empty or over the byte limit."""


def read_photo(source: bytes | str | os.PathLike, max_bytes: int = UPLOAD_BYTES) -> bytes:
    """The bytes of one photo (a path, or the bytes themselves), never more than ``max_bytes + 1`` of them read.
    Raises :class:`PhotoUnreadable` saying why (the message names no path: the caller knows it)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    else:
        path = Path(source)
        try:
            if not path.exists():
                raise PhotoUnreadable("no such file")
            if not path.is_file():
                raise PhotoUnreadable("not a file")
            with path.open("rb") as stream:
                data = stream.read(max_bytes + 1)
        except OSError as exc:
            raise PhotoUnreadable(f"cannot be read ({exc.strerror or exc})") from None
    if len(data) > max_bytes:
        raise PhotoUnreadable(f"over the {max_bytes:,} byte limit on an uploaded image; send a smaller file")
    if not data:
        raise PhotoUnreadable("an empty file")
    return data


def read_photo_list(path: str | os.PathLike) -> list[tuple[Path, str]]:
    """The rows of a photo list: a CSV with a header naming the columns ``path`` and ``item_id`` (others are
    ignored), one row per photo. Returns ``(photo path, item id)`` pairs, a relative path taken from the CSV's
    folder. Raises :class:`StylespaceError` naming the file (and line) and what it should hold."""
    path = Path(path)
    what = "a CSV with a header line `path,item_id` and one row per photo (the photo's path, the id of the product it shows)"
    if not path.exists():
        raise StylespaceError(f"{path}: no such photo list; pass {what}")
    if not path.is_file():
        raise StylespaceError(f"{path}: a folder, not a photo list; pass {what}")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise StylespaceError(f"{path}: not UTF-8 text; save the photo list as a UTF-8 CSV") from None
    except OSError as exc:
        raise StylespaceError(f"{path}: cannot read the photo list ({exc.strerror or exc})") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        if header is None or not any(cell.strip() for cell in header):
            raise StylespaceError(f"{path}: an empty file; it should be {what}")
        columns = [cell.strip().lower() for cell in header]
        for column in ("path", "item_id"):
            if column not in columns:
                raise StylespaceError(f"{path}: no {column!r} column in the header line ({', '.join(header)}); it "
                                      f"should be {what}")
        at = {column: columns.index(column) for column in ("path", "item_id")}
        rows = []
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            cells = {column: row[i].strip() if i < len(row) else "" for column, i in at.items()}
            for column, value in cells.items():
                if not value:
                    raise StylespaceError(f"{path}, line {reader.line_num}: no {column}; every row needs the photo's "
                                          "path and the item_id of the product it shows")
            rows.append((path.parent / cells["path"], cells["item_id"]))
    except csv.Error as exc:
        raise StylespaceError(f"{path}, line {reader.line_num}: not a readable CSV row ({exc})") from None
    if not rows:
        raise StylespaceError(f"{path}: no photo rows below the header; it should be {what}")
    return rows


def measure_photos(model, catalog, index, photos: Sequence[tuple[bytes | str | os.PathLike, str]],
                   config: RobustnessConfig | None = None, *, max_bytes: int = UPLOAD_BYTES,
                   budget: PixelBudget = UPLOAD_BUDGET, log=lambda message: None) -> PhotosReport:
    """Search a shop's own photos of known products against ``index`` (built from ``catalog`` by ``model``).

    Args:
        photos: ``(photo, item id)`` pairs: a photo file's path (or its bytes) and the id of the product it shows.
        config: its ``k`` and ``query_views`` are used (the sample and the distortions are not).
        max_bytes: the most bytes of a photo file read; a larger one fails.
        budget: the pixels a photo may decode at; a larger one fails, as the service refuses it.
        log: receives a line of figures.

    A photo whose item id is not in the index is left out before its file is read (``unknown``); one that cannot
    be read or decoded is counted as failed with the reason. Raises :class:`StylespaceError` when no photo is given
    or none of them could be measured.
    """
    from stylespace.models import model_id as model_id_of

    config = (config or RobustnessConfig()).validate()
    started = time.perf_counter()
    mid = model_id_of(model)
    index.check_model(mid, "the photo queries")
    photos = list(photos)
    if not photos:
        raise StylespaceError("no photos to measure: pass (photo, item id) pairs")
    ids = index.ids
    key_of = dict(zip(ids, index.keys_of(ids).tolist()))
    id_of = {key: item for item, key in key_of.items()}
    size = tuple(model.config.input_size)
    names, keys, sets, failed, unknown = [], [], [], [], []
    for number, (source, item_id) in enumerate(photos):
        name = f"photo {number + 1} (bytes)" if isinstance(source, (bytes, bytearray, memoryview)) else str(source)
        item_id = str(item_id)
        if item_id not in key_of:
            unknown.append((name, item_id))
            continue
        try:
            data = read_photo(source, max_bytes)
            probe_image(data, size)  # the format from the header first, as the service reads an upload
            sets.append(load_query_views(data, size, config.query_views, budget))
        except (PhotoUnreadable, ImageDecodeError) as exc:
            failed.append(PhotoFailure(name, item_id, str(exc).removeprefix("image bytes: ")))
            continue
        names.append(name)
        keys.append(key_of[item_id])
    if not sets:
        raise StylespaceError(_nothing_measured(len(photos), failed, unknown, index))
    keys = np.asarray(keys, dtype=np.int64)
    hits = search_products(model, index, sets, keys, pixel_copies(catalog, index, size), config, mid)
    misses = [PhotoMiss(names[q], id_of[int(keys[q])], id_of.get(int(hits.found[q, 0])))
              for q in np.flatnonzero(hits.missed)]
    report = PhotosReport(config, mid, len(index), len(photos), len(sets), hits.r1, hits.r10, hits.r1_id,
                          hits.type_p1, int(hits.labelled.sum()), hits.views_per_query, misses, failed, unknown,
                          round(time.perf_counter() - started, 2))
    type_p1 = "-" if hits.type_p1 is None else f"{100 * hits.type_p1:5.1f} %"
    log(f"{len(sets)} photos: R@1 {100 * hits.r1:5.1f} %  R@{config.k} {100 * hits.r10:5.1f} %  type P@1 {type_p1}"
        f"  ({len(failed)} failed, {len(unknown)} of unknown items)")
    return report


def _nothing_measured(given: int, failed: list[PhotoFailure], unknown: list[tuple[str, str]], index) -> str:
    parts = []
    if failed:
        shown = "; ".join(f"{f.path}: {f.reason}" for f in failed[:3])
        parts.append(f"{len(failed)} could not be read or decoded (e.g. {shown})")
    if unknown:
        shown = ", ".join(repr(item) for item in list(dict.fromkeys(item for _, item in unknown))[:5])
        parts.append(f"{len(unknown)} show items that are not in the index at {index.folder} (e.g. {shown}); check "
                     "the item_id column against the catalog the index was built from")
    return f"none of the {given} photos could be measured: " + "; ".join(parts)


def markdown_table(reports: Sequence[tuple[str, RobustnessReport]]) -> str:
    """One markdown table of several models' reports side by side (same distortions)."""
    head = "| distortion | target R@1 | " + " | ".join(f"{name}: R@1 / R@10 / type P@1" for name, _ in reports) + " |"
    lines = [head, "| --- | ---: | " + " | ".join("---:" for _ in reports) + " |"]
    for row in reports[0][1].rows:
        cells = []
        for _, report in reports:
            r = report.row(row.name)
            cells.append(f"{100 * r.r1:.1f} / {100 * r.r10:.1f} / {100 * r.type_p1:.1f}")
        target = "" if row.target is None else f"{100 * row.target:.1f}"
        lines.append(f"| {row.name}: {row.description} | {target} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
