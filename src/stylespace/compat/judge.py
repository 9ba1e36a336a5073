"""Saving a compatibility model and asking it "do these two go well together?".

A compatibility folder holds everything needed to answer, written at once (atomically):

    compat.json        CompatibilityConfig: how it was made
    head.safetensors   the learned head (and its feature standardisation)
    cutoff.json        Cutoff: distance <= value means "goes well together"
    evaluation.json    AUC per weight decay, untrained AUC, test cutoff table (FPR 5/10/20 %), ROC
    backbone/          the frozen backbone (stylespace.models folder), so the folder stands alone
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from stylespace.compat.model import CompatibilityConfig, CompatibilityHead, CompatibilityModel, Cutoff
from stylespace.data import load_rgb
from stylespace.utils import StylespaceError, atomic_dir, load_dataclass, pick_device, save_dataclass, write_json

MATCH = "Nice, this looks good together!"
NO_MATCH = "Sorry, these styles do not match."
FILES = ("compat.json", "head.safetensors", "cutoff.json", "backbone")


@dataclasses.dataclass
class Verdict:
    """The answer for one pair: their style distance, whether it is within the cutoff, and 003's sentence."""

    distance: float
    compatible: bool
    cutoff: float
    message: str

    @classmethod
    def from_distance(cls, distance: float, cutoff: float) -> "Verdict":
        compatible = bool(distance <= cutoff)
        return cls(float(distance), compatible, float(cutoff), MATCH if compatible else NO_MATCH)


def save_compatibility(folder: str | os.PathLike, model: CompatibilityModel, cutoff: Cutoff,
                       evaluation: dict | None = None) -> Path:
    """Write ``model`` (backbone included), its cutoff and its evaluation into ``folder``, atomically:
    a crash leaves the previous folder (if any) as it was."""
    from stylespace.models import save_model

    folder = Path(folder)
    with atomic_dir(folder) as tmp:
        save_model(model.backbone, tmp / "backbone")
        save_file({k: v.detach().cpu().contiguous() for k, v in model.head.state_dict().items()},
                  str(tmp / "head.safetensors"))
        save_dataclass(model.config, tmp / "compat.json")
        save_dataclass(cutoff, tmp / "cutoff.json")
        if evaluation is not None:
            write_json(tmp / "evaluation.json", evaluation)
    return folder


def load_compatibility(folder: str | os.PathLike, device: str = "auto") -> tuple[CompatibilityModel, Cutoff]:
    """Read a folder written by :func:`save_compatibility` (or the shipped one, by the name ``compat``)."""
    from stylespace.models.shipped import resolve_model_dir

    folder = resolve_model_dir(folder)
    missing = [name for name in FILES if not (folder / name).exists()]
    if missing:
        raise StylespaceError(f"{folder}: not a compatibility model folder (missing {', '.join(missing)}); "
                              "make one with `stylespace compat-train`")
    from stylespace.models import load_model

    config = load_dataclass(CompatibilityConfig, folder / "compat.json")
    cutoff = load_dataclass(Cutoff, folder / "cutoff.json")
    head = CompatibilityHead(config.feature_dim, config.hidden_dims, config.output_dim)
    try:
        head.load_state_dict(load_file(str(folder / "head.safetensors")))
    except (RuntimeError, OSError) as exc:
        raise StylespaceError(f"{folder / 'head.safetensors'}: does not fit compat.json ({exc})") from None
    target = pick_device(device)
    model = CompatibilityModel(load_model(folder / "backbone"), head, config).to(target)
    return model.eval(), cutoff


class CompatibilityJudge:
    """Answers "do these two items go well together?" with a loaded compatibility model.

    >>> judge = CompatibilityJudge.load("runs/compat")
    >>> judge.judge(pixels_a, pixels_b)  # (H, W, 3) uint8 arrays, PIL images, image bytes or paths
    Verdict(distance=0.57, compatible=True, cutoff=0.82, message='Nice, this looks good together!')
    """

    def __init__(self, model: CompatibilityModel, cutoff: Cutoff):
        self.model = model.eval()
        self.cutoff = cutoff

    @classmethod
    def load(cls, folder: str | os.PathLike, device: str = "auto") -> "CompatibilityJudge":
        return cls(*load_compatibility(folder, device))

    @property
    def input_size(self) -> tuple[int, int]:
        return tuple(self.model.config.input_size)

    def pixels(self, image) -> np.ndarray:
        """(H, W, 3) uint8 at the model's input size: arrays of that size as they are, anything else
        (another size, a PIL image, bytes, a path) through the one decoder training used."""
        if isinstance(image, np.ndarray):
            if image.dtype == np.uint8 and image.shape == (*self.input_size, 3):
                return image
            if image.dtype != np.uint8 or image.ndim not in (2, 3):
                raise StylespaceError(f"expected an (H, W, 3) uint8 image array, got {image.dtype} {image.shape}")
            image = Image.fromarray(image)
        return load_rgb(image, size=self.input_size)

    def distance(self, image_a, image_b) -> float:
        """The style-space distance between two images (small = goes well together)."""
        pixels = np.stack([self.pixels(image_a), self.pixels(image_b)])
        return float(self.model.distance(pixels[:1], pixels[1:])[0])

    def judge(self, image_a, image_b) -> Verdict:
        """The verdict for one pair, with the distance and the cutoff it was compared with."""
        return Verdict.from_distance(self.distance(image_a, image_b), self.cutoff.value)
