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
"""
from __future__ import annotations

import dataclasses
import time
from typing import Sequence

import numpy as np

from stylespace.data.distortions import DISTORTIONS
from stylespace.data.query_views import QueryViews
from stylespace.utils import StylespaceError, at_least, some_of, validate


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


def measure_robustness(model, catalog, index, config: RobustnessConfig | None = None,
                       log=lambda message: None) -> RobustnessReport:
    """Search distorted photos of sampled catalog items against ``index`` (built from ``catalog`` by ``model``).

    Returns a :class:`RobustnessReport`; ``log`` receives one line per distortion.
    """
    from stylespace.index.build import embed_query_view_sets
    from stylespace.index.query_views import neighbours_of_views
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
    copies = pixel_copies(catalog, index, tuple(model.config.input_size))
    order = np.random.default_rng([config.seed, 17]).permutation(len(ids))
    others = [packshots[j] if j != k else packshots[(j + 1) % len(ids)] for k, j in enumerate(order)]
    keys = index.keys_of(ids)
    labels = index.labels_of_keys(keys)
    rows = []
    for number, name in enumerate(config.distortions):
        distortion = DISTORTIONS[name]
        rng = np.random.default_rng([config.seed, 100 + number])
        uploads = [distortion.apply(image, rng, other) for image, other in zip(packshots, others)]
        views = embed_query_view_sets(model, uploads, config.query_views)
        found = neighbours_of_views(index, views.vectors, views.query_of, k=config.k + 1, model_id=mid,
                                    n_queries=views.n_queries)
        own = found.keys == keys[:, None]
        same = own | (copies[np.clip(found.keys, 0, None)] == copies[keys][:, None]) & (found.keys >= 0)
        r1 = float(same[:, 0].mean())
        r1_id = float(own[:, 0].mean())
        r10 = float(same[:, :config.k].any(axis=1).mean())
        # the first hit that is not the product
        first_other = np.argmax(~same, axis=1)
        other_first = found.keys[np.arange(len(ids)), first_other]
        type_p1 = float((index.labels_of_keys(other_first) == labels).mean())
        rows.append(DistortionResult(name, distortion.description, len(ids), r1, r10, r1_id, type_p1, distortion.target,
                                     views.views_per_query))
        log(f"{name:18s} R@1 {100 * r1:5.1f} %  R@{config.k} {100 * r10:5.1f} %  type P@1 {100 * type_p1:5.1f} %")
    return RobustnessReport(config, mid, len(index), rows, round(time.perf_counter() - started, 2))


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
