"""The training run's configuration (saved as ``train.json`` in the run folder) and the presets."""
from __future__ import annotations

import dataclasses
from typing import ClassVar

from stylespace.training.augment import AugmentConfig
from stylespace.training.objectives import ObjectiveConfig, parse_objective
from stylespace.training.samplers import SAMPLERS
from stylespace.utils import StylespaceError, above, at_least, in_range, is_number, one_of, validate

OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
SCHEDULES = ("onecycle", "cosine", "constant")


@dataclasses.dataclass
class TrainConfig:
    """How to train. Nested ``objective_config`` (ObjectiveConfig) and ``augmentation`` (AugmentConfig) may be
    given as dicts (as read back from JSON).

    Attributes:
        objective: weighted terms, e.g. ``ce``, ``triplet``, ``contrastive``, ``ce+ms:0.5`` (see objectives);
            objective_config: their settings (label smoothing, margins, the miner...).
        optimizer: ``adam``, ``adamw``, ``sgd`` (with ``momentum``, Nesterov) or ``rmsprop`` (seed 003).
        lr: peak learning rate. weight_decay: L2 / decoupled decay on weight matrices (not on biases or norms).
        schedule: ``onecycle`` (warm-up then anneal), ``cosine`` (with ``warmup_epochs`` linear warm-up) or ``constant``.
        epochs: maximum epochs. batch_size: items per batch.
        patience: stop when the validation metric has not improved for this many epochs (0 = never).
        amp: mixed precision (bfloat16 autocast) on CUDA. cpu_amp: the same on a CPU with bfloat16
            instructions (AVX512-BF16 or AMX; ignored, in full precision, on one without): the compact network's
            Fashion-MNIST epochs took 27-37 s instead of 46-50 s on this machine's EPYC (`stylespace bench
            fashion-mnist`).
        seed: seeds weights, sampling and augmentation; the same seed and data give the same run.
        device: ``auto`` (CUDA when present), ``cpu`` or ``cuda[:N]``.
        sampler: ``shuffle``, ``m_per_class`` (``m_per_class`` items per class per batch) or
            ``rare_augment`` (seed 000: rare classes drawn and augmented more, ``balance_power`` in [0, 1]).
        views: augmented views of each item in a batch (``batch_size`` items give ``views x batch_size``
            images); the ``instance`` term needs 2 or more.
        augment: apply ``augmentation`` on the fly. val_fraction: part of the training split kept for
            validation (stratified, fixed by ``seed``). num_threads: CPU threads for torch (0 = torch's default).
        eval_batch_size: batch size for validation and embedding.
        init: fine-tune from this trained stylespace model (a run or model folder, or a shipped name such as
            ``default``): its backbone and embedding head, with a new classifier for the catalog's classes;
            empty = a new model from the model config.
        freeze_backbone_epochs: the first epochs train everything but the backbone (a new classifier settles
            before its gradients reach features that are already good).
        backbone_lr_factor: the backbone learns at ``lr`` times this (below 1 when fine-tuning: keep most of
            what the parent learnt).
        cached_views: 0 = the whole network trains on images augmented on the fly; N > 0 = the backbone stays
            frozen and only the head and classifier train, on its pooled features of N views of every training
            image (the first as it is, the others augmented) computed once and cached
            (:mod:`stylespace.training.frozen`): the recipe for a pre-trained backbone on a CPU.
        teacher: distil from this trained model (a shipped name such as ``default``, a run or a model folder):
            the ``distill`` term pulls each augmented view's search vector toward the teacher's vector of the
            item's canonical view, PCA-reduced to the student's width (:mod:`stylespace.training.teacher`).
            Needs the ``distill`` term, and the ``distill`` term needs a teacher.
    """

    objective: str = "ce"
    objective_config: ObjectiveConfig = dataclasses.field(default_factory=ObjectiveConfig)
    optimizer: str = "adamw"
    lr: float = 2e-3
    weight_decay: float = 5e-4
    momentum: float = 0.9
    schedule: str = "onecycle"
    warmup_epochs: float = 1.0
    epochs: int = 20
    batch_size: int = 128
    patience: int = 0
    amp: bool = True
    cpu_amp: bool = False
    seed: int = 0
    device: str = "auto"
    sampler: str = "shuffle"
    m_per_class: int = 4
    balance_power: float = 0.5
    views: int = 1
    augment: bool = True
    augmentation: AugmentConfig = dataclasses.field(default_factory=AugmentConfig)
    val_fraction: float = 0.05
    num_threads: int = 0
    eval_batch_size: int = 512
    init: str = ""
    freeze_backbone_epochs: int = 0
    backbone_lr_factor: float = 1.0
    cached_views: int = 0
    teacher: str = ""

    # train.json files written when the objective's settings were called ``loss``
    RENAMED: ClassVar[dict[str, str]] = {"loss": "objective_config"}

    def __post_init__(self) -> None:
        if isinstance(self.objective_config, dict):
            self.objective_config = _nested(ObjectiveConfig, self.objective_config, "objective_config")
        if isinstance(self.augmentation, dict):
            self.augmentation = _nested(AugmentConfig, self.augmentation, "augmentation")
        self.validate()

    def validate(self) -> "TrainConfig":
        """Check the settings (run when the config is made; again by the trainer); ``objective_config`` and
        ``augmentation`` check theirs when they are made."""
        terms = parse_objective(self.objective)
        validate([
            one_of("optimizer", self.optimizer, OPTIMIZERS),
            one_of("schedule", self.schedule, SCHEDULES),
            one_of("sampler", self.sampler, SAMPLERS),
            above("lr", self.lr, 0),
            at_least("weight_decay", self.weight_decay, 0, integer=False),
            in_range("momentum", self.momentum, 0, 1, "[)"),
            at_least("warmup_epochs", self.warmup_epochs, 0, integer=False),
            at_least("epochs", self.epochs, 1),
            at_least("batch_size", self.batch_size, 2),
            at_least("patience", self.patience, 0, note="0 = no early stopping"),
            in_range("val_fraction", self.val_fraction, 0, 0.5, "[)"),
            at_least("num_threads", self.num_threads, 0, note="0 = torch's default"),
            at_least("eval_batch_size", self.eval_batch_size, 1),
            at_least("views", self.views, 1),
            in_range("balance_power", self.balance_power, 0, 1),
            in_range("freeze_backbone_epochs", self.freeze_backbone_epochs, 0, self.epochs, "[)", integer=True,
                     note="epochs that train everything but the backbone, fewer than epochs"),
            in_range("backbone_lr_factor", self.backbone_lr_factor, 0, 10, "(]"),
            at_least("cached_views", self.cached_views, 0, note="0 = train the whole network on images"),
            (self.cached_views == 0 or not is_number(self.views) or self.cached_views >= self.views,
             f"cached_views ({self.cached_views}) must be at least views ({self.views}): each step draws that "
             "many different cached views of an item"),
            (("distill" in terms) == bool(self.teacher),
             "the distill term learns a teacher model's vectors: give both the term (e.g. objective ce+distill:4) "
             f"and a teacher (e.g. teacher default), got objective {self.objective!r}, teacher {self.teacher!r}"),
            ("distill" not in terms or self.cached_views == 0,
             "distillation trains the whole student network on images: set cached_views to 0"),
            ("instance" not in terms or (is_number(self.views) and self.views >= 2 and self.augment),
             f"the instance term compares augmented views of each item: it needs views >= 2 and augmentation "
             f"on, got views={self.views}, augment={self.augment}"),
        ])
        return self


def _nested(cls, data: dict, name: str):
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise StylespaceError(f"train config {name}: unknown field(s) {unknown}; expected some of {sorted(names)}")
    return cls(**data)
