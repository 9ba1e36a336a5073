"""ONNX Runtime gives PyTorch's embeddings (max abs difference <= 1e-5), from a file keyed to the model id."""
from __future__ import annotations

import zipfile

import numpy as np
import pytest
import torch

from conftest import ROOT, SHARED_ZIP
from stylespace.embeddings import embed_images
from stylespace.inference import (ONNX_MIN_IMAGES, OnnxEmbedder, TorchEmbedder, ensure_onnx, export_onnx,
                                  make_embedder, onnx_path, resolve_engine)
from stylespace.models import ModelConfig, build_model, load_model, model_id, save_model
from stylespace.utils import StylespaceError

TOLERANCE = 1e-5


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("STYLESPACE_CACHE", str(tmp_path / "cache"))


def small_model(seed: int = 0, **overrides):
    torch.manual_seed(seed)
    config = dict(backbone="compact", embedding_dim=16, width=8, pooling="gem", multiscale=True)
    return build_model(ModelConfig(**{**config, **overrides})).eval()


def generated_images(n: int, size=(80, 60), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, *size, 3), dtype=np.uint8)


def test_onnx_equals_torch_on_generated_images(tmp_path):
    model = small_model()
    pixels = generated_images(40)
    ours = embed_images(model, pixels, engine="onnx")
    theirs = embed_images(model, pixels, engine="torch")
    assert ours.shape == theirs.shape == (40, model.output_dim)
    assert np.abs(ours - theirs).max() <= TOLERANCE
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    # the features layer and a linear classifier head export too
    features = small_model(embed_layer="features", classes=["a", "b"])
    assert np.abs(embed_images(features, pixels, engine="onnx") -
                  embed_images(features, pixels, engine="torch")).max() <= TOLERANCE


def test_onnx_equals_torch_for_the_pretrained_backbone(tmp_path):
    pytest.importorskip("timm", reason="timm (a default dependency) is not installed")
    torch.manual_seed(0)
    # EfficientNet-Lite0 at a reduced network size, the head beside its features, classes on a cosine classifier
    model = build_model(ModelConfig(backbone="efficientnet-lite0", network_size=(96, 72), embedding_dim=16,
                                    head_hidden=32, embed_layer="both", classifier="cosine", classes=["a", "b"])).eval()
    pixels = generated_images(24)
    ours = embed_images(model, pixels, engine="onnx")
    theirs = embed_images(model, pixels, engine="torch")
    assert ours.shape == theirs.shape == (24, 1280 + 16)
    assert np.abs(ours - theirs).max() <= TOLERANCE


@pytest.mark.skipif(not SHARED_ZIP.exists(), reason=f"needs the shared catalog at {SHARED_ZIP}")
def test_onnx_equals_torch_on_real_images_with_the_default_model(tmp_path):
    from stylespace.data import load_view

    model = load_model(ROOT / "models" / "default")
    with zipfile.ZipFile(SHARED_ZIP) as archive:
        names = sorted(n for n in archive.namelist() if n.endswith((".jpg", ".webp")))[::500][:64]
        pixels = np.stack([load_view(archive.read(n), tuple(model.config.input_size)).pixels for n in names])
    path = export_onnx(model, tmp_path / "default.onnx")  # not beside the shipped model: a test leaves it alone
    ours = OnnxEmbedder(path, model_id(model))(pixels)
    theirs = TorchEmbedder(model, "cpu")(pixels)
    assert len(pixels) == 64 and np.abs(ours - theirs).max() <= TOLERANCE


def test_the_onnx_file_is_made_beside_the_model_once_and_keyed_to_its_id(tmp_path):
    folder = tmp_path / "model"
    save_model(small_model(), folder)
    model = load_model(folder)
    path = ensure_onnx(model)
    assert path == folder / f"model-{model_id(model)}.onnx" and path.is_file()
    stamp = path.stat().st_mtime_ns
    assert ensure_onnx(model) == path and path.stat().st_mtime_ns == stamp  # kept, not made again
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]  # no temporary file left

    # new weights in the same folder: another id, another file; the old one is never used for them
    with torch.no_grad():
        model.head[1].weight.mul_(2.0)
    assert onnx_path(model) != path
    assert np.abs(embed_images(model, generated_images(8), engine="onnx") -
                  embed_images(model, generated_images(8), engine="torch")).max() <= TOLERANCE
    with pytest.raises(StylespaceError, match="exported from model"):
        OnnxEmbedder(path, model_id(model))


def test_a_damaged_onnx_file_is_made_again(tmp_path):
    folder = tmp_path / "model"
    save_model(small_model(), folder)
    model = load_model(folder)
    onnx_path(model).write_bytes(b"not an onnx file")
    embedder = make_embedder(model, "onnx", "cpu")
    pixels = generated_images(4)
    assert np.abs(embedder(pixels) - TorchEmbedder(model, "cpu")(pixels)).max() <= TOLERANCE


def test_a_model_without_a_folder_keeps_its_export_in_the_cache(tmp_path):
    model = small_model(seed=3)
    assert ensure_onnx(model) == tmp_path / "cache" / "onnx" / f"{model_id(model)}.onnx"


def test_auto_picks_onnx_on_a_cpu_when_it_pays(tmp_path):
    model = small_model(seed=4)
    assert resolve_engine("auto", "cpu", model, images=10) == "torch"  # exporting costs more than it saves
    assert resolve_engine("auto", "cpu", model, images=ONNX_MIN_IMAGES) == "onnx"
    assert resolve_engine("auto", "cpu", model, images=None) == "onnx"  # a long-lived caller (the service)
    ensure_onnx(model)
    assert resolve_engine("auto", "cpu", model, images=10) == "onnx"  # the file exists: always worth it
    assert resolve_engine("torch", "cpu", model) == "torch"
    cuda = torch.device("cuda")  # decided from the device alone, so this holds on a machine without a GPU too
    assert resolve_engine("auto", cuda, model, images=None) == "torch"
    with pytest.raises(StylespaceError, match="runs on the CPU"):
        resolve_engine("onnx", cuda, model)
    model.train()
    assert resolve_engine("auto", "cpu", model, images=None) == "torch"  # weights still changing
    with pytest.raises(StylespaceError, match="engine must be one of"):
        resolve_engine("tensorrt", "cpu", model)


def test_bad_pixels_are_refused_by_either_engine():
    model = small_model()
    for engine in ("torch", "onnx"):
        with pytest.raises(StylespaceError, match="model takes 80x60"):
            embed_images(model, generated_images(2, size=(60, 80)), engine=engine)
        with pytest.raises(StylespaceError, match="uint8"):
            embed_images(model, generated_images(2).astype(np.float32), engine=engine)


def test_export_onnx_command_and_the_engine_option(tmp_path):
    """`stylespace export-onnx MODEL` writes the checked file; `search --engine onnx|torch` agree."""
    import json

    from typer.testing import CliRunner

    from conftest import write_kaggle_catalog
    from stylespace.cli import app

    folder = tmp_path / "model"
    save_model(small_model(seed=5), folder)
    runner = CliRunner()
    exported = runner.invoke(app, ["export-onnx", str(folder), "--json"])
    assert exported.exit_code == 0, exported.output
    report = json.loads(exported.stdout)
    assert report["onnx"].endswith(f"model-{report['model_id']}.onnx") and report["max_abs_diff"] <= TOLERANCE

    catalog = write_kaggle_catalog(tmp_path / "catalog", per_class=3)
    built = runner.invoke(app, ["index", "build", str(folder), str(catalog), "-o", str(tmp_path / "index"),
                                "--no-whiten", "--engine", "onnx", "--json"])
    assert built.exit_code == 0, built.output
    query = sorted((catalog / "images").iterdir())[0]
    hits = {}
    for engine in ("torch", "onnx"):
        found = runner.invoke(app, ["search", str(tmp_path / "index"), str(query), "-k", "3", "--engine", engine,
                                    "--json"])
        assert found.exit_code == 0, found.output
        hits[engine] = json.loads(found.stdout)["queries"][0]["hits"]
    assert [h["id"] for h in hits["torch"]] == [h["id"] for h in hits["onnx"]]
    assert np.allclose([h["score"] for h in hits["torch"]], [h["score"] for h in hits["onnx"]], atol=1e-5)
    bad = runner.invoke(app, ["search", str(tmp_path / "index"), str(query), "--engine", "tensorrt"])
    assert bad.exit_code != 0 and "engine must be one of auto, torch, onnx" in str(bad.exception or bad.output)


def test_auto_falls_back_to_torch_when_the_export_fails(tmp_path, monkeypatch):
    import stylespace.inference as inference

    def broken(model, path):
        raise RuntimeError("an operator the exporter does not know")

    monkeypatch.setattr(inference, "export_onnx", broken)
    model = small_model(seed=6)
    assert make_embedder(model, "auto", "cpu", images=None).engine == "torch"
    with pytest.raises(StylespaceError, match="use --engine torch"):
        make_embedder(model, "onnx", "cpu")
