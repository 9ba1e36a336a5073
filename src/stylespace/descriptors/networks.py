"""CNN features behind the same ``embed`` as the hand-made descriptors.

- :class:`PretrainedFeatures` (seed 001): a torchvision network with its classifier removed and global
  average pooling over its last feature map, from a local weights file (never downloaded).
  ResNet-18/50, VGG16 and Inception v3 are built by :mod:`stylespace.models` (the same backbones
  training uses); any other torchvision CNN is built by torchvision and stripped of its classifier here.
- :class:`ModelFeatures`: the embeddings of a trained ``stylespace`` model (a run folder).

Both resize the catalog's images to the network's input size, run in batches on CUDA when there is
one, and return L2-normalised float32 vectors.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from stylespace.descriptors.base import batches, check_pixels
from stylespace.models.inputs import as_model_input
from stylespace.utils import StylespaceError, at_least, each, pick_device, validate

# Classifier attributes of torchvision's CNNs, in the order they are looked for.
CLASSIFIER_ATTRIBUTES = ("fc", "classifier", "head")


@dataclasses.dataclass
class PretrainedConfig:
    """architecture: a torchvision classification CNN name (``resnet50``, ``vgg16``, ``densenet121``, ...).
    weights: local state dict file of that network (.pth/.pt from torchvision, or .safetensors).
    input_size: (H, W) images are resized to; ImageNet networks see objects at about 224 px.
    batch_size: images per forward pass. device: ``auto`` (CUDA when present), ``cpu`` or ``cuda``.
    """

    architecture: str = "resnet50"
    weights: str = ""
    input_size: tuple[int, int] = (224, 168)
    batch_size: int = 64
    device: str = "auto"

    def __post_init__(self) -> None:
        validate([
            each("input_size", self.input_size, 32, count=2, note="H, W in pixels"),
            at_least("batch_size", self.batch_size, 1),
            (bool(self.weights), f"{self.architecture}: no weights file given; pass the path of a local torchvision "
                                 f"state dict (e.g. --weights {self.architecture}=PATH); nothing is downloaded"),
        ], "pretrained")
        self.input_size = tuple(int(v) for v in self.input_size)


class PretrainedFeatures:
    """Globally average-pooled last feature map of an ImageNet CNN: (N, H, W, 3) uint8 -> (N, C) float32.

    Raises StylespaceError when the architecture is unknown, the weights file is missing or unreadable,
    or its tensors do not fit the architecture (names or shapes).
    """

    def __init__(self, config: PretrainedConfig):
        self.config = config
        self.name = config.architecture
        self.device = pick_device(config.device)
        self.network, self._forward = _build_pretrained(config)
        self.network.to(self.device).eval()
        with torch.inference_mode():
            probe = torch.zeros(1, 3, *config.input_size, device=self.device)
            self._dim = int(self._forward(probe).shape[1])

    @property
    def dim(self) -> int:
        return self._dim

    def embed(self, pixels: np.ndarray, progress: bool = False) -> np.ndarray:
        return run_network(self._forward, pixels, self.config.input_size, self.config.batch_size, self.device,
                           progress, f"{self.name}: embedding")


def _build_pretrained(config: PretrainedConfig) -> tuple[nn.Module, Callable[[torch.Tensor], torch.Tensor]]:
    """(network, forward): forward maps (B, 3, H, W) in [0, 1] to (B, C) pooled features."""
    from stylespace.models import BACKBONES, EmbeddingModel, ModelConfig

    name = config.architecture
    if name in BACKBONES:
        # The training package's backbones: its features() is the global average pool of the last stage.
        model = EmbeddingModel(ModelConfig(backbone=name, weights=str(config.weights), input_size=config.input_size))
        return model, model.features
    network = _torchvision_trunk(name)
    from stylespace.models import load_backbone_weights

    try:
        load_backbone_weights(network, config.weights, name)
    except StylespaceError:
        raise
    except Exception as exc:  # a network's own loading hooks (e.g. MNASNet's version check) refusing the file
        raise StylespaceError(f"weights file {config.weights} could not be loaded into {name}: "
                              f"{type(exc).__name__}: {exc}") from None
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)

    def forward(x: torch.Tensor) -> torch.Tensor:
        return network((x - mean.to(x.device)) / std.to(x.device)).flatten(1)

    return network, forward


class GlobalAveragePool(nn.Module):
    """Stands in for a classifier: averages a (B, C, H, W) feature map to (B, C, 1, 1), passes pooled
    (B, C) features through. Some classifiers hold the pooling (SqueezeNet, ConvNeXt, MaxViT), others
    receive pooled features (ResNet, DenseNet, MobileNet), so one replacement fits both."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3), keepdim=True) if x.ndim == 4 else x


def _torchvision_trunk(name: str) -> nn.Module:
    """torchvision's ``name`` (random weights) with its classifier replaced by global average pooling.

    Its ``dropped_prefixes`` names the classifier's parameters, which a full checkpoint holds and
    :func:`stylespace.models.load_backbone_weights` then ignores.
    """
    import torchvision

    known = torchvision.models.list_models(module=torchvision.models)
    if name not in known:
        raise StylespaceError(f"unknown architecture {name!r}; expected a torchvision classification network: "
                              f"{', '.join(known)}")
    # Pretrained GoogLeNet expects its inputs re-normalised as in the original release.
    # (Its random initialisation is skipped: the weights file replaces it, and it is slow.)
    kwargs = {"transform_input": True, "init_weights": False} if name == "googlenet" else {}
    network = torchvision.models.get_model(name, weights=None, **kwargs)
    if hasattr(network, "heads"):
        raise StylespaceError(f"{name} is a vision transformer: it has no feature map to average; pick a CNN")
    attribute = next((a for a in CLASSIFIER_ATTRIBUTES if isinstance(getattr(network, a, None), nn.Module)), None)
    if attribute is None:
        raise StylespaceError(f"{name}: no classifier layer ({', '.join(CLASSIFIER_ATTRIBUTES)}) to remove")
    setattr(network, attribute, GlobalAveragePool())
    # VGG and AlexNet pool to 7x7 / 6x6 for their dense classifier; global average pooling is 1x1.
    if isinstance(getattr(network, "avgpool", None), nn.AdaptiveAvgPool2d):
        network.avgpool = nn.AdaptiveAvgPool2d(1)
    network.dropped_prefixes = (f"{attribute}.",)
    return network


class ModelFeatures:
    """The L2-normalised embeddings of a trained model (``stylespace.models.EmbeddingModel``).

    Images must be at the model's ``input_size`` (``self.input_size``); the embedding loop is
    :func:`stylespace.embeddings.embed_images`.

    Args:
        model: the model, or a run folder (``model.safetensors`` + ``model.json``, and ``train.json``
            naming the training objective) to load it from.
        name: for tables (default the folder name).
    """

    def __init__(self, model, name: str | None = None, batch_size: int = 256, device: str = "auto"):
        from stylespace.models import load_model, model_id

        self.objective = ""
        if isinstance(model, (str, os.PathLike)):
            from stylespace.models import resolve_model_dir

            folder = resolve_model_dir(model)  # a folder, or a shipped model's name (default)
            if not (folder / "model.json").is_file():
                raise StylespaceError(f"{folder}: no model.json here; expected a run or model folder written by "
                                      "`stylespace train`")
            self.name = name or folder.name
            self.objective = training_objective(folder)
            model = load_model(folder)
        else:
            self.name = name or model.config.backbone
        validate([at_least("batch_size", batch_size, 1)])
        self.model, self.batch_size, self.device = model, batch_size, pick_device(device)
        self.input_size = tuple(model.config.input_size)
        self.model_id = model_id(model)
        self._dim = int(model.output_dim)

    @property
    def dim(self) -> int:
        return self._dim

    def embed(self, pixels: np.ndarray, progress: bool = False) -> np.ndarray:
        from stylespace.embeddings import embed_images

        return embed_images(self.model, check_pixels(pixels), batch_size=self.batch_size, device=self.device,
                            progress=progress)


def training_objective(folder: Path) -> str:
    """The objective a run folder's ``train.json`` names (``ce``, ``triplet``, ``ce+ms:0.5``...), or ''."""
    import json

    from stylespace.training.trainer import TRAIN_CONFIG_FILE

    try:
        return str(json.loads((folder / TRAIN_CONFIG_FILE).read_text()).get("objective", ""))
    except (OSError, ValueError, AttributeError):
        return ""  # a bare model folder: the objective is simply not known


def run_network(forward: Callable[[torch.Tensor], torch.Tensor], pixels: np.ndarray, input_size: tuple[int, int],
                batch_size: int, device: torch.device, progress: bool, description: str) -> np.ndarray:
    """uint8 (N, H, W, 3) -> float32 (N, D) L2-normalised ``forward`` outputs, resized to ``input_size``."""
    pixels = check_pixels(pixels)
    outputs = []
    with torch.inference_mode():
        for start, stop in batches(len(pixels), batch_size, progress, description):
            x = torch.from_numpy(np.ascontiguousarray(pixels[start:stop])).to(device)
            x = as_model_input(x)
            if tuple(x.shape[2:]) != tuple(input_size):
                x = F.interpolate(x, size=tuple(input_size), mode="bilinear", align_corners=False, antialias=True)
            outputs.append(F.normalize(forward(x).float(), dim=1).cpu())
    return torch.cat(outputs).numpy() if outputs else np.zeros((0, 0), dtype=np.float32)
