"""A small served catalog for the service tests, the browser test and the load benchmark.

A generated Kaggle-layout catalog, indexed with an untrained compact model (fast, deterministic), with a
small text model beside it (MODEL/text: search by words), a
threshold calibrated with the real calibration at 50 % coverage (so both confident and unconfident
queries exist), and a compatibility folder with an untrained head whose cutoff is the median distance
of sampled pairs (so both verdicts occur). Everything is built by the real stylespace parts.
"""
from __future__ import annotations

import contextlib
import dataclasses
import socket
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import write_kaggle_catalog


@dataclasses.dataclass
class ServedCatalog:
    catalog: Path
    model: Path
    index: Path
    compat: Path


def build_index(root: Path, per_class: int = 12, seed: int = 0) -> ServedCatalog:
    """Write catalog, model, calibrated index and compatibility folder under ``root``."""
    from stylespace.compat.judge import save_compatibility
    from stylespace.compat.model import CompatibilityConfig, CompatibilityHead, CompatibilityModel, Cutoff
    from stylespace.data import load_catalog, load_image_array
    from stylespace.index.build import build_index as index_catalog
    from stylespace.models import ModelConfig, build_model, model_id, save_model
    from stylespace.recommend import calibrate
    from stylespace.text import TextConfig, train_text_model

    root = Path(root)
    catalog_dir = write_kaggle_catalog(root / "catalog", per_class=per_class, seed=seed)
    catalog = load_catalog(catalog_dir)
    torch.manual_seed(seed)
    model = build_model(ModelConfig(backbone="compact", embedding_dim=32, width=8)).eval()
    save_model(model, root / "model")
    text_config = TextConfig(epochs=15, batch_size=32, token_dim=16, hidden_dim=32, vocab_size=150)
    train_text_model(model, catalog, config=text_config, device="cpu", progress=False).save(root / "model" / "text")
    index, failed = index_catalog(model, catalog, root / "index", model_path=root / "model", device="cpu",
                                  progress=False)
    assert not failed, failed

    # Calibrate on the catalog's own items (each left out of its own recommendation).
    ids = index.ids
    calibration = calibrate(index, index.vectors(ids), [catalog[i].label for i in ids], query_ids=ids,
                            model_id=model_id(model), target_coverage=0.5, queries="generated catalog")
    calibration.save(index)

    pixels = load_image_array(catalog, size=(80, 60), progress=False)
    config = CompatibilityConfig(backbone="compact (untrained, test)", backbone_model_id=model_id(model),
                                 input_size=(80, 60), feature_dim=32, hidden_dims=(16,), output_dim=8)
    head = CompatibilityHead(config.feature_dim, config.hidden_dims, config.output_dim)
    compat = CompatibilityModel(model, head, config).eval()
    rng = np.random.default_rng(seed)
    a, b = rng.choice(len(pixels.ids), size=(2, 64))
    distances = compat.distance(pixels.pixels[a], pixels.pixels[b])
    cutoff = Cutoff(float(np.median(distances)), method="median of 64 random pairs (untrained test model)")
    save_compatibility(root / "compat", compat, cutoff)
    index.close()
    return ServedCatalog(catalog_dir, root / "model", root / "index", root / "compat")


@contextlib.contextmanager
def served_catalog(tmp_path_factory, name: str):
    """:func:`build_index` in a fresh temporary folder, with a private image cache (for module fixtures)."""
    root = tmp_path_factory.mktemp(name)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("STYLESPACE_CACHE", str(root / "cache"))
        yield build_index(root)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
