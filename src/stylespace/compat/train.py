"""Training the compatibility head: a Siamese contrastive fit on frozen features, a weight-decay sweep.

Seed 003's recipe: both items of a pair go through the same frozen backbone and the same head; the
contrastive loss (pos margin 0, neg margin m = 1, Euclidean distance) pulls compatible pairs together and
pushes the others at least m apart; RMSProp on mini-batches of 128 pairs; early stopping; an L2 sweep
chosen on validation; AUC on the held-out 20 % against the untrained head.

The backbone is frozen, so its features are computed once (:class:`PairFeatures`) and only the head is
trained: an epoch over 24,000 pairs is a fraction of a second on a CPU.
"""
from __future__ import annotations

import copy
import dataclasses
import time
from typing import Callable, Mapping

import numpy as np
import torch
from pytorch_metric_learning.distances import LpDistance
from pytorch_metric_learning.losses import ContrastiveLoss

from stylespace.compat.model import CompatibilityConfig, CompatibilityHead, Cutoff
from stylespace.compat.pairs import PairSet
from stylespace.compat.sampler import CrossCategoryPairSampler
from stylespace.evaluation import PairVerification, verify_pairs
from stylespace.utils import StylespaceError

FPR_TARGETS = (0.05, 0.10, 0.20)


def pair_auc(labels: np.ndarray, distances: np.ndarray) -> float:
    """ROC AUC of pairs called compatible when close."""
    return verify_pairs(distances, labels).auc


@dataclasses.dataclass
class PairFeatures:
    """Frozen backbone features of the items of a pair set: row ``i`` belongs to ``ids[i]``."""

    ids: list[str]
    features: np.ndarray  # (M, F) float32

    def __post_init__(self) -> None:
        self.features = np.asarray(self.features, dtype=np.float32)
        if self.features.ndim != 2 or len(self.features) != len(self.ids):
            raise StylespaceError(f"features must be (len(ids), F) = ({len(self.ids)}, F), got {self.features.shape}")
        self._row = {item_id: i for i, item_id in enumerate(self.ids)}

    def rows(self, ids) -> np.ndarray:
        try:
            return np.array([self._row[i] for i in ids], dtype=np.int64)
        except KeyError as exc:
            raise StylespaceError(f"no backbone features for item {exc.args[0]!r}") from None


@dataclasses.dataclass
class EpochRecord:
    epoch: int
    train_loss: float
    val_loss: float
    val_auc: float


@dataclasses.dataclass
class SweepEntry:
    """One weight decay of the sweep: its early-stopped head's figures."""

    weight_decay: float
    best_epoch: int
    epochs_run: int
    train_loss: float
    val_loss: float
    val_auc: float
    test_auc: float
    seconds: float
    history: list[EpochRecord]


@dataclasses.dataclass
class CompatTrainResult:
    """What :func:`train_compatibility` found; ``head`` is the chosen (best validation AUC) head."""

    head: CompatibilityHead
    config: CompatibilityConfig
    cutoff: Cutoff
    sweep: list[SweepEntry]
    untrained: dict[str, float]  # val / test AUC of the untrained head (003's benchmark)
    baselines: dict[str, float]  # test AUC of raw backbone distances and of the category combination alone
    test_auc: float
    test: PairVerification  # the chosen head on the test pairs: ROC, cutoff table at FPR 5/10/20 %
    sampler: dict[str, int]

    def report(self) -> dict:
        """Plain data for JSON: everything but the weights."""
        out = dataclasses.asdict(dataclasses.replace(self, head=None))
        out.pop("head")
        return out


def contrastive_loss(margin: float = 1.0) -> ContrastiveLoss:
    """pytorch-metric-learning's contrastive loss on plain Euclidean distance (no normalisation, as 003)."""
    return ContrastiveLoss(pos_margin=0.0, neg_margin=margin, distance=LpDistance(normalize_embeddings=False, p=2))


def pair_loss(loss_fn: ContrastiveLoss, style_a: torch.Tensor, style_b: torch.Tensor,
              labels: torch.Tensor) -> torch.Tensor:
    """The loss of pairs (style_a[i], style_b[i]) labelled ``labels[i]``: only these pairs, no others in the batch."""
    n = len(style_a)
    index = torch.arange(n, device=style_a.device)
    positive = labels == 1
    indices_tuple = (index[positive], index[positive] + n, index[~positive], index[~positive] + n)
    return loss_fn(torch.cat([style_a, style_b]), indices_tuple=indices_tuple)


@torch.no_grad()
def pair_distances(head: CompatibilityHead, features: torch.Tensor, rows_a: np.ndarray, rows_b: np.ndarray,
                   chunk: int = 8192) -> np.ndarray:
    """(N,) style-space distances of pairs given as feature rows."""
    head.eval()
    out = []
    for start in range(0, len(rows_a), chunk):
        a = head(features[torch.as_tensor(rows_a[start:start + chunk], device=features.device)])
        b = head(features[torch.as_tensor(rows_b[start:start + chunk], device=features.device)])
        out.append(torch.linalg.vector_norm(a - b, dim=1).cpu())
    return torch.cat(out).numpy() if out else np.zeros(0, np.float32)


@torch.no_grad()
def mean_pair_loss(head: CompatibilityHead, loss_fn: ContrastiveLoss, features: torch.Tensor, rows_a: np.ndarray,
                   rows_b: np.ndarray, labels: np.ndarray, chunk: int = 512) -> float:
    """The contrastive loss over a whole pair set, in chunks (the loss builds a (2B, 2B) distance matrix)."""
    head.eval()
    total, weight = 0.0, 0
    for start in range(0, len(rows_a), chunk):
        stop = start + chunk
        a = head(features[torch.as_tensor(rows_a[start:stop], device=features.device)])
        b = head(features[torch.as_tensor(rows_b[start:stop], device=features.device)])
        y = torch.as_tensor(labels[start:stop], device=features.device)
        total += float(pair_loss(loss_fn, a, b, y)) * len(y)
        weight += len(y)
    return total / max(weight, 1)


class _PairRows:
    """A split's pairs as feature rows and labels, ready for the loops below."""

    def __init__(self, pairs: PairSet, features: PairFeatures):
        self.a = features.rows(pairs.id_a)
        self.b = features.rows(pairs.id_b)
        self.label = pairs.label


def new_head(config: CompatibilityConfig, train_features: np.ndarray) -> CompatibilityHead:
    """A freshly initialised head (seeded by ``config.seed``) standardised on the training items' features."""
    torch.manual_seed(config.seed)
    head = CompatibilityHead(config.feature_dim, config.hidden_dims, config.output_dim)
    head.set_standardisation(train_features)
    return head


def fit_head(features: torch.Tensor, train: _PairRows, val: _PairRows, sampler: CrossCategoryPairSampler,
             config: CompatibilityConfig, weight_decay: float, train_features: np.ndarray,
             log: Callable[[str], None] = lambda s: None) -> tuple[CompatibilityHead, list[EpochRecord], int]:
    """Train one head with RMSProp and L2 ``weight_decay``; stop when validation AUC has not improved for
    ``config.patience`` epochs and return the best epoch's head, the history and that epoch's number."""
    head = new_head(config, train_features).to(features.device)
    loss_fn = contrastive_loss(config.margin)
    optimiser = torch.optim.RMSprop(head.parameters(), lr=config.lr, weight_decay=weight_decay)
    labels = torch.as_tensor(train.label, device=features.device)
    rows_a = torch.as_tensor(train.a, device=features.device)
    rows_b = torch.as_tensor(train.b, device=features.device)
    best_auc, best_epoch, best_state = -np.inf, 0, copy.deepcopy(head.state_dict())
    history: list[EpochRecord] = []
    for epoch in range(1, config.epochs + 1):
        head.train()
        sampler.set_epoch(epoch)
        losses = []
        for batch in sampler:
            batch = torch.as_tensor(batch, device=features.device)
            style_a = head(features[rows_a[batch]])
            style_b = head(features[rows_b[batch]])
            loss = pair_loss(loss_fn, style_a, style_b, labels[batch])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            losses.append(float(loss.detach()))
        val_auc = pair_auc(val.label, pair_distances(head, features, val.a, val.b))
        val_loss = mean_pair_loss(head, loss_fn, features, val.a, val.b, val.label)
        history.append(EpochRecord(epoch, float(np.mean(losses)), val_loss, val_auc))
        log(f"  wd={weight_decay:g} epoch {epoch}: train loss {history[-1].train_loss:.4f}, "
            f"val loss {val_loss:.4f}, val AUC {val_auc:.4f}")
        if val_auc > best_auc + 1e-4:
            best_auc, best_epoch, best_state = val_auc, epoch, copy.deepcopy(head.state_dict())
        elif epoch - best_epoch >= config.patience:
            break
    head.load_state_dict(best_state)
    return head.eval(), history, best_epoch


def train_compatibility(features: PairFeatures, splits: Mapping[str, PairSet], config: CompatibilityConfig,
                        category_of: Mapping[str, str], device: torch.device | str = "cpu",
                        log: Callable[[str], None] = lambda s: None) -> CompatTrainResult:
    """Sweep ``config.weight_decays``, keep the head with the best validation AUC, and measure it.

    Args:
        features: frozen backbone features of every item in ``splits``.
        splits: ``train``, ``val`` and ``test`` pair sets (see :func:`stylespace.compat.pairs.split_pairs`).
        category_of: item id -> high-level category; training pairs must be cross-category.

    Returns:
        the chosen head, its cutoff (max TPR - FPR on validation), the sweep table with test AUCs, the
        untrained head's AUCs, the test cutoff table at FPR 5/10/20 % and the test ROC curve.
    """
    device = torch.device(device)
    if device.type == "cpu":
        # The head's matrices are small: one thread beats several that wait on each other (and on the
        # other processes sharing the cores) by an order of magnitude.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return _train_compatibility(features, splits, config, category_of, device, log)
        finally:
            torch.set_num_threads(threads)
    return _train_compatibility(features, splits, config, category_of, device, log)


def _train_compatibility(features: PairFeatures, splits: Mapping[str, PairSet], config: CompatibilityConfig,
                         category_of: Mapping[str, str], device: torch.device,
                         log: Callable[[str], None]) -> CompatTrainResult:
    config = dataclasses.replace(config, feature_dim=int(features.features.shape[1]))
    missing = [name for name in ("train", "val", "test") if name not in splits]
    if missing:
        raise StylespaceError(f"pair splits {missing} missing; expected train, val and test")
    on_device = torch.as_tensor(features.features, device=device)
    rows = {name: _PairRows(splits[name], features) for name in ("train", "val", "test")}
    train_items = np.unique(np.concatenate([rows["train"].a, rows["train"].b]))
    train_features = features.features[train_items]
    sampler = CrossCategoryPairSampler.from_pairs(
        splits["train"], category_of, batch_size=config.batch_size, positive_fraction=config.positive_fraction,
        match_categories=config.match_categories, seed=config.seed)
    if sampler.excluded:
        log(f"{sampler.excluded:,} same-category training pairs left out (pairs must be cross-category)")

    untrained = new_head(config, train_features).to(device)
    untrained_aucs = {name: pair_auc(rows[name].label, pair_distances(untrained, on_device, rows[name].a, rows[name].b))
                      for name in ("val", "test")}
    log(f"untrained head: val AUC {untrained_aucs['val']:.4f}, test AUC {untrained_aucs['test']:.4f}")

    sweep: list[SweepEntry] = []
    heads = []
    loss_fn = contrastive_loss(config.margin)
    for weight_decay in config.weight_decays:
        started = time.perf_counter()
        head, history, best_epoch = fit_head(on_device, rows["train"], rows["val"], sampler, config,
                                             weight_decay, train_features, log)
        best = history[best_epoch - 1]
        test_auc = pair_auc(rows["test"].label, pair_distances(head, on_device, rows["test"].a, rows["test"].b))
        train_loss = mean_pair_loss(head, loss_fn, on_device, rows["train"].a, rows["train"].b, rows["train"].label)
        sweep.append(SweepEntry(float(weight_decay), best_epoch, len(history), train_loss, best.val_loss,
                                best.val_auc, test_auc, round(time.perf_counter() - started, 2), history))
        heads.append(head)
        log(f"weight decay {weight_decay:g}: best epoch {best_epoch}, val AUC {best.val_auc:.4f}, test AUC {test_auc:.4f}")
    chosen = int(np.argmax([entry.val_auc for entry in sweep]))
    head = heads[chosen].cpu()
    config = dataclasses.replace(config, weight_decay=sweep[chosen].weight_decay)

    val = verify_pairs(pair_distances(heads[chosen], on_device, rows["val"].a, rows["val"].b), rows["val"].label)
    cutoff = Cutoff(val.best_cutoff, "max TPR-FPR on validation", val.best_tpr, val.best_fpr)
    test = verify_pairs(pair_distances(heads[chosen], on_device, rows["test"].a, rows["test"].b), rows["test"].label,
                        FPR_TARGETS)
    baselines = {
        "backbone_features": pair_auc(rows["test"].label, np.linalg.norm(
            features.features[rows["test"].a] - features.features[rows["test"].b], axis=1)),
        "category_combination": _category_only_auc(splits["train"], splits["test"], category_of),
    }
    return CompatTrainResult(head, config, cutoff, sweep, untrained_aucs, baselines, sweep[chosen].test_auc, test,
                             {"batches_per_epoch": len(sampler), "positives_per_batch": sampler.n_positive,
                              "excluded_same_category": sampler.excluded})


def _category_only_auc(train: PairSet, test: PairSet, category_of: Mapping[str, str]) -> float:
    """Test AUC of a score that knows only the pair's category combination (its positive rate in training).

    Near 0.5 means the categories alone do not give the answer away; the head must judge the images.
    """
    def combo(a: str, b: str) -> tuple:
        return tuple(sorted((category_of.get(a, ""), category_of.get(b, ""))))

    counts: dict[tuple, list[int]] = {}
    for a, b, y in zip(train.id_a, train.id_b, train.label):
        counts.setdefault(combo(a, b), [0, 0])[int(y)] += 1
    prior = float(train.label.mean())
    rate = {c: (n[1] + prior) / (n[0] + n[1] + 1) for c, n in counts.items()}
    scores = np.array([rate.get(combo(a, b), prior) for a, b in zip(test.id_a, test.id_b)])
    return pair_auc(test.label, -scores)  # pair_auc reads small values as "compatible"
