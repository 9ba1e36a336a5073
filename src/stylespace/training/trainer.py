"""The training loop: ``fit(model, train pixels, labels, val pixels, labels, config, run_dir)``.

Plain and readable on purpose: sample a batch, augment it on the device, embed, score, step. After
every epoch: validate, append to the history (CSV + learning-curve PNG), keep the best weights and
write a checkpoint atomically, so Ctrl-C or a crash leaves the last complete epoch to resume from.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from stylespace.models import EmbeddingModel, save_model
from stylespace.models.inputs import as_model_input
from stylespace.training.augment import BatchAugment
from stylespace.training.checkpoint import CHECKPOINT_FILE, read_checkpoint
from stylespace.training.config import TrainConfig
from stylespace.training.distributed import SingleProcess, TrainingForward
from stylespace.training.history import plot_learning_curves, write_history_csv
from stylespace.training.objectives import Objective, build_objective
from stylespace.training.samplers import build_sampler
from stylespace.progress import ProgressBar
from stylespace.utils import StylespaceError, atomic_write, save_dataclass

HISTORY_FILE = "history.csv"
CURVES_FILE = "learning_curves.png"
TRAIN_CONFIG_FILE = "train.json"
# Fields that may differ when a run is resumed (they change where/how fast it runs, not what it learns).
RESUMABLE_CHANGES = {"device", "num_threads", "eval_batch_size", "amp"}


@dataclasses.dataclass
class FitResult:
    """What a training run gave.

    Attributes:
        history: one dict per epoch (see ``history.COLUMNS``).
        val_metric: name of the validation metric: ``val_accuracy`` (the classifier's accuracy) or
            ``val_1nn_accuracy`` (leave-one-out nearest-neighbour accuracy on embeddings) or ``none``.
        best_epoch / best_val_metric: the epoch whose weights were kept, and its metric (NaN without validation).
        epochs_run: epochs completed; stopped_early: whether early stopping ended the run.
        seconds: wall time of all sessions of this run (resumes included); device: where it ran.
    """

    history: list[dict]
    val_metric: str
    best_epoch: int
    best_val_metric: float
    epochs_run: int
    stopped_early: bool
    seconds: float
    device: str


def check_arrays(pixels: np.ndarray, labels: np.ndarray, size: tuple[int, int], name: str) -> np.ndarray:
    pixels = np.asarray(pixels) if not isinstance(pixels, np.ndarray) else pixels
    if pixels.dtype != np.uint8 or pixels.ndim != 4 or pixels.shape[-1] != 3:
        raise StylespaceError(f"{name} pixels must be uint8 (N, H, W, 3), got {pixels.dtype} {tuple(pixels.shape)}")
    if tuple(pixels.shape[1:3]) != tuple(size):
        raise StylespaceError(f"{name} pixels are {pixels.shape[1]}x{pixels.shape[2]} but the model's input_size is "
                              f"{size[0]}x{size[1]}; load images at the model's size")
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) != len(pixels) or (len(labels) and not np.issubdtype(labels.dtype, np.integer)):
        raise StylespaceError(f"{name} labels must be {len(pixels)} integers, got {labels.dtype} {tuple(labels.shape)}")
    return labels.astype(np.int64)


def leave_one_out_1nn_accuracy(embeddings: torch.Tensor, labels: torch.Tensor, chunk: int = 2048) -> float:
    """Share of items whose nearest other item (cosine, on L2-normalised (N, D) embeddings) has their label."""
    n = len(labels)
    if n < 2:
        return float("nan")
    hits = 0
    for start in range(0, n, chunk):
        sims = embeddings[start:start + chunk] @ embeddings.t()
        rows = torch.arange(sims.shape[0], device=sims.device)
        sims[rows, rows + start] = -float("inf")
        hits += int((labels[sims.argmax(dim=1)] == labels[start:start + chunk]).sum())
    return hits / n


@torch.no_grad()
def evaluate(model: EmbeddingModel, objective: Objective, pixels: torch.Tensor, labels: torch.Tensor,
             batch_size: int, device: torch.device) -> tuple[float, float]:
    """(mean objective loss, accuracy) on un-augmented images; accuracy is the classifier's when the model
    has one, else leave-one-out 1-NN accuracy on the embeddings."""
    model.eval()
    embeddings, logits, losses, weights = [], [], [], []
    for start in range(0, len(labels), batch_size):
        x = as_model_input(pixels[start:start + batch_size].to(device, non_blocking=True))
        y = labels[start:start + batch_size].to(device)
        emb = model(x.contiguous(memory_format=torch.channels_last)).float()
        out = model.classify(emb) if model.classifier is not None else None
        if len(y) >= 2:
            loss, _ = objective(emb, out, y)
            losses.append(float(loss))
            weights.append(len(y))
        embeddings.append(torch.nn.functional.normalize(emb, dim=1))
        if out is not None:
            logits.append(out.argmax(dim=1))
    all_labels = labels.to(device)
    if logits:
        accuracy = float((torch.cat(logits) == all_labels).float().mean())
    else:
        accuracy = leave_one_out_1nn_accuracy(torch.cat(embeddings), all_labels)
    loss = float(np.average(losses, weights=weights)) if losses else float("nan")
    return loss, accuracy


def make_optimizer(params: list[torch.nn.Parameter], config: TrainConfig,
                   backbone: list[torch.nn.Parameter] = ()) -> torch.optim.Optimizer:
    """Weight decay on weight matrices and convolution kernels only: decaying biases, batch-norm scales
    or GeM exponents only hurts. The ``backbone`` parameters learn at ``config.backbone_lr_factor`` x lr."""
    slow = {id(p) for p in backbone} if config.backbone_lr_factor != 1.0 else set()
    groups = []
    for factor, members in ((1.0, [p for p in params if id(p) not in slow]),
                            (config.backbone_lr_factor, [p for p in params if id(p) in slow])):
        decay = [p for p in members if p.requires_grad and p.ndim >= 2]
        no_decay = [p for p in members if p.requires_grad and p.ndim < 2]
        groups += [{"params": group, "weight_decay": wd, "lr": config.lr * factor}
                   for group, wd in ((decay, config.weight_decay), (no_decay, 0.0)) if group or factor == 1.0]
    if config.optimizer == "adam":
        return torch.optim.Adam(groups, lr=config.lr)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=config.lr)
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=config.momentum > 0)
    return torch.optim.RMSprop(groups, lr=config.lr)


def make_schedule(optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int):
    """Per-step learning-rate schedule over the whole run (one-cycle runs of under 4 steps use the cosine one)."""
    total = max(1, config.epochs * steps_per_epoch)
    warmup = min(total - 1, int(config.warmup_epochs * steps_per_epoch))
    if config.schedule == "onecycle" and total >= 4:  # torch's one-cycle needs a few steps per phase
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=[g["lr"] for g in optimizer.param_groups],
                                                   total_steps=total,
                                                   pct_start=min(0.5, max(warmup, 2) / total))  # a 1-step warm phase divides by 0

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if config.schedule == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def fit(model: EmbeddingModel, train_pixels: np.ndarray, train_labels: np.ndarray,
        val_pixels: np.ndarray | None, val_labels: np.ndarray | None, config: TrainConfig,
        run_dir: str | Path, resume: bool = False, progress: bool = True,
        log: Callable[[str], None] = lambda message: None, objective: Objective | None = None,
        parallel: SingleProcess | None = None, targets: np.ndarray | None = None) -> FitResult:
    """Train ``model`` in place and save it (best validation epoch) into ``run_dir``.

    Args:
        model: an :class:`EmbeddingModel`; it needs a classifier (classes in its config) when the objective
            has a ``ce`` term; labels index ``model.config.classes``.
        train_pixels: (N, H, W, 3) uint8 at the model's input size; train_labels: (N,) integers.
        val_pixels / val_labels: the same for validation (may be None: no validation, no early stopping).
        config: the :class:`TrainConfig`.
        run_dir: the run folder: ``model.safetensors``, ``model.json``, ``train.json``, ``history.csv``,
            ``learning_curves.png`` and ``checkpoint.pt`` (written every epoch).
        resume: continue from ``run_dir/checkpoint.pt``; without it an existing checkpoint is an error.
        progress: show a progress bar on stderr. log: receives one line per epoch.
        objective: a ready :class:`Objective` (any composition of PML losses, miners and distances);
            default: the one ``config.objective`` names. Its parameters (e.g. ArcFace's class centres) are
            trained with the model and saved in the checkpoint.
        parallel: this process's part in data-parallel training (:mod:`stylespace.training.distributed`,
            under torchrun); default: training in this process alone.
        targets: (N, F) unit vectors, one per training image, of the model's search width (``output_dim``): what
            a ``distill`` term pulls each view's search vector toward (a teacher's vectors,
            :mod:`stylespace.training.teacher`); needed by, and only read by, such a term.
    """
    config.validate()
    parallel = parallel or SingleProcess()
    log, progress = parallel.primary_only(log), progress and parallel.is_primary
    run_dir = Path(run_dir)
    size = tuple(model.config.input_size)
    train_labels = check_arrays(train_pixels, train_labels, size, "training")
    has_val = val_pixels is not None and len(val_pixels) > 0
    val_labels = check_arrays(val_pixels, val_labels, size, "validation") if has_val else np.zeros(0, np.int64)
    n_classes = len(model.config.classes) if model.classifier is not None else int(train_labels.max()) + 1
    for name, labels in (("training", train_labels), ("validation", val_labels)):
        if len(labels) and (labels.min() < 0 or labels.max() >= n_classes):
            raise StylespaceError(f"{name} labels must be in [0, {n_classes}) (indices of the model's classes), "
                                  f"got [{labels.min()}, {labels.max()}]")
    checkpoint_file = run_dir / CHECKPOINT_FILE
    if checkpoint_file.exists() and not resume:
        raise StylespaceError(f"{run_dir} already holds a training checkpoint; resume it with --resume, "
                              "or write the run to another folder")
    if resume and not checkpoint_file.exists():
        raise StylespaceError(f"{run_dir}: no {CHECKPOINT_FILE} to resume from; start the run without --resume")

    agreed = {"train": _plain(dataclasses.asdict(config)), "model": _plain(dataclasses.asdict(model.config)),
              "run_dir": str(run_dir), "resume": resume, "items": [len(train_labels), len(val_labels)]}
    parallel.check(config, agreed)  # every process: the same options and data, a batch that splits evenly
    device = parallel.device(config.device)
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    torch.manual_seed(config.seed)
    use_amp = ((config.amp and device.type == "cuda")
               or (config.cpu_amp and device.type == "cpu" and torch.ops.mkldnn._is_mkldnn_bf16_supported()))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    if objective is None:
        objective = build_objective(config.objective, config.objective_config, n_classes, model.config.embedding_dim)
    if objective.needs_classifier and model.classifier is None:
        raise StylespaceError(f"objective {config.objective!r} has a cross-entropy term but the model has no "
                              "classifier; build it with the class names (ModelConfig.classes)")
    if objective.needs_targets:
        if targets is None:
            raise StylespaceError(f"objective {config.objective!r} has a distill term but no teacher targets were "
                                  "given (TrainConfig.teacher names the teacher model)")
        if np.shape(targets) != (len(train_labels), model.output_dim):
            raise StylespaceError(f"distillation targets must be ({len(train_labels)}, {model.output_dim}): one "
                                  f"vector per training image, of the model's search width; got {np.shape(targets)}")
    model.to(device).to(memory_format=torch.channels_last)
    objective.to(device)
    forward = parallel.prepare(model, objective, changing_trainables=config.freeze_backbone_epochs > 0)
    # Pixels stay uint8 until a batch is drawn; on a GPU the whole training set lives in its memory.
    store = device if device.type == "cuda" else torch.device("cpu")
    train_x = torch.from_numpy(np.ascontiguousarray(train_pixels)).to(store)
    train_y = torch.from_numpy(train_labels).to(device)
    train_t = torch.from_numpy(np.asarray(targets, dtype=np.float32)).to(device) if objective.needs_targets else None
    order = np.random.default_rng(config.seed).permutation(len(val_labels))  # mixed classes in every val batch
    val_x = torch.from_numpy(np.ascontiguousarray(np.asarray(val_pixels)[order] if has_val else
                                                  np.zeros((0, *size, 3), np.uint8))).to(store)
    val_y = torch.from_numpy(val_labels[order])

    sampler = parallel.shard(build_sampler(config.sampler, train_labels, config.batch_size, config.seed,
                                           config.m_per_class, config.balance_power))
    augment = BatchAugment(config.augmentation) if config.augment else None
    params = list(model.parameters()) + list(objective.parameters())
    optimizer = make_optimizer(params, config, list(model.backbone.parameters()))
    schedule = make_schedule(optimizer, config, len(sampler))
    metric_name = ("val_accuracy" if model.classifier is not None else "val_1nn_accuracy") if has_val else "none"

    state = {"epoch": 0, "history": [], "best_epoch": 0, "best_metric": -math.inf, "best_model": None,
             "bad_epochs": 0, "stopped_early": False, "seconds": 0.0}
    if resume:
        state = _load_checkpoint(checkpoint_file, config, model, objective, optimizer, schedule)
        log(f"resuming {run_dir} after epoch {state['epoch']}")
    elif parallel.is_primary:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_dataclass(config, run_dir / TRAIN_CONFIG_FILE)

    session_start = time.perf_counter() - state["seconds"]
    try:
        with ProgressBar(progress) as bar:
            while state["epoch"] < config.epochs and not state["stopped_early"]:
                epoch = state["epoch"] + 1
                started = time.perf_counter()
                model.backbone.requires_grad_(epoch > config.freeze_backbone_epochs)  # fine-tuning's warm-up
                generator = parallel.generator(config.seed * 100_003 + epoch)
                task = bar.start(f"epoch {epoch}/{config.epochs}", len(sampler))
                last = state["history"][-1]["val_metric"] if state["history"] and has_val else None
                suffix = f"  {metric_name} {100 * last:.1f}%" if last is not None else ""
                train_loss, train_accuracy = train_epoch(
                    model, objective, optimizer, schedule, sampler.batches(epoch), train_x, train_y, augment, device,
                    use_amp, generator, lambda k, loss: bar.advance(task, k, info=f"loss {loss:.4f}{suffix}"),
                    views=config.views, forward=forward, parallel=parallel, targets=train_t)
                bar.stop(task)
                if not math.isfinite(train_loss):
                    raise StylespaceError(f"training diverged at epoch {epoch} (loss {train_loss}); lower the learning "
                                          f"rate (now {config.lr}) and start again")
                row = {"epoch": epoch, "train_loss": train_loss, "train_accuracy": train_accuracy,
                       "val_loss": None, "val_accuracy": None, "val_metric": None,
                       "lr": optimizer.param_groups[0]["lr"]}
                if has_val:
                    row["val_loss"], row["val_accuracy"] = parallel.from_primary(lambda: evaluate(
                        model, objective, val_x, val_y, config.eval_batch_size, device))
                    row["val_metric"] = row[metric_name] = row["val_accuracy"]
                row["seconds"] = round(time.perf_counter() - started, 2)
                state["history"].append(row)
                improved = _keep_if_best(state, row, model, has_val, config.patience)
                state["epoch"] = epoch
                state["seconds"] = time.perf_counter() - session_start
                log(_epoch_line(row, config.epochs, metric_name, improved and has_val))
                if not parallel.is_primary:
                    continue  # rank 0 alone writes the run folder
                write_history_csv(state["history"], run_dir / HISTORY_FILE)
                plot_learning_curves(state["history"], run_dir / CURVES_FILE, title=f"{model.config.backbone}, {config.objective}")
                _save_checkpoint(checkpoint_file, config, model, objective, optimizer, schedule, state)
    except KeyboardInterrupt:
        done = f"epoch {state['epoch']}" if state["epoch"] else "no epoch yet"
        log(f"interrupted: {checkpoint_file} holds the last complete epoch ({done}); continue with --resume")
        raise

    if state["best_model"] is not None:
        model.load_state_dict(state["best_model"])
    model.cpu().to(memory_format=torch.contiguous_format).eval()
    if parallel.is_primary:
        save_model(model, run_dir)
    parallel.barrier()  # every rank returns once the model is on disk
    if state["stopped_early"]:
        log(f"stopped early after epoch {state['epoch']}: no better {metric_name} for {config.patience} epochs")
    return FitResult(state["history"], metric_name, state["best_epoch"],
                     float(state["best_metric"]) if has_val else math.nan, state["epoch"], state["stopped_early"],
                     round(state["seconds"], 2), str(device))


def train_epoch(model: EmbeddingModel, objective: Objective, optimizer, schedule, batches, pixels: torch.Tensor,
                labels: torch.Tensor, augment: BatchAugment | None, device: torch.device, use_amp: bool,
                generator: torch.Generator, on_progress: Callable[[int, float], None],
                views: int = 1, forward: torch.nn.Module | None = None,
                parallel: SingleProcess | None = None,
                targets: torch.Tensor | None = None) -> tuple[float, float | None]:
    """One pass over ``batches`` ((indices, augmentation strength) pairs); returns (mean loss, accuracy of the
    classifier on the augmented batches, or None without a classifier). ``on_progress(batches done since
    the last call, running mean loss)`` is called every few batches. With ``views`` > 1 each item of a batch
    is augmented that many times; the views of one item share an instance id (the instance term's labels).
    ``forward`` is the model's training forward pass (wrapped in DistributedDataParallel under torchrun) and
    ``parallel`` this process's part; under torchrun the returned means are over every rank's items.
    ``targets`` (N, F) on ``device``: each training image's teacher vector, for a ``distill`` term."""
    forward = forward or TrainingForward(model)
    parallel = parallel or SingleProcess()
    model.train()
    loss_sum, correct, seen, pending = 0.0, 0, 0, 0
    search_on_features = model.config.embed_layer == "features"
    for indices, strength in batches:
        idx = torch.from_numpy(indices)
        batch = pixels[idx.to(pixels.device)].to(device, non_blocking=True)
        y = labels[idx.to(labels.device)]
        boost = None if strength is None else torch.from_numpy(strength)
        if augment is not None:
            x = torch.cat([augment(batch, boost, generator) for _ in range(views)])
        else:
            x = as_model_input(batch).repeat(views, 1, 1, 1)
        instances = parallel.instance_ids(len(y), y.device).repeat(views) if views > 1 else None
        y = y.repeat(views)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
            features, embeddings, logits = forward(x.contiguous(memory_format=torch.channels_last))
        search = features.float() if search_on_features else None
        distill = {}
        if targets is not None:
            distill = {"targets": targets[idx.to(targets.device)].repeat(views, 1),
                       "search_vectors": model.search_vectors(features.float(), embeddings.float())}
        loss, _ = objective(embeddings.float(), None if logits is None else logits.float(), y,
                            instances=instances, search=search, **distill)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        parallel.average_objective_gradients(objective)
        optimizer.step()
        schedule.step()
        loss_sum += loss.item() * len(y)
        seen += len(y)
        if logits is not None:
            correct += int((logits.argmax(dim=1) == y).sum())
        pending += 1
        if pending == 5:
            on_progress(pending, loss_sum / seen)
            pending = 0
    if pending:
        on_progress(pending, loss_sum / max(seen, 1))
    loss_sum, correct, seen = parallel.sum_over_ranks(loss_sum, correct, seen)
    return loss_sum / max(seen, 1), (correct / seen if model.classifier is not None and seen else None)


def _keep_if_best(state: dict, row: dict, model: EmbeddingModel, has_val: bool, patience: int) -> bool:
    """Update the best epoch / early-stopping counters in ``state`` with this epoch's ``row``; returns
    whether it is the best so far (without validation, the latest epoch always is)."""
    improved = not has_val or row["val_metric"] > state["best_metric"]
    if improved:
        state["best_epoch"], state["best_metric"] = row["epoch"], row["val_metric"] if has_val else math.nan
        state["best_model"] = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        state["bad_epochs"] = 0
    else:
        state["bad_epochs"] += 1
        state["stopped_early"] = bool(patience) and state["bad_epochs"] >= patience
    return improved


def _epoch_line(row: dict, epochs: int, metric_name: str, best: bool) -> str:
    parts = [f"epoch {row['epoch']}/{epochs}", f"loss {row['train_loss']:.4f}"]
    if row["train_accuracy"] is not None:
        parts.append(f"train acc {100 * row['train_accuracy']:.1f}%")
    if row["val_metric"] is not None:
        parts.append(f"val loss {row['val_loss']:.4f}")
        parts.append(f"{metric_name} {100 * row['val_metric']:.2f}%" + (" (best)" if best else ""))
    parts.append(f"{row['seconds']:.0f} s")
    return "  ".join(parts)


def _save_checkpoint(path: Path, config: TrainConfig, model, objective, optimizer, schedule, state: dict) -> None:
    payload = {
        "train_config": dataclasses.asdict(config),
        "model_config": dataclasses.asdict(model.config),
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "objective": {k: v.detach().cpu() for k, v in objective.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "schedule": schedule.state_dict(),
        "rng": torch.get_rng_state(),
        **state,
    }
    with atomic_write(path) as handle:
        torch.save(payload, handle)


def _plain(obj):
    """Tuples become lists, as in JSON, so configs read back from a checkpoint compare equal."""
    return json.loads(json.dumps(obj))


def _load_checkpoint(path: Path, config: TrainConfig, model, objective, optimizer, schedule) -> dict:
    payload = read_checkpoint(path)
    saved = _plain(payload.get("train_config", {}))
    current = _plain(dataclasses.asdict(config))
    changed = sorted(k for k in current if k not in RESUMABLE_CHANGES and saved.get(k) != current[k])
    if changed:
        raise StylespaceError(f"{path}: the run was started with other settings ({', '.join(changed)} differ); "
                              "resume with the same options, or start a new run folder")
    if _plain(payload.get("model_config")) != _plain(dataclasses.asdict(model.config)):
        raise StylespaceError(f"{path}: the run was started with another model configuration "
                              f"({payload.get('model_config')}); resume with the same model options")
    try:
        model.load_state_dict(payload["model"])
        objective.load_state_dict(payload["objective"])
    except RuntimeError as exc:
        raise StylespaceError(f"{path}: the checkpoint does not fit this model ({str(exc).splitlines()[0]})") from None
    device = next(model.parameters()).device
    model.to(device)
    optimizer.load_state_dict(payload["optimizer"])
    schedule.load_state_dict(payload["schedule"])
    with contextlib.suppress(Exception):
        torch.set_rng_state(payload["rng"])
    return {k: payload[k] for k in ("epoch", "history", "best_epoch", "best_metric", "best_model", "bad_epochs",
                                    "stopped_early", "seconds")}
