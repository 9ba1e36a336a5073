"""Training on a frozen pre-trained backbone: features computed once per view and cached, the head trained on them.

Why: on 2 CPU cores EfficientNet-Lite0 embeds about 100 images a second at 160 x 120 with ONNX Runtime, and a
training step (forward and backward through the whole network) costs several times that, so one epoch of
fine-tuning the whole network over 34k images takes most of an hour. With the backbone frozen, each training
image's pooled features are computed once for each of ``TrainConfig.cached_views`` views (view 0 the canonical
view as it is, the others augmented with ``TrainConfig.augmentation``) and kept in the cache; an epoch of the
embedding head and classifier over the cached features then takes about a second. The frozen features keep
what ImageNet taught the network about things it never saw in this catalog (new article types); the head
learns the catalog's classes and, with the instance term, to bring an item's augmented views together.
The model embeds with ``embed_layer="both"`` (the features and the head's embedding, each unit length).

A cache file is named by a hash of everything its numbers depend on: the backbone's weights, the network
input size and pooling, the augmentation, the number of views, the seed and the pixels themselves, so a cache
built under one backbone or augmentation is never read for another.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from stylespace.models import EmbeddingModel, save_model
from stylespace.progress import ProgressBar
from stylespace.training.augment import BatchAugment
from stylespace.training.config import TrainConfig
from stylespace.training.history import plot_learning_curves, write_history_csv
from stylespace.training.objectives import build_objective
from stylespace.training.samplers import build_sampler
from stylespace.training.trainer import (CURVES_FILE, HISTORY_FILE, TRAIN_CONFIG_FILE, FitResult, make_optimizer,
                                         make_schedule)
from stylespace.utils import StylespaceError, atomic_write, cache_root, save_dataclass

CACHE_FORMAT = 1
EXTRACT_BATCH = 64  # ONNX Runtime on 2 cores runs a 160 x 120 EfficientNet fastest in batches of a few dozen


def feature_cache_key(model: EmbeddingModel, pixels: np.ndarray, config: TrainConfig, views: int | None = None) -> str:
    """A hash of everything the cached features of ``views`` (default ``config.cached_views``) views depend on
    (see the module docstring)."""
    digest = hashlib.sha256()
    feature_definition = {k: v for k, v in dataclasses.asdict(model.config).items()
                          if k in ("backbone", "input_size", "network_size", "multiscale", "pooling")}
    digest.update(json.dumps({"format": CACHE_FORMAT, "model": feature_definition, "views": views or config.cached_views,
                              "seed": config.seed, "augmentation": dataclasses.asdict(config.augmentation)},
                             sort_keys=True, default=list).encode())
    for name, tensor in sorted(model.backbone.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().float().numpy().tobytes())
    digest.update(str(pixels.shape).encode())
    for start in range(0, len(pixels), 4096):
        digest.update(np.ascontiguousarray(pixels[start:start + 4096]).tobytes())
    return digest.hexdigest()[:20]


class FeatureExtractor:
    """uint8 images (N, H, W, 3) -> (N, feature_dim) float32 pooled backbone features, by ONNX Runtime when it
    is installed (several times faster than PyTorch on a CPU), else by PyTorch."""

    def __init__(self, model: EmbeddingModel, folder: Path):
        from stylespace.inference import OnnxEmbedder, export_onnx, onnx_available

        self.model = model.eval()
        self.session = None
        if onnx_available() and next(model.parameters()).device.type == "cpu":
            path = export_onnx(model, folder / "features.onnx", output="features")
            self.session = OnnxEmbedder(path, batch_size=EXTRACT_BATCH)

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        if self.session is not None:
            return self.session(pixels)
        from stylespace.models.inputs import as_model_input

        device = next(self.model.parameters()).device
        with torch.inference_mode():
            return self.model.features(as_model_input(torch.from_numpy(np.array(pixels)).to(device))).float().cpu().numpy()


def _to_uint8(x: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) float in [0, 1] -> (B, H, W, 3) uint8: an augmented view as the extractor takes images."""
    return (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def view_features(model: EmbeddingModel, pixels: np.ndarray, config: TrainConfig, cache_dir: Path | None = None,
                  progress: bool = True, log: Callable[[str], None] = lambda message: None,
                  views: int | None = None) -> np.ndarray:
    """(V, N, feature_dim) float16: the pooled features of ``V = views`` (default ``config.cached_views``) views
    of each image (view 0 as it is, the others augmented), read from the cache or computed and cached (atomically)."""
    folder = Path(cache_dir) if cache_dir else cache_root() / "features"
    folder.mkdir(parents=True, exist_ok=True)
    views, n = views or config.cached_views, len(pixels)
    key = feature_cache_key(model, pixels, config, views)
    path = folder / f"{key}.npy"
    if path.is_file():
        try:
            cached = np.load(path, mmap_mode="r")
        except (OSError, ValueError) as exc:  # a damaged file (a disk that filled up): made again
            cached = None
            log(f"{path} is not readable ({exc}); computing the features again")
        if cached is not None and cached.shape == (views, n, model.feature_dim):
            log(f"backbone features of {views} views x {n:,} images read from the cache ({path.name})")
            return np.array(cached)  # a writable copy in memory (torch will not wrap a read-only map)
        if cached is not None:
            log(f"{path} has the wrong shape {cached.shape}; computing the features again")
    augment = BatchAugment(config.augmentation)
    out = np.empty((views, n, model.feature_dim), dtype=np.float16)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=folder) as scratch, ProgressBar(progress) as bar:
        extract = FeatureExtractor(model, Path(scratch))
        log(f"computing the frozen backbone's features of {views} views x {n:,} images once (cached for later runs)")
        for view in range(views):
            task = bar.start(f"view {view + 1}/{views}", n)
            generator = torch.Generator().manual_seed(config.seed * 1_000_003 + view)
            for start in range(0, n, 512):
                batch = np.ascontiguousarray(pixels[start:start + 512])
                if view > 0:
                    batch = _to_uint8(augment(torch.from_numpy(batch), generator=generator))
                out[view, start:start + len(batch)] = extract(batch)
                bar.advance(task, len(batch))
            bar.stop(task)
            log(f"view {view + 1}/{views} done after {time.perf_counter() - started:.0f} s")
        with atomic_write(path) as handle:
            np.save(handle, out)
    return out


def _views_of(features: torch.Tensor, idx: torch.Tensor, views: int, generator: torch.Generator) -> torch.Tensor:
    """(views * B, feature_dim) float32: ``views`` different cached views of each item ``idx`` (view-major)."""
    cached = features.shape[0]
    order = torch.stack([torch.randperm(cached, generator=generator)[:views] for _ in range(len(idx))], dim=1)
    return torch.cat([features[order[v], idx] for v in range(views)]).float()


def fit_on_cached_features(model: EmbeddingModel, train_pixels: np.ndarray, train_labels: np.ndarray,
                           val_pixels: np.ndarray, val_labels: np.ndarray, config: TrainConfig, run_dir: str | Path,
                           progress: bool = True, log: Callable[[str], None] = lambda message: None,
                           cache_dir: str | Path | None = None) -> FitResult:
    """Train ``model``'s head and classifier (the backbone frozen) on cached view features; save it to ``run_dir``.

    Args as :func:`stylespace.training.trainer.fit` (pixels (N, H, W, 3) uint8 at the model's input size,
    labels (N,) indices of ``model.config.classes``); ``config.cached_views`` views of each training image
    are cached (see :func:`view_features`), the validation images' plain view only. The kept model is the
    epoch with the best validation accuracy of the classifier.
    """
    config.validate()
    if config.cached_views < max(config.views, 1):
        raise StylespaceError(f"cached_views ({config.cached_views}) must be at least views ({config.views}): each "
                              "step draws that many different cached views of an item")
    if model.classifier is None and "ce" in config.objective:
        raise StylespaceError("the objective has a cross-entropy term but the model has no classifier")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_dataclass(config, run_dir / TRAIN_CONFIG_FILE)
    torch.manual_seed(config.seed)
    model.cpu().eval()
    train_features = torch.from_numpy(view_features(model, train_pixels, config, cache_dir, progress, log))
    has_val = len(val_labels) > 0
    val_features = torch.from_numpy(view_features(model, val_pixels, config, cache_dir, progress, log, views=1)[0]
                                    ).float() if has_val else torch.zeros(0, model.feature_dim)
    model.backbone.requires_grad_(False)
    n_classes = len(model.config.classes) if model.classifier is not None else int(train_labels.max()) + 1
    objective = build_objective(config.objective, config.objective_config, n_classes, model.config.embedding_dim)
    trained = [p for name, p in model.named_parameters() if not name.startswith("backbone.")]
    optimizer = make_optimizer(trained + list(objective.parameters()), config, [])
    sampler = build_sampler(config.sampler, train_labels, config.batch_size, config.seed, config.m_per_class,
                            config.balance_power)
    schedule = make_schedule(optimizer, config, len(sampler))
    labels = torch.from_numpy(train_labels)
    generator = torch.Generator().manual_seed(config.seed)
    views = max(config.views, 1)
    history, best, best_state, started = [], -math.inf, None, time.perf_counter()
    for epoch in range(1, config.epochs + 1):
        epoch_started = time.perf_counter()
        model.head.train()
        loss_sum, correct, seen = 0.0, 0, 0
        for indices, _ in sampler.batches(epoch):
            idx = torch.from_numpy(indices)
            features = _views_of(train_features, idx, views, generator)
            y = labels[idx].repeat(views)
            embeddings = model.head(features)
            logits = model.classify(embeddings) if model.classifier is not None else None
            instances = torch.arange(len(idx)).repeat(views) if views > 1 else None
            search = model.search_vectors(features, embeddings) if model.config.embed_layer != "head" else None
            loss, _ = objective(embeddings, logits, y, instances=instances, search=search)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            loss_sum += float(loss.detach()) * len(y)
            seen += len(y)
            if logits is not None:
                correct += int((logits.argmax(1) == y).sum())
        if not math.isfinite(loss_sum):
            raise StylespaceError(f"training diverged at epoch {epoch}; lower the learning rate (now {config.lr})")
        row = {"epoch": epoch, "train_loss": loss_sum / max(seen, 1),
               "train_accuracy": correct / seen if model.classifier is not None and seen else None,
               "val_loss": None, "val_accuracy": None, "val_metric": None, "lr": optimizer.param_groups[0]["lr"]}
        if has_val and model.classifier is not None:
            model.head.eval()
            with torch.no_grad():
                predicted = model.classify(model.head(val_features)).argmax(1).numpy()
            row["val_accuracy"] = row["val_metric"] = float((predicted == val_labels).mean())
        row["seconds"] = round(time.perf_counter() - epoch_started, 2)
        history.append(row)
        metric = row["val_metric"] if row["val_metric"] is not None else -row["train_loss"]
        if metric > best:
            best, best_epoch = metric, epoch
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        shown = f"val accuracy {100 * row['val_accuracy']:.2f} %" if row["val_accuracy"] is not None else ""
        log(f"epoch {epoch}/{config.epochs}: loss {row['train_loss']:.4f} {shown} ({row['seconds']:.1f} s)")
    model.load_state_dict(best_state)
    model.eval()
    write_history_csv(history, run_dir / HISTORY_FILE)
    plot_learning_curves(history, run_dir / CURVES_FILE, title=f"{model.config.backbone} (frozen), {config.objective}")
    save_model(model, run_dir)
    metric_name = "val_accuracy" if has_val and model.classifier is not None else "none"
    return FitResult(history, metric_name, best_epoch, float(best) if metric_name != "none" else math.nan,
                     len(history), False, round(time.perf_counter() - started, 2), "cpu")
