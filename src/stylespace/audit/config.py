"""How an audit is made: one dataclass, saved as ``config.json`` beside ``audit.json`` (and inside it).

How the near-copy thresholds were chosen (``stylespace.audit.calibrate.measure_copy_distances``, which
``stylespace audit --near-distance auto`` runs; shared catalog, the model in models/packshot, 400 sampled items that are
neither blank nor pixel-identical to another, one copy each made by ``stylespace.data.distortions``:
``jpeg30``, ``upscale4``, ``crop85``, as upload bytes through the canonical view). Distance: cosine
``1 - cos`` of the embeddings; pixels and shift: :func:`stylespace.audit.copies.pixel_difference` of the
canonical views box-averaged to 20 x 15, on the product pixels, grey levels 0-255:

| | distance p50 / p90 / p99 | pixels p50 / p90 / p99 | shift p50 / p90 / p99 | called a copy |
| --- | --- | --- | --- | --- |
| jpeg30 copy to its original | 0.0054 / 0.0114 / 0.0242 | 7.0 / 19.0 / 38.4 | 1.9 / 7.5 / 18.7 | 51.5 % |
| upscale4 copy to its original | 0.0008 / 0.0031 / 0.0110 | 0.8 / 10.3 / 20.6 | 0.2 / 2.1 / 10.4 | 87.0 % |
| crop85 copy to its original | 0.0066 / 0.0203 / 0.0463 | 20.6 / 38.7 / 50.0 | 10.8 / 28.6 / 38.8 | 29.3 % |
| original to its nearest distinct item, p1 / p5 / p50 | 0.0006 / 0.0035 / 0.0125 | 3.0 / 14.1 / 32.8 | 0.9 / 3.5 / 18.8 | 1.5 % |

An embedding distance alone cannot separate copies from distinct items on this catalog: at the copies' 99th
percentile (0.031) 96.5 % of items have a distinct item closer, and half of them one closer than a typical
JPEG copy, because the catalog is shot in studio templates (the same model, pose and cut in another colour;
a lipstick in another shade) and the style space, trained to tell article types apart, puts those together.
So the embedding only proposes candidates: ``near_distance`` 0.031 (the copies' 99th percentile; 0.31 for the
pixel vectors used without a model), and the pixels decide: ``near_pixels`` 12 and ``near_shift`` 3 grey
levels. With both, 1.5 % of items' nearest distinct item is called a copy (an upper bound on false copies:
the catalog's own unlisted re-encodings are among them), against half of the jpeg30 copies, 87 % of the
upscale4 copies and 29 % of the crop85 copies (a crop moves the trimmed product, and a 1-pixel shift of a
sharp pattern already costs tens of grey levels). The thresholds favour precision: a near copy reported is
nearly always the same photo; a heavily re-compressed or cropped copy is often missed. (Alternatives
measured: the whole-image pixel difference made one cluster of 107 ties, thin products on white being
alike; without the colour shift, 1.75 % of distinct neighbours passed.)
"""
from __future__ import annotations

import dataclasses

from stylespace.utils import at_least, each, in_range, one_of, validate

# The embedding gate of a near copy (cosine distance) per embedder: the 99th percentile of copy distances,
# measured by `--near-distance auto`. It belongs to the embedder: the shipped models/default (4307b04ee2ff,
# EfficientNet-Lite0 features beside a trained head) measures 0.272 (jpeg30 copies' p99 0.338, crop85 0.251);
# models/compact (74fbd996b385, whose instance term spreads distances) 0.140 (NEAR_DISTANCE_COMPACT); the model
# of the table above 0.031; coarse pixel vectors 0.31.
NEAR_DISTANCE = {"model": 0.272, "pixels": 0.31}
NEAR_DISTANCE_COMPACT = 0.140
NEAR_PIXELS = 12.0
NEAR_SHIFT = 3.0


@dataclasses.dataclass
class AuditSettings:
    """What an audit looks for and how (``stylespace audit``'s options, derived from these defaults).

    near_distance: the embedding gate of a near copy (cosine); None picks ``NEAR_DISTANCE[embedder]``.
    near_pixels, near_shift: the pixel test of a near copy, on the product pixels of the views box-averaged
        to about 20 px high: mean absolute difference, and largest per-channel mean signed difference (a colour
        shift), both in grey levels (0-255); near_pixels 0 turns near copies off (pixel-identical only).
    neighbours: nearest items searched per item for near copies.
    tiny_side: an original image (its header, not decoded) under this many pixels on a side is tiny.
    outlier_k: an item's outlier distance is the distance to its k-th nearest other item.
    outlier_percentile, outlier_spread: an item is an outlier when its outlier distance is above both this
        percentile of all items' and the median plus ``outlier_spread`` robust standard deviations (1.4826
        median absolute deviations), so that a catalog without outliers has none.
    fix: write a cleaned split manifest (one item per cluster, blank images out).
    """

    near_distance: float | None = None
    near_pixels: float = NEAR_PIXELS
    near_shift: float = NEAR_SHIFT
    neighbours: int = 10
    tiny_side: int = 32
    outlier_k: int = 5
    outlier_percentile: float = 99.5
    outlier_spread: float = 6.0
    fix: bool = False

    def __post_init__(self) -> None:
        validate(self._checks(), "audit")

    def _checks(self):
        yield in_range("near_distance", self.near_distance, 0, 2, "(]", none_ok=True,
                       note="a cosine distance; None: the embedder's measured gate")
        yield at_least("near_pixels", self.near_pixels, 0, integer=False, note="grey levels; 0 turns near copies off")
        yield at_least("near_shift", self.near_shift, 0, integer=False, note="grey levels")
        yield at_least("neighbours", self.neighbours, 1)
        yield at_least("tiny_side", self.tiny_side, 0, note="pixels")
        yield at_least("outlier_k", self.outlier_k, 1)
        yield in_range("outlier_percentile", self.outlier_percentile, 0, 100)
        yield at_least("outlier_spread", self.outlier_spread, 0, integer=False)


@dataclasses.dataclass(kw_only=True)
class AuditConfig(AuditSettings):
    """What an audit was (``config.json``): its :class:`AuditSettings`, with ``near_distance`` the gate it used,
    and what it read.

    catalog, catalog_fingerprint: the catalog audited; split, split_sha256: the split manifest, if one.
    model, model_id: the model whose embeddings found near copies and outliers, if one.
    size: (H, W) of the canonical views hashed, compared and embedded (the model's input size, or 80 x 60).
    embedder: ``model`` (the model's embeddings) or ``pixels`` (coarse colour thumbnails; no model given).
    """

    catalog: str = ""
    catalog_fingerprint: str = ""
    split: str = ""
    split_sha256: str = ""
    model: str = ""
    model_id: str = ""
    embedder: str = "pixels"
    size: tuple[int, int] = (80, 60)

    def _checks(self):
        yield one_of("embedder", self.embedder, tuple(NEAR_DISTANCE))
        yield each("size", self.size, 8, count=2, note="H, W in pixels")
        yield from super()._checks()

    @property
    def near_gate(self) -> float:
        """The embedding gate in force."""
        return float(self.near_distance) if self.near_distance is not None else NEAR_DISTANCE[self.embedder]
