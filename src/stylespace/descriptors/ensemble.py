"""Ensembles (seed 001): several extractors' features side by side, weighted, the wide ones trimmed.

Seed 001 fused VGG16 (512-d) and ResNet50 (2048-d) features: a weighted combination, with
scikit-learn's SelectKBest reducing the larger vector. Here any number of extractors can be fused:

1. every block (one extractor's features) is L2-normalised;
2. a block wider than ``max_dim`` keeps its ``max_dim`` features of highest ANOVA F score against the
   training labels (``SelectKBest(f_classif)``), then is L2-normalised again;
3. each block is multiplied by its weight and the blocks are concatenated and L2-normalised.

With unit blocks, the cosine similarity of two fused vectors is the weight-squared average of the
blocks' cosine similarities, so a weight says how much an extractor's opinion counts. The weights are
chosen by grid search on a validation split, by the 1-NN accuracy of validation items against the
training items.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import os
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from stylespace.descriptors.base import FeatureExtractor, l2_normalise, timed_embed
from stylespace.utils import StylespaceError, at_least, each, in_range, one_of, to_jsonable, validate, write_json

CRITERIA = ("accuracy", "balanced_accuracy")


def weighted_concat(blocks: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    """L2-normalise each (N, D_i) block, scale it by its weight, concatenate, L2-normalise: (N, sum D_i)."""
    if len(blocks) != len(weights):
        raise StylespaceError(f"{len(blocks)} feature blocks but {len(weights)} weights; expected one weight per block")
    return l2_normalise(np.hstack([weight * l2_normalise(block) for block, weight in zip(blocks, weights)]))


class Concatenation:
    """A feature extractor made of several: their embeddings side by side (:func:`weighted_concat`).

    Args:
        extractors: the parts (anything with ``name``, ``dim``, ``embed``).
        weights: one per part (default all 1: every part counts equally in the cosine similarity).
        name: default the parts' names joined by ``+``.
    """

    def __init__(self, extractors: Sequence[FeatureExtractor], weights: Sequence[float] | None = None,
                 name: str | None = None):
        if len(extractors) < 2:
            raise StylespaceError(f"a concatenation needs at least two extractors, got {len(extractors)}")
        self.extractors = list(extractors)
        weights = [1.0] * len(extractors) if weights is None else list(weights)
        ok, message = each("concatenation weights", weights, 0, count=len(extractors), integer=False,
                           note="one per extractor, not all zero")
        validate([(ok and max(weights) > 0, message)])
        self.weights = [float(w) for w in weights]
        self.name = name or "+".join(e.name for e in self.extractors)

    @property
    def dim(self) -> int:
        return sum(e.dim for e in self.extractors)

    def embed(self, pixels: np.ndarray, progress: bool = False) -> np.ndarray:
        return weighted_concat([timed_embed(e, pixels, progress)[0] for e in self.extractors], self.weights)


@dataclasses.dataclass
class EnsembleConfig:
    """How a :class:`FeatureEnsemble` is fitted; saved with it.

    names: one name per feature block (the extractors), for reports.
    max_dim: blocks wider than this keep their ``max_dim`` best features (SelectKBest, f_classif);
        None: the narrowest block's width (seed 001 cut ResNet50's 2048 to VGG16's 512); 0: no selection.
    weight_grid: candidate weights of every block but the first, whose weight stays 1 (only ratios
        matter after the final normalisation); all combinations are tried.
    criterion: ``accuracy`` or ``balanced_accuracy`` of 1-NN on the validation items.
    validation_fraction: share of the training items held out (stratified) to choose the weights when
        no validation set is given to ``fit``.
    max_reference: training items the validation items are matched against during the search (a
        stratified sample when there are more), bounding its cost.
    seed: the hold-out and the sample.
    """

    names: tuple[str, ...] = ()
    max_dim: int | None = None
    weight_grid: tuple[float, ...] = (0.5, 1.0, 2.0)
    criterion: str = "accuracy"
    validation_fraction: float = 0.1
    max_reference: int = 20_000
    seed: int = 0

    def __post_init__(self) -> None:
        grid_ok, grid_message = each("weight_grid", self.weight_grid, 0, integer=False, note="not all zero")
        validate([
            at_least("max_dim", self.max_dim, 0, none_ok=True, note="None: the narrowest block's width; 0: no selection"),
            (grid_ok and max(self.weight_grid) > 0, grid_message),
            one_of("criterion", self.criterion, CRITERIA),
            in_range("validation_fraction", self.validation_fraction, 0, 1, "()"),
            at_least("max_reference", self.max_reference, 1),
        ], "ensemble")
        self.names = tuple(str(n) for n in self.names)
        self.weight_grid = tuple(float(w) for w in self.weight_grid)


@dataclasses.dataclass
class WeightTrial:
    """One point of the weight search and how 1-NN did with it on the validation items."""

    weights: tuple[float, ...]
    accuracy: float
    balanced_accuracy: float


class FeatureEnsemble:
    """Fit on labelled feature blocks, then fuse any blocks of the same extractors (fit / transform).

    ``fit(blocks, y)``: blocks is a list of (N, D_i) arrays (one per extractor, same items in the same
    order), y the N labels. ``transform(blocks) -> (M, D_out)`` float32, L2-normalised.

    Fitted attributes: ``selected_`` (per block, the kept feature indices, or None for all),
    ``weights_``, ``trials_`` (every weight combination tried, best first), ``n_train_``,
    ``n_validation_``.
    """

    def __init__(self, config: EnsembleConfig | None = None):
        self.config = config or EnsembleConfig()
        self.selected_: list[np.ndarray | None] | None = None

    # --- fitting ---------------------------------------------------------------------------------

    def fit(self, blocks: Sequence[np.ndarray], y: Sequence[str],
            validation: tuple[Sequence[np.ndarray], Sequence[str]] | None = None) -> "FeatureEnsemble":
        """Choose the features to keep (on the training items) and the weights (on the validation items).

        validation: (blocks, labels) of a separate validation set; None holds out
            ``config.validation_fraction`` of the given items, stratified by label.
        """
        blocks = self._check_blocks(blocks, expected=None)
        y = _labels(y, len(blocks[0]), "training")
        if validation is None:
            train_rows, val_rows = stratified_holdout(y, self.config.validation_fraction, self.config.seed)
            val_blocks, y_val = [b[val_rows] for b in blocks], y[val_rows]
            blocks, y = [b[train_rows] for b in blocks], y[train_rows]
        else:
            val_blocks = self._check_blocks(validation[0], expected=[b.shape[1] for b in blocks])
            y_val = _labels(validation[1], len(val_blocks[0]), "validation")
        if len(np.unique(y)) < 2:
            raise StylespaceError("the ensemble's training items have a single class; feature selection needs two or more")

        self.dims_ = [b.shape[1] for b in blocks]
        self.selected_ = self._select_features(blocks, y)
        train = self._reduce(blocks)
        val = self._reduce(val_blocks)
        reference = stratified_sample(y, self.config.max_reference, self.config.seed)
        self.trials_ = self._search_weights([b[reference] for b in train], y[reference], val, y_val)
        self.weights_ = self.trials_[0].weights
        self.n_train_, self.n_validation_ = len(y), len(y_val)
        return self

    def _select_features(self, blocks: list[np.ndarray], y: np.ndarray) -> list[np.ndarray | None]:
        from sklearn.feature_selection import SelectKBest, f_classif

        k = min(self.dims_) if self.config.max_dim is None else self.config.max_dim
        selected: list[np.ndarray | None] = []
        for block in blocks:
            if k == 0 or block.shape[1] <= k:
                selected.append(None)
                continue
            with warnings.catch_warnings():
                # Constant features (a colour bin no image uses) have no F score; SelectKBest ranks them last.
                warnings.simplefilter("ignore", category=RuntimeWarning)
                warnings.simplefilter("ignore", category=UserWarning)
                selector = SelectKBest(f_classif, k=k).fit(l2_normalise(block), y)
            selected.append(np.sort(selector.get_support(indices=True)))
        return selected

    def _reduce(self, blocks: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Each block L2-normalised, its kept features taken and L2-normalised again."""
        return [l2_normalise(l2_normalise(b)[:, keep]) if keep is not None else l2_normalise(b)
                for b, keep in zip(blocks, self.selected_)]

    def _search_weights(self, train: list[np.ndarray], y_train: np.ndarray, val: list[np.ndarray],
                        y_val: np.ndarray) -> list[WeightTrial]:
        from sklearn.metrics import balanced_accuracy_score

        from stylespace.evaluation import SupportSetClassifier

        # Equal weights first, so that among equally good combinations the plainest one wins.
        candidates = [(1.0,) * len(train)] + [
            (1.0, *rest) for rest in itertools.product(self.config.weight_grid, repeat=len(train) - 1)]
        trials, seen = [], set()
        for weights in candidates:
            if weights in seen or max(weights) == 0:
                continue
            seen.add(weights)
            nearest = SupportSetClassifier("knn", k=1).fit(weighted_concat(train, weights), y_train)
            predicted = nearest.predict(weighted_concat(val, weights)).astype(str)
            trials.append(WeightTrial(weights, float(np.mean(predicted == y_val.astype(str))),
                                      float(balanced_accuracy_score(y_val.astype(str), predicted))))
        key = (lambda t: t.accuracy) if self.config.criterion == "accuracy" else (lambda t: t.balanced_accuracy)
        return sorted(trials, key=key, reverse=True)  # stable: ties keep the candidate order

    # --- using -----------------------------------------------------------------------------------

    def transform(self, blocks: Sequence[np.ndarray]) -> np.ndarray:
        """Fuse feature blocks of the extractors the ensemble was fitted on: (M, D_out) float32."""
        self._check_fitted()
        return weighted_concat(self._reduce(self._check_blocks(blocks, expected=self.dims_)), self.weights_)

    def fit_transform(self, blocks: Sequence[np.ndarray], y: Sequence[str], validation=None) -> np.ndarray:
        return self.fit(blocks, y, validation).transform(blocks)

    @property
    def dim(self) -> int:
        self._check_fitted()
        return sum(d if keep is None else len(keep) for d, keep in zip(self.dims_, self.selected_))

    def _check_fitted(self) -> None:
        if self.selected_ is None:
            raise StylespaceError("this FeatureEnsemble is not fitted yet; call fit(blocks, labels) first")

    def _check_blocks(self, blocks: Sequence[np.ndarray], expected: list[int] | None) -> list[np.ndarray]:
        blocks = [np.asarray(b, dtype=np.float32) for b in blocks]
        n_names = len(self.config.names)
        if not blocks or (n_names and len(blocks) != n_names):
            raise StylespaceError(f"expected {n_names or 'at least one'} feature block(s) "
                                  f"({', '.join(self.config.names) or 'one per extractor'}), got {len(blocks)}")
        if any(b.ndim != 2 for b in blocks):
            raise StylespaceError(f"feature blocks must be 2-D (N, D) arrays, got shapes {[b.shape for b in blocks]}")
        if len({len(b) for b in blocks}) != 1:
            raise StylespaceError(f"feature blocks must describe the same items, got {[len(b) for b in blocks]} rows")
        if expected is not None and [b.shape[1] for b in blocks] != list(expected):
            raise StylespaceError(f"feature blocks have widths {[b.shape[1] for b in blocks]}; the ensemble was "
                                  f"fitted on widths {list(expected)}")
        return blocks

    # --- saving ----------------------------------------------------------------------------------

    def summary(self) -> dict:
        """The fitted state in plain types: config, kept features, weights and the search."""
        self._check_fitted()
        return to_jsonable({
            "config": dataclasses.asdict(self.config), "dims": self.dims_, "dim": self.dim,
            "selected": [None if keep is None else keep.tolist() for keep in self.selected_],
            "weights": self.weights_, "n_train": self.n_train_, "n_validation": self.n_validation_,
            "trials": [dataclasses.asdict(t) for t in self.trials_],
        })

    def save(self, path: str | os.PathLike) -> Path:
        """Write the fitted ensemble as JSON (atomically); :meth:`load` reads it back."""
        path = Path(path)
        write_json(path, self.summary())
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "FeatureEnsemble":
        from stylespace.utils import dataclass_from_dict

        path = Path(path)
        try:
            data = json.loads(path.read_text())
            ensemble = cls(dataclass_from_dict(EnsembleConfig, data["config"], source=str(path)))
            ensemble.dims_ = [int(d) for d in data["dims"]]
            ensemble.selected_ = [None if keep is None else np.asarray(keep, dtype=np.int64) for keep in data["selected"]]
            ensemble.weights_ = tuple(float(w) for w in data["weights"])
            ensemble.n_train_, ensemble.n_validation_ = int(data["n_train"]), int(data["n_validation"])
            ensemble.trials_ = [WeightTrial(tuple(t["weights"]), t["accuracy"], t["balanced_accuracy"]) for t in data["trials"]]
        except FileNotFoundError:
            raise StylespaceError(f"{path}: ensemble file not found") from None
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise StylespaceError(f"{path}: not a saved FeatureEnsemble ({exc}); write one with FeatureEnsemble.save") from None
        return ensemble


class EnsembleExtractor:
    """A fitted :class:`FeatureEnsemble` with its extractors: a feature extractor from pixels."""

    def __init__(self, extractors: Sequence[FeatureExtractor], ensemble: FeatureEnsemble, name: str | None = None):
        ensemble._check_fitted()
        if [e.dim for e in extractors] != ensemble.dims_:
            raise StylespaceError(f"extractor widths {[e.dim for e in extractors]} do not match the ensemble's "
                                  f"{ensemble.dims_}; pass the extractors it was fitted on, in the same order")
        self.extractors, self.ensemble = list(extractors), ensemble
        self.name = name or "ensemble(" + "+".join(e.name for e in extractors) + ")"

    @property
    def dim(self) -> int:
        return self.ensemble.dim

    def embed(self, pixels: np.ndarray, progress: bool = False) -> np.ndarray:
        return self.ensemble.transform([timed_embed(e, pixels, progress)[0] for e in self.extractors])


# --- splitting helpers -----------------------------------------------------------------------------


def stratified_holdout(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(kept rows, held-out rows): about ``fraction`` of every class with two or more items held out."""
    rng = np.random.default_rng(seed)
    labels = labels.astype(str)
    kept, held = [], []
    for label in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == label))
        n_held = int(round(fraction * len(rows))) if len(rows) >= 2 else 0
        n_held = min(max(n_held, 1 if len(rows) >= 2 else 0), len(rows) - 1)
        held.append(rows[:n_held])
        kept.append(rows[n_held:])
    kept, held = np.sort(np.concatenate(kept)), np.sort(np.concatenate(held))
    if len(held) == 0:
        raise StylespaceError("no class has two items, so nothing can be held out to choose the ensemble weights; "
                              "give a validation set")
    return kept, held


def stratified_sample(labels: np.ndarray, size: int, seed: int) -> np.ndarray:
    """Row indices of at most ``size`` items, every class keeping its share (and at least one item)."""
    n = len(labels)
    if n <= size:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    labels = labels.astype(str)
    out = []
    for label in np.unique(labels):
        rows = np.flatnonzero(labels == label)
        out.append(rng.choice(rows, size=max(1, int(round(size * len(rows) / n))), replace=False))
    return np.sort(np.concatenate(out))


def _labels(labels: Sequence[str], n: int, what: str) -> np.ndarray:
    labels = np.asarray(list(labels), dtype=object)
    if len(labels) != n:
        raise StylespaceError(f"{n} {what} items but {len(labels)} labels; expected one label per item")
    if any(label is None for label in labels):
        raise StylespaceError(f"{what} labels contain None; the ensemble is fitted on labelled items")
    return labels
