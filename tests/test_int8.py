"""int8 inference (issue 24): the model's ONNX export quantised (static QDQ, calibrated on catalog images), kept
beside the model under its own name, written atomically, close to fp32 and never mistaken for it."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import SYNTH_CLASSES, synth_image
from stylespace.embeddings import _vector_cache_path, array_vectors, embed_images
from stylespace.inference import (INT8_CALIBRATION_MIN, OnnxEmbedder, ensure_int8, ensure_onnx, make_embedder,
                                  onnx_path, precision_choice, quantize_onnx, resolve_engine)
from stylespace.models import ModelConfig, build_model, load_model, model_id, save_model
from stylespace.utils import StylespaceError

pytest.importorskip("onnxruntime", reason="onnxruntime (a default dependency) is not installed")

# The cosine of an image's int8 and fp32 vectors accepted here (mean over the photos, and the least), on
# synthetic product photos. Measured: the tiny compact model below, seeds 0-2, mean 0.9998-0.99996, least
# 0.9995-0.9999; EfficientNet-Lite0 (untrained, 96 x 72) mean 0.998, least 0.995 (0.71 / 0.62 when every op
# type is quantised, the Clip after each Conv kept apart); models/default on catalog images: mean 0.995.
MEAN_COSINE = 0.995
LEAST_COSINE = 0.99


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("STYLESPACE_CACHE", str(tmp_path / "cache"))


def tiny_model(seed: int = 0):
    torch.manual_seed(seed)
    return build_model(ModelConfig(backbone="compact", embedding_dim=16, width=8, pooling="gem",
                                   multiscale=True)).eval()


def product_photos(n: int, seed: int = 0) -> np.ndarray:
    """(n, 80, 60, 3) uint8 white product photos of coloured shapes (the catalog's kind of picture)."""
    rng = np.random.default_rng(seed)
    return np.stack([np.asarray(synth_image(shape, colour, rng))
                     for _, shape, colour, _, _ in (SYNTH_CLASSES[i % len(SYNTH_CLASSES)] for i in range(n))])


def saved_model(tmp_path, seed: int = 0):
    folder = tmp_path / "model"
    save_model(tiny_model(seed), folder)
    return load_model(folder, device="cpu")


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_int8_is_close_to_fp32(tmp_path):
    model = saved_model(tmp_path)
    ensure_int8(model, product_photos(64, seed=1))  # calibrated on other photos than those compared
    pixels = product_photos(48, seed=2)
    ours = embed_images(model, pixels, engine="onnx", precision="int8")
    fp32 = embed_images(model, pixels, engine="onnx")
    cosine = cosines(ours, fp32)
    assert ours.shape == fp32.shape and np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    assert cosine.mean() >= MEAN_COSINE and cosine.min() >= LEAST_COSINE, (cosine.mean(), cosine.min())
    assert not np.array_equal(ours, fp32)  # it is quantised, not the fp32 file under another name


def test_int8_is_close_to_fp32_for_the_pretrained_backbone():
    """EfficientNet-Lite0's graph (ReLU6 as Clip after each Conv, TF-style padding), the head beside its features."""
    pytest.importorskip("timm", reason="timm (a default dependency) is not installed")
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone="efficientnet-lite0", network_size=(96, 72), embedding_dim=16,
                                    head_hidden=32, embed_layer="both", classifier="cosine", classes=["a", "b"])).eval()
    ensure_int8(model, product_photos(64, seed=1))
    pixels = product_photos(48, seed=2)
    cosine = cosines(embed_images(model, pixels, precision="int8"), embed_images(model, pixels, engine="onnx"))
    assert cosine.mean() >= MEAN_COSINE and cosine.min() >= LEAST_COSINE, (cosine.mean(), cosine.min())


def test_the_int8_file_lies_beside_the_model_is_made_once_and_reused(tmp_path):
    model = saved_model(tmp_path)
    path = ensure_int8(model, product_photos(64))
    assert path == tmp_path / "model" / f"model-{model_id(model)}-int8.onnx" and path.is_file()
    assert path != ensure_onnx(model) and ensure_onnx(model).is_file()  # the fp32 export beside it
    stamp = path.stat().st_mtime_ns
    # reused, without calibration images, by the next embedder (a search of one photo)
    embedder = make_embedder(model, "auto", "cpu", images=1, precision="int8")
    assert embedder.path == path and embedder.precision == "int8" and path.stat().st_mtime_ns == stamp
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temporary file left
    # the int8 file is not taken for the fp32 one, nor the other way round
    with pytest.raises(StylespaceError, match="at int8 precision, not fp32"):
        OnnxEmbedder(path, model_id(model))
    with pytest.raises(StylespaceError, match="at fp32 precision, not int8"):
        OnnxEmbedder(ensure_onnx(model), model_id(model), precision="int8")


def test_without_a_file_or_enough_images_int8_says_how_to_make_it(tmp_path):
    model = saved_model(tmp_path)
    with pytest.raises(StylespaceError, match="export-onnx MODEL --precision int8 --catalog"):
        make_embedder(model, "auto", "cpu", images=1, precision="int8",
                      calibration=product_photos(INT8_CALIBRATION_MIN - 1))
    assert not onnx_path(model, precision="int8").exists()


def test_a_failed_quantisation_leaves_no_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    import onnxruntime.quantization as quantization

    model = saved_model(tmp_path)
    source = ensure_onnx(model)
    target = onnx_path(model, precision="int8")

    def half_written(model_input, model_output, *args, **kwargs):
        with open(model_output, "wb") as handle:
            handle.write(b"\x08\x07half an onnx file")
        raise RuntimeError("killed mid-write")

    monkeypatch.setattr(quantization, "quantize_static", half_written)
    with pytest.raises(RuntimeError, match="killed mid-write"):
        quantize_onnx(source, target, product_photos(32))
    assert not target.exists() and not [p for p in target.parent.iterdir() if p.name.startswith(".")]
    with pytest.raises(StylespaceError, match="could not quantise this model to int8"):
        make_embedder(model, "onnx", "cpu", precision="int8", calibration=product_photos(64))
    assert not target.exists()

    monkeypatch.undo()
    good = quantize_onnx(source, target, product_photos(32)).read_bytes()
    monkeypatch.setattr(quantization, "quantize_static", half_written)
    with pytest.raises(RuntimeError):
        quantize_onnx(source, target, product_photos(32))
    assert target.read_bytes() == good  # the good file is still there, whole


def test_int8_vectors_are_cached_apart_from_fp32_ones(tmp_path):
    model = saved_model(tmp_path)

    class Array:  # the two attributes the vector cache reads of a decoded image array
        def __init__(self, pixels, folder):
            self.pixels, self.folder = pixels, folder

        def __len__(self):
            return len(self.pixels)

    array = Array(product_photos(2048, seed=3), tmp_path / "images" / "abc123")
    fp32_path = _vector_cache_path(model, array)
    int8_path = _vector_cache_path(model, array, "int8")
    with precision_choice("int8"):
        assert _vector_cache_path(model, array) == int8_path  # the command's choice keys it too
    assert fp32_path != int8_path and "int8" in int8_path.name and "int8" not in fp32_path.name
    assert model_id(model) in fp32_path.name and model_id(model) in int8_path.name

    fp32 = array_vectors(model, array, progress=False)  # fp32 first: kept in the cache
    assert fp32_path.is_file() and not int8_path.exists()
    with precision_choice("int8"):
        int8 = array_vectors(model, array, progress=False)  # not read from fp32's file
    assert int8_path.is_file() and not np.array_equal(int8, fp32)
    assert np.array_equal(array_vectors(model, array, progress=False), fp32)
    assert np.array_equal(array_vectors(model, array, progress=False, precision="int8"), int8)


def test_an_unknown_precision_is_refused_naming_the_field_and_the_choices(tmp_path):
    model = tiny_model()
    for call in (lambda: make_embedder(model, "onnx", "cpu", precision="fp16"),
                 lambda: embed_images(model, product_photos(2), precision="int4"),
                 lambda: precision_choice("bf16").__enter__()):
        with pytest.raises(StylespaceError, match="precision must be one of fp32, int8"):
            call()
    with pytest.raises(StylespaceError, match="precision int8 runs on ONNX Runtime"):
        resolve_engine("torch", "cpu", model, precision="int8")
    with pytest.raises(StylespaceError, match="on the CPU, not cuda"):
        resolve_engine("auto", torch.device("cuda"), model, precision="int8")
    assert resolve_engine("auto", "cpu", model, images=1, precision="int8") == "onnx"  # never PyTorch


def test_the_precision_option_of_the_commands(tmp_path):
    """`export-onnx --precision int8 --catalog` makes and checks the file; `index build` / `search` take
    `--precision`; an unknown one is a one-line error naming the choices."""
    import json

    from typer.testing import CliRunner

    from conftest import write_kaggle_catalog
    from stylespace.cli import app

    folder = tmp_path / "model"
    save_model(tiny_model(seed=5), folder)
    catalog = write_kaggle_catalog(tmp_path / "catalog", per_class=8)
    runner = CliRunner()
    made = runner.invoke(app, ["export-onnx", str(folder), "--precision", "int8", "--catalog", str(catalog), "--json"])
    assert made.exit_code == 0, made.output
    report = json.loads(made.stdout)
    assert report["onnx"].endswith(f"model-{report['model_id']}-int8.onnx") and report["precision"] == "int8"
    assert report["mean_cosine"] >= MEAN_COSINE and report["calibration_images"] == 48
    no_catalog = runner.invoke(app, ["export-onnx", str(folder), "--precision", "int8"])
    assert no_catalog.exit_code != 0 and "--catalog CATALOG" in str(no_catalog.exception or no_catalog.output)

    built = runner.invoke(app, ["index", "build", str(folder), str(catalog), "-o", str(tmp_path / "index"),
                                "--no-whiten", "--precision", "int8", "--json"])
    assert built.exit_code == 0, built.output
    query = sorted((catalog / "images").iterdir())[0]
    found = runner.invoke(app, ["search", str(tmp_path / "index"), str(query), "-k", "3", "--precision", "int8",
                                "--json"])
    assert found.exit_code == 0, found.output
    assert json.loads(found.stdout)["queries"][0]["hits"][0]["id"] == query.stem
    bad = runner.invoke(app, ["search", str(tmp_path / "index"), str(query), "--precision", "fp16"])
    assert bad.exit_code != 0 and "precision must be one of fp32, int8" in str(bad.exception or bad.output)


def test_weights_keep_8_bits_only_where_the_cpu_adds_int8_products_without_saturating(monkeypatch, tmp_path):
    import builtins
    import platform

    from stylespace.inference import int8_needs_reduced_range

    real_open = builtins.open

    def cpu_with(flags: str):
        path = tmp_path / "cpuinfo"
        path.write_text(f"processor\t: 0\nflags\t\t: fpu sse2 {flags}\n")
        monkeypatch.setattr(builtins, "open", lambda name, *a, **k: real_open(path if name == "/proc/cpuinfo" else name, *a, **k))

    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    cpu_with("avx2 fma")
    assert int8_needs_reduced_range()  # AVX2 alone: u8 x s8 pairs saturate in 16 bits
    cpu_with("avx2 avx512f avx512_vnni")
    assert not int8_needs_reduced_range()
    cpu_with("avx2 avx_vnni")
    assert not int8_needs_reduced_range()
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    assert not int8_needs_reduced_range()
