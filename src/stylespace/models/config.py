"""The model's configuration: everything needed to rebuild an :class:`EmbeddingModel` exactly."""
from __future__ import annotations

import dataclasses

from stylespace.utils import StylespaceError

BACKBONES = ("compact", "lenet", "resnet18", "resnet50", "vgg16", "inception_v3")
POOLINGS = ("avg", "gem", "avgmax")
CLASSIFIERS = ("linear", "cosine")
EMBED_LAYERS = ("head", "features")


@dataclasses.dataclass
class ModelConfig:
    """How to build an embedding model; saved as ``model.json`` beside the weights.

    Attributes:
        backbone: one of ``compact`` (default, from-scratch ResNet-style CNN for small photos), ``lenet``,
            ``resnet18``, ``resnet50``, ``vgg16``, ``inception_v3``.
        embedding_dim: D, the size of the embedding the head outputs.
        input_size: (H, W) in pixels of the images the model is trained on (and fed at query time).
        classes: class names for the optional classifier on top of the embedding; empty = no classifier.
        weights: a local file of pre-trained backbone weights (torchvision state dict, ``.pth``/``.pt`` or
            ``.safetensors``); empty = random initialisation. Never downloaded.
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
        embed_layer: what ``embed()`` returns: ``head`` (the D-dim embedding the objective trained) or
            ``features`` (the pooled backbone features under the head, ``feature_dim`` wide). A classifier
            trained on 39 classes shapes its head for those classes; the features under it keep more of
            what tells unseen classes apart (on the shared catalog: scenario 3 1-NN 77.5 % -> 82.4 %).
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

    def validate(self) -> "ModelConfig":
        """Check every field; raises StylespaceError saying what was expected."""
        if self.backbone not in BACKBONES:
            raise StylespaceError(f"model backbone {self.backbone!r} is unknown; expected one of {', '.join(BACKBONES)}")
        if not isinstance(self.embedding_dim, int) or self.embedding_dim < 2:
            raise StylespaceError(f"embedding_dim must be an integer >= 2, got {self.embedding_dim!r}")
        size = tuple(self.input_size)
        if len(size) != 2 or any(not isinstance(v, int) or v < 8 for v in size):
            raise StylespaceError(f"input_size must be (H, W) with both >= 8 pixels, got {self.input_size!r}")
        self.input_size = (int(size[0]), int(size[1]))
        if len(set(self.classes)) != len(self.classes):
            raise StylespaceError("classes must be unique names")
        if self.pooling not in POOLINGS:
            raise StylespaceError(f"pooling {self.pooling!r} is unknown; expected one of {', '.join(POOLINGS)}")
        if not 0.0 <= self.dropout < 1.0:
            raise StylespaceError(f"dropout must be in [0, 1), got {self.dropout}")
        if not isinstance(self.width, int) or self.width < 4:
            raise StylespaceError(f"width must be an integer >= 4, got {self.width!r}")
        depth = tuple(self.depth)
        if len(depth) != 4 or any(not isinstance(d, int) or d < 1 for d in depth):
            raise StylespaceError(f"depth must be 4 integers >= 1 (blocks per stage), got {self.depth!r}")
        self.depth = depth
        if self.stem_stride not in (1, 2, 4):
            raise StylespaceError(f"stem_stride must be 1, 2 or 4, got {self.stem_stride!r}")
        if self.classifier not in CLASSIFIERS:
            raise StylespaceError(f"classifier {self.classifier!r} is unknown; expected one of {', '.join(CLASSIFIERS)}")
        if self.embed_layer not in EMBED_LAYERS:
            raise StylespaceError(f"embed_layer {self.embed_layer!r} is unknown; expected one of {', '.join(EMBED_LAYERS)}")
        if self.cosine_scale <= 0:
            raise StylespaceError(f"cosine_scale must be > 0, got {self.cosine_scale}")
        return self
