"""Training on a frozen pre-trained backbone: view features cached once, the head trained on them."""
from __future__ import annotations

import dataclasses
import importlib.util
import json

import numpy as np
import pytest
import torch

from stylespace.models import EmbeddingModel, ModelConfig, load_model, model_id
from stylespace.training import TrainConfig
from stylespace.training.augment import AugmentConfig
from stylespace.training.frozen import feature_cache_key, view_features
from stylespace.training.run import train_run
from stylespace.utils import StylespaceError

pytestmark = pytest.mark.skipif(importlib.util.find_spec("timm") is None, reason="timm is not installed")


def lite(**kw) -> ModelConfig:
    """EfficientNet-Lite0 with random weights at a small network size: the recipe's mechanics, fast."""
    kw.setdefault("network_size", (64, 48))
    return ModelConfig(backbone="efficientnet-lite0", embedding_dim=16, head_hidden=32, classifier="cosine",
                       embed_layer="both", **kw)


def recipe(**kw) -> TrainConfig:
    base = dict(objective="ce+instance:0.5", views=2, cached_views=3, epochs=6, batch_size=16, lr=5e-3,
                device="cpu", augmentation=AugmentConfig(scale=0.1, flip=0.5, colour=0.2))
    base.update(kw)
    return TrainConfig(**base)


def test_cache_key_changes_with_backbone_augmentation_views_and_pixels():
    model = EmbeddingModel(lite())
    pixels = np.random.default_rng(0).integers(0, 255, (4, 80, 60, 3), dtype=np.uint8)
    key = feature_cache_key(model, pixels, recipe())
    assert key == feature_cache_key(model, pixels.copy(), recipe())
    other_backbone = EmbeddingModel(lite())  # other random weights
    assert feature_cache_key(other_backbone, pixels, recipe()) != key
    assert feature_cache_key(model, pixels, recipe(augmentation=AugmentConfig(scale=0.2))) != key
    assert feature_cache_key(model, pixels, recipe(cached_views=4)) != key
    assert feature_cache_key(model, pixels, recipe(seed=1)) != key
    changed = pixels.copy()
    changed[0, 0, 0, 0] ^= 1
    assert feature_cache_key(model, changed, recipe()) != key
    bigger = EmbeddingModel(lite(network_size=(96, 72)))
    bigger.backbone.load_state_dict(model.backbone.state_dict())
    assert feature_cache_key(bigger, pixels, recipe()) != key
    # the head is not part of the features: another head reads the same cache
    head_only = EmbeddingModel(dataclasses.replace(lite(), embedding_dim=8))
    head_only.backbone.load_state_dict(model.backbone.state_dict())
    assert feature_cache_key(head_only, pixels, recipe()) == key


def test_view_features_are_cached_and_view_zero_is_the_plain_image(tmp_path):
    model = EmbeddingModel(lite()).eval()
    pixels = np.random.default_rng(1).integers(0, 255, (5, 80, 60, 3), dtype=np.uint8)
    first = view_features(model, pixels, recipe(), tmp_path, progress=False)
    assert first.shape == (3, 5, model.feature_dim) and first.dtype == np.float16
    files = list(tmp_path.glob("*.npy"))
    assert len(files) == 1
    from stylespace.models.inputs import as_model_input

    with torch.no_grad():
        plain = model.features(as_model_input(torch.from_numpy(pixels))).numpy()
    np.testing.assert_allclose(first[0].astype(np.float32), plain, rtol=2e-2, atol=2e-2)
    assert not np.allclose(first[1], first[0], atol=1e-2)  # augmented views differ from the plain one
    messages = []
    again = view_features(model, pixels, recipe(), tmp_path, progress=False, log=messages.append)
    assert np.array_equal(again, first) and "read from the cache" in messages[0]
    view_features(model, pixels, recipe(augmentation=AugmentConfig(scale=0.3)), tmp_path, progress=False)
    assert len(list(tmp_path.glob("*.npy"))) == 2  # another augmentation: its own cache file


def test_recipe_trains_the_head_only_and_separates_classes(tmp_path, catalog_and_split):
    catalog, split, manifest = catalog_and_split
    config = lite()
    model, result, record = train_run(catalog, split, config, recipe(epochs=15), tmp_path / "run", progress=False)
    saved = load_model(tmp_path / "run")
    assert model_id(saved) == record["model_id"]
    fresh = EmbeddingModel(config)
    # the backbone is exactly the starting one (frozen); random weights are seeded by the run's seed
    torch.manual_seed(0)
    start = EmbeddingModel(config)
    for name, tensor in saved.backbone.state_dict().items():
        assert torch.equal(tensor, start.backbone.state_dict()[name]), name
    assert not torch.equal(saved.head[-2].weight, fresh.head[-2].weight)
    assert result.epochs_run == 15 and result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert result.best_val_metric >= 0.5  # 4 synthetic classes told apart from a random backbone's features
    assert json.loads((tmp_path / "run" / "train.json").read_text())["cached_views"] == 3


def test_cached_views_must_cover_the_views():
    with pytest.raises(StylespaceError, match="cached_views"):
        recipe(views=2, cached_views=1)


@pytest.fixture
def catalog_and_split(small_catalog, tmp_path):
    from stylespace.data import load_catalog, protocol_split

    manifest = protocol_split(load_catalog(small_catalog), n_main=4, n_new=2, main_fractions=(0.8, 0.1, 0.1))
    manifest.save(tmp_path / "split.csv")
    return small_catalog, tmp_path / "split.csv", manifest


def test_init_from_a_lite0_model_picks_the_frozen_fine_tuning(tmp_path):
    from stylespace.models import save_model
    from stylespace.training.presets import finetune_preset, preset

    save_model(EmbeddingModel(lite()), tmp_path / "lite")
    save_model(EmbeddingModel(ModelConfig(backbone="compact", width=8, embedding_dim=16)), tmp_path / "compact")
    assert finetune_preset(str(tmp_path / "lite")) == "finetune-frozen"
    assert finetune_preset(str(tmp_path / "compact")) == "finetune"
    _, frozen = preset("finetune-frozen")
    assert frozen.cached_views > 0 and preset("finetune")[1].cached_views == 0


def test_fine_tuning_a_lite0_model_keeps_its_backbone_and_starts_from_its_head(tmp_path, catalog_and_split):
    from stylespace.models import save_model
    from stylespace.training.presets import preset

    catalog, split, _ = catalog_and_split
    parent = EmbeddingModel(lite(classes=["x", "y"])).eval()
    save_model(parent, tmp_path / "parent")
    _, config = preset("finetune-frozen")
    config = dataclasses.replace(config, init=str(tmp_path / "parent"), epochs=2, device="cpu")
    model, _, record = train_run(catalog, split, None, config, tmp_path / "run", progress=False)
    assert record["parent"]["model_id"] == model_id(parent)
    for name, tensor in model.backbone.state_dict().items():
        assert torch.equal(tensor, parent.backbone.state_dict()[name]), name
    assert model.classes != parent.classes  # the new catalog's classes, on a new classifier


def test_a_damaged_feature_cache_is_made_again(tmp_path):
    model = EmbeddingModel(lite()).eval()
    pixels = np.random.default_rng(2).integers(0, 255, (3, 80, 60, 3), dtype=np.uint8)
    first = view_features(model, pixels, recipe(), tmp_path, progress=False)
    path = next(tmp_path.glob("*.npy"))
    path.write_bytes(b"truncated")
    messages = []
    again = view_features(model, pixels, recipe(), tmp_path, progress=False, log=messages.append)
    assert np.array_equal(again, first) and "not readable" in messages[0]
