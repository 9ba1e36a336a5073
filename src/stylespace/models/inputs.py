"""The one conversion from decoded pixels to what a model takes: uint8 (B, H, W, 3) -> float (B, 3, H, W) in [0, 1].

Every path that feeds images to a network (training, embedding, classifying, the pre-trained extractors)
converts here, so none of them can disagree on channel order or scale.
"""
from __future__ import annotations

import torch


def as_model_input(pixels: torch.Tensor) -> torch.Tensor:
    """(B, H, W, 3) uint8 in [0, 255] -> (B, 3, H, W) float32 in [0, 1] on the same device."""
    return pixels.permute(0, 3, 1, 2).float().div_(255.0)
