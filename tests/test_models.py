"""Backbones, the embedding model, weights files, save/load and the embeddings file."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from stylespace.embeddings import Embeddings, embed_catalog, embed_images
from stylespace.models import (
    BACKBONES, EmbeddingModel, ModelConfig, build_backbone, build_model, load_model, model_id, save_model,
)
from stylespace.utils import StylespaceError

SMALL = (32, 24)  # H, W: small enough for fast tests, big enough for every backbone after upsampling


def small_config(**kw) -> ModelConfig:
    kw.setdefault("input_size", SMALL)
    kw.setdefault("embedding_dim", 16)
    return ModelConfig(**kw)


@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.parametrize("multiscale", [False, True])
def test_backbone_shapes(backbone, multiscale):
    torch.manual_seed(0)
    model = build_model(small_config(backbone=backbone, multiscale=multiscale, width=8,
                                     classes=["a", "b", "c"])).eval()
    x = torch.rand(2, 3, *SMALL)
    with torch.no_grad():
        maps = model.backbone(x)
        features = model.features(x)
        raw, unit, logits = model(x), model.embed(x), model.logits(x)
    assert [m.shape[1] for m in maps] == model.backbone.stage_channels
    expected = sum(model.backbone.stage_channels[i] for i in model.pooled_stages)
    assert features.shape == (2, expected) == (2, model.feature_dim)
    assert len(model.pooled_stages) == (2 if multiscale else 1)
    assert raw.shape == unit.shape == (2, 16)
    assert logits.shape == (2, 3)
    assert torch.allclose(unit.norm(dim=1), torch.ones(2), atol=1e-5)
    assert model.predict(x).shape == (2,)


def test_inception_upsamples_small_inputs():
    backbone = build_backbone(small_config(backbone="inception_v3"))
    assert backbone.fit_input(torch.rand(1, 3, 32, 24)).shape[-2:] == (100, 75)
    assert backbone.fit_input(torch.rand(1, 3, 80, 80)).shape[-2:] == (80, 80)


def test_compact_stem_stride_and_pooling_options():
    x = torch.rand(3, 3, 80, 60)
    for stride, size in ((2, (5, 4)), (4, (3, 2))):
        model = build_model(ModelConfig(stem_stride=stride, width=8)).eval()
        assert model.backbone(x)[-1].shape[-2:] == size
    gem = build_model(ModelConfig(width=8, pooling="gem")).eval()
    avgmax = build_model(ModelConfig(width=8, pooling="avgmax")).eval()
    assert avgmax.feature_dim == 2 * gem.feature_dim == 2 * 64
    assert gem(x).shape == avgmax(x).shape == (3, 128)


def test_stride_1_stem_keeps_a_small_image_whole():
    model = build_model(ModelConfig(stem_stride=1, width=8, input_size=(28, 28))).eval()
    maps = model.backbone(torch.rand(2, 3, 28, 28))
    assert [m.shape[-1] for m in maps] == [28, 14, 7, 4]
    # the stride-1 and stride-2 stems have the same parameters: the stride is the only change
    assert model.state_dict().keys() == build_model(ModelConfig(stem_stride=2, width=8)).state_dict().keys()


@pytest.mark.parametrize("name", ["default", "fast", "compact", "packshot"])
def test_shipped_models_load_unchanged(name):
    folder = Path(__file__).resolve().parents[1] / "models" / name
    if not (folder / "model.safetensors").is_file():
        pytest.skip(f"{folder} not present")
    model = load_model(folder)
    # the id its model card gives (weights + model.json): a changed backbone or config would change it
    card = re.search(r"\| model id \| `([0-9a-f]{12})`", (folder / "MODEL_CARD.md").read_text()).group(1)
    assert model_id(model) == card


def test_uint8_input_matches_float_input():
    model = build_model(small_config(width=8)).eval()
    pixels = torch.randint(0, 256, (2, 3, *SMALL), dtype=torch.uint8)
    with torch.no_grad():
        assert torch.allclose(model(pixels), model(pixels.float() / 255), atol=1e-6)


def test_cosine_classifier_scores_are_scaled_cosines():
    model = build_model(small_config(width=8, classes=["a", "b"], classifier="cosine", cosine_scale=10.0)).eval()
    assert model.classifier.bias is None
    with torch.no_grad():
        logits = model.logits(torch.rand(4, 3, *SMALL))
    assert logits.abs().max() <= 10.0 + 1e-4


def test_embed_layer_features_gives_the_pooled_features_under_the_head():
    head = build_model(small_config(width=8, embedding_dim=16)).eval()
    features = build_model(small_config(width=8, embedding_dim=16, embed_layer="features")).eval()
    features.load_state_dict(head.state_dict())
    x = torch.rand(3, 3, *SMALL)
    with torch.no_grad():
        assert head.embed(x).shape == (3, head.output_dim) == (3, 16)
        vectors = features.embed(x)
        assert vectors.shape == (3, features.output_dim) == (3, features.feature_dim)
        assert torch.allclose(vectors, torch.nn.functional.normalize(head.features(x), dim=1), atol=1e-6)
        assert torch.allclose(vectors.norm(dim=1), torch.ones(3), atol=1e-5)
        assert torch.allclose(features(x), head(x))  # training (forward) still goes through the head
    assert model_id(features) != model_id(head)


def test_no_classifier_means_no_predict():
    model = build_model(small_config(width=8))
    assert model.classifier is None
    with pytest.raises(StylespaceError, match="no classifier"):
        model.predict(torch.rand(1, 3, *SMALL))


@pytest.mark.parametrize("field, value, message", [
    ("backbone", "alexnet", "unknown"), ("embedding_dim", 1, "embedding_dim"), ("input_size", (4, 60), "input_size"),
    ("pooling", "max", "pooling"), ("dropout", 1.0, "dropout"), ("depth", (1, 1), "depth"),
    ("classifier", "svm", "classifier"), ("stem_stride", 3, "stem_stride"), ("classes", ["a", "a"], "unique"),
    ("embed_layer", "logits", "embed_layer"),
])
def test_config_validation(field, value, message):
    with pytest.raises(StylespaceError, match=message):
        ModelConfig(**{field: value}).validate()


def test_bad_input_shape_is_a_clear_error():
    model = build_model(small_config(width=8))
    with pytest.raises(StylespaceError, match=r"\(B, 3, H, W\)"):
        model(torch.rand(2, *SMALL, 3))


# --- weights files --------------------------------------------------------------------------------


def torchvision_resnet18_state() -> dict[str, torch.Tensor]:
    """A state dict in torchvision's own format (fc included), as a downloaded .pth file holds."""
    import torchvision

    torch.manual_seed(1)
    return torchvision.models.resnet18(weights=None).state_dict()


def test_torchvision_weights_file_loads(tmp_path):
    state = torchvision_resnet18_state()
    path = tmp_path / "resnet18.pth"
    torch.save(state, path)
    model = build_model(small_config(backbone="resnet18", weights=str(path)))
    assert torch.equal(model.backbone.conv1.weight, state["conv1.weight"])
    assert torch.equal(model.backbone.layer4[1].bn2.running_var, state["layer4.1.bn2.running_var"])
    # The same tensors from a .safetensors file, wrapped the way some checkpoints are.
    st = tmp_path / "resnet18.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(st))
    model = build_model(small_config(backbone="resnet18", weights=str(st)))
    assert torch.equal(model.backbone.layer1[0].conv1.weight, state["layer1.0.conv1.weight"])
    wrapped = tmp_path / "wrapped.pt"
    torch.save({"state_dict": {"module." + k: v for k, v in state.items()}}, wrapped)
    build_model(small_config(backbone="resnet18", weights=str(wrapped)))


def test_missing_weights_file_names_it(tmp_path):
    path = tmp_path / "nope.pth"
    with pytest.raises(StylespaceError, match="nope.pth not found"):
        build_model(small_config(backbone="resnet18", weights=str(path)))


def test_mismatched_weights_file_says_what_was_expected(tmp_path):
    path = tmp_path / "lenet.pth"
    torch.save(build_model(small_config(backbone="lenet")).backbone.state_dict(), path)
    with pytest.raises(StylespaceError, match=r"lenet.pth does not fit backbone 'resnet18'.*missing.*unexpected"):
        build_model(small_config(backbone="resnet18", weights=str(path)))
    state = torchvision_resnet18_state()
    state["conv1.weight"] = torch.zeros(64, 3, 3, 3)
    torch.save(state, path)
    with pytest.raises(StylespaceError, match=r"wrong shape .*conv1.weight"):
        build_model(small_config(backbone="resnet18", weights=str(path)))


def test_unreadable_weights_file(tmp_path):
    path = tmp_path / "junk.pth"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(StylespaceError, match="could not be read"):
        build_model(small_config(backbone="resnet18", weights=str(path)))
    torch.save([1, 2, 3], path)
    with pytest.raises(StylespaceError, match="does not hold a state dict"):
        build_model(small_config(backbone="resnet18", weights=str(path)))


# --- save / load -----------------------------------------------------------------------------------


def test_save_load_round_trip(tmp_path):
    torch.manual_seed(0)
    model = build_model(small_config(width=8, classes=["x", "y"], multiscale=True, pooling="gem")).eval()
    x = torch.rand(3, 3, *SMALL)
    save_model(model, tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert loaded.config == model.config
    assert model_id(loaded) == model_id(model)
    with torch.no_grad():
        assert torch.allclose(loaded.embed(x), model.embed(x), atol=1e-6)
        assert torch.equal(loaded.predict(x), model.predict(x))
    assert json.loads((tmp_path / "m" / "model.json").read_text())["classes"] == ["x", "y"]


def test_model_id_changes_with_the_weights():
    model = build_model(small_config(width=8))
    before = model_id(model)
    with torch.no_grad():
        model.head[1].weight.add_(1e-3)
    assert model_id(model) != before and len(before) == 12


def test_loaded_model_does_not_need_the_pretrained_file(tmp_path):
    path = tmp_path / "resnet18.pth"
    torch.save(torchvision_resnet18_state(), path)
    save_model(build_model(small_config(backbone="resnet18", weights=str(path))), tmp_path / "m")
    path.unlink()
    assert load_model(tmp_path / "m").config.weights == str(path)


def test_load_errors(tmp_path):
    with pytest.raises(StylespaceError, match="not a model folder"):
        load_model(tmp_path)
    model = build_model(small_config(width=8))
    save_model(model, tmp_path / "m")
    # model.json of another save (e.g. a crash between the two writes) is detected.
    config = json.loads((tmp_path / "m" / "model.json").read_text())
    config["embedding_dim"] = 32
    (tmp_path / "m" / "model.json").write_text(json.dumps(config))
    with pytest.raises(StylespaceError, match="does not match"):
        load_model(tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(StylespaceError, match="not a readable safetensors"):
        load_model(tmp_path / "m")


def test_failed_save_leaves_the_previous_model(tmp_path, monkeypatch):
    import stylespace.utils as utils

    first = build_model(small_config(width=8))
    save_model(first, tmp_path / "m")
    second = build_model(small_config(width=8))

    def disk_full(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(utils.os, "replace", disk_full)
    with pytest.raises(OSError, match="disk full"):
        save_model(second, tmp_path / "m")
    monkeypatch.undo()
    assert model_id(load_model(tmp_path / "m")) == model_id(first)
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["model.json", "model.safetensors"]


# --- embeddings ------------------------------------------------------------------------------------


def test_embed_images_batches_and_normalises():
    model = build_model(small_config(width=8)).eval()
    pixels = np.random.default_rng(0).integers(0, 256, (7, *SMALL, 3), dtype=np.uint8)
    vectors = embed_images(model, pixels, batch_size=3, device="cpu")
    assert vectors.shape == (7, 16) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    whole = embed_images(model, pixels, batch_size=64, device="cpu")
    assert np.allclose(vectors, whole, atol=1e-5)
    with pytest.raises(StylespaceError, match="model takes 32x24"):
        embed_images(model, np.zeros((1, 80, 60, 3), np.uint8))
    assert embed_images(model, np.zeros((0, *SMALL, 3), np.uint8)).shape == (0, 16)


def test_embeddings_file_round_trip(tmp_path):
    vectors = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    emb = Embeddings(["a", "b", "c"], vectors, ["x", None, "y"], "abc123", {"catalog": "c.zip", "n": 3})
    emb.save(tmp_path / "e.npz")
    back = Embeddings.load(tmp_path / "e.npz")
    assert back.ids == emb.ids and back.labels == emb.labels and back.model_id == "abc123"
    assert back.meta == {"catalog": "c.zip", "n": 3}
    assert np.array_equal(back.vectors, vectors)
    Embeddings(["a"], vectors[:1]).save(tmp_path / "u.npz")
    assert Embeddings.load(tmp_path / "u.npz").labels is None
    assert back.subset(["c", "a"]).labels == ["y", "x"]


def test_embeddings_errors(tmp_path):
    with pytest.raises(StylespaceError, match="not found"):
        Embeddings.load(tmp_path / "none.npz")
    (tmp_path / "bad.npz").write_bytes(b"junk")
    with pytest.raises(StylespaceError, match="not a readable embeddings file"):
        Embeddings.load(tmp_path / "bad.npz")
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(StylespaceError, match="missing ids"):
        Embeddings.load(tmp_path / "other.npz")
    with pytest.raises(StylespaceError, match="one vector per id"):
        Embeddings(["a", "b"], np.zeros((3, 2)))
    with pytest.raises(StylespaceError, match="unique"):
        Embeddings(["a", "a"], np.zeros((2, 2)))


def test_embed_catalog(small_catalog):
    from stylespace.data import load_catalog

    catalog = load_catalog(small_catalog)
    model = build_model(ModelConfig(width=8, embedding_dim=8)).eval()
    emb = embed_catalog(model, catalog, progress=False, device="cpu")
    assert len(emb) == len(catalog) and emb.dim == 8
    assert emb.labels == [catalog[i].label for i in emb.ids]
    assert emb.model_id == model_id(model) and emb.meta["failed"] == {}
