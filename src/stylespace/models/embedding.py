"""The embedding model: backbone -> pooled features -> embedding head (-> optional classifier)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from stylespace.models.backbones import Backbone, build_backbone
from stylespace.models.config import ModelConfig
from stylespace.models.pretrained import PACKAGE_WEIGHTS
from stylespace.models.weights import load_backbone_weights
from stylespace.utils import StylespaceError



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
        self.backbone: Backbone = build_backbone(config)
        # the statistics the backbone's weights were trained with (ImageNet's; [-1, 1] for EfficientNet-Lite)
        self.register_buffer("pixel_mean", torch.tensor(self.backbone.pixel_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(self.backbone.pixel_std).view(1, 3, 1, 1), persistent=False)
        if config.weights == PACKAGE_WEIGHTS and load_weights:
            self.backbone.load_imagenet()
        elif config.weights and load_weights:
            load_backbone_weights(self.backbone, config.weights, config.backbone)
        channels = self.backbone.stage_channels
        self.pooled_stages = [self.backbone.shallow_stage, len(channels) - 1] if config.multiscale else [len(channels) - 1]
        self.pools = nn.ModuleList(make_pool(config.pooling) for _ in self.pooled_stages)
        widen = 2 if config.pooling == "avgmax" else 1
        self.feature_dim = sum(channels[i] for i in self.pooled_stages) * widen
        hidden = [nn.Linear(self.feature_dim, config.head_hidden, bias=False), nn.BatchNorm1d(config.head_hidden),
                  nn.ReLU(inplace=True)] if config.head_hidden else []
        self.head = nn.Sequential(
            nn.Dropout(config.dropout),
            *hidden,
            nn.Linear(config.head_hidden or self.feature_dim, config.embedding_dim, bias=False),
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
        x = (x - self.pixel_mean) / self.pixel_std
        size = tuple(self.config.network_size)
        if size and tuple(x.shape[-2:]) != size:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return x

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, feature_dim): pooled backbone features before the embedding head."""
        maps = self.backbone(self._prepare(x))
        return torch.cat([pool(maps[i]) for pool, i in zip(self.pools, self.pooled_stages)], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> (B, D) raw (not normalised) embeddings."""
        return self.head(self.features(x))

    @property
    def output_dim(self) -> int:
        """Width of what :meth:`embed` returns: ``embedding_dim``, ``feature_dim`` for ``embed_layer="features"``,
        their sum for ``both``."""
        return {"head": self.config.embedding_dim, "features": self.feature_dim,
                "both": self.feature_dim + self.config.embedding_dim}[self.config.embed_layer]

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, output_dim) L2-normalised embeddings (unit length: cosine = dot product)."""
        return self.embed_features(self.features(x))

    def embed_features(self, features: torch.Tensor) -> torch.Tensor:
        """(B, feature_dim) pooled features -> (B, output_dim) unit embeddings, as :meth:`embed` makes them."""
        layer = self.config.embed_layer
        if layer == "features":
            return F.normalize(features, dim=1)
        return self.search_vectors(features, self.head(features))

    def search_vectors(self, features: torch.Tensor, head_output: torch.Tensor) -> torch.Tensor:
        """The unit vectors :meth:`embed` gives, from the pooled ``features`` (B, feature_dim) and the head's
        output on them (B, D): what training's instance term pulls together, without a second head pass."""
        layer = self.config.embed_layer
        if layer == "features":
            return F.normalize(features, dim=1)
        if layer == "head":
            return F.normalize(head_output, dim=1)
        share = self.config.head_share
        return torch.cat([(1.0 - share) ** 0.5 * F.normalize(features, dim=1),
                          share ** 0.5 * F.normalize(head_output, dim=1)], dim=1)

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
