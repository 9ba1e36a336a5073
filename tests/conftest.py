"""Shared fixtures and the one module of test helpers: small generated catalogs, pictures and models (fast unit
tests) and the real shared catalog (integration). Test modules import helpers from here, never from each other."""
from __future__ import annotations

import csv
import gzip
import os
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

ROOT = Path(__file__).resolve().parents[1]
SHARED_ZIP = ROOT.parent / "shared" / "datasets" / "fashion-product-images-small.zip"
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")

# Small synthetic "article types": a shape and a colour each, with Kaggle-like coarser levels.
SYNTH_CLASSES = [
    # label, shape, colour, subCategory, masterCategory
    ("Tshirts", "square", (200, 40, 40), "Topwear", "Apparel"),
    ("Shirts", "square", (40, 40, 200), "Topwear", "Apparel"),
    ("Jeans", "bar", (30, 60, 160), "Bottomwear", "Apparel"),
    ("Watches", "circle", (90, 90, 90), "Watches", "Accessories"),
    ("Casual Shoes", "triangle", (120, 70, 20), "Shoes", "Footwear"),
    ("Handbags", "circle", (200, 160, 40), "Bags", "Accessories"),
]


def synth_image(shape: str, colour: tuple[int, int, int], rng: np.random.Generator, size=(60, 80)) -> Image.Image:
    """A white product photo with one coloured shape, jittered in position, size and shade."""
    w, h = size
    image = Image.new("RGB", size, (255, 255, 255))
    draw = ImageDraw.Draw(image)
    cx, cy = w / 2 + rng.uniform(-5, 5), h / 2 + rng.uniform(-5, 5)
    r = rng.uniform(14, 22)
    shade = tuple(int(np.clip(c + rng.integers(-25, 26), 0, 255)) for c in colour)
    if shape == "square":
        draw.rectangle([cx - r, cy - r, cx + r, cy + r], fill=shade)
    elif shape == "bar":
        draw.rectangle([cx - r / 2, cy - r * 1.6, cx + r / 2, cy + r * 1.6], fill=shade)
    elif shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=shade)
    else:
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=shade)
    return image


def write_kaggle_catalog(root: Path, per_class: int = 12, classes=SYNTH_CLASSES, seed: int = 0,
                         ext: str = ".png", make_image=synth_image) -> Path:
    """A Kaggle-layout folder (styles.csv + images/<id><ext>) of synthetic products, each drawn by
    ``make_image(shape, colour, rng)``; returns the folder."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    header = ["id", "gender", "masterCategory", "subCategory", "articleType", "baseColour", "season", "year",
              "usage", "productDisplayName"]
    rows = []
    next_id = 1000
    for label, shape, colour, sub, master in classes:
        for j in range(per_class):
            make_image(shape, colour, rng).save(root / "images" / f"{next_id}{ext}")
            gender = "Men" if j % 2 else "Women"
            rows.append([next_id, gender, master, sub, label, "Red", "Summer", 2012, "Casual",
                         f"Brand {gender} {label} {j}"])
            next_id += 1
    with (root / "styles.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return root


def write_idx(path: Path, array: np.ndarray, gz: bool) -> None:
    """One IDX file (Fashion-MNIST's format) holding ``array`` as uint8, gzipped as ``<path>.gz`` when ``gz``."""
    header = struct.pack(">HBB", 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if gz:
        with gzip.open(str(path) + ".gz", "wb") as handle:
            handle.write(data)
    else:
        path.write_bytes(data)


def write_idx_catalog(folder: Path, train_labels: np.ndarray, test_labels: np.ndarray) -> Path:
    """A Fashion-MNIST-like folder (train and t10k IDX pairs, gzipped) of 28 x 28 noise images."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, labels in (("train", train_labels), ("t10k", test_labels)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte", rng.integers(0, 255, (len(labels), 28, 28)), True)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", np.asarray(labels), True)
    return folder


# --- generated pictures that are not product photos (the junk test, the service) ---------------------------


def blank_picture(size=(300, 400)) -> Image.Image:
    return Image.new("RGB", size, (255, 255, 255))


def near_uniform_picture(size=(300, 400), seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(np.clip(rng.normal(150, 2.0, (size[1], size[0], 3)), 0, 255).astype(np.uint8))


def noise_picture(size=(60, 80), seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def gradient_picture(size=(300, 400)) -> Image.Image:
    w, h = size
    t = np.linspace(0.0, 1.0, w)[None, :, None]
    colours = np.array((255, 0, 0)) * (1 - t) + np.array((0, 0, 255)) * t
    return Image.fromarray(np.broadcast_to(colours, (h, w, 3)).astype(np.uint8))


def text_picture(size=(400, 300)) -> Image.Image:
    """A screenshot of text: lines of dark text on white, drawn with PIL."""
    image = Image.new("RGB", size, (255, 255, 255))
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(12)
    for row, y in enumerate(range(10, size[1] - 20, 18)):
        draw.text((10, y), f"Order {row}: invoice, total, shipping and returns", fill=(20, 20, 20), font=font)
    return image


def landscape_picture(size=(200, 150), seed=0) -> Image.Image:
    """Sky (a blue gradient) over a green field with noise."""
    rng = np.random.default_rng(seed)
    w, h = size
    horizon = int(h * 0.55)
    pixels = np.zeros((h, w, 3))
    t = np.linspace(0.0, 1.0, horizon)[:, None, None]
    pixels[:horizon] = np.array((70, 130, 220)) * (1 - t) + np.array((190, 220, 250)) * t
    pixels[horizon:] = np.array((60, 140, 50)) + rng.normal(0, 25, (h - horizon, w, 3))
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8))


# With the untrained model of test_junk's fixture, these sizes and fonts sit clearly past the floors (a
# 400 x 300 landscape or 16 px text sits within 3 % of them): the test checks the wiring from picture to
# reason; how the floors do with the real model and catalog is measured in stylespace.recommend.junk.
JUNK = {"blank": blank_picture, "near-uniform": near_uniform_picture, "noise": noise_picture,
        "gradient": gradient_picture, "text": text_picture, "landscape": landscape_picture}


# --- a catalog of distinct patterned products, and items planted in it (the audit, robustness) -------------


def patterned(shape, colour, rng) -> Image.Image:
    """A synthetic product with a pattern of its own (stripes of random colours and angles inside the
    shape, whose outline stays clean, as a product's on a packshot), so that no two items look alike once
    trimmed to the product."""
    image = synth_image(shape, colour, rng)
    product = Image.fromarray((np.asarray(image).min(axis=2) < 250).astype(np.uint8) * 255)
    pattern = image.copy()
    draw = ImageDraw.Draw(pattern)
    for _ in range(int(rng.integers(2, 5))):
        x0, y0, x1, y1 = rng.uniform(0, 60), rng.uniform(0, 80), rng.uniform(0, 60), rng.uniform(0, 80)
        stripe = tuple(int(v) for v in rng.integers(0, 200, 3))
        draw.line([(x0, y0), (x1, y1)], fill=stripe, width=int(rng.integers(3, 6)))
    image.paste(pattern, (0, 0), product)
    return image


def write_patterned_catalog(root: Path, per_class: int = 10, seed: int = 3) -> Path:
    """A clean Kaggle-layout catalog: 6 classes x ``per_class`` distinct patterned products (ids from 1000)."""
    return write_kaggle_catalog(root, per_class=per_class, seed=seed, make_image=patterned)


def plant_item(root: Path, item_id: int, label: str, data: bytes, ext: str = ".png") -> None:
    (root / "images" / f"{item_id}{ext}").write_bytes(data)
    with (root / "styles.csv").open("a", newline="") as handle:
        csv.writer(handle).writerow([item_id, "Men", "Apparel", "Topwear", label, "Red", "Summer", 2012, "Casual",
                                     f"planted {item_id}"])


# --- a clustered catalog index with held-out labelled queries (recommendation, match score) ---------------

CLUSTERED_MODEL = "model-a"


def clustered_index(folder: Path):
    """A small clustered catalog index (cosine, model id CLUSTERED_MODEL) with labels, and held-out labelled
    queries: (index, its vectors, query vectors, query labels, item labels)."""
    from stylespace.index import CatalogIndex

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(5, 12))
    labels = rng.integers(0, 5, 400)
    vectors = (centres[labels] + 0.9 * rng.normal(size=(400, 12))).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = [f"c{i}" for i in range(300)]
    index = CatalogIndex.create(Path(folder) / "idx", ids, vectors[:300], model_id=CLUSTERED_MODEL,
                                labels=[f"L{v}" for v in labels[:300]])
    return index, vectors[:300], vectors[300:], [f"L{v}" for v in labels[300:]], [f"L{v}" for v in labels[:300]]


# --- coloured shapes and a tiny model (training, distributed training) -------------------------------------


SHAPES_SIZE = (32, 24)
SHAPE_COLOURS = [(210, 40, 40), (40, 60, 210), (40, 170, 60), (220, 170, 30)]


def shapes(per_class: int = 24, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """4 classes of coloured shapes on white, 32x24 px: red squares, blue discs, green bars, yellow rings;
    position, size and shade jitter. Returns (N, 32, 24, 3) uint8 and (N,) int labels."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:SHAPES_SIZE[0], 0:SHAPES_SIZE[1]]
    images, labels = [], []
    for label, colour in enumerate(SHAPE_COLOURS):
        for _ in range(per_class):
            cy, cx, r = 16 + rng.uniform(-4, 4), 12 + rng.uniform(-3, 3), rng.uniform(5, 8)
            if label == 0:
                mask = (abs(yy - cy) < r) & (abs(xx - cx) < r)
            elif label == 1:
                mask = (yy - cy) ** 2 + (xx - cx) ** 2 < r ** 2
            elif label == 2:
                mask = (abs(yy - cy) < 1.6 * r) & (abs(xx - cx) < r / 2)
            else:
                d = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
                mask = (d < r) & (d > r / 2)
            image = np.full((*SHAPES_SIZE, 3), 255, np.uint8)
            shade = np.clip(np.array(colour) + rng.integers(-25, 26, 3), 0, 255)
            image[mask] = shade
            images.append(image)
            labels.append(label)
    return np.stack(images), np.array(labels)


def tiny_model(classes: bool = True, seed: int = 0, **kw):
    import torch

    from stylespace.models import ModelConfig, build_model

    torch.manual_seed(seed)
    return build_model(ModelConfig(backbone="compact", width=8, embedding_dim=16, input_size=SHAPES_SIZE,
                                   classes=["red", "blue", "green", "yellow"] if classes else [], **kw))


def compact_index(root: Path, catalog_dir: Path):
    """The catalog at ``catalog_dir`` indexed (plain, not whitened) by an untrained 16-d compact model: the model
    saved to ``root/model``, the index in ``root/index``, the image cache in ``root/cache``. Returns
    (catalog, model, index)."""
    import torch

    from stylespace.data import load_catalog
    from stylespace.index.build import build_index
    from stylespace.models import ModelConfig, build_model, save_model

    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone="compact", width=8, embedding_dim=16, classes=[])).eval()
    save_model(model, root / "model")
    catalog = load_catalog(catalog_dir)
    index, _ = build_index(model, catalog, root / "index", model_path=root / "model", progress=False,
                           cache_dir=root / "cache", whiten=False)
    return catalog, model, index


@pytest.fixture
def cache_dir(tmp_path, monkeypatch) -> Path:
    """A private image cache for the test, so tests never touch the user's cache."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("STYLESPACE_CACHE", str(folder))
    return folder


@pytest.fixture
def small_catalog(tmp_path, cache_dir) -> Path:
    """A Kaggle-layout folder with 6 synthetic classes x 12 images (72 items)."""
    return write_kaggle_catalog(tmp_path / "catalog")


@pytest.fixture
def cli_json():
    """``cli_json(*args)``: run a stylespace command with --json, assert it succeeded, return its JSON."""
    import json

    from typer.testing import CliRunner

    from stylespace.cli import app

    runner = CliRunner()

    def run(*args) -> dict:
        result = runner.invoke(app, [*map(str, args), "--json"], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    return run


@pytest.fixture(scope="session")
def shared_zip() -> Path:
    """The real Fashion Product Images zip; integration tests skip (with the reason) when it is absent."""
    if not SHARED_ZIP.is_file():
        pytest.skip(f"shared catalog not found at {SHARED_ZIP} (it sits in ../shared/datasets beside the repo)")
    return SHARED_ZIP


@pytest.fixture(scope="session")
def fashion_mnist() -> Path:
    if not (FASHION_MNIST / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"Fashion-MNIST not found at {FASHION_MNIST}: `apt-get install -y dataset-fashion-mnist` "
                    "(make test does this when run as root)")
    return FASHION_MNIST


def pytest_configure(config):
    # Two cores are shared by torch and the test runner; more threads only thrash.
    os.environ.setdefault("OMP_NUM_THREADS", "2")
