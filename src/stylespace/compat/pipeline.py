"""From a catalog and a pairs CSV to a saved compatibility model: the steps `stylespace compat-train` runs."""
from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from stylespace.compat.judge import save_compatibility
from stylespace.compat.model import CompatibilityConfig, CompatibilityModel
from stylespace.compat.pairs import PairSet, split_pairs
from stylespace.compat.train import CompatTrainResult, PairFeatures, train_compatibility
from stylespace.data import Catalog, load_catalog, load_image_array
from stylespace.utils import StylespaceError, pick_device


def load_pairs(pairs_csv: str | os.PathLike, catalog: Catalog) -> tuple[PairSet, dict]:
    """The pairs of a CSV whose entries are ids of ``catalog`` (or image paths beside the CSV)."""
    pair_catalog = load_catalog(pairs_csv, kind="pairs", base=catalog)
    pairs = PairSet.from_catalog(pair_catalog)
    unknown = [i for i in pairs.ids if i not in catalog]
    if unknown:
        raise StylespaceError(f"{pairs_csv}: {len(unknown)} pair entries are not ids of {catalog.source_path} "
                              f"(e.g. {unknown[:3]}); write catalog ids in image_a,image_b")
    return pairs, {"path": str(pairs_csv), "skipped": len(pair_catalog.skipped), **pairs.summary()}


def load_backbone(spec: str, input_size: tuple[int, int] = (80, 60), weights: str = "",
                  seed: int = 0) -> tuple[torch.nn.Module, str]:
    """The frozen backbone named by ``spec``: a model run folder (``stylespace train`` output), or a
    backbone name (``compact``, ``resnet50``, ... see stylespace.models.BACKBONES) built at ``input_size``,
    untrained or with the local torchvision ``weights`` file.

    A built backbone's embedding layer is untrained, so it is made as wide as the pooled features
    (a random square projection keeps what a narrower one would throw away); its random weights are
    saved with the head. Returns (the model, a description for the config).
    """
    from stylespace import models

    if spec in models.BACKBONES:
        config = models.ModelConfig(backbone=spec, input_size=tuple(input_size), weights=weights)
        torch.manual_seed(seed)
        feature_dim = models.build_model(dataclasses.replace(config, weights="")).feature_dim
        torch.manual_seed(seed)
        model = models.build_model(dataclasses.replace(config, embedding_dim=feature_dim))
        return model.eval(), f"{spec} ({'weights ' + weights if weights else 'untrained'})"
    path = models.resolve_model_dir(spec)
    if not path.is_dir():
        raise StylespaceError(f"backbone {spec!r}: expected a model run folder (with model.json) or one of "
                              f"{', '.join(models.BACKBONES)}")
    if weights:
        raise StylespaceError("--backbone-weights goes with a backbone name (e.g. resnet50), not a run folder")
    return models.load_model(path).eval(), str(path)


def item_categories(catalog: Catalog, ids: list[str], column: str) -> dict[str, str]:
    """id -> the item's ``column`` value; with ``column=""`` every item is its own category (no constraint)."""
    if not column:
        return {i: i for i in ids}
    if column not in catalog.metadata_columns and column != "label":
        raise StylespaceError(f"{catalog.source_path}: no item column {column!r} to keep training pairs "
                              f"cross-category (columns: {catalog.metadata_columns}); pass another "
                              "--category-column, or '' for none")
    return {i: (catalog[i].label if column == "label" else catalog[i].meta.get(column, "")) or "" for i in ids}


def backbone_features(backbone: torch.nn.Module, catalog: Catalog, ids: list[str], input_size: tuple[int, int],
                      device: torch.device, batch_size: int = 256, progress: bool = True) -> tuple[PairFeatures, dict]:
    """Frozen features of ``ids`` (through the catalog's decoded image cache); ids that fail to decode are
    returned in the report's ``failed`` so their pairs can be dropped."""
    from stylespace.embeddings import embed_images

    array = load_image_array(catalog, size=input_size, progress=progress)
    usable = [i for i in ids if i not in array.failed]
    started = time.perf_counter()
    vectors = embed_images(backbone, array.take(usable), batch_size=batch_size, device=device)
    return PairFeatures(usable, vectors), {"failed": sorted(set(ids) - set(usable)),
                                           "seconds": round(time.perf_counter() - started, 2)}


def train_from_catalog(catalog_path: str | os.PathLike, pairs_csv: str | os.PathLike, backbone: str,
                       output: str | os.PathLike, config: CompatibilityConfig | None = None, device: str = "auto",
                       backbone_weights: str = "", progress: bool = True,
                       log: Callable[[str], None] = lambda s: None) -> tuple[CompatTrainResult, dict]:
    """Load, split, precompute features, sweep, save. Returns the result and the saved evaluation report."""
    config = config or CompatibilityConfig()
    target = pick_device(device)
    started = time.perf_counter()
    catalog = load_catalog(catalog_path)
    pairs, pairs_report = load_pairs(pairs_csv, catalog)
    model, description = load_backbone(backbone, config.input_size, backbone_weights, config.seed)
    input_size = tuple(model.config.input_size)
    from stylespace.models import model_id

    config = dataclasses.replace(config, backbone=description, backbone_model_id=model_id(model),
                                 input_size=input_size, pairs=str(pairs_csv))
    log(f"{pairs_report['pairs']:,} pairs ({pairs_report['positives']:,} positive) over {pairs_report['items']:,} "
        f"items; backbone {description} at {input_size[0]}x{input_size[1]}")
    features, feature_report = backbone_features(model.to(target), catalog, pairs.ids, input_size, target,
                                                 progress=progress)
    if feature_report["failed"]:
        pairs = pairs.drop_ids(set(feature_report["failed"]))
        log(f"{len(feature_report['failed'])} items fail to decode; their pairs are left out")
    log(f"backbone features {features.features.shape} in {feature_report['seconds']:.1f} s")
    splits, split_report = split_pairs(pairs, by=config.split_by, split_seed=config.split_seed)
    if split_report["dropped_pairs"]:
        log(f"{split_report['dropped_pairs']:,} pairs straddle two item splits and are left out "
            "(use --split-by pair to keep them, at the price of items shared between splits)")
    category_of = item_categories(catalog, features.ids, config.category_column)
    result = train_compatibility(features, splits, config, category_of, target, log)
    evaluation = {
        **result.report(),
        "catalog": str(catalog_path),
        "pairs": pairs_report,
        "split": split_report,
        "feature_seconds": feature_report["seconds"],
        "failed_items": feature_report["failed"],
        "total_seconds": round(time.perf_counter() - started, 2),
    }
    compat_model = CompatibilityModel(model.cpu(), result.head, result.config)
    save_compatibility(output, compat_model, result.cutoff, evaluation)
    return result, evaluation
