"""A training run from a catalog and a split manifest: the steps `stylespace train` runs.

The model trains on the manifest's main/train rows (or all/train for a stratified split); a
validation part is carved from them, stratified by class and fixed by the seed. The run folder
records the split manifest's SHA-256, so an evaluation can check it uses the split the model was
trained on.
"""
from __future__ import annotations

import dataclasses
import os
import platform
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from stylespace.models import EmbeddingModel, ModelConfig, model_id
from stylespace.training.config import TrainConfig
from stylespace.training.distributed import SingleProcess, join_process_group
from stylespace.training.objectives import parse_objective
from stylespace.training.trainer import FitResult, fit
from stylespace.utils import StylespaceError, write_json

RUN_FILE = "run.json"


def carve_validation(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, val indices): ``round(fraction * n_c)`` items of each class c go to validation,
    never a class's last item. Deterministic for a given seed."""
    labels = np.asarray(labels)
    rng = np.random.default_rng([seed, 7])
    val = []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        take = min(int(np.floor(fraction * len(members) + 0.5)), len(members) - 1)
        if take > 0:
            val.append(rng.choice(members, size=take, replace=False))
    val_idx = np.sort(np.concatenate(val)) if val else np.zeros(0, np.int64)
    train_idx = np.setdiff1d(np.arange(len(labels)), val_idx)
    return train_idx, val_idx


def training_rows(manifest):
    """The manifest rows to train on: main/train (004's protocol), else all/train (stratified split)."""
    rows = manifest.select(group="main", split="train")
    if not len(rows):
        rows = manifest.select(group="all", split="train")
    if not len(rows):
        raise StylespaceError("the split manifest has no training rows (group main or all, split train); "
                              "make one with `stylespace split`")
    return rows


def train_run(catalog_path: str | os.PathLike, split_manifest_path: str | os.PathLike, model_config: ModelConfig,
              config: TrainConfig, run_dir: str | os.PathLike, resume: bool = False, progress: bool = True,
              cache_dir: str | os.PathLike | None = None,
              log: Callable[[str], None] = lambda message: None,
              parallel: SingleProcess | None = None) -> tuple[EmbeddingModel, FitResult, dict]:
    """Train a model on a catalog's training split; returns (model, fit result, the run.json record).

    With ``resume`` the run continues from ``run_dir/checkpoint.pt``; the model and training settings
    must be the ones the run started with (the checkpoint records both), the number of processes may differ.
    Under torchrun every process calls this and they train one model together
    (:mod:`stylespace.training.distributed`; ``parallel`` default: joined from torchrun's environment,
    or this process alone); rank 0 writes the run folder, ``run.json`` records the world size.
    """
    own_group = parallel is None
    parallel = parallel or join_process_group(config.device)
    try:
        return _train_run(catalog_path, split_manifest_path, model_config, config, run_dir, resume,
                          progress and parallel.is_primary, cache_dir, parallel.primary_only(log), parallel)
    finally:
        if own_group:
            parallel.close()


def _train_run(catalog_path, split_manifest_path, model_config: ModelConfig, config: TrainConfig, run_dir,
               resume: bool, progress: bool, cache_dir, log: Callable[[str], None],
               parallel: SingleProcess) -> tuple[EmbeddingModel, FitResult, dict]:
    from stylespace.data import SplitManifest, load_catalog, load_image_array

    run_dir = Path(run_dir)
    started = time.perf_counter()
    catalog = load_catalog(catalog_path)
    manifest = SplitManifest.load(split_manifest_path)
    rows = training_rows(manifest)
    # Each node's first process fills the image cache; the others then read it.
    array = parallel.primary_first(lambda: load_image_array(catalog, size=tuple(model_config.input_size),
                                                            cache_dir=cache_dir, progress=progress))
    ids, labels = rows.ids, rows.labels
    unknown = [i for i in ids if i not in catalog]
    if unknown:
        raise StylespaceError(f"{split_manifest_path}: {len(unknown)} training ids are not in {catalog_path} "
                              f"(e.g. {unknown[:3]}); was the split made from another catalog?")
    usable = [k for k, i in enumerate(ids) if i not in array.failed]
    dropped = len(ids) - len(usable)
    if dropped:
        log(f"{dropped} training images fail to decode and are left out")
    ids, labels = [ids[k] for k in usable], [labels[k] for k in usable]
    classes = sorted(set(labels))
    # A classifier is built (and trained) only when the objective has a cross-entropy term.
    model_config = dataclasses.replace(model_config, classes=classes if "ce" in parse_objective(config.objective) else [])
    index = {c: k for k, c in enumerate(classes)}
    y = np.array([index[label] for label in labels], dtype=np.int64)
    train_idx, val_idx = carve_validation(y, config.val_fraction, config.seed)
    log(f"{len(train_idx):,} training and {len(val_idx):,} validation images, {len(classes)} classes, "
        f"{model_config.input_size[0]}x{model_config.input_size[1]} px")
    pixels = array.take(ids)
    torch.manual_seed(config.seed)
    model = EmbeddingModel(model_config)
    result = fit(model, pixels[train_idx], y[train_idx], pixels[val_idx], y[val_idx], config, run_dir,
                 resume=resume, progress=progress, log=log, parallel=parallel)
    record = {
        "catalog": str(catalog_path),
        "catalog_fingerprint": catalog.fingerprint(),
        "split_manifest": str(split_manifest_path),
        "split_sha256": manifest.sha256,
        "train_items": int(len(train_idx)),
        "val_items": int(len(val_idx)),
        "skipped_undecodable": dropped,
        "classes": classes,
        "model_id": model_id(model),
        "val_metric": result.val_metric,
        "best_epoch": result.best_epoch,
        "best_val_metric": result.best_val_metric,
        "epochs_run": result.epochs_run,
        "stopped_early": result.stopped_early,
        "train_seconds": result.seconds,
        "total_seconds": round(time.perf_counter() - started, 2),
        "device": result.device,
        "world_size": parallel.world_size,
        "backend": parallel.backend,
        "torch": torch.__version__,
        "cpu_threads": torch.get_num_threads(),
        "host": platform.node(),
    }
    if parallel.is_primary:
        write_json(run_dir / RUN_FILE, record)
    parallel.barrier()
    return model, result, record


def resume_configs(run_dir: str | os.PathLike) -> tuple[ModelConfig, TrainConfig]:
    """The model and training configs an interrupted run in ``run_dir`` was started with."""
    from stylespace.training.checkpoint import CHECKPOINT_FILE, read_checkpoint
    from stylespace.training.trainer import TRAIN_CONFIG_FILE
    from stylespace.utils import dataclass_from_dict, load_dataclass

    run_dir = Path(run_dir)
    checkpoint = run_dir / CHECKPOINT_FILE
    if not checkpoint.is_file():
        raise StylespaceError(f"{run_dir}: no {CHECKPOINT_FILE} to resume from; start the run without --resume")
    train_config = load_dataclass(TrainConfig, run_dir / TRAIN_CONFIG_FILE)
    payload = read_checkpoint(checkpoint)
    return dataclass_from_dict(ModelConfig, payload["model_config"], source=str(checkpoint)), train_config
