"""A training run from a catalog and a split manifest: the steps `stylespace train` runs.

The model trains on the manifest's main/train rows (or all/train for a stratified split); it validates
on the manifest's own val rows of that group when it has them (`stylespace split --by`, or a stratified
split with a val part), else a validation part is carved from the training rows, stratified by class and
fixed by the seed. The run folder
records the split manifest's SHA-256, so an evaluation can check it uses the split the model was
trained on.
"""
from __future__ import annotations

import dataclasses
import json
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
from stylespace.training.frozen import fit_on_cached_features
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


class ParentModel:
    """The trained model a fine-tuning run starts from (``TrainConfig.init``): its architecture, backbone and
    embedding head are kept; the classifier is made anew for the catalog's classes."""

    FILE = "parent.json"  # written into the run folder at the start, so a resumed run records the same parent

    def __init__(self, spec: str):
        from stylespace.models import load_model, resolve_model_dir

        self.spec = spec
        self.folder = resolve_model_dir(spec)
        self.model = load_model(self.folder)
        self.model_id = model_id(self.model)

    @property
    def record(self) -> dict:
        return {"init": self.spec, "folder": str(self.folder), "model_id": self.model_id,
                "classes": len(self.model.config.classes)}

    def config_for(self, classes: list[str]) -> ModelConfig:
        """The parent's architecture with ``classes`` for the new classifier (none: no classifier)."""
        return dataclasses.replace(self.model.config, classes=list(classes), weights="")

    def child(self, config: ModelConfig) -> EmbeddingModel:
        """A model of ``config`` holding the parent's weights, except a new (seeded) classifier."""
        model = EmbeddingModel(config, load_weights=False)
        kept = {k: v for k, v in self.model.state_dict().items() if not k.startswith("classifier.")}
        result = model.load_state_dict(kept, strict=False)
        missing = [k for k in result.missing_keys if not k.startswith("classifier.")]
        if missing or result.unexpected_keys:
            raise StylespaceError(f"{self.folder}: its weights do not fit its own config ({missing[:3]} missing, "
                                  f"{result.unexpected_keys[:3]} unexpected); is the model folder damaged?")
        return model

    @staticmethod
    @torch.no_grad()
    def imprint(model: EmbeddingModel, pixels: np.ndarray, labels: np.ndarray, batch_size: int = 256) -> None:
        """Start a cosine classifier's class directions at each class's mean embedding under the parent's head
        ("weight imprinting"): the new classifier is right from the first step, so its early gradients do
        not push good features around. A linear classifier keeps its random start."""
        if model.classifier is None or model.config.classifier != "cosine":
            return
        from stylespace.models.inputs import as_model_input

        model.eval()
        embedded = [torch.nn.functional.normalize(model(as_model_input(torch.from_numpy(np.ascontiguousarray(
            pixels[start:start + batch_size])))), dim=1) for start in range(0, len(pixels), batch_size)]
        embedded = torch.cat(embedded)
        weight = model.classifier.weight
        for code in np.unique(labels):
            weight[int(code)] = torch.nn.functional.normalize(embedded[torch.from_numpy(labels == code)].mean(0), dim=0)


def validation_rows(manifest, rows):
    """The manifest's own validation rows beside the training ``rows`` (same group, split ``val``), if any:
    a split made with a val part keeps it for choices like this one."""
    group = rows.rows[0]["group"] if len(rows) else "all"
    return manifest.select(group=group, split="val")


def train_run(catalog_path: str | os.PathLike, split_manifest_path: str | os.PathLike,
              model_config: ModelConfig | None, config: TrainConfig, run_dir: str | os.PathLike, resume: bool = False,
              progress: bool = True, cache_dir: str | os.PathLike | None = None,
              log: Callable[[str], None] = lambda message: None,
              parallel: SingleProcess | None = None) -> tuple[EmbeddingModel, FitResult, dict]:
    """Train a model on a catalog's training split; returns (model, fit result, the run.json record).

    With ``config.init`` the run fine-tunes that trained model (see :class:`ParentModel`) and
    ``model_config`` must be None (the architecture is the parent's); else ``model_config`` says what to build.
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


def _train_run(catalog_path, split_manifest_path, model_config: ModelConfig | None, config: TrainConfig, run_dir,
               resume: bool, progress: bool, cache_dir, log: Callable[[str], None],
               parallel: SingleProcess) -> tuple[EmbeddingModel, FitResult, dict]:
    from stylespace.data import SplitManifest, load_catalog, load_image_array

    run_dir = Path(run_dir)
    started = time.perf_counter()
    parent = None
    if config.init and not resume:
        if model_config is not None:
            raise StylespaceError("a fine-tuning run (init) takes its architecture from the parent model; "
                                  "give no model config (no backbone, width, input size... options)")
        parent = ParentModel(config.init)
        model_config = parent.config_for([])
        log(f"fine-tuning {parent.folder} (model {parent.model_id})")
    elif model_config is None:
        raise StylespaceError("give a model config, or an init model to fine-tune")
    catalog = load_catalog(catalog_path)
    manifest = SplitManifest.load(split_manifest_path)
    rows = training_rows(manifest)
    val_rows = validation_rows(manifest, rows)
    # Each node's first process fills the image cache; the others then read it.
    array = parallel.primary_first(lambda: load_image_array(catalog, size=tuple(model_config.input_size),
                                                            cache_dir=cache_dir, progress=progress))
    ids, labels = rows.ids + val_rows.ids, rows.labels + val_rows.labels
    is_val = np.array([False] * len(rows) + [True] * len(val_rows))
    unknown = [i for i in ids if i not in catalog]
    if unknown:
        raise StylespaceError(f"{split_manifest_path}: {len(unknown)} training ids are not in {catalog_path} "
                              f"(e.g. {unknown[:3]}); was the split made from another catalog?")
    usable = [k for k, i in enumerate(ids) if i not in array.failed]
    dropped = len(ids) - len(usable)
    if dropped:
        log(f"{dropped} training images fail to decode and are left out")
    ids, labels, is_val = [ids[k] for k in usable], [labels[k] for k in usable], is_val[usable]
    classes = sorted({label for label, val in zip(labels, is_val) if not val})
    # a val row of a class training never sees cannot be scored by the classifier: it is left out
    known = set(classes)
    kept = [k for k, (label, val) in enumerate(zip(labels, is_val)) if not val or label in known]
    ids, labels, is_val = [ids[k] for k in kept], [labels[k] for k in kept], is_val[kept]
    # A classifier is built (and trained) only when the objective has a cross-entropy term.
    model_config = dataclasses.replace(model_config, classes=classes if "ce" in parse_objective(config.objective) else [])
    index = {c: k for k, c in enumerate(classes)}
    y = np.array([index[label] for label in labels], dtype=np.int64)
    if is_val.any():  # the split's own validation part; val_fraction is not used
        train_idx, val_idx = np.flatnonzero(~is_val), np.flatnonzero(is_val)
    else:
        train_idx, val_idx = carve_validation(y, config.val_fraction, config.seed)
    log(f"{len(train_idx):,} training and {len(val_idx):,} validation images, {len(classes)} classes, "
        f"{model_config.input_size[0]}x{model_config.input_size[1]} px")
    pixels = array.take(ids)
    torch.manual_seed(config.seed)
    model = parent.child(model_config) if parent is not None else EmbeddingModel(model_config)
    parent_record = _parent_record(run_dir, parent, resume)
    if parent is not None:
        parent.imprint(model, pixels[train_idx], y[train_idx])
    distilled = None
    if config.teacher:
        from stylespace.training.teacher import teacher_targets

        distilled = parallel.primary_first(lambda: teacher_targets(
            config.teacher, array, ids, train_idx, model.output_dim, tuple(model_config.input_size),
            progress=progress, log=log))
    if config.cached_views:
        if resume or parallel.world_size > 1:
            raise StylespaceError("a run on cached backbone features (cached_views) takes minutes and runs in one "
                                  "process: start it again without --resume or torchrun (the cache is kept)")
        result = fit_on_cached_features(model, pixels[train_idx], y[train_idx], pixels[val_idx], y[val_idx], config,
                                        run_dir, progress=progress, log=log)
    else:
        result = fit(model, pixels[train_idx], y[train_idx], pixels[val_idx], y[val_idx], config, run_dir,
                     resume=resume, progress=progress, log=log, parallel=parallel,
                     targets=distilled.targets[train_idx] if distilled is not None else None)
    record = {
        "catalog": str(catalog_path),
        "catalog_fingerprint": catalog.fingerprint(),
        "split_manifest": str(split_manifest_path),
        "split_sha256": manifest.sha256,
        "train_items": int(len(train_idx)),
        "val_items": int(len(val_idx)),
        "val_source": "the split's val rows" if is_val.any() else f"carved from train (val_fraction {config.val_fraction})",
        "skipped_undecodable": dropped,
        "classes": classes,
        "model_id": model_id(model),
        **({"parent": parent_record} if parent_record else {}),
        **({"distilled_from": distilled.record} if distilled is not None else {}),
        **({"pretrained": pretrained_record(model_config.backbone)} if model_config.weights == "imagenet" else {}),
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


def pretrained_record(backbone: str) -> dict:
    """Where a packaged backbone's starting weights came from: the pip package, its version, the file and its
    SHA-256 (the model's own weights file holds them too, as training left them)."""
    from importlib.metadata import PackageNotFoundError, version

    from stylespace.models.pretrained import file_sha256, spec_for, weights_file

    spec, path = spec_for(backbone), weights_file(backbone)
    try:
        package_version = version(spec.package)
    except PackageNotFoundError:
        package_version = None
    return {"package": spec.package, "version": package_version, "file": path.name, "sha256": file_sha256(path),
            "imagenet_top1": spec.imagenet_top1}


def _parent_record(run_dir: Path, parent: ParentModel | None, resume: bool) -> dict | None:
    """What run.json says about the parent: written at the start of the run, read back when it resumes."""
    path = run_dir / ParentModel.FILE
    if parent is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json(path, parent.record)
        return parent.record
    if resume and path.is_file():
        return json.loads(path.read_text())
    return None


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
