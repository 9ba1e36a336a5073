"""Is a query a product photo at all? An upload that is not one (a blank picture, noise, a gradient, a
screenshot of text, a landscape) is never a confident match: it gets "no confident match" and a reason
a shopper can read.

Three label-free tests, none reading the catalog's labels:

* the picture: its canonical view is blank or almost uniform (:attr:`stylespace.data.View.blank`);
* its embedding, against floors taken from the catalog's own items when the index was made or rebuilt
  (``IndexConfig.typicality``, see ``stylespace.index.structures.typicality``):

  - *unlike the catalog*: its nearest catalog item is less similar than the nearest other item of all
    but 0.5 % of the catalog's items (the 0.5th percentile of their leave-one-out top-1 similarity);
  - *atypical*: it lies farther from the catalog's centre, under the index's whitening (a Mahalanobis
    distance), than all but 0.5 % of the catalog's items (whitened indexes only).

Measured on the Fashion Product Images catalog (``benchmarks/bench_junk.py``, whitened exact index, combined
score calibrated for 5 % error on scenario 4's queries). With models/compact (74fbd996b385, the default before issue 24): floors
top-1 0.554, centre 0.100; of 600 random junk pictures (150 each of noise, gradients, text screenshots and
landscapes) 15 were confident matches with the threshold alone, 11 with the blank test, 10 with all three (6
gradients, 3 text screenshots, 1 landscape); of 59 hand-made ones 3, 0 and 0; the tests refuse 3 of the 775
mirrored or padded catalog photos the threshold shows. With the model shipped before it (now models/packshot):
floors 0.363 and 0.121; 176, 9 and 4 of 600 (3 noise, 1 text screenshot). The remaining junk looks, to the
model, like a product (a smooth gradient is a plain-coloured garment at 80 x 60): the tests lower the rate of
junk shown, they cannot promise zero for every picture a model has never seen.
"""
from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import numpy as np

from stylespace.utils import at_least, is_number, validate

BLANK = "the picture is blank or almost uniform"
UNLIKE = "the picture looks like nothing in the catalog"
ATYPICAL = "the picture does not look like the catalog's product photos"
# not junk, only not close enough: the reason given for an ordinary low confidence
UNSURE = "no catalog item is close enough to recommend with confidence"
JUNK_REASONS = (BLANK, UNLIKE, ATYPICAL)

# Which percentiles of the catalog's own figures (IndexConfig.typicality) are the floors: kept as the
# strings the index stores them under.
TOP1_PERCENTILE = "0.5"
CENTRE_PERCENTILE = "99.5"


@dataclasses.dataclass(frozen=True)
class JunkRule:
    """The embedding floors of the junk test (None: that test is off).

    Attributes:
        top1_floor: a query whose nearest catalog item is less similar than this looks like nothing in the
            catalog (similarity as searches report it: cosine in the index's space, or minus the distance).
        centre_ceiling: a query farther than this from the catalog's centre (whitened) is not like its photos.
    """

    top1_floor: float | None = None
    centre_ceiling: float | None = None

    def __post_init__(self) -> None:
        validate([
            (self.top1_floor is None or is_number(self.top1_floor),
             f"top1_floor must be a number or None, got {self.top1_floor!r}"),
            at_least("centre_ceiling", self.centre_ceiling, 0, integer=False, none_ok=True),
        ], "junk rule")

    @classmethod
    def from_typicality(cls, typicality: Mapping | None) -> "JunkRule":
        """The rule from an index's ``typicality`` figures (no floors when the index has none: an index made
        before they were measured; ``stylespace index rebuild`` measures them)."""
        typicality = typicality or {}
        top1 = (typicality.get("top1") or {}).get(TOP1_PERCENTILE)
        centre = (typicality.get("centre_distance") or {}).get(CENTRE_PERCENTILE)
        return cls(None if top1 is None else float(top1), None if centre is None else float(centre))

    @classmethod
    def from_index(cls, index) -> "JunkRule":
        return cls.from_typicality(index.config.typicality)

    def reasons(self, top1: np.ndarray | None = None, centre: np.ndarray | None = None,
                blank: Sequence[bool] | None = None, n: int | None = None) -> list[str | None]:
        """Per query, why it is not a product photo (one of :data:`JUNK_REASONS`), or None when it passes.

        Args:
            top1: (Q,) similarity of each query's nearest catalog item (NaN: no item searched; passes).
            centre: (Q,) whitened distance from the catalog's centre, or None (unwhitened index).
            blank: (Q,) whether each query's picture is blank or almost uniform (None: not known, e.g.
                queries given as vectors or catalog ids).
        """
        sizes = [len(a) for a in (top1, centre, blank) if a is not None]
        n = n if n is not None else (sizes[0] if sizes else 0)
        out: list[str | None] = [None] * n
        for i in range(n):
            if blank is not None and blank[i]:
                out[i] = BLANK
            elif top1 is not None and self.top1_floor is not None and top1[i] < self.top1_floor:
                out[i] = UNLIKE
            elif centre is not None and self.centre_ceiling is not None and centre[i] > self.centre_ceiling:
                out[i] = ATYPICAL
        return out

    def to_dict(self) -> dict:
        return {"top1_floor": self.top1_floor, "centre_ceiling": self.centre_ceiling,
                "top1_percentile": float(TOP1_PERCENTILE), "centre_percentile": float(CENTRE_PERCENTILE)}

