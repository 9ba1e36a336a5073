"""Data augmentation on uint8 image batches, in torch, on the training device.

Training images are canonical views (``stylespace.data.images``): the product trimmed and centred on
a white backdrop. The augmentation makes the other views a shop meets out of them, in this order:

1. **photometric**: brightness / contrast / saturation jitter of the product; with ``padding="backdrop"``
   the backdrop (white pixels connected to the border) is then painted one colour: white as in a
   canonical view of a darker photo, or, with probability ``background``, a grey or a colour, as in a
   studio shot whose backdrop was not recognised;
2. **geometric**: one random affine warp per image through a single ``grid_sample`` call: zoom in
   (a crop) or out, an aspect-ratio change (a stretched upload), a rotation, a shift and a horizontal
   flip. Uncovered areas take the backdrop colour (``padding="backdrop"``) or extend the edges
   (``padding="border"``, the recipe of models trained before the canonical view);
3. **greyscale** with probability ``greyscale``, a **Gaussian blur** with probability ``blur``, and a
   **JPEG** round trip at quality 20-70 with probability ``jpeg`` (a CDN's or a messenger's compression);
4. **random erasing** (Zhong et al. 2017) with probability ``erase``: one rectangle of 2-25 % of the image
   replaced by noise, so no single part of an item (a collar, a heel) is enough to tell its class.

Every new family defaults to off, so a ``train.json`` written before them reproduces its run.
"""
from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F

from stylespace.data.images import border_connected
from stylespace.models.inputs import as_model_input
from stylespace.utils import in_range, one_of, validate

PADDINGS = ("border", "backdrop")


@dataclasses.dataclass
class AugmentConfig:
    """Augmentation strengths at strength 1 (rare classes may get more, see ``samplers.RareClassAugmentSampler``).

    Attributes:
        scale: zoom range: the sampled area's side is scaled by a factor in [1 - scale, 1 + scale]
            (0.18: crops down to 67 % of the area, and zoom-outs that pad by 18 %).
        translate: shift range as a fraction of the image size, in each direction.
        flip: probability of a horizontal flip (not scaled by strength).
        colour: brightness / contrast / saturation factors are drawn from [1 - colour, 1 + colour].
        aspect: aspect-ratio change: width / height multiplied by a factor in [1 / (1 + aspect), 1 + aspect].
        rotate: rotation range in degrees, each way.
        padding: what fills uncovered areas: ``border`` (edges extended) or ``backdrop`` (the backdrop colour;
            also keeps the photometric jitter off the backdrop).
        background: probability that the backdrop becomes a grey or a colour (``padding="backdrop"`` only).
        greyscale: probability of a greyscale image. blur: probability of a Gaussian blur (sigma 0.4-1.2 px).
        jpeg: probability of a JPEG round trip at a quality in [20, 70].
        erase: probability of erasing one rectangle (2-25 % of the area, aspect 0.3-3.3) with uniform noise.
    """

    scale: float = 0.15
    translate: float = 0.08
    flip: float = 0.5
    colour: float = 0.1
    aspect: float = 0.0
    rotate: float = 0.0
    padding: str = "border"
    background: float = 0.0
    greyscale: float = 0.0
    blur: float = 0.0
    jpeg: float = 0.0
    erase: float = 0.0

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> "AugmentConfig":
        validate([
            *(in_range(name, getattr(self, name), 0, 1, "[)") for name in ("scale", "translate", "colour", "aspect")),
            *(in_range(name, getattr(self, name), 0, 1, note="a probability")
              for name in ("flip", "background", "greyscale", "blur", "jpeg", "erase")),
            in_range("rotate", self.rotate, 0, 45, note="degrees"),
            one_of("padding", self.padding, PADDINGS),
            (self.background == 0 or self.padding == "backdrop",
             "background needs padding='backdrop' (it paints the backdrop)"),
        ], "augmentation")
        return self


def backdrop_mask(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) in [0, 1] -> (B, 1, H, W) bool: the white pixels connected to the image border, the
    backdrop of a canonical view (one connected-component labelling of the whole batch, in-plane only)."""
    white = (x.amin(dim=1) >= 0.97).cpu().numpy()
    return torch.from_numpy(border_connected(white)).to(x.device).unsqueeze(1)


def _luma(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) -> (B, 1, H, W) grey (ITU-R 601 weights)."""
    return (x * torch.tensor([0.299, 0.587, 0.114], device=x.device).view(1, 3, 1, 1)).sum(1, keepdim=True)


class BatchAugment:
    """Callable: (B, H, W, 3) uint8 tensor [+ per-image strength (B,)] -> (B, 3, H, W) float in [0, 1].

    ``strength`` multiplies the zoom, shift and colour ranges per image (1 = the configured ranges,
    0 = no change); strengths above 1 are capped so that the ranges stay below 1.
    """

    def __init__(self, config: AugmentConfig):
        self.config = config.validate()

    def __call__(self, batch: torch.Tensor, strength: torch.Tensor | None = None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        x = as_model_input(batch)
        n, device = x.shape[0], x.device
        if strength is None:
            strength = torch.ones(n, device=device)
        strength = strength.to(device=device, dtype=torch.float32).view(n)
        cfg = self.config

        def rand(*shape: int) -> torch.Tensor:
            return torch.rand(*shape, generator=generator, device="cpu").to(device)

        def uniform(width: torch.Tensor | float) -> torch.Tensor:
            return (2 * rand(n) - 1) * width

        backdrop = fill = None
        if cfg.padding == "backdrop":
            backdrop = backdrop_mask(x)
            fill = torch.ones(n, 3, device=device)
            repaint = rand(n) < cfg.background
            grey = 0.55 + 0.4 * rand(n, 1)
            colour = 0.35 + 0.65 * rand(n, 3)
            pick_colour = rand(n, 1) < 0.4
            fill = torch.where(repaint.view(n, 1), torch.where(pick_colour, colour, grey.expand(n, 3)), fill)
        if cfg.colour > 0:
            width = (cfg.colour * strength).clamp(max=0.5)
            brightness, contrast, saturation = (1 + uniform(width) for _ in range(3))
            x = x * brightness.view(n, 1, 1, 1)
            mean = x.mean(dim=(1, 2, 3), keepdim=True)
            x = (x - mean) * contrast.view(n, 1, 1, 1) + mean
            grey_x = _luma(x)
            x = (x - grey_x) * saturation.view(n, 1, 1, 1) + grey_x
            x = x.clamp_(0.0, 1.0)
        if backdrop is not None:
            x = torch.where(backdrop, fill.view(n, 3, 1, 1), x)

        x = self._warp(x, strength, fill, uniform, rand)

        if cfg.greyscale > 0:
            pick = (rand(n) < cfg.greyscale).view(n, 1, 1, 1)
            x = torch.where(pick, _luma(x).expand_as(x), x)
        if cfg.blur > 0:
            pick = torch.nonzero(rand(n) < cfg.blur).flatten()
            if len(pick):
                sigma = float(0.4 + 0.8 * rand(1))
                from torchvision.transforms.v2 import functional as TF

                x[pick] = TF.gaussian_blur(x[pick], kernel_size=[5, 5], sigma=[sigma, sigma])
        if cfg.jpeg > 0:
            pick = torch.nonzero(rand(n) < cfg.jpeg).flatten()
            if len(pick):
                x[pick] = _jpeg_round_trip(x[pick], quality=int(20 + 50 * float(rand(1))))
        if cfg.erase > 0:
            x = self._erase(x, rand)
        return x

    def _erase(self, x: torch.Tensor, rand) -> torch.Tensor:
        """Random erasing: for a share ``erase`` of the images, one rectangle filled with uniform noise."""
        n, _, h, w = x.shape
        area = (0.02 + 0.23 * rand(n)) * h * w
        aspect = torch.exp((2 * rand(n) - 1) * math.log(3.3))
        eh = (area * aspect).sqrt().clamp(1, h)
        ew = (area / aspect).sqrt().clamp(1, w)
        top, left = rand(n) * (h - eh), rand(n) * (w - ew)
        rows = torch.arange(h, device=x.device).view(1, h, 1)
        cols = torch.arange(w, device=x.device).view(1, 1, w)
        inside = ((rows >= top.view(n, 1, 1)) & (rows < (top + eh).view(n, 1, 1))
                  & (cols >= left.view(n, 1, 1)) & (cols < (left + ew).view(n, 1, 1)))
        mask = (inside & (rand(n) < self.config.erase).view(n, 1, 1)).unsqueeze(1)
        return torch.where(mask, rand(n, 1, h, w).expand_as(x), x)

    def _warp(self, x: torch.Tensor, strength: torch.Tensor, fill: torch.Tensor | None, uniform, rand) -> torch.Tensor:
        """The geometric step: one affine warp per image (zoom, aspect, rotation, shift, flip)."""
        cfg = self.config
        n, _, h, w = x.shape
        device = x.device
        zoom = 1.0 + uniform((cfg.scale * strength).clamp(max=0.5))
        shift_x, shift_y = uniform(cfg.translate * strength * 2), uniform(cfg.translate * strength * 2)
        sign = torch.where(rand(n) < cfg.flip, -1.0, 1.0)
        aspect = torch.exp(uniform(math.log1p(cfg.aspect))) if cfg.aspect > 0 else torch.ones(n, device=device)
        angle = uniform(math.radians(cfg.rotate)) if cfg.rotate > 0 else torch.zeros(n, device=device)
        # affine_grid maps output coordinates in [-1, 1] to input ones: a zoom factor above 1 samples a
        # larger area (zoom out), below 1 a smaller one (zoom in); the x scale's sign flips the image.
        # The rotation is one in pixels, hence the h / w factors between the normalised axes.
        zx, zy = zoom * aspect.sqrt() * sign, zoom / aspect.sqrt()
        cos, sin = torch.cos(angle), torch.sin(angle)
        theta = torch.zeros(n, 2, 3, device=device)
        theta[:, 0, 0] = cos * zx
        theta[:, 0, 1] = -sin * zy * h / w
        theta[:, 1, 0] = sin * zx * w / h
        theta[:, 1, 1] = cos * zy
        theta[:, 0, 2] = shift_x
        theta[:, 1, 2] = shift_y
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        if fill is None:
            return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
        # Uncovered areas take the backdrop colour: warp the difference from it, which is 0 outside.
        offset = fill.view(n, 3, 1, 1)
        return (F.grid_sample(x - offset, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
                + offset).clamp_(0.0, 1.0)


def _jpeg_round_trip(x: torch.Tensor, quality: int) -> torch.Tensor:
    """(K, 3, H, W) float in [0, 1] -> the same images after JPEG encoding at ``quality`` and decoding."""
    from torchvision.io import decode_jpeg, encode_jpeg

    device = x.device
    images = list((x * 255).round_().to(torch.uint8).cpu())
    decoded = decode_jpeg(encode_jpeg(images, quality=quality))
    return torch.stack(decoded).to(device).float().div_(255.0)
