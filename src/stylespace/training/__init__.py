"""Training: objectives (pytorch-metric-learning losses, miners, samplers), augmentation, the loop, runs.

>>> result = fit(model, train_pixels, train_labels, val_pixels, val_labels, TrainConfig(epochs=5), "runs/x")
>>> model, result, record = train_run("catalog.zip", "split.csv", ModelConfig(), TrainConfig(), "runs/x")
"""
from stylespace.training.augment import AugmentConfig, BatchAugment
from stylespace.training.config import OPTIMIZERS, SCHEDULES, TrainConfig
from stylespace.training.objectives import (
    TERMS, ClassificationTerm, MetricTerm, Objective, ObjectiveConfig, RatioPairMiner, build_objective,
    parse_objective,
)
from stylespace.training.samplers import SAMPLERS, build_sampler
from stylespace.training.trainer import FitResult, evaluate, fit, leave_one_out_1nn_accuracy
from stylespace.training.presets import PRESETS, preset
from stylespace.training.run import carve_validation, resume_configs, train_run

__all__ = [
    "AugmentConfig", "BatchAugment", "ClassificationTerm", "FitResult", "MetricTerm", "OPTIMIZERS", "Objective",
    "ObjectiveConfig", "RatioPairMiner", "SAMPLERS", "SCHEDULES", "TERMS", "TrainConfig", "build_objective",
    "build_sampler", "carve_validation", "evaluate", "fit", "leave_one_out_1nn_accuracy", "parse_objective",
    "PRESETS", "preset", "resume_configs", "train_run",
]
