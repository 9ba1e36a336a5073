"""N-way K-shot episodes: the few-shot protocol of Prototypical Networks (Snell et al. 2017), on vectors.

Each episode draws ``ways`` classes, then ``shots`` support items and ``queries`` query items of each class,
all different items; each class's prototype is the mean of its support vectors, and a query is given the
class of the prototype nearest by cosine. The figure is the mean of the episodes' accuracies with its 95 %
interval (1.96 standard errors), over a fixed number of episodes drawn from a fixed seed.

Items are embedded once, before: an episode only indexes rows of a (N, D) array, so 1,000 episodes take
well under a second.

>>> result = evaluate_episodes(vectors, labels, EpisodeConfig(ways=5, shots=1))
>>> f"{100 * result.mean:.1f} +- {100 * result.interval:.1f} %"
"""
from __future__ import annotations

import collections
import dataclasses
from typing import Iterator, Sequence

import numpy as np

from stylespace.utils import StylespaceError, at_least, validate

Z_95 = 1.96  # the normal quantile of a two-sided 95 % interval


@dataclasses.dataclass(frozen=True)
class EpisodeConfig:
    """One few-shot setting.

    Attributes:
        ways: classes per episode (N).
        shots: support items per class (K).
        queries: query items per class (the published Fashion Product Images runs used 1).
        episodes: how many episodes are averaged.
        seed: the episodes' random seed: the same seed draws the same episodes.
    """

    ways: int = 5
    shots: int = 1
    queries: int = 1
    episodes: int = 1000
    seed: int = 0

    def __post_init__(self) -> None:
        validate([at_least("ways", self.ways, 2), at_least("shots", self.shots, 1),
                  at_least("queries", self.queries, 1), at_least("episodes", self.episodes, 1),
                  at_least("seed", self.seed, 0)], owner="EpisodeConfig")

    @property
    def name(self) -> str:
        return f"{self.ways}-way {self.shots}-shot"


@dataclasses.dataclass(frozen=True)
class Episode:
    """Rows of one episode: ``support`` (ways x shots) and ``query`` (ways x queries) row indices, and the
    episode's class (0 .. ways - 1) of each row."""

    support: np.ndarray
    support_class: np.ndarray
    query: np.ndarray
    query_class: np.ndarray


@dataclasses.dataclass
class EpisodeResult:
    """Accuracy over the episodes of one setting: ``mean`` and the 95 % interval's half-width ``interval``
    (fractions), the per-episode accuracies, and how many classes were eligible (enough items)."""

    config: EpisodeConfig
    mean: float
    interval: float
    accuracies: np.ndarray
    classes: int
    items: int

    def to_dict(self) -> dict:
        return {"setting": self.config.name, **dataclasses.asdict(self.config), "mean": round(self.mean, 6),
                "interval_95": round(self.interval, 6), "classes": self.classes, "items": self.items}


def sample_episodes(labels: Sequence, config: EpisodeConfig) -> Iterator[Episode]:
    """The episodes of ``config`` over items labelled ``labels``: only classes with at least
    ``shots + queries`` items take part, and within an episode no item is both support and query."""
    by_class, eligible = _eligible(labels, config)
    need = config.shots + config.queries
    if len(eligible) < config.ways:
        raise StylespaceError(f"{config.name} episodes with {config.queries} quer{'y' if config.queries == 1 else 'ies'} "
                              f"per class need {config.ways} classes of at least {need} items; "
                              f"{len(eligible)} of {len(by_class)} classes have that many")
    rng = np.random.default_rng(config.seed)
    for _ in range(config.episodes):
        chosen = rng.choice(len(eligible), size=config.ways, replace=False)
        support, query = [], []
        for cls in chosen:
            rows = by_class[eligible[cls]]
            picked = rows[rng.choice(len(rows), size=need, replace=False)]
            support.append(picked[:config.shots])
            query.append(picked[config.shots:])
        ways = np.arange(config.ways)
        yield Episode(np.concatenate(support), np.repeat(ways, config.shots),
                      np.concatenate(query), np.repeat(ways, config.queries))


def evaluate_episodes(vectors: np.ndarray, labels: Sequence, config: EpisodeConfig) -> EpisodeResult:
    """Prototype classification (mean support vector, nearest by cosine) over the episodes of ``config``."""
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or len(vectors) != len(labels):
        raise StylespaceError(f"episodes need one vector per label: got vectors of shape {vectors.shape} "
                              f"and {len(labels)} labels")
    unit = _normalise(vectors)
    accuracies = np.empty(config.episodes, dtype=np.float64)
    for k, episode in enumerate(sample_episodes(labels, config)):
        support = unit[episode.support].reshape(config.ways, config.shots, -1)
        prototypes = _normalise(support.mean(axis=1))
        predicted = (unit[episode.query] @ prototypes.T).argmax(axis=1)
        accuracies[k] = float((predicted == episode.query_class).mean())
    by_class, eligible = _eligible(labels, config)
    return EpisodeResult(config, float(accuracies.mean()), mean_interval(accuracies), accuracies, len(eligible),
                         int(sum(len(by_class[c]) for c in eligible)))


def mean_interval(values: np.ndarray) -> float:
    """Half-width of the 95 % interval of the mean of ``values`` (1.96 standard errors; 0 for one value)."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) < 2:
        return 0.0
    return float(Z_95 * values.std(ddof=1) / np.sqrt(len(values)))


def _eligible(labels: Sequence, config: EpisodeConfig) -> tuple[dict, list]:
    """(label -> its rows, the labels with enough items for an episode of ``config``, sorted)."""
    rows: dict = collections.defaultdict(list)
    for row, label in enumerate(labels):
        if label is not None:
            rows[label].append(row)
    by_class = {label: np.asarray(members) for label, members in rows.items()}
    return by_class, sorted(c for c, members in by_class.items() if len(members) >= config.shots + config.queries)


def _normalise(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
