"""Pre-trained backbone weights from a local file the user names (never downloaded)."""
from __future__ import annotations

import os
from pathlib import Path

import torch

from stylespace.models.backbones import Backbone
from stylespace.utils import StylespaceError

# Wrappers some training scripts put around a state dict.
_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict")


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a ``.safetensors`` file or a ``torch.save``d state dict (read with ``weights_only``)."""
    path = Path(path)
    if not path.is_file():
        raise StylespaceError(f"weights file {path} not found; expected a local torchvision state dict "
                              "(.pth/.pt) or .safetensors file (weights are never downloaded)")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any reader failure means "not a weights file"
        raise StylespaceError(f"weights file {path} could not be read ({type(exc).__name__}: {exc}); expected a "
                              "torchvision state dict saved with torch.save, or a .safetensors file") from None
    for key in _WRAPPER_KEYS:
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise StylespaceError(f"weights file {path} does not hold a state dict (name -> tensor)")
    # DataParallel checkpoints prefix every name with "module.".
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_backbone_weights(backbone: Backbone, path: str | os.PathLike, backbone_name: str) -> None:
    """Load ``path`` into ``backbone``; every kept parameter must be present with the right shape.

    Keys of the ImageNet classifier (``backbone.dropped_prefixes``) are ignored.
    """
    state = read_state_dict(path)
    state = {k: v for k, v in state.items() if not k.startswith(backbone.dropped_prefixes)}
    expected = backbone.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = sorted(k for k in set(expected) & set(state) if tuple(expected[k].shape) != tuple(state[k].shape))
    if missing or unexpected or wrong_shape:
        details = []
        if missing:
            details.append(f"{len(missing)} missing (e.g. {missing[:3]})")
        if unexpected:
            details.append(f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})")
        if wrong_shape:
            k = wrong_shape[0]
            details.append(f"{len(wrong_shape)} with the wrong shape (e.g. {k}: file {tuple(state[k].shape)}, "
                           f"expected {tuple(expected[k].shape)})")
        raise StylespaceError(f"weights file {path} does not fit backbone {backbone_name!r}: " + "; ".join(details)
                              + f". Expected torchvision's {backbone_name} state dict ({len(expected)} tensors)")
    backbone.load_state_dict({k: state[k] for k in expected}, strict=True)
