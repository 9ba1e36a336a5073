"""Training objectives, composed from pytorch-metric-learning parts: a loss, a miner, a distance.

An :class:`Objective` is a weighted sum of terms. A term sees the batch's raw embeddings (B, D), the
classifier's logits (B, C) when the model has a classifier, and the integer labels (B,):

- :class:`ClassificationTerm`: cross-entropy (with label smoothing) on the model's classifier logits;
- :class:`MetricTerm`: any PML loss on the embeddings, with an optional PML miner choosing the pairs or
  triplets (contrastive + :class:`RatioPairMiner`, triplet margin + batch-hard / semi-hard, multi-similarity,
  ArcFace ...). PML losses with parameters (proxies, ArcFace's class centres) are trained with the model.
- :class:`InstanceTerm`: PML's NT-Xent loss with item ids as labels, on the vectors the search uses: the
  augmented views of one item (``TrainConfig.views`` per item in a batch) must be each other's nearest
  neighbours, so a mirrored, cropped or darker photo of a product finds that product, not only its class.
- :class:`DistillTerm`: the cosine distance between each view's search vector and a teacher model's vector of
  the item (:mod:`stylespace.training.teacher`): a small network learns a large one's style space.

``build_objective("ce+triplet", ...)`` makes the common ones by name; ``"ce:1+triplet:0.5"`` sets weights.
"""
from __future__ import annotations

import dataclasses

import torch
from pytorch_metric_learning import distances, losses, miners
from pytorch_metric_learning.miners import BaseMiner
from pytorch_metric_learning.utils import loss_and_miner_utils as lmu
from torch import nn

from stylespace.utils import StylespaceError, above, at_least, in_range, one_of, validate


class RatioPairMiner(BaseMiner):
    """All positive pairs of the batch and ``ratio`` times as many negative pairs drawn at random
    (seed 000 trained its Siamese network with 1:20 similar:dissimilar pairs).

    Returns PML's pair tuple ``(anchor_pos, positive, anchor_neg, negative)`` of index tensors.
    """

    def __init__(self, ratio: float = 20.0, **kwargs):
        super().__init__(**kwargs)
        validate([above("pair ratio", ratio, 0, note="dissimilar per similar pair")])
        self.ratio = ratio

    def mine(self, embeddings, labels, ref_emb, ref_labels):
        a1, p, a2, n = lmu.get_all_pairs_indices(labels, ref_labels)
        keep = min(len(a2), int(round(self.ratio * max(len(a1), 1))))
        pick = torch.randperm(len(a2), device=a2.device)[:keep]
        return a1, p, a2[pick], n[pick]


class ClassificationTerm(nn.Module):
    """Cross-entropy on the classifier's logits (B, C); needs a model built with classes."""

    needs_classifier = True

    def __init__(self, label_smoothing: float = 0.0):
        super().__init__()
        self.loss = nn.CrossEntropyLoss(label_smoothing=label_smoothing)

    def forward(self, embeddings: torch.Tensor, logits: torch.Tensor | None, labels: torch.Tensor) -> torch.Tensor:
        return self.loss(logits.float(), labels)


class MetricTerm(nn.Module):
    """A PML loss on the embeddings (B, D), with the pairs/triplets chosen by an optional PML miner."""

    needs_classifier = False

    def __init__(self, loss: nn.Module, miner: nn.Module | None = None):
        super().__init__()
        self.loss, self.miner = loss, miner

    def forward(self, embeddings: torch.Tensor, logits: torch.Tensor | None, labels: torch.Tensor) -> torch.Tensor:
        embeddings = embeddings.float()  # PML distances in full precision, even under autocast
        indices = self.miner(embeddings, labels) if self.miner is not None else None
        return self.loss(embeddings, labels, indices)


class InstanceTerm(nn.Module):
    """NT-Xent over item ids on the search vectors (B, F): each view's positives are the other views of its
    item, every other view in the batch is a negative. Without item ids (a batch of single views, as in
    validation) it is 0.

    Computed by PML's ``SupConLoss`` with the item ids as labels: with two views per item (every preset) it is
    NT-Xent exactly (the same value as PML's ``NTXentLoss``, tests/test_training.py), from one B x B
    similarity matrix, where ``NTXentLoss`` builds a (positive pairs x negative pairs) mask: 25 x faster for
    256 vectors, the difference between 3 s and 140 s an epoch of the head on cached features. With more
    views, SupCon averages over an anchor's positives (NT-Xent scores each positive pair on its own)."""

    needs_classifier = False
    needs_views = True

    def __init__(self, temperature: float = 0.1):
        super().__init__()
        self.loss = losses.SupConLoss(temperature=temperature)

    def forward(self, embeddings: torch.Tensor, logits: torch.Tensor | None, labels: torch.Tensor,
                instances: torch.Tensor | None = None, search: torch.Tensor | None = None) -> torch.Tensor:
        if instances is None:
            return embeddings.new_zeros(())
        return self.loss((search if search is not None else embeddings).float(), instances)


class DistillTerm(nn.Module):
    """Mean cosine distance ``1 - cos(search_i, target_i)`` between each view's search vector (B, F) and its
    item's unit target vector (B, F) from a teacher. Without targets (validation batches) it is 0."""

    needs_classifier = False
    needs_targets = True

    def forward(self, search: torch.Tensor | None, targets: torch.Tensor | None) -> torch.Tensor:
        if targets is None or search is None:
            return torch.zeros(())
        if search.shape != targets.shape:
            raise StylespaceError(f"distillation targets are {tuple(targets.shape)} but the search vectors are "
                                  f"{tuple(search.shape)}; the targets must be reduced to the student's width")
        cosine = (nn.functional.normalize(search.float(), dim=1) * targets.float()).sum(dim=1)
        return (1.0 - cosine).mean()


class Objective(nn.Module):
    """A weighted sum of named terms; ``forward`` returns (total loss, {name: term loss}).

    ``instances`` (B,) are item ids (views of one item share one) and ``search`` (B, F) the vectors the
    index stores; only terms that need views (:class:`InstanceTerm`) read them. ``targets`` (B, F) are a
    teacher's unit vectors of each row's item, read with ``search_vectors`` (B, F, the model's search vectors,
    unit length) by terms that need targets (:class:`DistillTerm`)."""

    def __init__(self, terms: dict[str, nn.Module], weights: dict[str, float]):
        super().__init__()
        if not terms:
            raise StylespaceError("an objective needs at least one term")
        self.terms = nn.ModuleDict(terms)
        self.weights = dict(weights)

    @property
    def needs_classifier(self) -> bool:
        return any(term.needs_classifier for term in self.terms.values())

    @property
    def needs_views(self) -> bool:
        return any(getattr(term, "needs_views", False) for term in self.terms.values())

    @property
    def needs_targets(self) -> bool:
        return any(getattr(term, "needs_targets", False) for term in self.terms.values())

    def forward(self, embeddings: torch.Tensor, logits: torch.Tensor | None, labels: torch.Tensor,
                instances: torch.Tensor | None = None, search: torch.Tensor | None = None,
                targets: torch.Tensor | None = None,
                search_vectors: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        total, parts = 0.0, {}
        for name, term in self.terms.items():
            if getattr(term, "needs_targets", False):
                value = term(search_vectors, targets).to(embeddings.device)
            elif getattr(term, "needs_views", False):
                value = term(embeddings, logits, labels, instances, search)
            else:
                value = term(embeddings, logits, labels)
            parts[name] = float(value.detach())
            total = total + self.weights[name] * value
        return total, parts


@dataclasses.dataclass
class ObjectiveConfig:
    """Parameters of the named objective terms (the fields of TrainConfig that build_objective reads).

    Attributes:
        label_smoothing: cross-entropy label smoothing (``ce``).
        margin: contrastive loss margin m on the distance between unit embeddings (``contrastive``).
        pair_ratio: dissimilar:similar pairs per batch (``contrastive``; seed 000: 20).
        gap: triplet hinge gap g (``triplet``; seed 002).
        miner: triplet mining: ``semihard``, ``batch_hard`` or ``all`` (every valid triplet).
        arcface_margin: additive angular margin in degrees (``arcface``); ``arcface_scale`` its scale.
        temperature: NT-Xent temperature of the instance term (``instance``; smaller = sharper).
    """

    label_smoothing: float = 0.1
    margin: float = 1.0
    pair_ratio: float = 20.0
    gap: float = 0.2
    miner: str = "semihard"
    arcface_margin: float = 28.6
    arcface_scale: float = 30.0
    temperature: float = 0.1

    def __post_init__(self) -> None:
        validate([
            in_range("label_smoothing", self.label_smoothing, 0, 1, "[)"),
            *(above(name, getattr(self, name), 0) for name in ("margin", "pair_ratio", "gap", "temperature")),
            one_of("miner", self.miner, MINERS),
            at_least("arcface_margin", self.arcface_margin, 0, integer=False, note="degrees"),
            above("arcface_scale", self.arcface_scale, 0),
        ], "objective")


TERMS = ("ce", "contrastive", "triplet", "ms", "arcface", "instance", "distill")
MINERS = ("semihard", "batch_hard", "all")


def build_term(name: str, cfg: ObjectiveConfig, n_classes: int, embedding_dim: int) -> nn.Module:
    """One named term. Distances are Euclidean between L2-normalised embeddings (PML's ``LpDistance``)
    or cosine similarity, the geometry the search index uses."""
    if name == "ce":
        return ClassificationTerm(cfg.label_smoothing)
    if name == "contrastive":
        distance = distances.LpDistance(normalize_embeddings=True)
        return MetricTerm(losses.ContrastiveLoss(pos_margin=0.0, neg_margin=cfg.margin, distance=distance),
                          RatioPairMiner(cfg.pair_ratio, distance=distance))
    if name == "triplet":
        distance = distances.LpDistance(normalize_embeddings=True)
        miner = {"semihard": lambda: miners.TripletMarginMiner(cfg.gap, type_of_triplets="semihard", distance=distance),
                 "batch_hard": lambda: miners.BatchHardMiner(distance=distance),
                 "all": lambda: None}[cfg.miner]()
        return MetricTerm(losses.TripletMarginLoss(margin=cfg.gap, distance=distance), miner)
    if name == "ms":
        similarity = distances.CosineSimilarity()
        return MetricTerm(losses.MultiSimilarityLoss(alpha=2.0, beta=50.0, base=0.5, distance=similarity),
                          miners.MultiSimilarityMiner(epsilon=0.1, distance=similarity))
    if name == "arcface":
        return MetricTerm(losses.ArcFaceLoss(n_classes, embedding_dim, margin=cfg.arcface_margin,
                                             scale=cfg.arcface_scale))
    if name == "instance":
        return InstanceTerm(cfg.temperature)
    if name == "distill":
        return DistillTerm()
    raise StylespaceError(f"objective term {name!r} is unknown; expected one of {', '.join(TERMS)}")


def parse_objective(spec: str) -> dict[str, float]:
    """``"ce+triplet:0.5"`` -> {"ce": 1.0, "triplet": 0.5}."""
    weights: dict[str, float] = {}
    for part in (spec or "").replace(" ", "").split("+"):
        if not part:
            continue
        name, _, weight = part.partition(":")
        if name not in TERMS:
            raise StylespaceError(f"objective {spec!r}: term {name!r} is unknown; expected terms from "
                                  f"{', '.join(TERMS)} joined by '+', each with an optional ':weight'")
        try:
            value = float(weight) if weight else 1.0
        except ValueError:
            raise StylespaceError(f"objective {spec!r}: weight {weight!r} of {name} is not a number") from None
        validate([above(f"objective {spec!r}: weight of {name}", value, 0)])
        if name in weights:
            raise StylespaceError(f"objective {spec!r}: term {name} given twice")
        weights[name] = value
    if not weights:
        raise StylespaceError(f"objective {spec!r} names no term; expected e.g. ce, triplet or ce+triplet:0.5")
    return weights


def build_objective(spec: str, cfg: ObjectiveConfig, n_classes: int, embedding_dim: int) -> Objective:
    """The objective ``spec`` (e.g. ``"ce+triplet:0.5"``) with the parameters in ``cfg``."""
    if cfg.miner not in MINERS:
        raise StylespaceError(f"miner {cfg.miner!r} is unknown; expected one of {', '.join(MINERS)}")
    weights = parse_objective(spec)
    terms = {name: build_term(name, cfg, n_classes, embedding_dim) for name in weights}
    return Objective(terms, weights)
