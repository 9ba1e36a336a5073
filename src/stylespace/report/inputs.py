"""Gather what the report reads from paths: the model (and its untrained twin), the split, the catalog's
decoded pixels, the training history and an optional pairs file."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from stylespace.data import SplitManifest, load_catalog, load_image_array
from stylespace.report.build import Embedder, ReportInputs
from stylespace.utils import StylespaceError, at_least, pick_device, validate

# The name stylespace.training.trainer writes. Not imported from there: importing the training package
# pulls in pytorch-metric-learning, which imports faiss.contrib.torch_utils, whose patched Index.search
# rejects the ``params=`` argument the catalog index passes (the report's risk-coverage step then fails).
HISTORY_FILE = "history.csv"


def untrained_twin(model, seed: int = 0):
    """The same architecture as ``model`` (its ModelConfig) at a seeded random initialisation, in eval mode.

    Pre-trained backbone weights named in the config are not loaded: "before training" means random.
    """
    import torch

    from stylespace.models import EmbeddingModel

    devices = {p.device for p in model.parameters()}
    with torch.random.fork_rng(devices=[d for d in devices if d.type == "cuda"]):
        torch.manual_seed(seed)
        twin = EmbeddingModel(model.config, load_weights=False)
    return twin.to(next(iter(devices))).eval()


def model_embedder(model, device, batch_size: int) -> Embedder:
    """pixels uint8 (N, H, W, 3) -> L2-normalised embeddings (N, D) float32, through the embeddings package."""
    from stylespace.embeddings import embed_images

    return lambda pixels: np.asarray(embed_images(model, pixels, batch_size=batch_size, device=device), dtype=np.float32)


def find_history(model_path: Path, run: Path | None) -> Path | None:
    """``history.csv`` of the training run: in ``run`` when given (an error when absent), else beside the model
    or in its parent folder (a run folder holding the model in a sub-folder); None when there is none."""
    if run is not None:
        candidates = [run] if run.is_file() else [run / HISTORY_FILE]
        if not candidates[0].is_file():
            raise StylespaceError(f"{run}: no {HISTORY_FILE} there; pass the training run folder that holds it")
        return candidates[0]
    for folder in (model_path, model_path.parent):
        if (folder / HISTORY_FILE).is_file():
            return folder / HISTORY_FILE
    return None


def load_report_inputs(model_path: str | os.PathLike, split_path: str | os.PathLike,
                       catalog: str | os.PathLike | None = None, run: str | os.PathLike | None = None,
                       pairs: str | os.PathLike | None = None, device: str = "auto", batch_size: int = 256,
                       seed: int = 0, progress: bool = True) -> ReportInputs:
    """Load every input of the report; user errors name the file and what to do."""
    from stylespace.models import load_model, model_id

    validate([at_least("batch_size", batch_size, 1)])
    model_path, split_path = Path(model_path), Path(split_path)
    manifest = SplitManifest.load(split_path)
    catalog_path = Path(catalog) if catalog is not None else (Path(manifest.config.catalog) if manifest.config.catalog else None)
    if catalog_path is None:
        raise StylespaceError(f"{split_path}: its config names no catalog; pass the catalog with --catalog")
    if not catalog_path.exists():
        raise StylespaceError(f"{catalog_path}: the split's catalog was not found; pass it with --catalog")
    torch_device = pick_device(device)
    model = load_model(model_path, device=torch_device)
    the_catalog = load_catalog(catalog_path, label_column=manifest.config.label_column or None)
    images = load_image_array(the_catalog, size=model.config.input_size, progress=progress)
    missing_ids = len(set(manifest.ids) - set(the_catalog.ids))
    if missing_ids == len(manifest):
        raise StylespaceError(f"{split_path}: none of its items is in {catalog_path}; was the split made from "
                              "another catalog? pass that one with --catalog")
    pair_list, pair_images = None, None
    if pairs is not None:
        pair_catalog = load_catalog(pairs, kind="pairs", base=the_catalog)
        if not pair_catalog.pairs:
            raise StylespaceError(f"{pairs}: no usable pairs (rows: image_a,image_b,label with images that exist)")
        pair_list = list(pair_catalog.pairs)
        pair_images = load_image_array(pair_catalog, size=model.config.input_size, progress=progress)
    describe = {
        "model": f"{model_path} (id {model_id(model)}, {model.config.backbone}, D = {model.output_dim}, "
                 f"input {model.config.input_size[0]}x{model.config.input_size[1]})",
        "split": f"{split_path} ({manifest.config.method}, seed {manifest.config.seed})",
        "catalog": f"{catalog_path} ({len(the_catalog):,} items"
                   + (f"; {missing_ids:,} split items are not in it" if missing_ids else "") + ")",
        "device": str(torch_device),
    }
    if manifest.config.catalog_fingerprint and not the_catalog.matches_fingerprint(manifest.config.catalog_fingerprint):
        describe["warning"] = "the catalog changed since the split was made (fingerprints differ)"
    return ReportInputs(
        manifest=manifest, images=images, embed=model_embedder(model, torch_device, batch_size),
        embed_untrained=model_embedder(untrained_twin(model, seed), torch_device, batch_size),
        history=find_history(model_path, Path(run) if run is not None else None),
        pairs=pair_list, pair_images=pair_images, describe=describe)
