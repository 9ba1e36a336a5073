"""The compatibility model: a frozen image backbone, then a learned head into a 128-d style space.

Seed 003: two copies of a frozen VGG16 share one trained dense layer of 128 units; the Euclidean
distance between the two outputs says how well two items go together (small = compatible). Here the
backbone is any frozen :class:`stylespace.models.EmbeddingModel` (a trained run, or the compact CNN) and
the head is a small MLP; its features are standardised with the training items' mean and spread (003
min-max scaled its VGG features for the same reason: a head trains badly on raw activations).
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar, Sequence

import numpy as np
import torch
from torch import nn

from stylespace.utils import StylespaceError, above, at_least, each, in_range, validate


@dataclasses.dataclass
class CompatibilityConfig:
    """How a compatibility model was made; saved as ``compat.json`` beside its weights.

    Attributes:
        backbone: what produced the frozen features: ``compact`` or the run folder it was loaded from.
        backbone_model_id: the backbone's weight hash (stylespace.models.model_id).
        input_size: (H, W) the backbone reads, in pixels.
        feature_dim: backbone feature size F.
        hidden_dims: the head's hidden layer widths (empty = one linear layer, as in 003).
        output_dim: the style space's size (003: 128).
        margin: contrastive negative margin m (pairs farther apart than m cost nothing).
        weight_decay: the L2 penalty of the chosen model.
        weight_decays: the sweep it was chosen from, on validation AUC.
        lr, batch_size, epochs, patience: RMSProp's learning rate, pairs per batch, epochs at most per weight
            decay, early stopping (the names :class:`stylespace.training.TrainConfig` uses).
        positive_fraction: positives per training batch (None = the data's own ratio).
        category_column: the item metadata column whose values must differ within a training pair.
        pairs: where the pairs came from; split_by / split_seed: how they were split.
        seed: head initialisation and batch order.
    """

    backbone: str = "compact"
    backbone_model_id: str = ""
    input_size: tuple[int, int] = (80, 60)
    feature_dim: int = 0
    hidden_dims: tuple[int, ...] = (256,)
    output_dim: int = 128
    margin: float = 1.0
    weight_decay: float = 0.0
    weight_decays: tuple[float, ...] = (0.0, 1e-4, 1e-3, 1e-2)
    lr: float = 1e-3
    batch_size: int = 128
    epochs: int = 40
    patience: int = 5
    positive_fraction: float | None = None
    match_categories: bool = True
    category_column: str = "subCategory"
    pairs: str = ""
    split_by: str = "item"
    split_seed: int = 0
    seed: int = 0

    # compat.json files written before the names were those of TrainConfig
    RENAMED: ClassVar[dict[str, str]] = {"learning_rate": "lr", "max_epochs": "epochs"}

    def __post_init__(self) -> None:
        validate([
            each("input_size", self.input_size, 1, count=2, note="H, W in pixels"),
            at_least("feature_dim", self.feature_dim, 0, note="0: not known yet"),
            each("hidden_dims", self.hidden_dims, 1, empty_ok=True, note="none: one linear layer"),
            at_least("output_dim", self.output_dim, 1),
            above("margin", self.margin, 0, note="003 uses m = 1"),
            at_least("weight_decay", self.weight_decay, 0, integer=False),
            each("weight_decays", self.weight_decays, 0, integer=False),
            above("lr", self.lr, 0),
            at_least("batch_size", self.batch_size, 2),
            at_least("epochs", self.epochs, 1),
            at_least("patience", self.patience, 1),
            in_range("positive_fraction", self.positive_fraction, 0, 1, "()", none_ok=True,
                     note="None: the data's own ratio"),
        ], "compatibility")


@dataclasses.dataclass
class Cutoff:
    """The decision boundary: pairs at ``distance <= value`` go well together.

    ``method`` says how it was chosen (``max TPR-FPR on validation`` by default); ``tpr``/``fpr`` are its
    rates on the pairs it was chosen on.
    """

    value: float
    method: str = "max TPR-FPR on validation"
    tpr: float | None = None
    fpr: float | None = None


class CompatibilityHead(nn.Module):
    """Standardise backbone features, then an MLP into the style space.

    Input (B, F) float features; output (B, output_dim) raw style vectors (not normalised: the
    contrastive margin is in Euclidean units of this space).
    """

    def __init__(self, feature_dim: int, hidden_dims: Sequence[int] = (256,), output_dim: int = 128):
        super().__init__()
        validate([at_least("feature_dim", feature_dim, 1), each("hidden_dims", hidden_dims, 1, empty_ok=True),
                  at_least("output_dim", output_dim, 1)])
        self.register_buffer("feature_mean", torch.zeros(feature_dim))
        self.register_buffer("feature_std", torch.ones(feature_dim))
        layers: list[nn.Module] = []
        width = feature_dim
        for hidden in hidden_dims:
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        layers.append(nn.Linear(width, output_dim))
        self.mlp = nn.Sequential(*layers)

    def set_standardisation(self, features: np.ndarray | torch.Tensor) -> None:
        """Use the mean and spread of ``features`` (N, F) (the training items') from now on."""
        features = torch.as_tensor(np.asarray(features), dtype=torch.float32)
        std = features.std(0) if len(features) > 1 else torch.ones(features.shape[1])
        # A feature that never varies gets unit spread rather than a division by ~0.
        self.feature_mean.copy_(features.mean(0))
        self.feature_std.copy_(torch.where(std > 1e-6, std, torch.ones_like(std)))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.mlp((features - self.feature_mean) / self.feature_std)


class CompatibilityModel(nn.Module):
    """A frozen backbone plus a :class:`CompatibilityHead`: pixels of two items -> their style distance.

    ``backbone`` is a :class:`stylespace.models.EmbeddingModel`; its features are its embeddings.
    """

    def __init__(self, backbone: nn.Module, head: CompatibilityHead, config: CompatibilityConfig):
        super().__init__()
        self.backbone = backbone.eval()
        for parameter in self.backbone.parameters():
            parameter.requires_grad_(False)
        self.head = head
        self.config = config

    @torch.no_grad()
    def style_vectors(self, pixels: np.ndarray) -> torch.Tensor:
        """Uint8 images (B, H, W, 3) at ``config.input_size`` -> (B, output_dim) style vectors.

        The backbone features come from :func:`stylespace.embeddings.embed_images`, the function that
        computed the training features, so a served pair sees exactly what training saw.
        """
        from stylespace.embeddings import embed_images

        pixels = np.asarray(pixels)
        if pixels.ndim != 4 or pixels.shape[-1] != 3 or tuple(pixels.shape[1:3]) != tuple(self.config.input_size):
            raise StylespaceError(f"expected uint8 images of shape (B, {self.config.input_size[0]}, "
                                  f"{self.config.input_size[1]}, 3), got {tuple(pixels.shape)}")
        device = next(self.head.parameters()).device
        features = embed_images(self.backbone, pixels, batch_size=max(len(pixels), 1), device=device)
        return self.head(torch.as_tensor(features, device=device))

    @torch.no_grad()
    def distance(self, pixels_a: np.ndarray, pixels_b: np.ndarray) -> np.ndarray:
        """(B,) Euclidean distances in the style space between images ``pixels_a[i]`` and ``pixels_b[i]``."""
        self.eval()
        return torch.linalg.vector_norm(self.style_vectors(pixels_a) - self.style_vectors(pixels_b), dim=1).cpu().numpy()
