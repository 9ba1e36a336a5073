"""What a report computes (:class:`ReportConfig`), apart from the code that draws it, so that the CLI reads its
defaults without loading matplotlib."""
from __future__ import annotations

import dataclasses

from stylespace.report.maps import MapConfig
from stylespace.utils import METRICS, at_least, one_of, validate


@dataclasses.dataclass
class ReportConfig:
    """What the report computes and on how many items; saved into ``report.json``.

    map_classes: how many of the first main classes (the split's order: most frequent first) the maps show.
    map_sample: at most this many items per split on each 2-D map (random, every class kept).
    thumbnail_sample: items on the thumbnail map, drawn at random from the whole split manifest.
    centroid_sample: at most this many train items per class for the train centroids (test: all items).
    pair: the two classes whose centroid line is drawn.
    interpolation_steps: evenly spaced points on that line, both centroids included.
    overlap_k: neighbours on the 2-D map used for the class-overlap score.
    max_pairs: labelled pairs (uniform over item pairs) for the ROC and the distance histograms.
    metric: distance used by the classifier, ROC and histograms (``cosine`` or ``euclidean``).
    coverage_k: recommended items per query for the error rate vs coverage curve (004 task 3: 3).
    """

    map_classes: int = 10
    map_sample: int = 2000
    thumbnail_sample: int = 1000
    centroid_sample: int = 2000
    pair: tuple[str, str] = ("Shirts", "Tshirts")
    interpolation_steps: int = 9
    overlap_k: int = 10
    top_pairs: int = 5
    max_pairs: int = 200_000
    metric: str = "cosine"
    coverage_k: int = 3
    perplexity: float = 30.0
    umap_neighbors: int = 15
    umap_epochs: int | None = None
    threads: int = 1
    seed: int = 0
    dpi: int = 110

    def __post_init__(self) -> None:
        self.pair = tuple(self.pair)
        validate([
            *(at_least(name, getattr(self, name), 1) for name in (
                "map_classes", "map_sample", "thumbnail_sample", "centroid_sample", "overlap_k", "top_pairs",
                "max_pairs", "coverage_k", "dpi")),
            at_least("interpolation_steps", self.interpolation_steps, 2, note="both centroids"),
            (len(self.pair) == 2 and self.pair[0] != self.pair[1],
             f"pair must name two different classes, e.g. Shirts,Tshirts; got {self.pair}"),
            one_of("metric", self.metric, METRICS),
        ], "report option")
        self.map_config()  # the 2-D map settings check theirs

    def map_config(self) -> MapConfig:
        return MapConfig(self.perplexity, self.umap_neighbors, self.umap_epochs, self.seed, self.threads)
