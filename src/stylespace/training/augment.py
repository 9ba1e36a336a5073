"""Data augmentation on uint8 image batches, in torch, on the training device.

One random affine warp per image (zoom in/out, translation, horizontal flip) through a single
``grid_sample`` call, then a small brightness / contrast / saturation jitter. Edges are extended
(``padding_mode="border"``): product photos sit on a plain background, so a zoomed-out or shifted
image looks like another shot of the same product rather than one with black bars.
"""
from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from stylespace.utils import StylespaceError


@dataclasses.dataclass
class AugmentConfig:
    """Augmentation strengths at strength 1 (rare classes may get more, see ``samplers.RareClassAugmentSampler``).

    Attributes:
        scale: zoom range: the sampled area's side is scaled by a factor in [1 - scale, 1 + scale].
        translate: shift range as a fraction of the image size, in each direction.
        flip: probability of a horizontal flip (not scaled by strength).
        colour: brightness / contrast / saturation factors are drawn from [1 - colour, 1 + colour].
    """

    scale: float = 0.15
    translate: float = 0.08
    flip: float = 0.5
    colour: float = 0.1

    def validate(self) -> "AugmentConfig":
        for name in ("scale", "translate", "colour"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise StylespaceError(f"augmentation {name} must be in [0, 1), got {value}")
        if not 0.0 <= self.flip <= 1.0:
            raise StylespaceError(f"augmentation flip must be a probability in [0, 1], got {self.flip}")
        return self


def to_float(batch: torch.Tensor) -> torch.Tensor:
    """(B, H, W, 3) uint8 -> (B, 3, H, W) float in [0, 1]."""
    return batch.permute(0, 3, 1, 2).float().div_(255.0)


class BatchAugment:
    """Callable: (B, H, W, 3) uint8 tensor [+ per-image strength (B,)] -> (B, 3, H, W) float in [0, 1].

    ``strength`` multiplies the zoom, shift and colour ranges per image (1 = the configured ranges,
    0 = no change); strengths above 1 are capped so that the ranges stay below 1.
    """

    def __init__(self, config: AugmentConfig):
        self.config = config.validate()

    def __call__(self, batch: torch.Tensor, strength: torch.Tensor | None = None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        x = to_float(batch)
        n, device = x.shape[0], x.device
        if strength is None:
            strength = torch.ones(n, device=device)
        strength = strength.to(device=device, dtype=torch.float32).view(n)

        def uniform(width: torch.Tensor) -> torch.Tensor:
            r = torch.rand(n, generator=generator, device="cpu").to(device)
            return (2 * r - 1) * width

        cfg = self.config
        zoom = 1.0 + uniform((cfg.scale * strength).clamp(max=0.5))
        shift_x, shift_y = uniform(cfg.translate * strength * 2), uniform(cfg.translate * strength * 2)
        flip = torch.rand(n, generator=generator).to(device) < cfg.flip
        sign = torch.where(flip, -1.0, 1.0).to(device)
        # affine_grid maps output coordinates in [-1, 1] to input ones: a zoom factor above 1 samples a
        # larger area (zoom out), below 1 a smaller one (zoom in); the x scale's sign flips the image.
        theta = torch.zeros(n, 2, 3, device=device)
        theta[:, 0, 0] = zoom * sign
        theta[:, 1, 1] = zoom
        theta[:, 0, 2] = shift_x
        theta[:, 1, 2] = shift_y
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
        if cfg.colour > 0:
            width = (cfg.colour * strength).clamp(max=0.5)
            brightness, contrast, saturation = (1 + uniform(width) for _ in range(3))
            x = x * brightness.view(n, 1, 1, 1)
            mean = x.mean(dim=(1, 2, 3), keepdim=True)
            x = (x - mean) * contrast.view(n, 1, 1, 1) + mean
            grey = (x * torch.tensor([0.299, 0.587, 0.114], device=device).view(1, 3, 1, 1)).sum(1, keepdim=True)
            x = (x - grey) * saturation.view(n, 1, 1, 1) + grey
            x = x.clamp_(0.0, 1.0)
        return x
