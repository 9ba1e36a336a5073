"""Named starting points for `stylespace train --preset NAME`; explicit options override them.

- ``cpu``: what `make demo` trains when no model is shipped: 6 epochs, about 5 minutes on 2 CPU cores.
- ``default``: the shipped default model: the ``cpu`` network trained for photos as customers take them:
  two augmented views of every item in a batch (mirror, crops, +-35 % aspect, +-10 degree rotation,
  brightness / contrast, a grey or coloured backdrop, greyscale, blur, JPEG) and an instance term beside
  the cross-entropy (NT-Xent with item ids: the two views must find each other). About 60 minutes on 2 CPU
  cores; its stride-4 stem keeps indexing and single-image search fast on a CPU.
- ``packshot``: the recipe of the default model before (cross-entropy on lightly augmented packshots,
  24 epochs, about 30 minutes), kept to compare against.
- ``finetune``: fine-tuning a trained model (``--init default``) on a small catalog of your own: the
  ``default`` recipe at a third of the learning rate for 8 epochs, the backbone at 0.3 x that, frozen for
  the first epoch while the new (imprinted) classifier settles (on the 1,000-photo tree of
  benchmarks/bench_own_catalog.py the classifier's validation accuracy levels off after 2 epochs).
- ``lite0``: EfficientNet-Lite0 with its ImageNet weights (from the pip package), frozen, at 160 x 120 (the
  80 x 60 view upsampled inside the model); its pooled features of 3 views of every training image (as it is,
  and two augmented as in ``default``) are computed once and cached, and a 1024-wide head with a cosine
  classifier trains on them with cross-entropy, each step on one of the cached views of each item (an
  instance term beside it was measured: the same robustness, MAP@R 0.40 instead of 0.64). The model embeds
  with the features and the head's embedding side by side (``embed_layer="both"``): the features keep what
  ImageNet knows of types this catalog never showed. See docs/training.md for its measured figures.
- ``finetune-frozen``: ``--init`` on a model of the ``lite0`` recipe: the same recipe from the parent's head.
- ``distill``: the fast tier: the compact network (the ``default`` preset's backbone, 80 x 60) with a 256-d
  embedding head trained from scratch to reproduce the vectors of ``models/default`` (``teacher``),
  PCA-reduced to 256 dimensions, from augmented views of each training image (the target is always the
  canonical view's vector), with the cross-entropy beside it for the classifier (``ce+distill:4``), 20
  epochs, bfloat16 autocast where the CPU has it. The search vectors are the head's, not the pooled
  features: those come out of a ReLU, all positive, and cannot follow centred targets. See docs/training.md.
- ``gpu``: a larger model and longer schedule for one modern GPU (a few minutes on an H100).
- ``small``: small grey images such as Fashion-MNIST's 28 x 28: the compact network with a stride-2 stem at width
  32, 30 epochs, light augmentation that suits centred grey items (mirror, +-10 %
  shift and zoom, no colour change), and bfloat16 autocast where the CPU has bfloat16 instructions
  (``cpu_amp``): `stylespace bench fashion-mnist` ran its epochs in 27-37 s on this machine, 46-50 s in float32,
  so 30 epochs took 19 minutes instead of about 24, still past the 15 minutes aimed at (a stride-1 stem at width
  24 took 103-118 s an epoch). See docs/training.md for its figures and `stylespace bench fashion-mnist` for the run that measures
  them. `stylespace train` picks it when ``--input-size`` is at most 32 px a side and no preset is named.
"""
from __future__ import annotations

from stylespace.models import ModelConfig
from stylespace.training.config import TrainConfig
from stylespace.utils import StylespaceError, override  # noqa: F401  (override: where presets were overridden from)

PRESETS: dict[str, tuple[dict, dict]] = {
    "cpu": (
        dict(backbone="compact", width=32, stem_stride=4, embedding_dim=128, classifier="cosine",
             embed_layer="features"),
        dict(objective="ce", epochs=6, batch_size=128, lr=3e-3, schedule="onecycle", sampler="shuffle"),
    ),
    "default": (
        dict(backbone="compact", width=32, stem_stride=4, embedding_dim=128, classifier="cosine",
             embed_layer="features"),
        dict(objective="ce+instance:0.5", views=2, epochs=22, batch_size=128, lr=3e-3, schedule="onecycle",
             sampler="shuffle", objective_config=dict(label_smoothing=0.1, temperature=0.1),
             augmentation=dict(scale=0.18, translate=0.06, flip=0.5, colour=0.3, aspect=0.35, rotate=10.0,
                               padding="backdrop", background=0.3, greyscale=0.1, blur=0.15, jpeg=0.2)),
    ),
    "packshot": (
        dict(backbone="compact", width=32, stem_stride=4, embedding_dim=128, classifier="cosine",
             embed_layer="features"),
        dict(objective="ce", epochs=24, batch_size=128, lr=3e-3, schedule="onecycle", sampler="shuffle",
             objective_config=dict(label_smoothing=0.1)),
    ),
    "finetune": (  # with --init: the architecture is the parent's; only the training settings apply
        {},
        dict(objective="ce+instance:0.5", views=2, epochs=8, batch_size=64, lr=1e-3, schedule="onecycle",
             sampler="shuffle", freeze_backbone_epochs=1, backbone_lr_factor=0.3, patience=0,
             objective_config=dict(label_smoothing=0.1, temperature=0.1),
             augmentation=dict(scale=0.18, translate=0.06, flip=0.5, colour=0.3, aspect=0.35, rotate=10.0,
                               padding="backdrop", background=0.3, greyscale=0.1, blur=0.15, jpeg=0.2)),
    ),
    "lite0": (
        dict(backbone="efficientnet-lite0", weights="imagenet", network_size=(160, 120), embedding_dim=256,
             head_hidden=1024, dropout=0.1, classifier="cosine", embed_layer="both", head_share=0.5),
        dict(objective="ce", views=1, cached_views=3, epochs=20, batch_size=128, lr=2e-3,
             schedule="onecycle", sampler="shuffle", objective_config=dict(label_smoothing=0.1),
             augmentation=dict(scale=0.18, translate=0.06, flip=0.5, colour=0.3, aspect=0.35, rotate=10.0,
                               padding="backdrop", background=0.3, greyscale=0.1, blur=0.15, jpeg=0.2)),
    ),
    "finetune-frozen": (  # with --init on a model trained on a frozen backbone (lite0): only its head trains
        {},
        dict(objective="ce", views=1, cached_views=3, epochs=30, batch_size=64, lr=5e-4,
             schedule="onecycle", sampler="shuffle", objective_config=dict(label_smoothing=0.1),
             augmentation=dict(scale=0.18, translate=0.06, flip=0.5, colour=0.3, aspect=0.35, rotate=10.0,
                               padding="backdrop", background=0.3, greyscale=0.1, blur=0.15, jpeg=0.2)),
    ),
    "distill": (  # the search vectors are the head's (of any sign): pooled ReLU features cannot follow centred targets
        dict(backbone="compact", width=32, stem_stride=4, embedding_dim=256, classifier="cosine", embed_layer="head"),
        dict(objective="ce+distill:4", teacher="default", views=1, epochs=20, batch_size=128, lr=3e-3,
             schedule="onecycle", sampler="shuffle", cpu_amp=True, objective_config=dict(label_smoothing=0.1),
             augmentation=dict(scale=0.18, translate=0.06, flip=0.5, colour=0.3, aspect=0.35, rotate=10.0,
                               padding="backdrop", background=0.3, greyscale=0.1, blur=0.15, jpeg=0.2)),
    ),
    "gpu": (
        dict(backbone="compact", width=48, depth=(2, 2, 2, 2), stem_stride=2, embedding_dim=128, classifier="cosine"),
        dict(objective="ce", epochs=30, batch_size=256, lr=4e-3, schedule="onecycle", sampler="shuffle"),
    ),
    "small": (
        dict(backbone="compact", width=32, stem_stride=2, input_size=(28, 28), embedding_dim=128, classifier="cosine",
             embed_layer="features"),
        dict(objective="ce", epochs=30, batch_size=128, lr=3e-3, schedule="onecycle", sampler="shuffle", cpu_amp=True,
             objective_config=dict(label_smoothing=0.1), augmentation=dict(scale=0.1, translate=0.1, flip=0.5, colour=0.0)),
    ),
}
# `stylespace train` without --preset: ``small`` for images of at most this many pixels a side, else ``cpu``.
SMALL_INPUT_SIDE = 32


def default_preset(input_size: tuple[int, int] | None) -> str:
    """The preset for an input size when none is named: ``small`` for small images, else ``cpu``."""
    return "small" if input_size is not None and max(input_size) <= SMALL_INPUT_SIDE else "cpu"


def finetune_preset(init: str) -> str:
    """The preset that fine-tunes the trained model ``init``: ``finetune-frozen`` for a model on a packaged
    pre-trained backbone (its head is trained on cached features; the whole network would take hours on a
    CPU), else ``finetune``."""
    from stylespace.models import resolve_model_dir
    from stylespace.models.config import PACKAGED_BACKBONES
    from stylespace.utils import read_json

    config = read_json(resolve_model_dir(init) / "model.json", "ModelConfig JSON")
    return "finetune-frozen" if config.get("backbone") in PACKAGED_BACKBONES else "finetune"


def preset(name: str) -> tuple[ModelConfig, TrainConfig]:
    """(ModelConfig, TrainConfig) of the preset ``name``."""
    if name not in PRESETS:
        raise StylespaceError(f"preset {name!r} is unknown; expected one of {', '.join(PRESETS)}")
    model_kwargs, train_kwargs = PRESETS[name]
    return ModelConfig(**model_kwargs).validate(), TrainConfig(**train_kwargs).validate()
