"""What an evaluation measures (:class:`EvaluationConfig`), apart from the code that measures it, so that the
CLI reads its defaults without loading scikit-learn."""
from __future__ import annotations

import dataclasses

from stylespace.utils import METRICS, at_least, each, in_range, one_of, some_of, validate

# 004's four support-set scenarios.
SCENARIO_NUMBERS = (1, 2, 3, 4)
# ``test``: main + new test items, each against the others; ``all``: every item of the split.
RETRIEVAL_SETS = ("test", "all")


@dataclasses.dataclass
class EvaluationConfig:
    """What an evaluation measures; saved inside the report.

    metric: ``cosine`` or ``euclidean`` for every search, vote, prototype and pair distance.
    knn_k: the k of each k-NN classifier (a prototype classifier is added when ``prototypes``).
    retrieval_sets: ``test`` (main + new test items, each against the others) and/or ``all`` (every item
        of the split against every other: catalog scale).
    max_r: cap on R for R-precision / MAP@R (None: no cap).
    hierarchy_levels: coarse levels scored on scenario 2's sets (004 task 4 step 4).
    open_set_coverage: the reject distance answers this share of main-support items (leave-one-out).
    max_pairs: without a pair file, same-class vs different-class pairs of main + new test items: all of
        them up to this many, else a uniform sample (seeded by ``pair_seed``).
    """

    metric: str = "cosine"
    knn_k: tuple[int, ...] = (1, 5)
    prototypes: bool = True
    scenarios: tuple[int, ...] = (1, 2, 3, 4)
    retrieval_sets: tuple[str, ...] = ("test", "all")
    retrieval_ks: tuple[int, ...] = (1, 5, 10)
    max_r: int | None = None
    hierarchy_levels: tuple[str, ...] = ("subCategory", "masterCategory")
    open_set_coverage: float = 0.95
    max_pairs: int = 1_000_000
    pair_seed: int = 0

    def __post_init__(self) -> None:
        validate([
            one_of("metric", self.metric, METRICS),
            each("knn_k", self.knn_k, 1, empty_ok=True),
            (bool(self.knn_k) or self.prototypes, "no classifier to evaluate: give at least one knn k or keep prototypes"),
            some_of("scenarios", self.scenarios, SCENARIO_NUMBERS, empty_ok=True),
            some_of("retrieval_sets", self.retrieval_sets, RETRIEVAL_SETS, empty_ok=True),
            each("retrieval_ks", self.retrieval_ks, 1, empty_ok=True),
            at_least("max_r", self.max_r, 1, none_ok=True, note="None: no cap"),
            in_range("open_set_coverage", self.open_set_coverage, 0, 1, note="0: no open-set figures"),
            at_least("max_pairs", self.max_pairs, 1),
        ], "evaluation")
