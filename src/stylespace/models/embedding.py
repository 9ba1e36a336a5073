"""The embedding model: backbone -> pooled features -> embedding head (-> optional classifier)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from stylespace.models.backbones import Backbone, build_backbone
from stylespace.models.config import ModelConfig
from stylespace.models.weights import load_backbone_weights
from stylespace.utils import StylespaceError

# ImageNet statistics: right for torchvision weights, and harmless for from-scratch training.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class GeM(nn.Module):
    """Generalised-mean pooling (Radenovic et al.): (mean x^p)^(1/p) with a learnt p; p=1 is average
    pooling, large p approaches max pooling. (B, C, H, W) -> (B, C)."""

    def __init__(self, p: float = 3.0, eps: float = 1e-6):
        super().__init__()
        self.p = nn.Parameter(torch.tensor(float(p)))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(min=self.eps).pow(self.p).mean(dim=(-2, -1)).pow(1.0 / self.p)


class AvgPool(nn.Module):
    """Global average pooling, (B, C, H, W) -> (B, C)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(-2, -1))


class AvgMaxPool(nn.Module):
    """Global average and max pooling concatenated, (B, C, H, W) -> (B, 2C)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x.mean(dim=(-2, -1)), x.amax(dim=(-2, -1))], dim=1)


def make_pool(kind: str) -> nn.Module:
    return {"avg": AvgPool, "gem": GeM, "avgmax": AvgMaxPool}[kind]()


class EmbeddingModel(nn.Module):
    """Images -> D-dimensional embeddings (and class scores when the config names classes).

    Input: float tensor (B, 3, H, W) with values in [0, 1] (uint8 tensors in [0, 255] are accepted too);
    the ImageNet normalisation happens inside, so callers never normalise.

    Attributes:
        config: the :class:`ModelConfig` that rebuilds this model exactly.
        backbone: the feature extractor, returning one feature map per stage.
        head: pooled features -> (B, D) embedding (dropout, linear, batch norm).
        classifier: ``nn.Linear(D, n_classes)`` or None. With ``config.classifier == "cosine"`` its rows
            are class directions and the logits are ``cosine_scale * cos(embedding, row)``.
    """

    def __init__(self, config: ModelConfig, load_weights: bool = True):
        super().__init__()
        self.config = config.validate()
        self.register_buffer("pixel_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.backbone: Backbone = build_backbone(config)
        if config.weights and load_weights:
            load_backbone_weights(self.backbone, config.weights, config.backbone)
        channels = self.backbone.stage_channels
        self.pooled_stages = [self.backbone.shallow_stage, len(channels) - 1] if config.multiscale else [len(channels) - 1]
        self.pools = nn.ModuleList(make_pool(config.pooling) for _ in self.pooled_stages)
        widen = 2 if config.pooling == "avgmax" else 1
        self.feature_dim = sum(channels[i] for i in self.pooled_stages) * widen
        self.head = nn.Sequential(
            nn.Dropout(config.dropout),
            nn.Linear(self.feature_dim, config.embedding_dim, bias=False),
            nn.BatchNorm1d(config.embedding_dim),
        )
        self.classifier: nn.Linear | None = None
        if config.classes:
            self.classifier = nn.Linear(config.embedding_dim, len(config.classes), bias=config.classifier == "linear")

    @property
    def classes(self) -> list[str]:
        return list(self.config.classes)

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise StylespaceError(f"expected images as a (B, 3, H, W) tensor, got shape {tuple(x.shape)}")
        if x.dtype == torch.uint8:
            x = x.float() / 255.0
        return (x - self.pixel_mean) / self.pixel_std

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, feature_dim): pooled backbone features before the embedding head."""
        maps = self.backbone(self._prepare(x))
        return torch.cat([pool(maps[i]) for pool, i in zip(self.pools, self.pooled_stages)], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> (B, D) raw (not normalised) embeddings."""
        return self.head(self.features(x))

    @property
    def output_dim(self) -> int:
        """Width of what :meth:`embed` returns: ``embedding_dim``, or ``feature_dim`` for ``embed_layer="features"``."""
        return self.feature_dim if self.config.embed_layer == "features" else self.config.embedding_dim

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, output_dim) L2-normalised embeddings (unit length: cosine = dot product)."""
        if self.config.embed_layer == "features":
            return F.normalize(self.features(x), dim=1)
        return F.normalize(self.forward(x), dim=1)

    def _require_classifier(self) -> None:
        if self.classifier is None:
            raise StylespaceError("this model has no classifier (it was built without classes); "
                                  "classify with a support set and nearest neighbours instead")

    def classify(self, embedding: torch.Tensor) -> torch.Tensor:
        """(B, D) raw embeddings -> (B, n_classes) logits."""
        self._require_classifier()
        if self.config.classifier == "cosine":
            weight = F.normalize(self.classifier.weight, dim=1)
            return self.config.cosine_scale * F.normalize(embedding, dim=1) @ weight.t()
        return self.classifier(embedding)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, n_classes) class scores."""
        self._require_classifier()
        return self.classify(self.forward(x))

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B,) int64 indices into ``config.classes``."""
        return self.logits(x).argmax(dim=1)


def build_model(config: ModelConfig) -> EmbeddingModel:
    """A new model for ``config`` (random weights, or the backbone weights file it names)."""
    return EmbeddingModel(config)
